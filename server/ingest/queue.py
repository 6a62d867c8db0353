"""The adaptive group commit of ballots: one ``INSERT … SELECT FROM unnest(…)`` per batch.

A ballot waits in an in-process queue; as soon as one of ``commit_slots`` write slots is free,
everything waiting (up to ``commit_batch_max``) is stored by ONE ``INSERT … SELECT FROM
unnest(…) ON CONFLICT DO NOTHING RETURNING`` in one transaction. Each waiting request is
answered only after its COMMIT; if the write fails, every ballot of the batch fails with it
(503) and nothing of it is stored. The queue is bounded (``queue_limit``): past it,
:meth:`BallotQueue.submit` raises 503 at once.

The insert re-checks inside PostgreSQL what a cache could get wrong: the referendum row is
locked ``FOR SHARE`` and must be ``open`` and inside its voting window by the database's
clock (so ``close`` waits for in-flight batches and no ballot commits after it or after
``closes_at``), and the re-vote policy is read from that row: under ``forbid``
``revote_key = credential`` and ``UNIQUE (referendum_id, revote_key)`` keeps one ballot per
credential whatever process wrote it; under ``last_counts`` ``revote_key`` is NULL and every
ballot is kept.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import Gauge, Histogram

from referendum_service.db import RETRY_AFTER_S, SerializationRetry, StorageError, translated
from server.errors import ApiError, Conflict, ServiceUnavailable, from_storage

__all__ = ["BallotQueue", "PendingBallot", "StoredBallot"]

log = structlog.get_logger("server.ingest")

QUEUE_DEPTH = Gauge("referendum_ingest_queue_depth", "Ballots waiting for or inside a commit.")
BATCH_SIZE = Histogram(
    "referendum_ingest_batch_size",
    "Ballots per group-commit insert.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)
COMMIT_SECONDS = Histogram(
    "referendum_ingest_commit_seconds",
    "Time of one group-commit transaction, from acquiring a connection to COMMIT.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)

_SERIALIZATION_RETRIES = 5


@dataclass(frozen=True)
class PendingBallot:
    """A verified ballot with its signed receipt, waiting to be stored."""

    referendum_id: str
    credential: bytes
    ballot_hash: bytes
    body: bytes
    receipt: bytes
    accepted_at: datetime


@dataclass(frozen=True)
class StoredBallot:
    """The outcome of a submission: ``created`` (201) or an identical earlier one (200)."""

    created: bool
    receipt: bytes


_INSERT = """
WITH open_referendums AS (
    SELECT id, revote_policy FROM referendums
    WHERE id = ANY($1::text[]) AND state = 'open' AND now() BETWEEN opens_at AND closes_at
    FOR SHARE
)
INSERT INTO ballots (referendum_id, credential, ballot_hash, body, receipt, accepted_at,
                     revote_key)
SELECT b.referendum_id, b.credential, b.ballot_hash, b.body, b.receipt, b.accepted_at,
       CASE WHEN r.revote_policy = 'forbid' THEN b.credential END
FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[], $5::bytea[],
            $6::timestamptz[]) WITH ORDINALITY
     AS b(referendum_id, credential, ballot_hash, body, receipt, accepted_at, position)
JOIN open_referendums r ON r.id = b.referendum_id
ORDER BY b.position
ON CONFLICT DO NOTHING
RETURNING referendum_id, ballot_hash
"""

# For the ballots the insert skipped: the row holding the same hash (an identical
# resubmission) or the same credential under 'forbid' (already voted). Neither: not open, or open
# but outside its voting window by the database's clock (_OPEN says which).
_EXISTING = """
SELECT b.referendum_id, b.ballot_hash, b.receipt, b.revote_key
FROM unnest($1::text[], $2::bytea[]) AS m(referendum_id, ballot_hash)
JOIN ballots b ON b.referendum_id = m.referendum_id AND b.ballot_hash = m.ballot_hash
UNION ALL
SELECT b.referendum_id, b.ballot_hash, b.receipt, b.revote_key
FROM unnest($1::text[], $3::bytea[]) AS m(referendum_id, credential)
JOIN ballots b ON b.referendum_id = m.referendum_id AND b.revote_key = m.credential
"""


_OPEN = "SELECT id FROM referendums WHERE id = ANY($1::text[]) AND state = 'open'"


def _already_voted() -> Conflict:
    return Conflict(
        "this credential has already voted and the referendum forbids re-voting",
        slug="already-voted",
    )


def _not_open(referendum_id: str, still_open: set[str]) -> Conflict:
    if referendum_id in still_open:
        return Conflict("the voting window is not open now", slug="outside-voting-window")
    return Conflict("the referendum is not open for voting", slug="referendum-not-open")


class BallotQueue:
    """The adaptive group-commit queue of one process.

    Requires a running event loop; ``pool`` must outlive :meth:`drain`.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_max: int,
        slots: int,
        queue_limit: int,
        acquire_timeout_s: float = 5.0,
    ) -> None:
        self._pool = pool
        self._batch_max = max(1, batch_max)
        self._slots = max(1, slots)
        self._limit = max(1, queue_limit)
        self._acquire_timeout_s = acquire_timeout_s
        self._waiting: collections.deque[tuple[PendingBallot, asyncio.Future[StoredBallot]]] = (
            collections.deque()
        )
        self._queued = 0  # waiting plus inside a running write
        self._busy = 0
        self._writes: set[asyncio.Task[None]] = set()
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def depth(self) -> int:
        """Ballots waiting or being written."""
        return self._queued

    def submit(self, ballot: PendingBallot) -> asyncio.Future[StoredBallot]:
        """Queue ``ballot``; the future resolves after its COMMIT.

        Raises ServiceUnavailable at once when the queue is full or shutting down. The
        future fails with Conflict (already voted, not open) or ServiceUnavailable (database).
        """
        if self._closed:
            raise ServiceUnavailable(
                "this server is shutting down", slug="shutting-down", retry_after=RETRY_AFTER_S
            )
        if self._queued >= self._limit:
            raise ServiceUnavailable(
                "the ingest queue is full", slug="queue-full", retry_after=RETRY_AFTER_S
            )
        future: asyncio.Future[StoredBallot] = asyncio.get_running_loop().create_future()
        self._waiting.append((ballot, future))
        self._queued += 1
        self._idle.clear()
        QUEUE_DEPTH.set(self._queued)
        self._dispatch()
        return future

    def _dispatch(self) -> None:
        # Adaptive: a free slot writes whatever is waiting now; while every slot is busy the
        # queue keeps collecting, so batches grow exactly when the database is the bottleneck.
        while self._busy < self._slots and self._waiting:
            take = min(self._batch_max, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(take)]
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._write(batch))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, batch: list[tuple[PendingBallot, asyncio.Future[StoredBallot]]]) -> None:
        ballots = [ballot for ballot, _ in batch]
        outcomes: Sequence[StoredBallot | ApiError]
        try:
            outcomes = await self._store_with_retries(ballots)
        except ApiError as exc:
            outcomes = [_copy_error(exc) for _ in batch]
        except StorageError as exc:
            outcomes = [from_storage(exc) for _ in batch]
        except Exception:
            log.exception("ingest_batch_failed", batch=len(batch))
            outcomes = [
                ServiceUnavailable("ballot storage failed", retry_after=RETRY_AFTER_S)
                for _ in batch
            ]
        finally:
            self._busy -= 1
            self._queued -= len(batch)
            QUEUE_DEPTH.set(self._queued)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, ApiError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._dispatch()
        if self._queued == 0:
            self._idle.set()

    async def _store_with_retries(
        self, ballots: list[PendingBallot]
    ) -> Sequence[StoredBallot | ApiError]:
        for attempt in range(_SERIALIZATION_RETRIES):
            try:
                return await self._store(ballots)
            except SerializationRetry:
                # two batches racing on the same voters deadlocked; PostgreSQL rolled one back
                log.info("ingest_batch_retry", attempt=attempt + 1, batch=len(ballots))
        raise ServiceUnavailable("ballot storage contended", retry_after=RETRY_AFTER_S)

    async def _store(self, ballots: list[PendingBallot]) -> list[StoredBallot | ApiError]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._acquire_timeout_s):
                with translated(unreachable="database unreachable"):
                    conn = await self._pool.acquire()
        except TimeoutError as exc:
            raise ServiceUnavailable("database not answering", retry_after=RETRY_AFTER_S) from exc
        try:
            with translated(unreachable="database unreachable"):
                async with conn.transaction():
                    inserted = await conn.fetch(
                        _INSERT,
                        [b.referendum_id for b in ballots],
                        [b.credential for b in ballots],
                        [b.ballot_hash for b in ballots],
                        [b.body for b in ballots],
                        [b.receipt for b in ballots],
                        [b.accepted_at for b in ballots],
                    )
                    created = {(r["referendum_id"], bytes(r["ballot_hash"])) for r in inserted}
                    unclaimed = [
                        b
                        for b, won in zip(ballots, _claims(ballots, created), strict=True)
                        if not won
                    ]
                    existing: list[asyncpg.Record] = []
                    still_open: set[str] = set()
                    if unclaimed:
                        existing = await conn.fetch(
                            _EXISTING,
                            [b.referendum_id for b in unclaimed],
                            [b.ballot_hash for b in unclaimed],
                            [b.credential for b in unclaimed],
                        )
                        # rare (races): for a ballot neither explains, why it was not open
                        rows = await conn.fetch(_OPEN, [b.referendum_id for b in unclaimed])
                        still_open = {r["id"] for r in rows}
        finally:
            await self._release(conn)
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(ballots))
        return _outcomes(ballots, created, existing, still_open)

    async def _release(self, conn: Any) -> None:
        try:
            await self._pool.release(conn)
        except Exception:  # a broken connection is dropped by the pool; nothing to answer
            log.warning("ingest_release_failed")

    async def drain(self) -> None:
        """Refuse new ballots and wait until every queued one is committed or failed."""
        self._closed = True
        self._dispatch()
        await self._idle.wait()


def _copy_error(exc: ApiError) -> ApiError:
    # one exception object per waiting request: each handler raises and renders its own
    return type(exc)(exc.detail, slug=exc.slug, retry_after=exc.retry_after, **exc.extra)


def _outcomes(
    ballots: list[PendingBallot],
    created: set[tuple[str, bytes]],
    existing: list[asyncpg.Record],
    still_open: set[str],
) -> list[StoredBallot | ApiError]:
    by_hash: dict[tuple[str, bytes], bytes] = {}
    by_voter: set[tuple[str, bytes]] = set()
    for row in existing:
        by_hash[(row["referendum_id"], bytes(row["ballot_hash"]))] = bytes(row["receipt"])
        if row["revote_key"] is not None:
            by_voter.add((row["referendum_id"], bytes(row["revote_key"])))
    results: list[StoredBallot | ApiError] = []
    for ballot, won in zip(ballots, _claims(ballots, created), strict=True):
        key = (ballot.referendum_id, ballot.ballot_hash)
        if won:
            results.append(StoredBallot(True, ballot.receipt))
        elif key in by_hash:
            results.append(StoredBallot(False, by_hash[key]))
        elif (ballot.referendum_id, ballot.credential) in by_voter:
            results.append(_already_voted())
        else:
            results.append(_not_open(ballot.referendum_id, still_open))
    return results


def _claims(ballots: list[PendingBallot], created: set[tuple[str, bytes]]) -> list[bool]:
    """Which submissions the inserted rows belong to: the first of identical twins in a batch."""
    claimed: set[tuple[str, bytes]] = set()
    won: list[bool] = []
    for ballot in ballots:
        key = (ballot.referendum_id, ballot.ballot_hash)
        first = key in created and key not in claimed
        if first:
            claimed.add(key)
        won.append(first)
    return won
