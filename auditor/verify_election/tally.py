"""After the ballots: the re-vote policy, the supersessions, and the encrypted tally."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.verify_election.ballots import ChunkResult
from auditor.verify_election.report import (
    ElectionReport,
    Stop,
    check_members,
    is_count,
    parse_hex,
    read_json,
    read_jsonl,
)
from referendum_core.ballot import BallotSpec, plan
from referendum_core.block import Block
from referendum_core.elgamal import Ciphertext
from referendum_core.errors import CoreError
from referendum_core.record import SUPERSESSION_MEMBERS, TALLY_MEMBERS
from referendum_core.tally import full_tally, sum_explicit, tally_hash

__all__ = ["FinalTally", "check_revotes", "check_tally"]


@dataclass(frozen=True)
class FinalTally:
    """The encrypted tally ``tally.json`` states, with what the log says it must be of."""

    ciphertexts: list[bytes]
    """The ciphertexts of ``tally.json`` (checked against the recomputed sums)."""
    tally_hash: str
    """``tally_hash`` of those ciphertexts, recomputed."""
    ballots_counted: int
    """The number of ballots that count, recomputed from the log."""
    block_height: int | None
    tree_size: int | None
    """Height and tree size of the record's last block (``None`` without a usable block)."""


def _supersession(row: Any, n: int) -> tuple[int, int, str, str]:
    """One line of ``supersessions.jsonl`` as (old, new, old hash, new hash); ValueError."""
    if not isinstance(row, dict) or set(row) != set(SUPERSESSION_MEMBERS):
        raise ValueError(f"its members are not {', '.join(SUPERSESSION_MEMBERS)}")
    old, new = row["superseded_index"], row["superseding_index"]
    if not (is_count(old) and is_count(new) and old < new < n):
        raise ValueError("its indexes are not two log indexes in order")
    return (
        old,
        new,
        parse_hex(row["superseded_hash"], 32).hex(),
        parse_hex(row["superseding_hash"], 32).hex(),
    )


def check_revotes(
    report: ElectionReport,
    root: Path,
    policy: str,
    pairs: Sequence[tuple[int, int]],
    hashes: bytes,
) -> None:
    """``supersessions.jsonl`` against the supersessions recomputed from log order.

    ``hashes`` are the ballots' SHA-256 hashes laid end to end in log order.
    """
    try:
        rows = read_jsonl(report, root, "supersessions.jsonl", "revote")
    except Stop:
        return
    if policy == "forbid":
        for old, new in pairs:
            report.fail(
                "revote",
                f"re-voting is forbidden, yet ballot {new} repeats the credential of ballot {old}",
            )
        if rows:
            report.fail("revote", "supersessions listed under the 'forbid' policy")
        return
    n = len(hashes) // 32
    listed: list[tuple[int, int]] = []
    for number, row in enumerate(rows, start=1):
        try:
            old, new, old_hash, new_hash = _supersession(row, n)
        except (TypeError, ValueError) as exc:
            report.fail("revote", f"supersessions.jsonl line {number}: {exc}")
            continue
        if listed and old <= listed[-1][0]:
            report.fail(
                "revote", f"supersessions.jsonl line {number}: not in superseded_index order"
            )
        listed.append((old, new))
        if (
            old_hash != hashes[old * 32 : old * 32 + 32].hex()
            or new_hash != hashes[new * 32 : new * 32 + 32].hex()
        ):
            report.fail("revote", f"supersession {old} -> {new} names other ballot hashes")
    for pair in sorted(set(pairs) - set(listed)):
        report.fail(
            "revote", f"ballot {pair[0]} is superseded by ballot {pair[1]} but not listed as such"
        )
    for pair in sorted(set(listed) - set(pairs)):
        report.fail("revote", f"listed supersession {pair[0]} -> {pair[1]} is not the log's")


def check_tally(
    report: ElectionReport,
    root: Path,
    spec: BallotSpec,
    blocks: Sequence[Block],
    results: Sequence[ChunkResult],
) -> FinalTally | None:
    """``tally.json`` against the homomorphic sum of the ballots that count."""
    try:
        tally = read_json(report, root, "tally.json", "tally")
    except Stop:
        return None
    k = len(spec.options)
    shape = plan(spec)
    counted = [v for r in results for v in r.counted_voters]
    explicit = sum_explicit([r.sums for r in results], shape.explicit)
    sums = [ct.to_bytes() for ct in full_tally(explicit, len(counted), shape.implied)]
    report.ballots_counted = len(counted)
    if len(set(counted)) != len(counted):
        report.fail("tally", "some credential has more than one counted ballot")
    check_members(report, "tally", "tally.json", tally, TALLY_MEMBERS)
    try:
        recorded = [parse_hex(c, 130) for c in tally["ciphertexts"]]
        if tally["referendum_id"] != spec.referendum_id or len(recorded) != k:
            raise ValueError("tally of another referendum or option count")
        for c in recorded:
            Ciphertext.from_bytes(c)
    except (KeyError, TypeError, ValueError) as exc:
        report.fail("tally", f"tally.json: {exc}")
        return None
    except CoreError as exc:
        report.fail("tally", f"tally.json: {exc.check}: {exc}")
        return None
    for j, (mine, theirs) in enumerate(zip(sums, recorded, strict=True)):
        if mine != theirs:
            report.fail(
                "tally",
                f"option {j} ({spec.options[j]!r}): the recomputed encrypted "
                "sum differs from tally.json",
            )
    if tally.get("referendum") != spec.referendum_id:
        report.fail("tally", "tally.json's referendum is not the record's")
    if tally.get("options") != list(spec.options):
        report.fail("tally", "tally.json lists other options or another order")
    if tally.get("final") is not True:
        report.fail("tally", "tally.json is not marked final")
    counted_n = tally.get("ballots_counted")
    if not is_count(counted_n) or counted_n != len(counted):
        report.fail("tally", f"tally.json counts {counted_n!r} ballots, the log {len(counted)}")
    last = blocks[-1] if blocks else None
    height, size = (None, None) if last is None else (last.height, last.tree_size)
    for member, expected in (("block_height", height), ("tree_size", size)):
        value = tally.get(member)
        if not is_count(value) or (expected is not None and value != expected):
            report.fail("tally", f"tally.json's {member} {value!r} is not the final block's")
    digest = tally_hash(spec.referendum_id, recorded).hex()
    if tally.get("tally_hash") != digest:
        report.fail("tally", "tally.json's tally_hash does not match its ciphertexts")
    return FinalTally(recorded, digest, len(counted), height, size)
