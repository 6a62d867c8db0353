"""``referendum audit verify-election RECORD``: re-verify a whole election from its record alone.

The record is the folder ``referendum record export`` writes (format: ``docs/record.md``).
Nothing here talks to a server; it imports only the pure core, the standard library, click and
tqdm. Every check that fails is reported by name, and verification goes on, so one run lists
everything that is wrong:

=====================  ======================================================================
check                  what is recomputed
=====================  ======================================================================
``manifest``           every file's SHA-256 and size against ``manifest.json`` (and the
                       manifest's own hash when ``--manifest-sha256`` pins it)
``definition``         ``referendum.json`` parses into a ballot spec
``roll``               the roll's RFC 9162 root and size equal the published commitment;
                       every key is a valid credential key
``log.blocks``         every block parses, its hash matches, heights and index ranges chain,
                       ``prev_hash`` links, exactly the last block is final
``log.checkpoint``     every checkpoint's Ed25519 signature by the log key, its origin, and
                       that it states the block's size and root
``log.tree``           the Merkle root recomputed from the ballots after every block
``log.coverage``       the blocks cover exactly the ballots in the record
``ballot``             every ballot: voter on the roll, signature, every proof
                       (``verify_canonical``), no ballot twice
``revote``             the re-vote policy: which ballot is the last of each voter,
                       recomputed from log order, against ``supersessions.jsonl``
``tally``              the homomorphic sum of the ballots that count against ``tally.json``
``shares``             every decryption share's Chaum–Pedersen proof against the tally and the
                       trustee's public key share derived from ``trustees.json``
``result``             the Lagrange combination of the shares, and each count ``c`` of
                       ``result.json`` satisfying ``c·G = combined`` for its option
=====================  ======================================================================

Ballots are verified in parallel (``ProcessPoolExecutor`` over chunks of the ballot file;
``--jobs`` defaults to every core) with a progress bar. Exit status 0 only when every check
holds, 1 otherwise, 2 for bad usage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import multiprocessing
import os
import struct
import sys
import time
from array import array
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from referendum_core import merkle
from referendum_core.ballot import BallotSpec, ciphertext_bytes, plan, verify_canonical, voter_of
from referendum_core.block import Block, BlockError, check_link
from referendum_core.checkpoint import parse_verifier_key
from referendum_core.credential import bad_key_positions
from referendum_core.errors import CoreError, EncodingError
from referendum_core.record import RECORD_FILES, RECORD_FORMAT, digest_chunks
from referendum_core.roll import roll_leaf_hash
from referendum_core.tally import full_tally, sum_explicit, supersessions, tally_hash

__all__ = [
    "RECORD_FILES",
    "RECORD_FORMAT",
    "ElectionReport",
    "Failure",
    "verify_election",
    "verify_election_command",
]

CHUNK_BALLOTS = 1000
MAX_DETAILS = 20
"""Failures of one check listed in full; the rest are counted."""


@dataclass(frozen=True)
class Failure:
    """One failed check: its name and what was found."""

    check: str
    detail: str


@dataclass
class ElectionReport:
    """Outcome of :func:`verify_election`."""

    failures: list[Failure] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ballots: int = 0
    ballots_counted: int = 0
    seconds: float = 0.0
    jobs: int = 1
    result: list[int] | None = None

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        return not self.counts

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that failed, in the order first seen."""
        return list(self.counts)

    def fail(self, check: str, detail: str) -> None:
        """Record one failure (only the first :data:`MAX_DETAILS` per check keep details)."""
        self.counts[check] += 1
        if self.counts[check] <= MAX_DETAILS:
            self.failures.append(Failure(check, detail))


class _Stop(Exception):
    """A check whose failure leaves nothing for the checks after it to work on."""


# --- small readers ------------------------------------------------------------------------


def _sha256_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as handle:
        return digest_chunks(iter(lambda: handle.read(1 << 20), b""))


def _json(report: ElectionReport, root: Path, name: str, check: str) -> Any:
    try:
        return json.loads((root / name).read_bytes())
    except (OSError, ValueError) as exc:
        report.fail(check, f"{name}: {exc}")
        raise _Stop from exc


def _jsonl(report: ElectionReport, root: Path, name: str, check: str) -> list[Any]:
    try:
        text = (root / name).read_bytes()
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        report.fail(check, f"{name}: {exc}")
        raise _Stop from exc


def _hex(value: Any, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a hex string")
    raw = bytes.fromhex(value)
    if raw.hex() != value or (size is not None and len(raw) != size):
        raise ValueError("not canonical hex of the right size")
    return raw


# --- checks -------------------------------------------------------------------------------


def _check_manifest(report: ElectionReport, root: Path, pinned: str | None) -> None:
    path = root / "manifest.json"
    if pinned is not None:
        try:
            actual = _sha256_file(path)[0]
        except OSError:
            actual = ""
        if actual != pinned.lower():
            report.fail("manifest", f"manifest.json hashes to {actual}, not the pinned {pinned}")
    manifest = _json(report, root, "manifest.json", "manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != RECORD_FORMAT:
        report.fail("manifest", f"manifest is not {RECORD_FORMAT}")
        return
    for name in RECORD_FILES:
        if name not in files:
            report.fail("manifest", f"{name} is not listed")
    present = {p.name for p in root.iterdir() if p.is_file()} - {"manifest.json"}
    for name in sorted(present - set(files)):
        report.fail("manifest", f"{name} is in the record but not in the manifest")
    for name, entry in sorted(files.items()):
        path = root / name
        if "/" in name or name.startswith(".") or not path.is_file():
            report.fail("manifest", f"{name} is listed but missing")
            continue
        digest, size = _sha256_file(path)
        if not isinstance(entry, dict) or entry.get("sha256") != digest:
            report.fail("manifest", f"{name}: SHA-256 {digest} differs from the manifest")
        elif entry.get("bytes") != size:
            report.fail("manifest", f"{name}: {size} bytes, the manifest says {entry.get('bytes')}")


def _load_definition(report: ElectionReport, root: Path) -> tuple[dict[str, Any], BallotSpec]:
    ref = _json(report, root, "referendum.json", "definition")
    try:
        spec = BallotSpec.from_definition(ref)
        if ref["revote_policy"] not in ("forbid", "last_counts"):
            raise ValueError("unknown re-vote policy")
        int(ref["threshold_k"])
        int(ref["trustees_n"])
    except (KeyError, TypeError, ValueError, CoreError) as exc:
        report.fail("definition", f"referendum.json: {exc!r}")
        raise _Stop from exc
    return ref, spec


def read_roll(path: Path) -> dict[str, bytes]:
    """``roll.csv`` (``voter_id,public_key`` header, then one voter a line) as a dict.

    Raises ValueError on a malformed line or a repeated voter.
    """
    voters: dict[str, bytes] = {}
    with path.open("r", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n")
        if header != "voter_id,public_key":
            raise ValueError("roll.csv must start with 'voter_id,public_key'")
        for number, line in enumerate(handle, start=2):
            voter, sep, key_hex = line.rstrip("\n").partition(",")
            key = bytes.fromhex(key_hex)
            if not sep or len(key) != 32 or voter in voters:
                raise ValueError(f"roll.csv line {number} is malformed or repeated")
            voters[voter] = key
    return voters


def _check_roll(report: ElectionReport, root: Path, ref: dict[str, Any]) -> dict[str, bytes]:
    try:
        voters = read_roll(root / "roll.csv")
    except (OSError, ValueError) as exc:
        report.fail("roll", str(exc))
        return {}
    ordered = sorted(voters, key=lambda v: v.encode())
    for position in bad_key_positions(b"".join(voters[v] for v in ordered)):
        report.fail("roll", f"voter {ordered[position]!r} has no valid credential key")
    computed = merkle.root_from_leaf_hashes([roll_leaf_hash(v, voters[v]) for v in ordered])
    if ref.get("roll_root") != computed.hex():
        report.fail("roll", f"roll root {computed.hex()} is not the published commitment")
    if ref.get("roll_size") != len(voters):
        report.fail("roll", f"roll has {len(voters)} voters, the commitment says "
                            f"{ref.get('roll_size')}")  # fmt: skip
    return voters


def _check_blocks(
    report: ElectionReport, root: Path, rid: str, pinned_key: str | None
) -> list[Block]:
    try:
        log_key = (root / "log_key.txt").read_text(encoding="utf-8").strip()
        parse_verifier_key(log_key)
    except (OSError, UnicodeDecodeError, CoreError) as exc:
        report.fail("log.checkpoint", f"log_key.txt: {exc}")
        log_key = ""
    if pinned_key is not None and log_key != pinned_key:
        report.fail("log.checkpoint", "the record's log key is not the pinned --log-key")
        log_key = pinned_key
    rows = _jsonl(report, root, "blocks.jsonl", "log.blocks")
    blocks: list[Block] = []
    prev: Block | None = None
    for number, obj in enumerate(rows, start=1):
        try:
            block = Block.from_json(obj, rid)
        except CoreError as exc:
            report.fail("log.blocks", f"block line {number}: {exc}")
            raise _Stop from exc
        try:
            check_link(prev, block)
        except BlockError as exc:
            report.fail("log.blocks", str(exc))
        final = obj.get("final") if isinstance(obj, dict) else None
        if final is not (number == len(rows)):
            report.fail("log.blocks", f"block {block.height}: only the last block is final")
        if log_key:
            try:
                cp = block.verify_checkpoint(log_key)
                if cp.origin.rsplit("/", 1)[-1] != rid:
                    report.fail(
                        "log.checkpoint",
                        f"block {block.height}: origin {cp.origin!r} is another log",
                    )
            except CoreError as exc:
                report.fail("log.checkpoint", f"block {block.height}: {exc.check}: {exc}")
        blocks.append(block)
        prev = block
    if not blocks:
        report.fail("log.blocks", "the record has no block")
    return blocks


def _scan_ballots(report: ElectionReport, path: Path) -> tuple[array[int], list[str | None]]:
    """Offsets of every ballot in ``ballots.bin`` and the voter id each names (unchecked)."""
    offsets: array[int] = array("Q")
    voters: list[str | None] = []
    unpack = struct.unpack_from
    with path.open("rb") as handle:
        empty = path.stat().st_size == 0
        data = b"" if empty else mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            size = len(data)
            pos = 0
            while pos < size:
                if pos + 4 > size:
                    report.fail("ballot", "ballots.bin ends inside a length prefix")
                    break
                (length,) = unpack(">I", data, pos)
                end = pos + 4 + length
                if end > size:
                    report.fail("ballot", "ballots.bin ends inside a ballot")
                    break
                offsets.append(pos)
                try:
                    voters.append(voter_of(data, pos + 4))
                except EncodingError:
                    voters.append(None)
                pos = end
            offsets.append(pos)
        finally:
            if isinstance(data, mmap.mmap):
                data.close()
    return offsets, voters


# --- the parallel part --------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


@dataclass(frozen=True)
class _ChunkResult:
    first: int
    count: int
    leaf_hashes: bytes
    ballot_hashes: bytes
    failures: list[tuple[int, str, str]]
    sums: bytes
    """Per-option sums of the explicit ciphertexts of the ballots counted, as one blob."""
    counted_voters: list[str]


def _init_worker(ballots_path: str, spec: BallotSpec, roll: dict[str, bytes] | None,
                 roll_path: str) -> None:  # fmt: skip
    _WORKER["ballots"] = ballots_path
    _WORKER["spec"] = spec
    _WORKER["roll"] = roll if roll is not None else read_roll(Path(roll_path))


def _verify_chunk(first: int, offsets: Sequence[int], skip: frozenset[int]) -> _ChunkResult:
    """Verify ballots ``first ..`` at ``offsets`` (one more offset than ballots).

    Ballots in ``skip`` (superseded ones) are verified but not summed.
    """
    spec: BallotSpec = _WORKER["spec"]
    roll: dict[str, bytes] = _WORKER["roll"]
    explicit = plan(spec).explicit
    with open(_WORKER["ballots"], "rb") as handle:
        handle.seek(offsets[0])
        blob = handle.read(offsets[-1] - offsets[0])
    base = offsets[0]
    leafs: list[bytes] = []
    hashes: list[bytes] = []
    failures: list[tuple[int, str, str]] = []
    summed: list[bytes] = []
    counted: list[str] = []
    sha = hashlib.sha256
    for i in range(len(offsets) - 1):
        index = first + i
        canonical = blob[offsets[i] - base + 4 : offsets[i + 1] - base]
        leafs.append(merkle.leaf_hash(canonical))
        hashes.append(sha(canonical).digest())
        try:
            voter = voter_of(canonical)
        except EncodingError:
            failures.append((index, "ballot.encoding", f"ballot {index}: malformed"))
            continue
        key = roll.get(voter)
        if key is None:
            failures.append((index, "ballot.voter", f"ballot {index}: voter not on the roll"))
            continue
        try:
            verified = verify_canonical(spec, canonical, key)
        except CoreError as exc:
            failures.append((index, f"ballot.{exc.check}", f"ballot {index}: {exc}"))
            continue
        if index in skip:
            continue
        counted.append(verified.voter_id)
        summed.append(ciphertext_bytes(canonical))
    sums = b"".join(ct.to_bytes() for ct in sum_explicit(summed, explicit))
    return _ChunkResult(
        first, len(offsets) - 1, b"".join(leafs), b"".join(hashes), failures, sums, counted
    )


def _chunks(offsets: array[int], superseded: set[int], size: int) -> Iterator[
        tuple[int, list[int], frozenset[int]]]:  # fmt: skip
    n = len(offsets) - 1
    for first in range(0, n, size):
        last = min(n, first + size)
        skip = frozenset(i for i in superseded if first <= i < last) if superseded else frozenset()
        yield first, list(offsets[first : last + 1]), skip


def _run_ballots(
    report: ElectionReport,
    root: Path,
    spec: BallotSpec,
    roll: dict[str, bytes],
    offsets: array[int],
    superseded: set[int],
    jobs: int,
    progress: bool,
) -> list[_ChunkResult]:
    total = len(offsets) - 1
    results: list[_ChunkResult] = []
    if total == 0:
        return results
    methods = multiprocessing.get_all_start_methods()
    # fork shares the parsed roll with the workers; elsewhere they read it themselves
    forked = "fork" in methods
    context = multiprocessing.get_context("fork" if forked else None)
    # Small chunks keep the bar moving and the cores even; big ones cost less to schedule.
    size = max(50, min(CHUNK_BALLOTS, total // (jobs * 4) or 1))
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_init_worker,
        initargs=(str(root / "ballots.bin"), spec, roll if forked else None,
                  str(root / "roll.csv")),
    ) as pool, tqdm(total=total, unit="ballot", disable=not progress, file=sys.stderr,
                    desc="ballots", smoothing=0.1) as bar:  # fmt: skip
        pending: set[Future[_ChunkResult]] = set()
        chunks = _chunks(offsets, superseded, size)
        for chunk in chunks:
            pending.add(pool.submit(_verify_chunk, *chunk))
            if len(pending) >= jobs * 3:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                results.append(result)
                bar.update(result.count)
                nxt = next(chunks, None)
                if nxt is not None:
                    pending.add(pool.submit(_verify_chunk, *nxt))
    results.sort(key=lambda r: r.first)
    for r in results:
        for _, check, detail in r.failures:
            report.fail(check, detail)
    return results


# --- after the ballots --------------------------------------------------------------------


def _check_tree(report: ElectionReport, blocks: Sequence[Block], leaves: bytes, n: int) -> None:
    if blocks and blocks[-1].end_index != n:
        report.fail("log.coverage", f"the blocks cover {blocks[-1].end_index} ballots, "
                                    f"the record holds {n}")  # fmt: skip
    tree = merkle.CompactRange()
    for block in blocks:
        end = min(block.end_index, n)
        if end > tree.size:
            tree.extend(leaves[i * 32 : (i + 1) * 32] for i in range(tree.size, end))
        if block.end_index > n or tree.root() != block.root:
            report.fail("log.tree", f"block {block.height}: the recomputed root differs from "
                                    "the block's")  # fmt: skip


def _check_revotes(
    report: ElectionReport,
    root: Path,
    policy: str,
    pairs: Sequence[tuple[int, int]],
) -> None:
    try:
        listed_rows = _jsonl(report, root, "supersessions.jsonl", "revote")
    except _Stop:
        return
    if policy == "forbid":
        for old, new in pairs:
            report.fail("revote", f"re-voting is forbidden, yet ballot {new} repeats the voter "
                                  f"of ballot {old}")  # fmt: skip
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
        report.fail("revote", f"ballot {pair[0]} is superseded by ballot {pair[1]} but not "
                              "listed as such")  # fmt: skip
    for pair in sorted(set(listed) - set(pairs)):
        report.fail("revote", f"listed supersession {pair[0]} -> {pair[1]} is not the log's")


def _check_supersession_hashes(report: ElectionReport, root: Path, hashes: bytes, n: int) -> None:
    try:
        rows = json.loads(b"[" + b",".join(
            line for line in (root / "supersessions.jsonl").read_bytes().splitlines()
            if line.strip()) + b"]")  # fmt: skip
    except (OSError, ValueError):
        return  # reported by _check_revotes
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


def _check_tally(
    report: ElectionReport,
    root: Path,
    spec: BallotSpec,
    blocks: Sequence[Block],
    results: Sequence[_ChunkResult],
) -> list[bytes] | None:
    try:
        tally = _json(report, root, "tally.json", "tally")
    except _Stop:
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
        recorded = [_hex(c, 130) for c in tally["ciphertexts"]]
        if tally["referendum_id"] != spec.referendum_id or len(recorded) != k:
            raise ValueError("tally of another referendum or option count")
    except (KeyError, TypeError, ValueError) as exc:
        report.fail("tally", f"tally.json: {exc}")
        return None
    for j, (mine, theirs) in enumerate(zip(sums, recorded, strict=True)):
        if mine != theirs:
            report.fail("tally", f"option {j} ({spec.options[j]!r}): the recomputed encrypted "
                                 "sum differs from tally.json")  # fmt: skip
    if tally.get("ballots_counted") != len(counted):
        report.fail("tally", f"tally.json counts {tally.get('ballots_counted')} ballots, "
                             f"the log {len(counted)}")  # fmt: skip
    if blocks and (
        tally.get("block_height") != blocks[-1].height
        or tally.get("tree_size") != blocks[-1].tree_size
    ):
        report.fail("tally", "tally.json is not the tally at the final block")
    if tally.get("tally_hash") != tally_hash(spec.referendum_id, recorded).hex():
        report.fail("tally", "tally.json's tally_hash does not match its ciphertexts")
    return recorded


# --- entry points -------------------------------------------------------------------------


def verify_election(
    record: Path,
    *,
    jobs: int | None = None,
    log_key: str | None = None,
    manifest_sha256: str | None = None,
    progress: bool = False,
) -> ElectionReport:
    """Verify the election record in folder ``record``; never raises for a bad record.

    ``log_key`` and ``manifest_sha256`` pin what an auditor obtained independently (the log's
    verifier key, the manifest's published hash); without them the record's own are used.
    """
    from auditor.verify_decryption import check_decryption

    started = time.perf_counter()
    jobs = max(1, jobs or os.cpu_count() or 1)
    report = ElectionReport(jobs=jobs)
    root = Path(record)
    if not root.is_dir():
        report.fail("manifest", f"{root} is not a folder")
        return report
    with contextlib.suppress(_Stop):
        _check_manifest(report, root, manifest_sha256)
    try:
        ref, spec = _load_definition(report, root)
    except _Stop:
        report.seconds = time.perf_counter() - started
        return report
    roll = _check_roll(report, root, ref)
    try:
        blocks = _check_blocks(report, root, spec.referendum_id, log_key)
    except _Stop:
        blocks = []
    try:
        offsets, voters = _scan_ballots(report, root / "ballots.bin")
    except OSError as exc:
        report.fail("ballot", f"ballots.bin: {exc}")
        offsets, voters = array("Q", [0]), []
    report.ballots = len(voters)
    pairs = supersessions(enumerate(voters))
    superseded = {old for old, _ in pairs} if ref["revote_policy"] == "last_counts" else set()
    results = _run_ballots(report, root, spec, roll, offsets, superseded, jobs, progress)
    leaves = b"".join(r.leaf_hashes for r in results)
    hashes = b"".join(r.ballot_hashes for r in results)
    if len(set(hashes[i : i + 32] for i in range(0, len(hashes), 32))) != len(voters):
        report.fail("ballot", "the same ballot appears twice in the log")
    _check_tree(report, blocks, leaves, len(voters))
    _check_revotes(report, root, ref["revote_policy"], pairs)
    if ref["revote_policy"] == "last_counts":
        _check_supersession_hashes(report, root, hashes, len(voters))
    tally = _check_tally(report, root, spec, blocks, results)
    if tally is not None:
        report.result = check_decryption(report.fail, root, ref, spec, tally)
    report.seconds = time.perf_counter() - started
    return report


@click.command("verify-election")
@click.argument("record", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: every core)",
)
@click.option("--log-key", default=None, help="Pin the log's verifier key (else the record's)")
@click.option("--manifest-sha256", default=None, help="Pin the SHA-256 of manifest.json")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar")
def verify_election_command(record: Path, jobs: int | None, log_key: str | None,
                            manifest_sha256: str | None, progress: bool) -> None:  # fmt: skip
    """Recompute everything in an election RECORD: tree, checkpoints, ballots, tally, result."""
    report = verify_election(record, jobs=jobs, log_key=log_key,
                             manifest_sha256=manifest_sha256, progress=progress)  # fmt: skip
    rate = report.ballots / report.seconds if report.seconds else 0.0
    click.echo(
        f"{report.ballots} ballots ({report.ballots_counted} counted) verified in "
        f"{report.seconds:.1f} s with {report.jobs} processes ({rate:,.0f} ballots/s)"
    )
    if report.ok:
        if report.result is not None:
            click.echo("result: " + ", ".join(str(c) for c in report.result))
        click.echo("OK: every check holds")
        return
    for failure in report.failures:
        click.echo(f"FAILED {failure.check}: {failure.detail}", err=True)
    for check, count in report.counts.items():
        if count > MAX_DETAILS:
            click.echo(f"FAILED {check}: ... {count - MAX_DETAILS} more", err=True)
    click.echo("FAILED checks: " + ", ".join(report.failed_checks), err=True)
    sys.exit(1)
