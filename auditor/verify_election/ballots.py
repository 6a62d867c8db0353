"""Every ballot verified in parallel: credential on the roll, signature, proofs; leaves and
sums."""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from auditor.verify_election.record import read_roll
from auditor.verify_election.report import ElectionReport
from referendum_core import merkle
from referendum_core.ballot import BallotSpec, plan
from referendum_core.ballot_codec import ciphertext_bytes, credential_of
from referendum_core.batch import verify_canonical_ballots
from referendum_core.errors import CoreError, EncodingError
from referendum_core.tally import sum_explicit

__all__ = ["CHUNK_BALLOTS", "ChunkResult", "run_ballots", "scan_ballots"]

CHUNK_BALLOTS = 1000


def scan_ballots(report: ElectionReport, path: Path) -> tuple[array[int], list[bytes | None]]:
    """Offsets of every ballot in ``ballots.bin`` and the credential each names (unchecked)."""
    offsets: array[int] = array("Q")
    voters: list[bytes | None] = []
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
                    voters.append(credential_of(data, pos + 4))
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
class ChunkResult:
    """What one worker found in ballots ``first .. first + count``."""

    first: int
    count: int
    leaf_hashes: bytes
    ballot_hashes: bytes
    failures: list[tuple[int, str, str]]
    sums: bytes
    """Per-option sums of the explicit ciphertexts of the ballots counted, as one blob."""
    counted_voters: list[bytes]
    """The credential of each ballot counted."""


def _init_worker(
    ballots_path: str,
    spec: BallotSpec,
    roll: frozenset[bytes] | None,
    roll_path: str,
    backend: str = "auto",
) -> None:
    _WORKER["backend"] = backend
    _WORKER["ballots"] = ballots_path
    _WORKER["spec"] = spec
    _WORKER["roll"] = roll if roll is not None else frozenset(read_roll(Path(roll_path)))


def _verify_chunk(first: int, offsets: Sequence[int], skip: frozenset[int]) -> ChunkResult:
    """Verify ballots ``first ..`` at ``offsets`` (one more offset than ballots), their
    proofs as one batch (``referendum_core.batch``; each failure as the individual check names
    it).

    Ballots in ``skip`` (superseded ones) are verified but not summed.
    """
    spec: BallotSpec = _WORKER["spec"]
    roll: frozenset[bytes] = _WORKER["roll"]
    explicit = plan(spec).explicit
    with open(_WORKER["ballots"], "rb") as handle:
        handle.seek(offsets[0])
        blob = handle.read(offsets[-1] - offsets[0])
    base = offsets[0]
    leafs: list[bytes] = []
    hashes: list[bytes] = []
    failures: list[tuple[int, str, str]] = []
    summed: list[bytes] = []
    counted: list[bytes] = []
    sha = hashlib.sha256
    batch: list[bytes] = []
    where: list[int] = []
    for i in range(len(offsets) - 1):
        index = first + i
        canonical = blob[offsets[i] - base + 4 : offsets[i + 1] - base]
        leafs.append(merkle.leaf_hash(canonical))
        hashes.append(sha(canonical).digest())
        try:
            credential = credential_of(canonical)
        except EncodingError:
            failures.append((index, "ballot.encoding", f"ballot {index}: malformed"))
            continue
        if credential not in roll:
            failures.append(
                (index, "ballot.credential", f"ballot {index}: its credential is not on the roll")
            )
            continue
        batch.append(canonical)
        where.append(index)
    verdicts = verify_canonical_ballots(spec, batch, backend=_WORKER.get("backend", "auto"))
    for index, canonical, verdict in zip(where, batch, verdicts, strict=True):
        if isinstance(verdict, CoreError):
            failures.append((index, f"ballot.{verdict.check}", f"ballot {index}: {verdict}"))
            continue
        if index in skip:
            continue
        counted.append(verdict.credential)
        summed.append(ciphertext_bytes(canonical))
    failures.sort(key=lambda failure: failure[0])
    sums = b"".join(ct.to_bytes() for ct in sum_explicit(summed, explicit))
    return ChunkResult(
        first, len(offsets) - 1, b"".join(leafs), b"".join(hashes), failures, sums, counted
    )


def _chunks(
    offsets: array[int], superseded: set[int], size: int
) -> Iterator[tuple[int, list[int], frozenset[int]]]:
    n = len(offsets) - 1
    for first in range(0, n, size):
        last = min(n, first + size)
        skip = frozenset(i for i in superseded if first <= i < last) if superseded else frozenset()
        yield first, list(offsets[first : last + 1]), skip


def run_ballots(
    report: ElectionReport,
    root: Path,
    spec: BallotSpec,
    roll: frozenset[bytes],
    offsets: array[int],
    superseded: set[int],
    jobs: int,
    progress: bool,
    backend: str = "auto",
) -> list[ChunkResult]:
    total = len(offsets) - 1
    results: list[ChunkResult] = []
    if total == 0:
        return results
    methods = multiprocessing.get_all_start_methods()
    # fork shares the parsed roll with the workers; elsewhere they read it themselves
    forked = "fork" in methods
    context = multiprocessing.get_context("fork" if forked else None)
    # Small chunks keep the bar moving and the cores even; big ones cost less to schedule.
    size = max(50, min(CHUNK_BALLOTS, total // (jobs * 4) or 1))
    with (
        ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=_init_worker,
            initargs=(
                str(root / "ballots.bin"),
                spec,
                roll if forked else None,
                str(root / "roll.csv"),
                backend,
            ),
        ) as pool,
        tqdm(
            total=total,
            unit="ballot",
            disable=not progress,
            file=sys.stderr,
            desc="ballots",
            smoothing=0.1,
        ) as bar,
    ):
        pending: set[Future[ChunkResult]] = set()
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
