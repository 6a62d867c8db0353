"""The write path behind ``POST /v1/referendums/{rid}/ballots``: group commit and its helpers.

* :class:`BallotQueue`: the adaptive group commit. A ballot waits in an in-process queue; as
  soon as one of ``commit_slots`` write slots is free, everything waiting (up to
  ``commit_batch_max``) is stored by ONE ``INSERT … SELECT FROM unnest(…) ON CONFLICT DO
  NOTHING RETURNING`` in one transaction. Each waiting request is answered only after its
  COMMIT; if the write fails, every ballot of the batch fails with it (503) and nothing of it
  is stored. The queue is bounded (``queue_limit``): past it, :meth:`BallotQueue.submit`
  raises 503 at once.
* The insert re-checks inside PostgreSQL what a cache could get wrong: the referendum row is
  locked ``FOR SHARE`` and must be ``open`` (so ``close`` waits for in-flight batches and no
  ballot commits after it), and the re-vote policy is read from that row: under ``forbid``
  ``revote_key = voter_id`` and ``UNIQUE (referendum_id, revote_key)`` keeps one ballot per
  voter whatever process wrote it; under ``last_counts`` ``revote_key`` is NULL and every
  ballot is kept.
* :class:`ReferendumDirectory` and :class:`VoterRoll`: per-process caches of referendum specs
  (state re-read at most every ``spec_cache_ms``) and voters' public keys (an LRU; the roll is
  frozen once a referendum opens, and keys are only looked up for open referendums). Misses
  are fetched in batches, one round trip for all concurrent misses.
* :class:`VoterRateLimit`: a token bucket per voter and process.
* :class:`BallotVerifier`: proof checks inline or in a process pool (``verify_workers``).
* :func:`current_ballots`: the ballot that counts for each voter (the highest log index).

No log line or metric label here carries a voter id.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import math
import multiprocessing
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import structlog
from prometheus_client import Counter, Gauge, Histogram

from referendum_core.ballot import BallotSpec, verify_ballot
from referendum_core.errors import CoreError
from referendum_core.receipt import format_time
from referendum_service.db import SerializationRetry, StorageError, translated
from referendum_service.keys import ServiceKey
from referendum_service.settings import Settings
from server.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidBallot,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    from_storage,
)
from server.receipts import issue_receipt

__all__ = [
    "BALLOTS_ACCEPTED",
    "BALLOTS_REJECTED",
    "BallotBox",
    "BallotQueue",
    "BallotVerifier",
    "CheckedBallot",
    "PendingBallot",
    "ReferendumDirectory",
    "ReferendumInfo",
    "StoredBallot",
    "VoterRateLimit",
    "VoterRoll",
    "current_ballots",
]

log = structlog.get_logger("server.ingest")

BALLOTS_ACCEPTED = Counter(
    "referendum_ballots_accepted_total",
    "Ballots answered 201 (stored) or 200 (an identical resubmission).",
    ["outcome"],
)
BALLOTS_REJECTED = Counter(
    "referendum_ballots_rejected_total",
    "Ballots refused, by reason (a problem slug or the failed core check's class).",
    ["reason"],
)
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

_RETRY_AFTER_S = 1
_SERIALIZATION_RETRIES = 5


# --- group commit ----------------------------------------------------------------------


@dataclass(frozen=True)
class PendingBallot:
    """A verified ballot with its signed receipt, waiting to be stored."""

    referendum_id: str
    voter_id: str
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
    WHERE id = ANY($1::text[]) AND state = 'open'
    FOR SHARE
)
INSERT INTO ballots (referendum_id, voter_id, ballot_hash, body, receipt, accepted_at,
                     revote_key)
SELECT b.referendum_id, b.voter_id, b.ballot_hash, b.body, b.receipt, b.accepted_at,
       CASE WHEN r.revote_policy = 'forbid' THEN b.voter_id END
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bytea[], $5::bytea[],
            $6::timestamptz[]) WITH ORDINALITY
     AS b(referendum_id, voter_id, ballot_hash, body, receipt, accepted_at, position)
JOIN open_referendums r ON r.id = b.referendum_id
ORDER BY b.position
ON CONFLICT DO NOTHING
RETURNING referendum_id, ballot_hash
"""

# For the ballots the insert skipped: the row holding the same hash (an identical
# resubmission) or the same voter under 'forbid' (already voted). Neither: not open.
_EXISTING = """
SELECT b.referendum_id, b.ballot_hash, b.voter_id, b.receipt, b.revote_key
FROM unnest($1::text[], $2::bytea[]) AS m(referendum_id, ballot_hash)
JOIN ballots b ON b.referendum_id = m.referendum_id AND b.ballot_hash = m.ballot_hash
UNION ALL
SELECT b.referendum_id, b.ballot_hash, b.voter_id, b.receipt, b.revote_key
FROM unnest($1::text[], $3::text[]) AS m(referendum_id, voter_id)
JOIN ballots b ON b.referendum_id = m.referendum_id AND b.revote_key = m.voter_id
"""


def _already_voted() -> Conflict:
    return Conflict(
        "this voter has already voted and the referendum forbids re-voting",
        slug="already-voted",
    )


def _not_open() -> Conflict:
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
                "this server is shutting down", slug="shutting-down", retry_after=_RETRY_AFTER_S
            )
        if self._queued >= self._limit:
            raise ServiceUnavailable(
                "the ingest queue is full", slug="queue-full", retry_after=_RETRY_AFTER_S
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
                ServiceUnavailable("ballot storage failed", retry_after=_RETRY_AFTER_S)
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
        raise ServiceUnavailable("ballot storage contended", retry_after=_RETRY_AFTER_S)

    async def _store(self, ballots: list[PendingBallot]) -> list[StoredBallot | ApiError]:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._acquire_timeout_s):
                with translated(unreachable="database unreachable"):
                    conn = await self._pool.acquire()
        except TimeoutError as exc:
            raise ServiceUnavailable("database not answering", retry_after=_RETRY_AFTER_S) from exc
        try:
            with translated(unreachable="database unreachable"):
                async with conn.transaction():
                    inserted = await conn.fetch(
                        _INSERT,
                        [b.referendum_id for b in ballots],
                        [b.voter_id for b in ballots],
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
                    if unclaimed:
                        existing = await conn.fetch(
                            _EXISTING,
                            [b.referendum_id for b in unclaimed],
                            [b.ballot_hash for b in unclaimed],
                            [b.voter_id for b in unclaimed],
                        )
        finally:
            await self._release(conn)
        COMMIT_SECONDS.observe(time.perf_counter() - started)
        BATCH_SIZE.observe(len(ballots))
        return _outcomes(ballots, created, existing)

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
) -> list[StoredBallot | ApiError]:
    by_hash: dict[tuple[str, bytes], bytes] = {}
    by_voter: set[tuple[str, str]] = set()
    for row in existing:
        by_hash[(row["referendum_id"], bytes(row["ballot_hash"]))] = bytes(row["receipt"])
        if row["revote_key"] is not None:
            by_voter.add((row["referendum_id"], row["revote_key"]))
    results: list[StoredBallot | ApiError] = []
    for ballot, won in zip(ballots, _claims(ballots, created), strict=True):
        key = (ballot.referendum_id, ballot.ballot_hash)
        if won:
            results.append(StoredBallot(True, ballot.receipt))
        elif key in by_hash:
            results.append(StoredBallot(False, by_hash[key]))
        elif (ballot.referendum_id, ballot.voter_id) in by_voter:
            results.append(_already_voted())
        else:
            results.append(_not_open())
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


# --- referendum specs and the roll --------------------------------------------------------


@dataclass(frozen=True)
class ReferendumInfo:
    """What a ballot is checked against; ``spec`` is None while the referendum has no key."""

    referendum_id: str
    state: str
    revote_policy: str
    spec: BallotSpec | None


class ReferendumDirectory:
    """Referendum specs, cached per process; each entry's state is re-read after ``ttl_s``.

    A close therefore reaches every process within ``ttl_s``; the insert's own state check
    covers the gap. Concurrent misses for one referendum share one query.
    """

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float, max_entries: int = 1024) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: collections.OrderedDict[str, tuple[float, ReferendumInfo | None]] = (
            collections.OrderedDict()
        )
        self._loading: dict[str, asyncio.Task[ReferendumInfo | None]] = {}

    async def get(self, referendum_id: str) -> ReferendumInfo | None:
        """The referendum, or None when there is no such referendum."""
        entry = self._entries.get(referendum_id)
        if entry is not None and time.monotonic() - entry[0] < self._ttl_s:
            return entry[1]
        loading = self._loading.get(referendum_id)
        if loading is None:
            # its own task: a caller that goes away does not cancel the others' answer
            loading = asyncio.get_running_loop().create_task(self._load(referendum_id))
            self._loading[referendum_id] = loading
            loading.add_done_callback(self._loaded)
        return await asyncio.shield(loading)

    def _loaded(self, task: asyncio.Task[ReferendumInfo | None]) -> None:
        for rid, running in list(self._loading.items()):
            if running is task:
                del self._loading[rid]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter re-raises it anyway

    def _remember(self, referendum_id: str, info: ReferendumInfo | None) -> None:
        self._entries[referendum_id] = (time.monotonic(), info)
        self._entries.move_to_end(referendum_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def _load(self, referendum_id: str) -> ReferendumInfo | None:
        info = await self._read(referendum_id)
        self._remember(referendum_id, info)
        return info

    async def _read(self, referendum_id: str) -> ReferendumInfo | None:
        with translated():
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    """SELECT state, revote_policy, options, min_selections, max_selections,
                              election_public_key
                       FROM referendums WHERE id = $1""",
                    referendum_id,
                )
        if row is None:
            return None
        options = row["options"]
        if isinstance(options, str):
            options = orjson.loads(options)
        spec = None
        if row["election_public_key"] is not None:
            spec = BallotSpec(
                referendum_id=referendum_id,
                options=tuple(str(o) for o in options),
                min_selections=row["min_selections"],
                max_selections=row["max_selections"],
                election_public_key=bytes(row["election_public_key"]),
            )
        return ReferendumInfo(referendum_id, row["state"], row["revote_policy"], spec)


class VoterRoll:
    """Voters' public keys, an LRU per process; concurrent misses share one query.

    Only ask for voters of an open referendum: its roll is frozen, so a cached key never goes
    stale. Voters not on the roll are not cached.
    """

    def __init__(self, pool: asyncpg.Pool, *, max_entries: int) -> None:
        self._pool = pool
        self._max = max(1, max_entries)
        self._keys: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[bytes | None]] = {}
        self._loader: asyncio.Task[None] | None = None

    async def public_key(self, referendum_id: str, voter_id: str) -> bytes | None:
        """The voter's Ed25519 public key, or None when the voter is not on the roll."""
        key = (referendum_id, voter_id)
        cached = self._keys.get(key)
        if cached is not None:
            self._keys.move_to_end(key)
            return cached
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if self._loader is None:
                self._loader = asyncio.get_running_loop().create_task(self._load_pending())
        return await asyncio.shield(future)

    async def _load_pending(self) -> None:
        # one query at a time; misses arriving meanwhile form the next query's batch
        try:
            while self._pending:
                batch = self._pending
                self._pending = {}
                try:
                    found = await self._fetch(list(batch))
                except Exception as exc:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(
                                exc
                                if isinstance(exc, ApiError | StorageError)
                                else ServiceUnavailable(
                                    "voter lookup failed", retry_after=_RETRY_AFTER_S
                                )
                            )
                            future.exception()
                    continue
                for wanted, future in batch.items():
                    value = found.get(wanted)
                    if value is not None:
                        self._keys[wanted] = value
                    if not future.done():
                        future.set_result(value)
                while len(self._keys) > self._max:
                    self._keys.popitem(last=False)
        finally:
            self._loader = None

    async def _fetch(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        with translated(unreachable="database unreachable"):
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    """SELECT v.referendum_id, v.voter_id, v.public_key
                       FROM unnest($1::text[], $2::text[]) AS q(referendum_id, voter_id)
                       JOIN voters v ON v.referendum_id = q.referendum_id
                                    AND v.voter_id = q.voter_id COLLATE "C" """,
                    [w[0] for w in wanted],
                    [w[1] for w in wanted],
                )
        return {(r["referendum_id"], r["voter_id"]): bytes(r["public_key"]) for r in rows}


# --- per-voter rate limit -------------------------------------------------------------------


class VoterRateLimit:
    """A token bucket per voter: ``per_minute`` submissions a minute, bursts up to that many.

    A token is taken before the (costly) proof check and given back if the ballot turns out
    invalid, so forged ballots under someone else's voter id cannot use up their budget.
    """

    def __init__(self, per_minute: int, *, max_entries: int = 200_000) -> None:
        self._capacity = float(max(1, per_minute))
        self._rate = self._capacity / 60.0
        self._max = max_entries
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def take(self, referendum_id: str, voter_id: str) -> None:
        """Take one token; raises TooManyRequests (with Retry-After) when none is left."""
        key = (referendum_id, voter_id)
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - then) * self._rate)
        if tokens < 1.0:
            retry = max(1, math.ceil((1.0 - tokens) / self._rate))
            raise TooManyRequests(
                f"at most {int(self._capacity)} ballots a minute per voter",
                slug="voter-rate-limit",
                retry_after=retry,
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max:
            self._prune(now)

    def give_back(self, referendum_id: str, voter_id: str) -> None:
        """Return the token of a submission that was refused for being invalid."""
        key = (referendum_id, voter_id)
        entry = self._buckets.get(key)
        if entry is not None:
            self._buckets[key] = (min(self._capacity, entry[0] + 1.0), entry[1])

    def _prune(self, now: float) -> None:
        # forget voters whose bucket has refilled: they are back at the default
        full_after = self._capacity / self._rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}


# --- proof checks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedBallot:
    """The parts of a verified ballot the write path keeps."""

    referendum_id: str
    voter_id: str
    canonical: bytes
    hash: bytes


def _check(spec: BallotSpec, body: Mapping[str, Any], voter_key: bytes) -> CheckedBallot:
    verified = verify_ballot(spec, body, voter_key)
    return CheckedBallot(
        verified.referendum_id, verified.voter_id, verified.canonical, verified.hash
    )


def _check_in_worker(
    spec: BallotSpec, body: dict[str, Any], voter_key: bytes
) -> CheckedBallot | tuple[str, str]:
    # CoreError's keyword-only ``check`` does not survive pickling: send its parts instead
    try:
        return _check(spec, body, voter_key)
    except CoreError as exc:
        return (str(exc), exc.check)


def _warm_worker() -> None:
    import referendum_core.ballot  # noqa: F401  (import cost paid at start, not per ballot)


class BallotVerifier:
    """Checks signature and proofs: inline (``workers == 0``) or in ``workers`` processes."""

    def __init__(self, workers: int) -> None:
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        if workers > 0:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_warm_worker,
            )

    async def check(
        self, spec: BallotSpec, body: dict[str, Any], voter_key: bytes
    ) -> CheckedBallot:
        """Every check of ``body``; raises InvalidBallot naming the failed check."""
        if self._executor is None:
            try:
                return _check(spec, body, voter_key)
            except CoreError as exc:
                raise InvalidBallot(str(exc), check=exc.check) from exc
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, _check_in_worker, spec, body, voter_key)
        if isinstance(result, tuple):
            raise InvalidBallot(result[0], check=result[1])
        return result

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)


# --- the ballots that count --------------------------------------------------------------


async def current_ballots(conn: Any, referendum_id: str) -> list[asyncpg.Record]:
    """The ballot that counts for each voter: the one with the highest log index.

    Only sequenced ballots (those with a ``log_entries`` row) are considered: the log order,
    not arrival time at one of several servers, decides which ballot is newest. Under
    ``forbid`` each voter has one ballot, so this returns all of them. Rows carry
    ``voter_id``, ``ballot_hash``, ``body``, ``log_index`` and ``block_height``, ordered by
    ``log_index``.
    """
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT voter_id, ballot_hash, body, log_index, block_height FROM (
               SELECT DISTINCT ON (b.voter_id) b.voter_id, b.ballot_hash, b.body, e.log_index,
                      e.block_height
               FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id
               WHERE e.referendum_id = $1
               ORDER BY b.voter_id, e.log_index DESC
           ) AS latest
           ORDER BY log_index""",
        referendum_id,
    )
    return rows


# --- the ballot box: every check, then the queue ------------------------------------------

_VOTER_ID = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
_REFERENDUM_ID = re.compile(r"[a-z0-9-]{1,64}")
_BALLOT_HASH = re.compile(r"[0-9a-f]{64}")


class BallotBox:
    """One process's voter-facing write path: checks a ballot, stores it, issues its receipt.

    Build it inside a running event loop with the application's pool; :meth:`close` drains
    the queue (answering every waiting submission) before the pool may close.
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings, receipt_key: ServiceKey) -> None:
        self._pool = pool
        self._merge_delay_ms = settings.merge_delay_ms
        self.receipt_key = receipt_key
        self.referendums = ReferendumDirectory(
            pool, ttl_s=settings.spec_cache_ms / 1000.0, max_entries=settings.spec_cache_entries
        )
        self.roll = VoterRoll(pool, max_entries=settings.voter_cache_size)
        self.rate = VoterRateLimit(
            settings.voter_rate_per_minute, max_entries=settings.rate_limit_entries
        )
        self.verifier = BallotVerifier(settings.verify_workers)
        self.queue = BallotQueue(
            pool,
            batch_max=settings.commit_batch_max,
            slots=settings.commit_slots,
            queue_limit=settings.queue_limit,
            acquire_timeout_s=settings.db_acquire_timeout_ms / 1000.0,
        )
        self._limit = max(1, settings.admission_limit)
        self.in_flight = 0

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of ``admission_limit`` places for a submission, first byte to answer.

        Raises ServiceUnavailable (``queue-full``, Retry-After) at once when every place is
        taken: when proofs are the bottleneck, submissions pile up before the write queue,
        and they must be refused rather than left to time out.
        """
        if self.in_flight >= self._limit:
            BALLOTS_REJECTED.labels("queue-full").inc()
            raise ServiceUnavailable(
                "this server has too many ballots in progress",
                slug="queue-full",
                retry_after=_RETRY_AFTER_S,
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    async def cast(self, referendum_id: str, body: dict[str, Any]) -> tuple[bytes, StoredBallot]:
        """Check and store one ballot; returns its hash and the stored outcome.

        Raises NotFound (no such referendum), Conflict (not open, already voted),
        Forbidden (voter not on the roll), InvalidBallot (a failed check), TooManyRequests,
        ServiceUnavailable (queue full, database down).
        """
        try:
            ballot_hash, stored = await self._cast(referendum_id, body)
        except ApiError as exc:
            BALLOTS_REJECTED.labels(exc.slug).inc()
            raise
        except StorageError as exc:
            error = from_storage(exc)
            BALLOTS_REJECTED.labels(error.slug).inc()
            raise error from exc
        BALLOTS_ACCEPTED.labels("created" if stored.created else "resubmitted").inc()
        return ballot_hash, stored

    async def _cast(self, referendum_id: str, body: dict[str, Any]) -> tuple[bytes, StoredBallot]:
        info = await self._open_referendum(referendum_id)
        voter_id = body.get("voter")
        if not isinstance(voter_id, str) or not _VOTER_ID.fullmatch(voter_id):
            raise InvalidBallot("voter must be a voter id of the roll", check="voter")
        voter_key = await self.roll.public_key(referendum_id, voter_id)
        if voter_key is None:
            raise Forbidden("this voter is not on the referendum's roll", slug="not-on-roll")
        assert info.spec is not None  # an open referendum has its election key
        self.rate.take(referendum_id, voter_id)
        try:
            checked = await self.verifier.check(info.spec, body, voter_key)
        except InvalidBallot:
            self.rate.give_back(referendum_id, voter_id)
            raise
        accepted_at = datetime.now(UTC)
        receipt = issue_receipt(
            self.receipt_key, referendum_id, checked.hash, accepted_at, self._merge_delay_ms
        )
        pending = PendingBallot(
            referendum_id, voter_id, checked.hash, checked.canonical, receipt, accepted_at
        )
        stored = await self.queue.submit(pending)
        return checked.hash, stored

    async def _open_referendum(self, referendum_id: str) -> ReferendumInfo:
        info = None
        if _REFERENDUM_ID.fullmatch(referendum_id):
            info = await self.referendums.get(referendum_id)
        if info is None:
            raise NotFound(f"no referendum {referendum_id!r}", slug="unknown-referendum")
        if info.state != "open" or info.spec is None:
            raise Conflict(
                f"the referendum is {info.state}, not open for voting",
                slug="referendum-not-open",
            )
        return info

    async def status(self, referendum_id: str, ballot_hash_hex: str) -> dict[str, Any]:
        """``accepted`` until the batcher sequences the ballot, then ``sequenced``."""
        if not _BALLOT_HASH.fullmatch(ballot_hash_hex):
            raise BadRequest(
                "a ballot hash is 64 lowercase hex digits", slug="malformed-ballot-hash"
            )
        row = None
        if _REFERENDUM_ID.fullmatch(referendum_id):
            with translated():
                async with self._pool.acquire() as conn:
                    row = await conn.fetchrow(
                        """SELECT b.accepted_at, e.log_index, e.block_height
                           FROM ballots AS b LEFT JOIN log_entries AS e ON e.ballot_id = b.id
                           WHERE b.referendum_id = $1 AND b.ballot_hash = $2""",
                        referendum_id,
                        bytes.fromhex(ballot_hash_hex),
                    )
        if row is None:
            raise NotFound("no such ballot in this referendum", slug="unknown-ballot")
        status: dict[str, Any] = {
            "referendum": referendum_id,
            "ballot_hash": ballot_hash_hex,
            "accepted_at": format_time(row["accepted_at"]),
            "status": "accepted",
        }
        if row["log_index"] is not None:
            status.update(
                status="sequenced", log_index=row["log_index"], block_height=row["block_height"]
            )
        return status

    async def close(self) -> None:
        """Refuse new ballots, commit (or fail) every queued one, stop proof workers."""
        await self.queue.drain()
        self.verifier.close()
