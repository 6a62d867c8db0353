"""verify-election on small records: parallel and serial agree, and each check can fail."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from auditor.verify_election import (
    read_roll,
    verify_election,
)
from referendum_core.credential import credential_to_did
from server.record import write_manifest
from tests.tally.common import publish_small_election


@pytest.fixture
async def small_record(database_url: str, tmp_path: Path) -> tuple[Path, list[int]]:
    """A published 30-voter last_counts election with 5 re-votes, exported."""
    out = tmp_path / "record"
    _, counts = await publish_small_election(database_url, out)
    return out, counts


def _copy(record: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(record, copy)
    return copy


async def test_serial_and_parallel_reports_agree(small_record: tuple[Path, list[int]]) -> None:
    """One and two processes both pass the record and recompute the same result."""
    record, counts = small_record
    one = verify_election(record, jobs=1)
    two = verify_election(record, jobs=2)
    assert one.ok and two.ok, (one.failures, two.failures)
    assert one.result == two.result == counts
    assert one.ballots == two.ballots == 35
    assert one.ballots_counted == 30


async def test_unlisted_and_missing_files_fail_the_manifest(
    small_record: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """A file not in the manifest, or one listed but missing, fails the manifest check."""
    copy = _copy(small_record[0], tmp_path)
    (copy / "extra.txt").write_text("x")
    report = verify_election(copy, jobs=1)
    assert report.failed_checks == ["manifest"]
    assert "extra.txt" in report.failures[0].detail
    (copy / "extra.txt").unlink()
    (copy / "trustees.json").unlink()
    report = verify_election(copy, jobs=1)
    assert "manifest" in report.failed_checks and "shares" in report.failed_checks


async def test_credential_missing_from_roll_is_named(
    small_record: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """A roll without one credential fails the roll commitment and that credential's ballots."""
    copy = _copy(small_record[0], tmp_path)
    lines = (copy / "roll.csv").read_text().splitlines()
    del lines[1]
    (copy / "roll.csv").write_text("\n".join(lines) + "\n")
    write_manifest(copy, orjson.loads((copy / "referendum.json").read_bytes())["id"])
    report = verify_election(copy, jobs=2)
    assert "roll" in report.failed_checks
    assert "ballot.credential" in report.failed_checks


async def test_supersession_naming_wrong_hash_fails(
    small_record: tuple[Path, list[int]], tmp_path: Path
) -> None:
    """A supersession whose indexes are right but whose hash is not fails the revote check."""
    copy = _copy(small_record[0], tmp_path)
    rows = [orjson.loads(x) for x in (copy / "supersessions.jsonl").read_bytes().splitlines()]
    rows[0]["superseding_hash"] = "ab" * 32
    (copy / "supersessions.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    write_manifest(copy, orjson.loads((copy / "referendum.json").read_bytes())["id"])
    report = verify_election(copy, jobs=1)
    assert report.failed_checks == ["revote"], report.failures


async def test_forbid_record_passes_and_a_repeated_voter_fails(
    database_url: str, tmp_path: Path
) -> None:
    """Under 'forbid' a clean record passes; a second ballot of a voter fails the revote check."""
    record = tmp_path / "forbid"
    election, counts = await publish_small_election(
        database_url, record, voters=12, policy="forbid"
    )
    report = verify_election(record, jobs=1)
    assert report.ok, report.failures
    assert report.result == counts
    copy = _copy(record, tmp_path)
    data = (copy / "ballots.bin").read_bytes()
    first_len = int.from_bytes(data[:4], "big")
    (copy / "ballots.bin").write_bytes(data + data[: 4 + first_len])
    write_manifest(copy, election.rid)
    report = verify_election(copy, jobs=1)
    assert "revote" in report.failed_checks
    assert "ballot" in report.failed_checks  # the same ballot twice
    assert "log.coverage" in report.failed_checks


def _roll_line(key: bytes) -> str:
    return f"{key.hex()},{credential_to_did(key)}\n"


def test_read_roll_reports_a_repeated_credential(tmp_path: Path) -> None:
    """A roll listing a credential twice is reported (once per repeat), and both rows are read
    (so the size and root cannot match a commitment to the distinct ones)."""
    a, b = bytes([1]) * 32, bytes([2]) * 32
    path = tmp_path / "roll.csv"
    path.write_text("credential,did\n" + _roll_line(a) + _roll_line(b) + _roll_line(b))
    problems: list[str] = []
    assert read_roll(path, problems) == [a, b, b]
    assert len(problems) == 1 and "line 4" in problems[0] and "repeated" in problems[0]


def test_read_roll_reports_what_the_canonical_roll_forbids(tmp_path: Path) -> None:
    """Credentials out of byte order, upper-case hex, a did:key of another key, CRLF and no
    final newline are each reported; a line naming no key is an error."""
    keys = [bytes([n]) * 32 for n in (1, 2, 3, 4, 5)]
    path = tmp_path / "roll.csv"
    path.write_bytes(
        (
            "credential,did\n"
            + _roll_line(keys[1])
            + _roll_line(keys[0])  # line 3: out of order
            + f"{keys[2].hex().upper()},{credential_to_did(keys[2])}\r\n"  # line 4
            + f"{keys[3].hex()},{credential_to_did(keys[0])}\n"  # line 5: another key's did
            + _roll_line(keys[4]).rstrip("\n")  # line 6: no final newline
        ).encode()
    )
    problems: list[str] = []
    assert read_roll(path, problems) == [keys[1], keys[0], keys[2], keys[3], keys[4]]
    assert len(problems) == 4, problems
    assert "line 3" in problems[0] and "out of order" in problems[0]
    assert "line 4" in problems[1]
    assert "line 5" in problems[2] and "did:key" in problems[2]
    assert "line 6" in problems[3]
    canonical = tmp_path / "canonical.csv"
    canonical.write_text("credential,did\n" + "".join(_roll_line(k) for k in keys))
    problems = []
    read_roll(canonical, problems)
    assert problems == []
    for bad in ("voter_id,public_key\n", "credential,did\nv1," + "ab" * 32 + "\n"):
        canonical.write_text(bad)
        with pytest.raises(ValueError):
            read_roll(canonical)


def test_record_shape_doctests() -> None:
    """The examples of referendum_core.record (strict JSON, member problems) hold."""
    import doctest

    import referendum_core.record

    result = doctest.testmod(referendum_core.record)
    assert result.attempted >= 5 and result.failed == 0


def test_not_a_folder_fails_cleanly(tmp_path: Path) -> None:
    """A missing record is a failed manifest check, not an exception."""
    report = verify_election(tmp_path / "absent", jobs=1)
    assert report.failed_checks == ["manifest"]


GARBAGE = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b'"x"',
    b"[1, 2]",
    b'{"a": [null]}',
    b"\xff\xfe\x00",
    b'{"ciphertexts": 5, "commitments": {}, "counts": "x", "files": []}',
]


@pytest.mark.parametrize(
    "name",
    [
        "manifest.json",
        "referendum.json",
        "roll.csv",
        "ballots.bin",
        "blocks.jsonl",
        "log_key.txt",
        "supersessions.jsonl",
        "tally.json",
        "trustees.json",
        "shares.json",
        "result.json",
    ],
)
async def test_garbage_in_any_file_is_a_named_failure_never_a_crash(
    small_record: tuple[Path, list[int]], tmp_path: Path, name: str
) -> None:
    """Whatever a file holds, verify-election reports failed checks and raises nothing."""
    copy = _copy(small_record[0], tmp_path)
    rid = orjson.loads((copy / "referendum.json").read_bytes())["id"]
    for garbage in GARBAGE:
        (copy / name).write_bytes(garbage)
        if name != "manifest.json":
            write_manifest(copy, rid)
        report = verify_election(copy, jobs=1)
        assert not report.ok, (name, garbage)
        assert report.failed_checks


def test_verifier_imports_only_the_core_stdlib_click_and_tqdm() -> None:
    """Importing verify-election loads no server, batcher, HTTP or database module."""
    import subprocess
    import sys

    code = (
        "import sys, auditor.verify_election, auditor.verify_decryption; "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    assert loaded.isdisjoint(
        {"server", "batcher", "aiohttp", "asyncpg", "orjson", "locust", "trustee", "bench"}
    )
    assert {"referendum_core", "click", "tqdm"} <= loaded
