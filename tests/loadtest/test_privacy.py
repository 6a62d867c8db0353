"""The demo's privacy scan: it finds a leaked voter id wherever it is, and none after a demo."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg
import pytest

from loadtest.demo import run_demo
from loadtest.privacy import scan_for_voter_ids

ROLL_IDS = ["v0000000007", "v0000000042", "v0000001234"]


def _roll(tmp_path: Path) -> Path:
    path = tmp_path / "roll.csv"
    path.write_text("voter_id,credential\n" + "".join(f"{v},{'ab' * 32}\n" for v in ROLL_IDS))
    return path


async def test_scan_finds_ids_in_clear_and_as_hex_in_files(tmp_path: Path) -> None:
    """An id written in clear or as the hex of its bytes is found and named by file; ids that
    are not on the roll, and hashes of roll ids, are not reported."""
    record = tmp_path / "record"
    (record / "sub").mkdir(parents=True)
    (record / "clean.json").write_text(
        '{"v0000000008": 1, "hash": "' + hashlib.sha256(b"v0000000042").hexdigest() + '"}'
    )
    (record / "sub" / "leak.log").write_text('{"event": "accepted", "voter": "v0000000042"}\n')
    (record / "hex.bin").write_bytes(b"\\x" + b"v0000001234".hex().encode() + b"\n")
    scan = await scan_for_voter_ids(_roll(tmp_path), dsn=None, paths=[record])
    assert scan.voter_ids == 3 and scan.files == 3 and not scan.clean
    assert scan.found == {
        str(record / "sub" / "leak.log"): ["v0000000042"],
        str(record / "hex.bin"): ["v0000001234"],
    }


async def test_scan_finds_ids_in_any_table_of_the_database(
    database_url: str, tmp_path: Path
) -> None:
    """A roll id in a text column, or in a bytea column as its UTF-8 bytes, is found in that
    table; the migrated schema's own tables, holding nothing of the roll, are clean."""
    roll = _roll(tmp_path)
    clean = await scan_for_voter_ids(roll, dsn=database_url, paths=[])
    assert clean.clean and clean.tables > 5
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE notes (id int, note text, raw bytea)")
        await conn.execute(
            "INSERT INTO notes VALUES (1, 'voter v0000000007 called', NULL),"
            " (2, NULL, convert_to('v0000001234', 'UTF8')), (3, 'v0000000009', NULL)"
        )
    finally:
        await conn.close()
    scan = await scan_for_voter_ids(roll, dsn=database_url, paths=[])
    assert scan.found == {"table public.notes": ["v0000000007", "v0000001234"]}
    assert scan.rows >= 3


@pytest.mark.slow
async def test_demo_leaks_no_voter_id(pg_admin_dsn: str, tmp_path: Path) -> None:
    """A whole demo (servers, load, tally, record, verify-election): no voter id of its roll in
    the record, the processes' logs or any row of its database, which held the roll."""
    facts = await run_demo(
        voters=300, ballots=120, duration_s=8, servers=1, users=4, report_dir=tmp_path / "demo"
    )
    assert facts["verify_ok"], facts.get("verify_failures")
    privacy = facts["privacy"]
    assert privacy["clean"], privacy["found"]
    assert privacy["voter_ids"] == 300
    assert privacy["tables"] > 5 and privacy["rows"] >= 300 + 120  # the roll and the ballots
    assert privacy["files"] >= 10  # the record's files and the logs


def test_listing_problem_names_extra_members_and_wrong_credentials() -> None:
    """A block listing with exactly the public members and each body's own credential passes;
    a voter id or acceptance time beside it, another credential, or a bad body is named."""
    from loadtest.privacy import listing_problem
    from referendum_core.ballot_codec import BallotRecord, encode_body

    credential = bytes(range(32))
    record = BallotRecord("r1", credential, (bytes(130),), (bytes(128),), None, bytes(64))
    body = (encode_body(record) + record.signature).hex()
    good = {"index": 4, "ballot_hash": "00" * 32, "body": body, "credential": credential.hex()}
    assert listing_problem({"ballots": [good, good]}) is None
    problems = [
        listing_problem({"ballots": [{**good, "voter_id": "v0000000001"}]}),
        listing_problem({"ballots": [{**good, "accepted_at": "2026-12-04T21:00:00Z"}]}),
        listing_problem({"ballots": [{**good, "credential": "11" * 32}]}),
        listing_problem({"ballots": [{**good, "body": "zz"}]}),
    ]
    assert "voter_id" in str(problems[0]) and "accepted_at" in str(problems[1])
    assert "another credential" in str(problems[2]) and "malformed" in str(problems[3])
