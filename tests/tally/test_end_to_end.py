"""End to end: 1,000 voters through the HTTP API, sealed, tallied, decrypted, verified, tampered.

One referendum per module (ballots cost CPU): 1,000 voters cast random yes/no ballots through
``POST /v1/referendums/{rid}/ballots`` of the real app, then 150 of them change their minds
(``last_counts``), 20 of those twice. The real batcher seals the log while the tally follower
folds it; the operator closes; 2 of 3 trustees decrypt with the trustee core; the operator
publishes; the record is exported and ``verify-election`` must pass on it and fail, naming the
check, on each tampered copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from click.testing import CliRunner

from auditor.verify_election import verify_election, verify_election_command
from batcher.service import LogSigner, run_batcher
from batcher.tally import run_tally_follower
from referendum_core.ballot import BallotSpec
from referendum_core.client import make_ballot, new_voter_key
from referendum_service.keys import load_or_create_key
from referendum_service.scratch import create_database as _create_database
from referendum_service.scratch import drop_database as _drop_database
from referendum_service.settings import Settings
from server.record import export_record, write_manifest
from tests.helpers import operator_headers, running_app
from tests.tally.trustees import TrusteeBoard

VOTERS = 1000
REVOTERS = 150
TWICE = 20
RID = "e2e-tally"


@dataclass
class Published:
    """What the pipeline produced and what the test kept in plaintext."""

    record: Path
    expected: list[int]
    result: dict[str, Any]
    bad_share_problem: dict[str, Any]
    duplicate_status: int
    early_status: int
    supersessions: int
    voter_ids: list[str]


async def _poll(fetch: Callable[[], Any], deadline_s: float, what: str) -> Any:
    """Call ``fetch()`` every 50 ms until it returns something other than None."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = await fetch()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


Rounds = list[list[tuple[str, dict[str, Any]]]]


def _ballots(
    spec: BallotSpec, rng: random.Random
) -> tuple[dict[str, tuple[bytes, bytes]], Rounds, list[int]]:
    """Voter keys, three rounds of ballots (firsts, changes, second changes), expected counts."""
    keys = {f"voter-{i:04d}": new_voter_key() for i in range(VOTERS)}
    last: dict[str, int] = {}
    rounds: list[list[tuple[str, dict[str, Any]]]] = []
    changers = rng.sample(sorted(keys), REVOTERS)
    for voters in (sorted(keys), changers, changers[:TWICE]):
        batch = []
        for voter in voters:
            yes = rng.randint(0, 1)
            batch.append((voter, make_ballot(spec, keys[voter][0], [yes, 1 - yes])))
            last[voter] = yes
        rounds.append(batch)
    yes_total = sum(last.values())
    return keys, rounds, [yes_total, VOTERS - yes_total]


@pytest.fixture(scope="module")
async def published(
    pg_admin_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Published]:
    """Run the whole election once for the module."""
    dsn = await _create_database(pg_admin_dsn, migrate=True)
    folder = tmp_path_factory.mktemp("e2e")
    settings = Settings(
        database_url=dsn,
        data_dir=folder,
        voter_id_key=secrets.token_hex(32),
        voter_rate_per_minute=10_000,
        block_max_ballots=200,
        block_max_ms=100,
    )
    board = TrusteeBoard.create(RID, k=2, n=3)
    rng = random.Random(2026)
    now = datetime.now(UTC)
    definition = {
        "id": RID,
        "question": "Adopt the proposal?",
        "options": ["yes", "no"],
        "min_selections": 1,
        "max_selections": 1,
        "opens_at": (now - timedelta(hours=1)).isoformat(),
        "closes_at": (now + timedelta(hours=1)).isoformat(),
        "revote_policy": "last_counts",
        "threshold_k": 2,
        "trustees_n": 3,
        "election_public_key": board.election_public_key.hex(),
    }
    spec = BallotSpec(RID, ("yes", "no"), 1, 1, board.election_public_key)
    keys, rounds, expected = _ballots(spec, rng)
    signer = LogSigner(load_or_create_key(None, folder, "log"), settings.log_origin)
    stop = asyncio.Event()
    auth = await operator_headers(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    tasks: list[asyncio.Task[None]] = []
    try:
        async with running_app(settings, dsn) as client:
            r = await client.post("/v1/referendums", json=definition, headers=auth)
            assert r.status == 201, await r.text()
            roll = "voter_id,credential\n" + "".join(f"{v},{k[1].hex()}\n" for v, k in keys.items())
            r = await client.put(
                f"/v1/referendums/{RID}/roll",
                data=roll.encode(),
                headers={**auth, "Content-Type": "text/csv"},
            )
            assert r.status == 200, await r.text()
            r = await client.put(
                f"/v1/referendums/{RID}/trustees", json=board.commitments(), headers=auth
            )
            assert r.status == 200, await r.text()
            r = await client.post(f"/v1/referendums/{RID}/open", headers=auth)
            assert r.status == 200, await r.text()
            tasks.append(asyncio.create_task(run_batcher(dsn, settings, signer, stop, RID)))
            tasks.append(asyncio.create_task(run_tally_follower(pool, stop, poll_s=0.05)))

            limit = asyncio.Semaphore(32)

            async def cast(body: dict[str, Any]) -> None:
                async with limit:
                    response = await client.post(f"/v1/referendums/{RID}/ballots", json=body)
                    assert response.status == 201, await response.text()

            for batch in rounds:  # each round is acknowledged before the next starts
                await asyncio.gather(*(cast(body) for _, body in batch))

            r = await client.get(f"/v1/referendums/{RID}/tally")
            early_status = r.status
            early = {"early": True, "reason": "every round cast"}
            r = await client.post(f"/v1/referendums/{RID}/close", json=early, headers=auth)
            assert r.status == 200, await r.text()
            late = make_ballot(spec, keys["voter-0000"][0], [1, 0])
            r = await client.post(f"/v1/referendums/{RID}/ballots", json=late)
            assert r.status == 409, await r.text()

            async def tally() -> Any:
                response = await client.get(f"/v1/referendums/{RID}/tally")
                return await response.json() if response.status == 200 else None

            encrypted = await _poll(tally, 60, "the encrypted tally")
            shares = [board.decrypt(i, encrypted) for i in (1, 3)]
            bad = board.forge(2, encrypted)
            r = await client.post(f"/v1/referendums/{RID}/shares", json=bad)
            bad_problem = await r.json(content_type=None)
            assert r.status == 422, bad_problem
            for share in shares:
                r = await client.post(f"/v1/referendums/{RID}/shares", json=share)
                assert r.status == 201, await r.text()
            r = await client.post(f"/v1/referendums/{RID}/shares", json=shares[0])
            duplicate_status = r.status
            r = await client.post(f"/v1/referendums/{RID}/result", headers=auth)
            assert r.status == 200, await r.text()
            r = await client.get(f"/v1/referendums/{RID}/result")
            assert r.status == 200, await r.text()
            result = await r.json()
            r = await client.get(f"/v1/referendums/{RID}")
            assert (await r.json())["state"] == "published"
            r = await client.get(f"/v1/referendums/{RID}/supersessions?limit=100")
            page = await r.json()
            supersessions = len(page["supersessions"])
            while page["next_cursor"] is not None:
                r = await client.get(
                    f"/v1/referendums/{RID}/supersessions?limit=100&cursor={page['next_cursor']}"
                )
                page = await r.json()
                supersessions += len(page["supersessions"])
        conn = await asyncpg.connect(dsn)
        try:
            record = folder / "record"
            await export_record(conn, RID, record, signer.verifier_key())
        finally:
            await conn.close()
        yield Published(
            record,
            expected,
            result,
            bad_problem,
            duplicate_status,
            early_status,
            supersessions,
            sorted(keys),
        )
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        await pool.close()
        await _drop_database(pg_admin_dsn, dsn)


def test_published_result_equals_the_plaintext_count(published: Published) -> None:
    """The published counts are the test's own count of every voter's last choice."""
    assert published.result["counts"] == published.expected
    assert published.result["counts_by_option"] == dict(
        zip(("yes", "no"), published.expected, strict=True)
    )
    assert published.result["ballots_counted"] == VOTERS
    assert published.supersessions == REVOTERS + TWICE


def test_share_endpoint_refuses_bad_duplicate_and_early(published: Published) -> None:
    """A forged share is 422 naming trustee and check; a repeated one 409; the tally 409 early."""
    assert published.bad_share_problem["trustee_index"] == 2
    assert published.bad_share_problem["check"]
    assert published.duplicate_status == 409
    assert published.early_status == 409


def test_record_names_no_voter_id(published: Published) -> None:
    """No file of the election record holds any imported voter id (the roll lists credentials
    with their did:key, nothing else); the record still has every credential."""
    blobs = {p.name: p.read_bytes() for p in published.record.iterdir()}
    assert {"roll.csv", "ballots.bin", "referendum.json"} <= set(blobs)
    for voter in published.voter_ids:
        needle = voter.encode()
        assert not any(needle in blob for blob in blobs.values()), voter
    rows = blobs["roll.csv"].decode().splitlines()
    assert rows[0] == "credential,did" and len(rows) == VOTERS + 1
    assert all(r.split(",")[1].startswith("did:key:z6Mk") for r in rows[1:])


def test_verify_election_passes_on_the_record(published: Published) -> None:
    """verify-election, with 2 processes, finds every check holding and the same result."""
    report = verify_election(published.record, jobs=2)
    assert report.ok, report.failures
    assert report.ballots == VOTERS + REVOTERS + TWICE
    assert report.ballots_counted == VOTERS
    assert report.result == published.expected


def test_verify_election_command_exit_codes(published: Published, tmp_path: Path) -> None:
    """The command exits 0 on the record and 1, naming the check, on a tampered copy."""
    runner = CliRunner()
    ok = runner.invoke(verify_election_command, [str(published.record), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    copy = tmp_path / "record"
    shutil.copytree(published.record, copy)
    result = orjson.loads((copy / "result.json").read_bytes())
    result["counts"][0] += 1
    (copy / "result.json").write_bytes(orjson.dumps(result))
    bad = runner.invoke(verify_election_command, [str(copy), "--no-progress"])
    assert bad.exit_code == 1
    assert "FAILED manifest" in bad.output


# --- tamperings ---------------------------------------------------------------------------


def _read_ballots(root: Path) -> list[bytes]:
    data = (root / "ballots.bin").read_bytes()
    out, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        out.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return out


def _write_ballots(root: Path, ballots: list[bytes]) -> None:
    (root / "ballots.bin").write_bytes(b"".join(len(b).to_bytes(4, "big") + b for b in ballots))


def _json(root: Path, name: str) -> Any:
    return orjson.loads((root / name).read_bytes())


def _put_json(root: Path, name: str, value: Any) -> None:
    (root / name).write_bytes(orjson.dumps(value))


def _lines(root: Path, name: str) -> list[Any]:
    return [orjson.loads(x) for x in (root / name).read_bytes().splitlines() if x.strip()]


def _put_lines(root: Path, name: str, rows: list[Any]) -> None:
    (root / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


def ballot_changed(root: Path) -> None:
    ballots = _read_ballots(root)
    b = bytearray(ballots[10])
    b[-70] ^= 1  # inside the last proof
    ballots[10] = bytes(b)
    _write_ballots(root, ballots)


def ballot_dropped(root: Path) -> None:
    ballots = _read_ballots(root)
    del ballots[500]
    _write_ballots(root, ballots)


def ballot_added(root: Path) -> None:
    ballots = _read_ballots(root)
    _write_ballots(root, [*ballots, ballots[3]])


def blocks_reordered(root: Path) -> None:
    rows = _lines(root, "blocks.jsonl")
    rows[1], rows[2] = rows[2], rows[1]
    _put_lines(root, "blocks.jsonl", rows)


def checkpoint_signature_altered(root: Path) -> None:
    from referendum_core.block import Block

    rows = _lines(root, "blocks.jsonl")
    last = rows[-1]
    note: str = last["checkpoint"]
    sig_line = note.rstrip("\n").rsplit("\n", 1)[1]
    name, sig = sig_line.rsplit(" ", 1)
    flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
    last["checkpoint"] = note.replace(sig_line, f"{name} {flipped}")
    block = Block.from_json({k: v for k, v in last.items() if k != "block_hash"}, RID)
    last["block_hash"] = block.block_hash().hex()
    _put_lines(root, "blocks.jsonl", rows)


def share_altered(root: Path) -> None:
    shares = _json(root, "shares.json")
    TrusteeBoard.alter_share_value(shares[0])
    _put_json(root, "shares.json", shares)


def share_proof_altered(root: Path) -> None:
    shares = _json(root, "shares.json")
    TrusteeBoard.alter_share_proof(shares[1])
    _put_json(root, "shares.json", shares)


def result_altered(root: Path) -> None:
    result = _json(root, "result.json")
    result["counts"][1] += 1
    result["counts_by_option"]["no"] += 1
    _put_json(root, "result.json", result)


def options_swapped(root: Path) -> None:
    result = _json(root, "result.json")
    result["counts"].reverse()
    result["counts_by_option"] = dict(zip(result["options"], result["counts"], strict=True))
    _put_json(root, "result.json", result)


def _count_superseded_ballot(root: Path) -> bytes:
    """Drop the first supersession and add the superseded ballot's ciphertexts to the tally;
    return that ballot's credential."""
    from referendum_core.ballot import verify_canonical
    from referendum_core.elgamal import Ciphertext
    from referendum_core.tally import tally_hash

    rows = _lines(root, "supersessions.jsonl")
    victim = rows.pop(0)
    _put_lines(root, "supersessions.jsonl", rows)
    ref = _json(root, "referendum.json")
    spec = BallotSpec.from_definition(ref)
    ballot = verify_canonical(spec, _read_ballots(root)[victim["superseded_index"]])
    tally = _json(root, "tally.json")
    new = [
        (Ciphertext.from_bytes(bytes.fromhex(c)) + extra).to_bytes()
        for c, extra in zip(tally["ciphertexts"], ballot.ciphertexts, strict=True)
    ]
    tally["ciphertexts"] = [c.hex() for c in new]
    tally["tally_hash"] = tally_hash(ref["id"], new).hex()
    _put_json(root, "tally.json", tally)
    return ballot.credential


def superseded_ballot_counted(root: Path) -> None:
    """Drop a supersession and add the superseded ballot's ciphertexts to the tally."""
    _count_superseded_ballot(root)


def _roll_rows(root: Path) -> list[str]:
    return (root / "roll.csv").read_text().splitlines()[1:]


def _put_roll(root: Path, rows: list[str], *, republish: bool) -> None:
    """Write ``rows`` as roll.csv; with ``republish`` also commit to them in referendum.json
    (root over the rows' credentials sorted, size the number of rows), as a server would."""
    from referendum_core import merkle
    from referendum_core.roll import roll_leaf_hash

    (root / "roll.csv").write_text("credential,did\n" + "".join(r + "\n" for r in rows))
    if republish:
        keys = sorted(bytes.fromhex(r.split(",")[0]) for r in rows)
        ref = _json(root, "referendum.json")
        ref["roll_root"] = merkle.root_from_leaf_hashes([roll_leaf_hash(k) for k in keys]).hex()
        ref["roll_size"] = len(keys)
        _put_json(root, "referendum.json", ref)


def _roll_row(key: bytes) -> str:
    from referendum_core.credential import credential_to_did

    return f"{key.hex()},{credential_to_did(key)}"


def roll_key_replaced(root: Path) -> None:
    """A roll.csv entry changed: another credential (with its own did:key) in its place."""
    rows = _roll_rows(root)
    rows[5] = _roll_row(new_voter_key()[1])
    _put_roll(root, sorted(rows), republish=False)


def roll_did_replaced(root: Path) -> None:
    """A roll.csv entry's did:key changed to another key's: the credential column unchanged."""
    rows = _roll_rows(root)
    rows[5] = rows[5].split(",")[0] + "," + _roll_row(new_voter_key()[1]).split(",")[1]
    _put_roll(root, rows, republish=False)


def roll_key_small_order(root: Path) -> None:
    """Give a credential's place a small-order key (y = 1, the identity); republish the root."""
    rows = _roll_rows(root)
    rows[5] = _roll_row(b"\x01" + bytes(31))
    _put_roll(root, sorted(rows), republish=True)


def roll_credential_repeated(root: Path) -> None:
    """One credential listed twice, and the roll commitment republished over both rows."""
    rows = _roll_rows(root)
    _put_roll(root, sorted([*rows, rows[5]]), republish=True)


def ballot_of_a_credential_not_on_the_roll(root: Path) -> None:
    """Ballot 10 replaced by a valid ballot signed by a fresh credential the roll lacks."""
    ref = _json(root, "referendum.json")
    body = make_ballot(BallotSpec.from_definition(ref), new_voter_key()[0], [1, 0])
    from referendum_core.ballot_codec import ballot_from_json, encode_body

    record = ballot_from_json(body)
    ballots = _read_ballots(root)
    ballots[10] = encode_body(record) + record.signature
    _write_ballots(root, ballots)


def credential_counted_twice(root: Path) -> None:
    """A credential's superseded ballot counted as well as its last one, and the credential
    listed twice on a republished roll to make room for two voters (tally and result counts
    bumped to match)."""
    credential = _count_superseded_ballot(root)
    rows = _roll_rows(root)
    _put_roll(root, sorted([*rows, _roll_row(credential)]), republish=True)
    for name in ("tally.json", "result.json"):
        doc = _json(root, name)
        doc["ballots_counted"] += 1
        _put_json(root, name, doc)


def _edit_json(name: str, edit: Callable[[Any], None]) -> Callable[[Path], None]:
    """A tampering that loads JSON document ``name``, applies ``edit`` and writes it back."""

    def tamper(root: Path) -> None:
        value = _json(root, name)
        edit(value)
        _put_json(root, name, value)

    return tamper


def _edit_lines(name: str, edit: Callable[[list[Any]], None]) -> Callable[[Path], None]:
    """A tampering that loads JSON-lines file ``name``, applies ``edit`` and writes it back."""

    def tamper(root: Path) -> None:
        rows = _lines(root, name)
        edit(rows)
        _put_lines(root, name, rows)

    return tamper


def _named(name: str, tamper: Callable[[Path], None]) -> Callable[[Path], None]:
    tamper.__name__ = name
    return tamper


def definition_window_inverted(root: Path) -> None:
    ref = _json(root, "referendum.json")
    ref["closes_at"] = ref["opens_at"]
    _put_json(root, "referendum.json", ref)


def roll_out_of_order(root: Path) -> None:
    """Swap two credentials of the roll: the root (over the sorted roll) stays the same."""
    lines = (root / "roll.csv").read_text().splitlines()
    lines[5], lines[6] = lines[6], lines[5]
    (root / "roll.csv").write_text("\n".join(lines) + "\n")


def roll_key_upper_case(root: Path) -> None:
    """Spell one key in upper-case hex: the same key, another file."""
    lines = (root / "roll.csv").read_text().splitlines()
    key, did = lines[5].split(",")
    lines[5] = f"{key.upper()},{did}"
    (root / "roll.csv").write_text("\n".join(lines) + "\n")


def block_final_moved(root: Path) -> None:
    rows = _lines(root, "blocks.jsonl")
    rows[-1]["final"], rows[-2]["final"] = False, True
    _put_lines(root, "blocks.jsonl", rows)


def log_key_padded(root: Path) -> None:
    key = (root / "log_key.txt").read_text().strip()
    (root / "log_key.txt").write_text(f"  {key}\n\n")


def checkpoints_of_another_log(root: Path) -> None:
    """Re-sign every checkpoint with a fresh key whose name is not its origin's log."""
    from nacl.signing import SigningKey

    from referendum_core.block import Block
    from referendum_core.checkpoint import Checkpoint, sign_checkpoint, verifier_key_string

    seed = bytes(range(32))
    name = "mirror.example/log"
    public = SigningKey(seed).verify_key.encode()
    rows = _lines(root, "blocks.jsonl")
    prev = bytes(32)
    for row in rows:
        cp = Checkpoint(f"{name}/copy/{RID}", row["tree_size"], bytes.fromhex(row["root"]))
        row["checkpoint"] = sign_checkpoint(cp, name, seed)
        row["prev_hash"] = prev.hex()
        fields = {k: v for k, v in row.items() if k not in ("block_hash", "final")}
        prev = Block.from_json(fields, RID).block_hash()
        row["block_hash"] = prev.hex()
    _put_lines(root, "blocks.jsonl", rows)
    (root / "log_key.txt").write_text(verifier_key_string(name, public) + "\n")


def supersession_index_as_text(rows: list[Any]) -> None:
    rows[0]["superseded_index"] = str(rows[0]["superseded_index"])


def trustees_key_changed(trustees: Any) -> None:
    from referendum_core.group import Point

    trustees["election_public_key"] = Point.base_mul(7).to_compressed().hex()


def share_of_another_referendum(shares: Any) -> None:
    shares[0]["referendum"] = "another-referendum"


def result_duplicate_member(root: Path) -> None:
    """Repeat ``counts`` with other numbers first: a first-member-wins reader sees those."""
    result = _json(root, "result.json")
    wrong = orjson.dumps({"counts": [c + 1 for c in result["counts"]]})[:-1]
    (root / "result.json").write_bytes(wrong + b"," + orjson.dumps(result)[1:])


def _set(member: str, value: Any) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        doc[member] = value

    return edit


def _bump(member: str) -> Callable[[Any], None]:
    def edit(doc: Any) -> None:
        doc[member] += 1

    return edit


TAMPERINGS: list[tuple[Callable[[Path], None], set[str]]] = [
    (ballot_changed, {"log.tree"}),
    (ballot_dropped, {"log.tree", "log.coverage"}),
    (ballot_added, {"log.coverage"}),
    (blocks_reordered, {"log.blocks"}),
    (checkpoint_signature_altered, {"log.checkpoint"}),
    (share_altered, {"shares"}),
    (share_proof_altered, {"shares"}),
    (result_altered, {"result"}),
    (options_swapped, {"result"}),
    (superseded_ballot_counted, {"revote", "tally"}),
    (roll_key_replaced, {"roll", "ballot.credential"}),
    (roll_did_replaced, {"roll"}),
    (roll_key_small_order, {"roll"}),
    (roll_credential_repeated, {"roll"}),
    (ballot_of_a_credential_not_on_the_roll, {"ballot.credential", "log.tree"}),
    (credential_counted_twice, {"roll", "revote", "tally"}),
    # every member of every file (issue 16 §5): each of these passed before it was checked
    (
        _named("definition_state_changed", _edit_json("referendum.json", _set("state", "closed"))),
        {"definition"},
    ),
    (
        _named("definition_extra_member", _edit_json("referendum.json", _set("note", "x"))),
        {"definition"},
    ),
    (definition_window_inverted, {"definition"}),
    (roll_out_of_order, {"roll"}),
    (roll_key_upper_case, {"roll"}),
    (
        _named("block_hash_removed", _edit_lines("blocks.jsonl", lambda r: r[0].pop("block_hash"))),
        {"log.blocks"},
    ),
    (
        _named("block_extra_member", _edit_lines("blocks.jsonl", lambda r: r[0].update(note="x"))),
        {"log.blocks"},
    ),
    (block_final_moved, {"log.blocks"}),
    (log_key_padded, {"log.checkpoint"}),
    (checkpoints_of_another_log, {"log.checkpoint"}),
    (
        _named(
            "supersession_index_as_text",
            _edit_lines("supersessions.jsonl", supersession_index_as_text),
        ),
        {"revote"},
    ),
    (
        _named("supersessions_reordered", _edit_lines("supersessions.jsonl", list.reverse)),
        {"revote"},
    ),
    (
        _named(
            "supersession_extra_member",
            _edit_lines("supersessions.jsonl", lambda r: r[0].update(block_height=1)),
        ),
        {"revote"},
    ),
    (_named("tally_not_final", _edit_json("tally.json", _set("final", False))), {"tally"}),
    (
        _named("tally_options_renamed", _edit_json("tally.json", _set("options", ["no", "yes"]))),
        {"tally"},
    ),
    (_named("tally_extra_member", _edit_json("tally.json", _set("note", "x"))), {"tally"}),
    (
        _named("trustees_threshold_changed", _edit_json("trustees.json", _set("threshold", 3))),
        {"shares"},
    ),
    (_named("trustees_key_changed", _edit_json("trustees.json", trustees_key_changed)), {"shares"}),
    (_named("trustees_extra_member", _edit_json("trustees.json", _set("note", "x"))), {"shares"}),
    (
        _named(
            "share_of_another_referendum", _edit_json("shares.json", share_of_another_referendum)
        ),
        {"shares"},
    ),
    (
        _named("share_extra_member", _edit_json("shares.json", lambda s: s[0].update(note="x"))),
        {"shares"},
    ),
    (_named("shares_reordered", _edit_json("shares.json", list.reverse)), {"shares"}),
    (
        _named("result_trustees_changed", _edit_json("result.json", _set("trustees", [2, 3]))),
        {"result"},
    ),
    (_named("result_extra_member", _edit_json("result.json", _set("note", "x"))), {"result"}),
    (
        _named(
            "result_ballots_counted_changed", _edit_json("result.json", _bump("ballots_counted"))
        ),
        {"result"},
    ),
    (
        _named("result_block_height_changed", _edit_json("result.json", _bump("block_height"))),
        {"result"},
    ),
    (
        _named(
            "result_tally_hash_changed", _edit_json("result.json", _set("tally_hash", "00" * 32))
        ),
        {"result"},
    ),
    (
        _named(
            "result_of_another_referendum",
            _edit_json("result.json", _set("referendum_id", "another-referendum")),
        ),
        {"result"},
    ),
    (result_duplicate_member, {"result"}),
]


@pytest.mark.parametrize(("tamper", "checks"), TAMPERINGS, ids=[t.__name__ for t, _ in TAMPERINGS])
def test_tampered_record_fails_naming_the_check(
    published: Published, tmp_path: Path, tamper: Callable[[Path], None], checks: set[str]
) -> None:
    """Each tampering (manifest rewritten to match) makes verification fail at its check."""
    copy = tmp_path / "record"
    shutil.copytree(published.record, copy)
    tamper(copy)
    write_manifest(copy, RID)
    report = verify_election(copy, jobs=2)
    assert not report.ok
    assert checks <= set(report.failed_checks), report.failures
    assert "manifest" not in report.failed_checks


def file_added_and_listed(root: Path) -> None:
    """Add a file and list it, with its right digest, in the manifest."""
    (root / "notes.txt").write_text("trust me\n")
    manifest = _json(root, "manifest.json")
    manifest["files"]["notes.txt"] = {
        "sha256": hashlib.sha256(b"trust me\n").hexdigest(),
        "bytes": 9,
    }
    _put_json(root, "manifest.json", manifest)


def folder_added(root: Path) -> None:
    (root / "extra").mkdir()


MANIFEST_TAMPERINGS: list[Callable[[Path], None]] = [
    file_added_and_listed,
    folder_added,
    _named(
        "manifest_of_another_referendum",
        _edit_json("manifest.json", _set("referendum_id", "another-referendum")),
    ),
    _named("manifest_extra_member", _edit_json("manifest.json", _set("note", "x"))),
    _named(
        "manifest_entry_extra_member",
        _edit_json("manifest.json", lambda m: m["files"]["tally.json"].update(note="x")),
    ),
]


@pytest.mark.parametrize(
    "tamper", MANIFEST_TAMPERINGS, ids=[t.__name__ for t in MANIFEST_TAMPERINGS]
)
def test_tampered_manifest_fails_the_manifest_check(
    published: Published, tmp_path: Path, tamper: Callable[[Path], None]
) -> None:
    """A manifest listing more than the record, or saying more than it must, fails (alone)."""
    copy = tmp_path / "record"
    shutil.copytree(published.record, copy)
    tamper(copy)
    report = verify_election(copy, jobs=2)
    assert report.failed_checks == ["manifest"], report.failures


def test_ballot_change_names_the_failed_ballot_check(published: Published, tmp_path: Path) -> None:
    """A changed ballot is reported as a ballot check naming what failed in it."""
    copy = tmp_path / "record"
    shutil.copytree(published.record, copy)
    ballot_changed(copy)
    write_manifest(copy, RID)
    report = verify_election(copy, jobs=1)
    assert any(c.startswith("ballot.") for c in report.failed_checks), report.failures
    assert any("ballot 10" in f.detail for f in report.failures)


def test_wrong_manifest_hash_is_caught(published: Published, tmp_path: Path) -> None:
    """A manifest entry that does not match its file fails the manifest check (and only it)."""
    copy = tmp_path / "record"
    shutil.copytree(published.record, copy)
    manifest = _json(copy, "manifest.json")
    manifest["files"]["tally.json"]["sha256"] = "00" * 32
    _put_json(copy, "manifest.json", manifest)
    report = verify_election(copy, jobs=1)
    assert report.failed_checks == ["manifest"], report.failures
    pinned = verify_election(published.record, jobs=1, manifest_sha256="11" * 32)
    assert pinned.failed_checks == ["manifest"]
