"""The node's add-checkpoint endpoint: cosigning, the spec's refusals, forks, restarts."""

from __future__ import annotations

import asyncio
import base64

import asyncpg
import nacl.signing
import pytest

from referendum_core import checkpoint as ck
from referendum_core.witness import verify_cosignature
from tests.node.common import (
    LOG_PUB,
    ORIGIN,
    request_body,
    running_node,
    signed_note,
)

W_SEED = bytes([7]) * 32
W_PUB = bytes(nacl.signing.SigningKey(W_SEED).verify_key)


async def _state(database_url: str) -> tuple[list[tuple[object, ...]], int]:
    conn = await asyncpg.connect(database_url)
    try:
        latest = [
            tuple(r)
            for r in await conn.fetch("SELECT origin, tree_size, root, note FROM witness_latest")
        ]
        count = await conn.fetchval("SELECT count(*) FROM witness_evidence")
        return latest, int(count)
    finally:
        await conn.close()


async def test_cosigns_consistent_checkpoints(database_url: str) -> None:
    """A first checkpoint and a consistent extension get cosignatures that verify (C2SP)."""
    async with running_node(database_url) as (client, _):
        for old, new in [(0, 5), (5, 21), (21, 21)]:
            resp = await client.post("/add-checkpoint", data=request_body(old, new))
            assert resp.status == 200, await resp.text()
            line = await resp.text()
            cp = ck.parse_note(signed_note(new))[0]
            verify_cosignature(cp, line, ("w1.example", W_PUB))
            # the log's note with the line appended is still a valid note of the log
            assert (
                ck.verify_checkpoint(signed_note(new) + line, ("referendum.example/log", LOG_PUB))
                == cp
            )
    latest, evidence = await _state(database_url)
    assert [(o, s) for o, s, *_ in latest] == [(ORIGIN, 21)]
    assert evidence == 0


async def test_stale_old_size_gets_409_with_latest_size(database_url: str) -> None:
    """An old size unlike the latest answers 409 text/x.tlog.size with the latest size."""
    async with running_node(database_url) as (client, _):
        assert (await client.post("/add-checkpoint", data=request_body(0, 8))).status == 200
        resp = await client.post("/add-checkpoint", data=request_body(0, 12))
        assert resp.status == 409
        assert resp.content_type == "text/x.tlog.size"
        assert await resp.text() == "8\n"
        assert (await client.post("/add-checkpoint", data=request_body(8, 12))).status == 200


async def test_fork_is_refused_stored_and_served(database_url: str) -> None:
    """Two log-signed checkpoints of one size with different roots: the second is refused,
    both notes are stored and served as evidence, the node alerts, the latest is kept."""
    async with running_node(database_url) as (client, witness):
        assert (await client.post("/add-checkpoint", data=request_body(0, 6))).status == 200
        before = await _state(database_url)
        forked = request_body(6, 6, tag=b"fork")
        resp = await client.post("/add-checkpoint", data=forked)
        assert resp.status == 409
        assert await resp.text() == "6\n"
        assert witness.fork_seen.is_set()
        # a forked extension (another history from 6 to 9) is refused too: a suspect proof
        resp = await client.post("/add-checkpoint", data=request_body(6, 9, tag=b"fork"))
        assert resp.status == 422
        assert resp.content_type == "application/problem+json"
        served = await (await client.get("/evidence")).json()
        metrics = await (await client.get("/metrics")).text()
    kinds = [e["kind"] for e in served["evidence"]]
    assert kinds == ["fork", "bad_proof"]
    fork = served["evidence"][0]
    assert fork["conclusive"] is True
    assert fork["note"] == signed_note(6, b"fork")
    assert fork["latest_note"] == signed_note(6)
    # both notes verify under the log key: the evidence stands on its own
    a = ck.verify_checkpoint(fork["note"], ("referendum.example/log", LOG_PUB))
    b = ck.verify_checkpoint(fork["latest_note"], ("referendum.example/log", LOG_PUB))
    assert a.size == b.size and a.root != b.root
    assert 'referendum_node_split_view_evidence_total{kind="fork"}' in metrics
    latest, count = await _state(database_url)
    assert latest == before[0] and count == 2


async def test_resent_fork_is_kept_once(database_url: str) -> None:
    """The same forked checkpoint sent again adds no second evidence row."""
    async with running_node(database_url) as (client, _):
        await client.post("/add-checkpoint", data=request_body(0, 3))
        for _ in range(3):
            await client.post("/add-checkpoint", data=request_body(3, 3, tag=b"x"))
    assert (await _state(database_url))[1] == 1


def _mangled_bodies() -> list[tuple[str, bytes, int]]:
    good = request_body(4, 10).decode()
    note = signed_note(10)
    wrong_key = signed_note(10, seed=bytes([5]) * 32)
    other_origin = ck.sign_checkpoint(
        ck.Checkpoint("someone.else/log/r-1", 10, bytes(32)), "someone.else/log", bytes(range(32))
    )
    proof = good.split("\n\n")[0].split("\n")[1:]
    bad_proof = "\n".join(["old 4", base64.b64encode(bytes(32)).decode(), *proof[1:]])
    return [
        ("no-old-line", note.encode(), 400),
        ("zero-padded", good.replace("old 4", "old 04", 1).encode(), 400),
        ("bad-base64", good.replace(proof[0], "!!", 1).encode(), 400),
        ("old-above-size", f"old 11\n\n{note}".encode(), 400),
        ("note-garbage", b"old 4\n\nnot a note\n", 400),
        ("not-utf8", b"old 4\n\n\xff\xfe\n", 400),
        ("wrong-log-key", good.replace(note, wrong_key).encode(), 403),
        ("unknown-origin", f"old 0\n\n{other_origin}".encode(), 404),
        ("stale", request_body(0, 10), 409),
        ("bad-proof", (bad_proof + "\n\n" + note).encode(), 422),
        ("too-large", b"old 4\n\n" + b"x" * 70_000, 413),
    ]


@pytest.mark.parametrize("case", _mangled_bodies(), ids=lambda c: c[0])
async def test_bad_input_gets_4xx_and_changes_nothing(
    database_url: str, case: tuple[str, bytes, int]
) -> None:
    """Each malformed or untrusted request gets its 4xx (a problem, but 409's size body)
    and leaves the latest checkpoint as it was (evidence only for a log-signed bad proof)."""
    _, body, status = case
    async with running_node(database_url) as (client, _):
        assert (await client.post("/add-checkpoint", data=request_body(0, 4))).status == 200
        before, _count = await _state(database_url)
        resp = await client.post("/add-checkpoint", data=body)
        assert resp.status == status, await resp.text()
        if status != 409:
            assert resp.content_type == "application/problem+json"
            problem = await resp.json()
            assert problem["status"] == status
    latest, count = await _state(database_url)
    assert latest == before
    assert count == (1 if case[0] == "bad-proof" else 0)


async def test_restart_keeps_the_latest(database_url: str) -> None:
    """A node restarted on its database remembers its latest: 409 for old 0, then goes on."""
    async with running_node(database_url) as (client, _):
        assert (await client.post("/add-checkpoint", data=request_body(0, 7))).status == 200
    async with running_node(database_url) as (client, _):
        resp = await client.post("/add-checkpoint", data=request_body(0, 9))
        assert resp.status == 409 and await resp.text() == "7\n"
        assert (await client.post("/add-checkpoint", data=request_body(7, 9))).status == 200
        assert (await client.post("/add-checkpoint", data=request_body(7, 7))).status == 409


async def test_concurrent_requests_from_one_size_cannot_roll_back(database_url: str) -> None:
    """Requests racing from the same old size: exactly one is cosigned, and the latest is it
    (the compare-and-persist is atomic; no later request rolls it back)."""
    async with running_node(database_url) as (client, _):
        assert (await client.post("/add-checkpoint", data=request_body(0, 4))).status == 200
        sizes = [8, 12, 16, 20, 24, 28]
        answers = await asyncio.gather(
            *(client.post("/add-checkpoint", data=request_body(4, n)) for n in sizes)
        )
        statuses = [a.status for a in answers]
    assert statuses.count(200) == 1, statuses
    assert set(statuses) <= {200, 409}
    winner = sizes[statuses.index(200)]
    latest, _ = await _state(database_url)
    assert latest[0][1] == winner
