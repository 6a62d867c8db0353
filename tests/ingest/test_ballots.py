"""POST a ballot: receipts, idempotence, status, and every bad input refused with nothing stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from referendum_core.client import make_ballot, new_voter_key
from referendum_core.proofs import BRANCH_BYTES
from referendum_core.receipt import verify_receipt
from tests.helpers import running_app
from tests.ingest import (
    Electorate,
    count_ballots,
    create_referendum,
    ingest_settings,
    resign,
    roll_locked,
    wait_until,
)

PROBLEM = "application/problem+json"


async def test_ballot_is_stored_and_receipt_verifies(database_url: str, tmp_path: Path) -> None:
    """A valid ballot gets 201 and a receipt signed by the served key over the stored bytes."""
    electorate = await create_referendum(database_url, "ref-ok")
    body = electorate.ballot("v0")
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        response = await client.post(electorate.path, json=body)
        assert response.status == 201, await response.text()
        raw = await response.read()
        key_doc = await (await client.get("/v1/keys/receipts")).json()
    receipt = verify_receipt(raw, base64.b64decode(key_doc["public_key"]))
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT * FROM ballots WHERE referendum_id = 'ref-ok'")
    finally:
        await conn.close()
    assert row is not None
    assert bytes(row["receipt"]) == raw
    assert receipt.ballot_hash == bytes(row["ballot_hash"]) == hashlib.sha256(row["body"]).digest()
    assert receipt.referendum == "ref-ok"
    assert receipt.merge_delay_ms == 2000
    assert receipt.accepted_at == row["accepted_at"]
    assert (
        bytes(row["revote_key"]) == electorate.credentials["v0"]
    )  # forbid: UNIQUE, per credential
    assert response.headers["Location"] == f"{electorate.path}/{receipt.ballot_hash.hex()}"


async def test_resubmission_returns_identical_receipt(database_url: str, tmp_path: Path) -> None:
    """Sending the same ballot again answers 200 with the byte-identical receipt, one row."""
    electorate = await create_referendum(database_url, "ref-idem")
    body = electorate.ballot("v1")
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        first = await client.post(electorate.path, json=body)
        second = await client.post(electorate.path, json=body)
        assert (first.status, second.status) == (201, 200)
        assert await first.read() == await second.read()
    assert await count_ballots(database_url) == 1


async def test_status_accepted_then_sequenced(database_url: str, tmp_path: Path) -> None:
    """The status resource says accepted, then sequenced with the log position the batcher set."""
    electorate = await create_referendum(database_url, "ref-status")
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        response = await client.post(electorate.path, json=electorate.ballot("v0"))
        location = response.headers["Location"]
        accepted = await (await client.get(location)).json()
        assert accepted["status"] == "accepted"
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                "INSERT INTO log_entries"
                " (referendum_id, log_index, ballot_id, block_height, leaf_hash)"
                " SELECT referendum_id, 7, id, 3, sha256('\\x00'::bytea || body) FROM ballots"
            )
        finally:
            await conn.close()
        sequenced = await (await client.get(location)).json()
        assert (sequenced["status"], sequenced["log_index"], sequenced["block_height"]) == (
            "sequenced",
            7,
            3,
        )
        unknown = await client.get(f"{electorate.path}/{'ab' * 32}")
        assert unknown.status == 404 and unknown.content_type == PROBLEM
        malformed = await client.get(f"{electorate.path}/not-a-hash")
        assert malformed.status == 400 and malformed.content_type == PROBLEM


# --- bad input ------------------------------------------------------------------------------


def _flip(hex_text: str, byte: int) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[byte] ^= 0x01
    return raw.hex()


def _set_bytes(hex_text: str, start: int, value: bytes) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[start : start + len(value)] = value
    return raw.hex()


def _forged_proof(e: Electorate) -> dict[str, Any]:
    body = e.ballot("v0")
    return resign({**body, "proofs": [_flip(body["proofs"][0], 100)]}, e.secrets["v0"])


def _proof_of_other_ciphertext(e: Electorate) -> dict[str, Any]:
    body, other = e.ballot("v0"), e.ballot("v0", yes=False)
    return resign({**body, "proofs": other["proofs"]}, e.secrets["v0"])


def _scalar_over_order(e: Electorate) -> dict[str, Any]:
    body = e.ballot("v0")
    return resign(
        {**body, "proofs": [_set_bytes(body["proofs"][0], 0, b"\xff" * 32)]}, e.secrets["v0"]
    )


def _point_off_curve(e: Electorate) -> dict[str, Any]:
    body = e.ballot("v0")
    return resign({**body, "ciphertexts": [_flip(body["ciphertexts"][0], 64)]}, e.secrets["v0"])


def _second_point_off_curve(e: Electorate) -> dict[str, Any]:
    body = e.ballot("v0")
    return resign({**body, "ciphertexts": [_flip(body["ciphertexts"][0], 129)]}, e.secrets["v0"])


def _bad_point_prefix(e: Electorate) -> dict[str, Any]:
    body = e.ballot("v0")
    return resign(
        {**body, "ciphertexts": [_set_bytes(body["ciphertexts"][0], 0, b"\x07")]}, e.secrets["v0"]
    )


def _tampered_ciphertext(e: Electorate) -> dict[str, Any]:
    # a valid point, but not the one the proof was made for: the yes-ciphertext's b half
    body, other = e.ballot("v0"), e.ballot("v0", yes=False)
    ct = body["ciphertexts"][0][:130] + other["ciphertexts"][0][130:]
    return resign({**body, "ciphertexts": [ct]}, e.secrets["v0"])


def _copied_from_other_voter(e: Electorate) -> dict[str, Any]:
    # v0's ciphertext and proof, re-signed by v1 under v1's own valid credential
    body = e.ballot("v0")
    return resign({**body, "credential": e.credentials["v1"].hex()}, e.secrets["v1"])


def _signed_by_other_key(e: Electorate) -> dict[str, Any]:
    return resign(e.ballot("v0"), new_voter_key()[0])


BAD_BALLOTS: dict[str, tuple[Callable[[Electorate], Any], int, str | None]] = {
    # name: (make the body, status, the failed check named in the problem)
    "bad signature": (
        lambda e: {**e.ballot("v0"), "signature": _flip(e.ballot("v0")["signature"], 3)},
        400,
        "signature",
    ),
    "signed with another key": (_signed_by_other_key, 400, "signature"),
    "forged proof": (_forged_proof, 400, "option[0].proof"),
    "proof of another ciphertext": (_proof_of_other_ciphertext, 400, "option[0].proof"),
    "proof scalar over the order": (_scalar_over_order, 400, "option[0].proof"),
    "point off the curve": (_point_off_curve, 400, "option[0].a"),
    "second point off the curve": (_second_point_off_curve, 400, "option[0].b"),
    "point with a bad prefix": (_bad_point_prefix, 400, "option[0].a"),
    "tampered ciphertext": (_tampered_ciphertext, 400, "option[0].proof"),
    "copied from another voter": (_copied_from_other_voter, 400, "option[0].proof"),
    "extra ciphertext": (
        lambda e: resign(
            {
                **e.ballot("v0"),
                "ciphertexts": e.ballot("v0")["ciphertexts"] * 2,
                "proofs": e.ballot("v0")["proofs"] * 2,
            },
            e.secrets["v0"],
        ),
        400,
        "ciphertexts.count",
    ),
    "proof too short": (
        lambda e: {**e.ballot("v0"), "proofs": [e.ballot("v0")["proofs"][0][:-2]]},
        400,
        "proofs[0]",
    ),
    "unexpected sum proof": (
        lambda e: resign({**e.ballot("v0"), "sum_proof": "00" * BRANCH_BYTES}, e.secrets["v0"]),
        400,
        "sum_proof",
    ),
    "uppercase hex": (
        lambda e: {**e.ballot("v0"), "signature": e.ballot("v0")["signature"].upper()},
        400,
        "signature",
    ),
    "missing field": (
        lambda e: {k: v for k, v in e.ballot("v0").items() if k != "proofs"},
        400,
        "body.fields",
    ),
    "unknown field": (lambda e: {**e.ballot("v0"), "vote": "yes"}, 400, "body.fields"),
    "ciphertexts not a list": (
        lambda e: {**e.ballot("v0"), "ciphertexts": "00"},
        400,
        "ciphertexts",
    ),
    "for another referendum": (
        lambda e: resign({**e.ballot("v0"), "referendum": "ref-closed"}, e.secrets["v0"]),
        400,
        "referendum",
    ),
    "credential not a string": (lambda e: {**e.ballot("v0"), "credential": 17}, 400, "credential"),
    "credential not hex": (
        lambda e: {**e.ballot("v0"), "credential": "zz" * 32},
        400,
        "credential",
    ),
    "credential as a voter id": (
        lambda e: {**e.ballot("v0"), "credential": "v0"},
        400,
        "credential",
    ),
    "legacy voter member": (
        lambda e: {**e.ballot("v0"), "voter": "v0"},
        400,
        "body.fields",
    ),
    "credential not on the roll": (lambda e: _stranger_ballot(e), 403, None),
    "JSON array": (lambda e: [e.ballot("v0")], 400, None),
}


def _stranger_ballot(e: Electorate) -> dict[str, Any]:
    secret, _ = new_voter_key()
    return make_ballot(e.spec, secret, [1, 0])


@pytest.mark.parametrize("case", sorted(BAD_BALLOTS))
async def test_bad_ballot_is_refused_and_nothing_stored(
    case: str, database_url: str, tmp_path: Path
) -> None:
    """Each forged or malformed ballot gets a 4xx problem naming the check; no row is written."""
    electorate = await create_referendum(database_url, "ref-bad")
    await create_referendum(database_url, "ref-closed", state="closed")
    make, status, check = BAD_BALLOTS[case]
    body = make(electorate)
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        response = await client.post(electorate.path, json=body)
        problem = await response.json(content_type=None)
        assert response.status == status, problem
        assert response.content_type == PROBLEM
        assert problem["status"] == status and problem["type"].startswith("https://")
        if check is not None:
            assert problem["check"] == check
        # the voter can still vote afterwards: the refusal stored and reserved nothing
        assert await count_ballots(database_url) == 0
        good = await client.post(electorate.path, json=electorate.ballot("v0"))
        assert good.status == 201


@pytest.mark.parametrize(
    ("name", "raw", "headers", "status"),
    [
        ("malformed JSON", b'{"referendum": ', {"Content-Type": "application/json"}, 400),
        ("not UTF-8", b'{"voter": "\xff"}', {"Content-Type": "application/json"}, 400),
        (
            "oversized",
            b'{"x": "' + b"a" * 140_000 + b'"}',
            {"Content-Type": "application/json"},
            413,
        ),
        ("wrong content type", b"{}", {"Content-Type": "text/plain"}, 415),
        ("form content type", b"a=b", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ("empty object", b"{}", {"Content-Type": "application/json"}, 400),
    ],
)
async def test_malformed_body_is_refused(
    name: str,
    raw: bytes,
    headers: dict[str, str],
    status: int,
    database_url: str,
    tmp_path: Path,
) -> None:
    """Bodies that are not a ballot at all get 400/413/415 problem+json and store nothing."""
    electorate = await create_referendum(database_url, "ref-raw")
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        response = await client.post(electorate.path, data=raw, headers=headers)
        assert response.status == status, await response.text()
        assert response.content_type == PROBLEM
    assert await count_ballots(database_url) == 0


@pytest.mark.parametrize(
    ("state", "referendum", "status", "slug"),
    [
        ("closed", "ref-x", 409, "referendum-not-open"),
        ("draft", "ref-x", 409, "referendum-not-open"),
        ("tallied", "ref-x", 409, "referendum-not-open"),
        ("open", "no-such-ref", 404, "unknown-referendum"),
        ("open", "Bad_Id!", 404, "unknown-referendum"),
    ],
)
async def test_referendum_not_open_or_unknown(
    state: str, referendum: str, status: int, slug: str, database_url: str, tmp_path: Path
) -> None:
    """Ballots for a closed, draft or unknown referendum are refused with 409/404."""
    electorate = await create_referendum(database_url, "ref-x", state=state)
    body = electorate.ballot("v0")
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        response = await client.post(f"/v1/referendums/{referendum}/ballots", json=body)
        problem = await response.json(content_type=None)
        assert (response.status, problem["type"].rsplit("/", 1)[-1]) == (status, slug)
    assert await count_ballots(database_url) == 0


async def test_close_refuses_next_ballot_while_cache_says_open(
    database_url: str, tmp_path: Path
) -> None:
    """With the state cached as open for an hour, the insert's own check still refuses it."""
    electorate = await create_referendum(database_url, "ref-closing", voters=3)
    settings = ingest_settings(tmp_path, spec_cache_ms=3_600_000)
    async with running_app(settings, database_url) as client:
        assert (await client.post(electorate.path, json=electorate.ballot("v0"))).status == 201
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("UPDATE referendums SET state = 'closed'")
        finally:
            await conn.close()
        # the very next ballot is refused even while the cache still says open: the insert
        # itself checks the state
        response = await client.post(electorate.path, json=electorate.ballot("v1"))
        assert response.status == 409
        assert (await response.json(content_type=None))["type"].endswith("referendum-not-open")
    assert await count_ballots(database_url) == 1


async def test_voter_rate_limit(database_url: str, tmp_path: Path) -> None:
    """Past the per-voter rate a voter gets 429 with Retry-After; forged signatures cost nothing."""
    electorate = await create_referendum(database_url, "ref-rate", policy="last_counts")
    settings = ingest_settings(tmp_path, voter_rate_per_minute=2)
    async with running_app(settings, database_url) as client:
        forged = {**electorate.ballot("v0"), "signature": "00" * 64}
        for _ in range(3):
            assert (await client.post(electorate.path, json=forged)).status == 400
        statuses = [
            (await client.post(electorate.path, json=electorate.ballot("v0"))).status
            for _ in range(2)
        ]
        assert statuses == [201, 201]
        limited = await client.post(electorate.path, json=electorate.ballot("v0"))
        assert limited.status == 429 and limited.content_type == PROBLEM
        assert int(limited.headers["Retry-After"]) >= 1
        other = await client.post(electorate.path, json=electorate.ballot("v1"))
        assert other.status == 201  # the limit is per voter
    assert await count_ballots(database_url) == 3


async def test_no_log_line_or_metric_pairs_voter_with_ballot(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logs and metrics of accepted, duplicate and refused ballots never carry a voter id."""
    electorate = await create_referendum(database_url, "ref-privacy", voters=3)
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    ballots = [electorate.ballot(v) for v in ("v0", "v1", "v2")]
    try:
        async with running_app(ingest_settings(tmp_path), database_url) as client:
            for body in ballots:
                await client.post(electorate.path, json=body)
            await client.post(electorate.path, json=ballots[0])
            await client.post(electorate.path, json={**ballots[1], "signature": "00" * 64})
            metrics = await (await client.get("/metrics")).text()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    captured = capsys.readouterr()
    text = records.getvalue() + captured.out + captured.err + metrics
    assert "referendum_ballots_accepted_total" in metrics
    for body in ballots:
        ballot_parts = [body["ciphertexts"][0][:40], body["signature"][:40]]
        for line in text.splitlines():
            if any(part in line for part in ballot_parts):
                assert f'"{body["voter"]}"' not in line and f"={body['voter']}" not in line
    for voter in ("v0", "v1", "v2"):
        assert f'"{voter}"' not in metrics
    assert orjson.dumps(ballots[0]).decode() not in text


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("ballot_hash", "00" * 32),
        ("referendum", "ref-other"),
        ("accepted_at", "2030-01-01T00:00:00.000000Z"),
        ("merge_delay_ms", 999999),
        ("type", "referendum-receipt/v2"),
        ("key_id", "0000000000000000"),
        ("signature", base64.b64encode(bytes(64)).decode()),
    ],
)
def test_tampered_receipt_does_not_verify(member: str, value: Any) -> None:
    """Changing any member of a receipt breaks its verification."""
    from datetime import UTC, datetime

    from referendum_core.errors import CoreError
    from referendum_service.keys import load_or_create_key
    from server.receipts import issue_receipt

    key = load_or_create_key(None, Path(tempfile.mkdtemp()), "receipt")
    raw = issue_receipt(key, "ref-r", bytes(range(32)), datetime.now(UTC), 2000)
    assert verify_receipt(raw, key.public_key).ballot_hash == bytes(range(32))
    fields = orjson.loads(raw)
    fields[member] = value
    with pytest.raises(CoreError):
        verify_receipt(orjson.dumps(fields), key.public_key)


async def test_referendum_state_cache_expires(database_url: str) -> None:
    """A cached state is served until its TTL passes, then the close is read from the database."""
    from referendum_service.db import create_pool
    from referendum_service.settings import Settings
    from server.ingest import ReferendumDirectory

    await create_referendum(database_url, "ref-ttl")
    pool = await create_pool(database_url, Settings(db_pool_min=1, db_pool_max=2))
    try:
        forever = ReferendumDirectory(pool, ttl_s=3600)
        short = ReferendumDirectory(pool, ttl_s=0.05)
        for directory in (forever, short):
            info = await directory.get("ref-ttl")
            assert info is not None and info.state == "open"
        assert await forever.get("no-such") is None
        async with pool.acquire() as conn:
            await conn.execute("UPDATE referendums SET state = 'closed'")
        cached = await forever.get("ref-ttl")
        assert cached is not None and cached.state == "open"  # within its TTL: the cache
        deadline = asyncio.get_running_loop().time() + 10
        while (info := await short.get("ref-ttl")) is not None and info.state == "open":
            assert asyncio.get_running_loop().time() < deadline, "the close was never seen"
            await asyncio.sleep(0.01)
        assert info is not None and info.state == "closed"
    finally:
        await pool.close()


async def test_process_pool_verification(database_url: str, tmp_path: Path) -> None:
    """With verify_workers the checks run in other processes, failures still name the check."""
    electorate = await create_referendum(database_url, "ref-pool")
    settings = ingest_settings(tmp_path, verify_workers=1)
    async with running_app(settings, database_url) as client:
        forged = _forged_proof(electorate)
        refused = await client.post(electorate.path, json=forged)
        problem = await refused.json(content_type=None)
        assert (refused.status, problem["check"]) == (400, "option[0].proof")
        accepted = await client.post(electorate.path, json=electorate.ballot("v0"))
        assert accepted.status == 201
    assert await count_ballots(database_url) == 1


async def test_saturated_server_refuses_at_once(database_url: str, tmp_path: Path) -> None:
    """With admission_limit submissions in progress, the next one gets 503 + Retry-After at once."""
    from server.state import BALLOT_BOX_KEY

    electorate = await create_referendum(database_url, "ref-busy", voters=3)
    settings = ingest_settings(tmp_path, admission_limit=2)
    async with running_app(settings, database_url) as client, roll_locked(database_url) as tx:
        assert client.app is not None
        box = client.app[BALLOT_BOX_KEY]
        held = [
            asyncio.create_task(client.post(electorate.path, json=electorate.ballot(v)))
            for v in ("v0", "v1")
        ]
        await wait_until(lambda: box.in_flight >= 2, 20, "the submissions to wait on the roll")
        refused = await client.post(electorate.path, json=electorate.ballot("v2"))
        assert refused.status == 503 and refused.content_type == PROBLEM
        assert refused.headers["Retry-After"] == "1"
        assert (await refused.json(content_type=None))["type"].endswith("/queue-full")
        await tx.commit()
        answered = await asyncio.gather(*held)
        assert [r.status for r in answered] == [201, 201]
        assert box.in_flight == 0
    assert await count_ballots(database_url) == 2
