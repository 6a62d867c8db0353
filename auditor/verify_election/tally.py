"""After the ballots: the re-vote policy, the supersessions, and the encrypted tally."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from auditor.verify_election.ballots import ChunkResult
from auditor.verify_election.report import ElectionReport, Stop, parse_hex, read_json, read_jsonl
from referendum_core.ballot import BallotSpec, plan
from referendum_core.block import Block
from referendum_core.tally import full_tally, sum_explicit, tally_hash

__all__ = ["check_revotes", "check_supersession_hashes", "check_tally"]


def check_revotes(
    report: ElectionReport,
    root: Path,
    policy: str,
    pairs: Sequence[tuple[int, int]],
) -> None:
    try:
        listed_rows = read_jsonl(report, root, "supersessions.jsonl", "revote")
    except Stop:
        return
    if policy == "forbid":
        for old, new in pairs:
            report.fail(
                "revote",
                f"re-voting is forbidden, yet ballot {new} repeats the voter of ballot {old}",
            )
        if listed_rows:
            report.fail("revote", "supersessions listed under the 'forbid' policy")
        return
    listed: list[tuple[int, int]] = []
    for row in listed_rows:
        try:
            listed.append((int(row["superseded_index"]), int(row["superseding_index"])))
        except (KeyError, TypeError, ValueError):
            report.fail("revote", f"malformed supersession {row!r}")
    for pair in sorted(set(pairs) - set(listed)):
        report.fail(
            "revote", f"ballot {pair[0]} is superseded by ballot {pair[1]} but not listed as such"
        )
    for pair in sorted(set(listed) - set(pairs)):
        report.fail("revote", f"listed supersession {pair[0]} -> {pair[1]} is not the log's")


def check_supersession_hashes(report: ElectionReport, root: Path, hashes: bytes, n: int) -> None:
    try:
        rows = json.loads(
            b"["
            + b",".join(
                line
                for line in (root / "supersessions.jsonl").read_bytes().splitlines()
                if line.strip()
            )
            + b"]"
        )
    except (OSError, ValueError):
        return  # reported by check_revotes
    for row in rows:
        try:
            old, new = int(row["superseded_index"]), int(row["superseding_index"])
            if not (0 <= old < n and 0 <= new < n):
                raise ValueError("index out of range")
            if (
                row["superseded_hash"] != hashes[old * 32 : old * 32 + 32].hex()
                or row["superseding_hash"] != hashes[new * 32 : new * 32 + 32].hex()
            ):
                report.fail("revote", f"supersession {old} -> {new} names other ballot hashes")
        except (KeyError, TypeError, ValueError) as exc:
            report.fail("revote", f"malformed supersession {row!r}: {exc}")


def check_tally(
    report: ElectionReport,
    root: Path,
    spec: BallotSpec,
    blocks: Sequence[Block],
    results: Sequence[ChunkResult],
) -> list[bytes] | None:
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
        report.fail("tally", "some voter has more than one counted ballot")
    try:
        recorded = [parse_hex(c, 130) for c in tally["ciphertexts"]]
        if tally["referendum_id"] != spec.referendum_id or len(recorded) != k:
            raise ValueError("tally of another referendum or option count")
    except (KeyError, TypeError, ValueError) as exc:
        report.fail("tally", f"tally.json: {exc}")
        return None
    for j, (mine, theirs) in enumerate(zip(sums, recorded, strict=True)):
        if mine != theirs:
            report.fail(
                "tally",
                f"option {j} ({spec.options[j]!r}): the recomputed encrypted "
                "sum differs from tally.json",
            )
    if tally.get("ballots_counted") != len(counted):
        report.fail(
            "tally",
            f"tally.json counts {tally.get('ballots_counted')} ballots, the log {len(counted)}",
        )
    if blocks and (
        tally.get("block_height") != blocks[-1].height
        or tally.get("tree_size") != blocks[-1].tree_size
    ):
        report.fail("tally", "tally.json is not the tally at the final block")
    if tally.get("tally_hash") != tally_hash(spec.referendum_id, recorded).hex():
        report.fail("tally", "tally.json's tally_hash does not match its ciphertexts")
    return recorded
