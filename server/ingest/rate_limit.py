"""The per-credential rate limit, shared by every server process, and the lookups batched
with it.

Each credential of a referendum's roll has one token bucket in PostgreSQL (``voter_tokens``):
capacity ``voter_rate_per_minute``, refilled continuously at that rate by the database's clock,
so a voter gets the same allowance whatever the number of server processes or machines. Concurrent
submissions share one statement (:func:`referendum_service.store.ballots.admit_ballots`) that
also finds, for each, the stored receipt of the same ballot (a resubmission, answered before
any token is taken) and whether its credential is on the roll; one statement is in flight
per slot, and submissions arriving meanwhile form the next one's batch.

Tokens: a submission takes one before its proofs are checked. What happens next
(:meth:`VoterRateLimit.settle`): a valid ballot keeps it spent; a ballot whose signature does
not verify gets it back (anyone can send one naming any credential); a ballot the voter signed
that fails a later check is charged its whole verification cost (see
:func:`server.ingest.verifier.verification_cost`), so its bucket may go below zero.

Penalty delay: the 429 of a credential whose bucket is below zero (only ballots it signed
that failed their checks put it there) is held up to ``penalty_delay_ms`` before it is sent,
holding a connection but no admission place. A refusal still costs the server the parse and
one batched statement; a client sending invalid ballots back to back on a few connections
(measured: 4 to 32, 64-option ballots) would otherwise keep a core busy with refusals and
queue honest ballots behind them, and with the delay it gets one answer a connection each
``penalty_delay_ms``. An honest voter over the limit (bucket at zero, not below) is answered
at once.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from referendum_service.db import RETRY_AFTER_S, SerializationRetry, StorageError, translated
from referendum_service.store.ballots import (
    Admission,
    AdmitRequest,
    admit_ballots,
    charge_tokens,
)
from server.errors import ApiError, ServiceUnavailable, TooManyRequests, from_storage

__all__ = ["Admission", "AdmitRequest", "VoterRateLimit"]

log = structlog.get_logger("server.ingest")

_BATCH_MAX = 1000
_SLOTS = 2
_SERIALIZATION_RETRIES = 5

Request = TypeVar("Request")
Result = TypeVar("Result")


class _Batches(Generic[Request, Result]):
    """Runs ``run`` on everything waiting, up to ``slots`` batches at a time."""

    def __init__(
        self,
        run: Callable[[list[Request]], Awaitable[Sequence[Result]]],
        *,
        slots: int = _SLOTS,
        batch_max: int = _BATCH_MAX,
    ) -> None:
        self._run = run
        self._slots = slots
        self._batch_max = batch_max
        self._waiting: collections.deque[tuple[Request, asyncio.Future[Result]]] = (
            collections.deque()
        )
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> int:
        """Requests waiting for a free slot."""
        return len(self._waiting)

    async def submit(self, request: Request) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        self._dispatch()
        # shielded: a caller that goes away leaves the batch (and the others' answers) alone
        return await asyncio.shield(future)

    def _dispatch(self) -> None:
        while self._busy < self._slots and self._waiting:
            take = min(self._batch_max, len(self._waiting))
            batch = [self._waiting.popleft() for _ in range(take)]
            self._busy += 1
            task = asyncio.get_running_loop().create_task(self._go(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _go(self, batch: list[tuple[Request, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run([request for request, _ in batch])
        except Exception as exc:  # every waiter gets its own error object to raise
            for _, future in batch:
                if not future.done():
                    future.set_exception(_answer_for(exc))
                    future.exception()  # retrieved: a waiter that left must not warn
        else:
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        finally:
            self._busy -= 1
            self._dispatch()


def _answer_for(exc: Exception) -> ApiError:
    if isinstance(exc, StorageError):
        return from_storage(exc)
    if isinstance(exc, ApiError):
        return type(exc)(exc.detail, slug=exc.slug, retry_after=exc.retry_after, **exc.extra)
    log.error("ingest_admission_failed", error=type(exc).__name__)
    return ServiceUnavailable("ballot admission failed", retry_after=RETRY_AFTER_S)


class VoterRateLimit:
    """Per-voter token buckets in PostgreSQL, with the stored-ballot and roll lookups.

    ``per_minute`` tokens a minute per voter, bursts up to that many. Requires a running
    event loop; ``pool`` must outlive the last call.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        per_minute: int,
        *,
        acquire_timeout_s: float = 5.0,
        penalty_delay_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self.penalty_delay_s = max(0.0, penalty_delay_s)
        self.capacity = float(max(1, per_minute))
        self.per_second = self.capacity / 60.0
        self._acquire_timeout_s = acquire_timeout_s
        self._admits: _Batches[AdmitRequest, Admission] = _Batches(self._admit_batch)
        self._charges: _Batches[tuple[str, bytes, float], None] = _Batches(self._charge_batch)

    @property
    def waiting(self) -> int:
        """Submissions waiting for an admission statement (every slot busy)."""
        return self._admits.waiting

    async def admit(self, request: AdmitRequest) -> Admission:
        """The stored receipt of the ballot, or roll membership and (if wanted) a token."""
        return await self._admits.submit(request)

    def refused(self, admission: Admission) -> TooManyRequests:
        """The 429 for a submission that wanted a token and got none."""
        retry = max(1, math.ceil((1.0 - admission.tokens) / self.per_second))
        error = TooManyRequests(
            f"at most {int(self.capacity)} ballots a minute per voter",
            slug="voter-rate-limit",
            retry_after=retry,
        )
        if admission.tokens < 0:  # the credential owes tokens for ballots that failed
            error.delay_s = min(self.penalty_delay_s, float(retry))
        return error

    async def settle(self, referendum_id: str, credential: bytes, charge: float) -> None:
        """Take ``charge`` more tokens from the credential's bucket (negative: give back)."""
        if charge:
            await self._charges.submit((referendum_id, credential, charge))

    async def _with_connection(self, work: Callable[[Any], Awaitable[Result]]) -> Result:
        for attempt in range(_SERIALIZATION_RETRIES):
            try:
                async with asyncio.timeout(self._acquire_timeout_s):
                    with translated(unreachable="database unreachable"):
                        conn = await self._pool.acquire()
            except TimeoutError as exc:
                raise ServiceUnavailable(
                    "database not answering", retry_after=RETRY_AFTER_S
                ) from exc
            try:
                return await work(conn)
            except SerializationRetry:
                # two processes' statements on the same voters deadlocked; one was rolled back
                log.info("ingest_admission_retry", attempt=attempt + 1)
            finally:
                try:
                    await self._pool.release(conn)
                except Exception:  # a broken connection is dropped by the pool
                    log.warning("ingest_release_failed")
        raise ServiceUnavailable("ballot admission contended", retry_after=RETRY_AFTER_S)

    async def _admit_batch(self, requests: list[AdmitRequest]) -> list[Admission]:
        async def work(conn: Any) -> list[Admission]:
            return await admit_ballots(
                conn, requests, capacity=self.capacity, per_second=self.per_second
            )

        return await self._with_connection(work)

    async def _charge_batch(self, charges: list[tuple[str, bytes, float]]) -> list[None]:
        total: dict[tuple[str, bytes], float] = collections.defaultdict(float)
        for referendum_id, credential, charge in charges:
            total[(referendum_id, credential)] += charge

        async def work(conn: Any) -> None:
            await charge_tokens(conn, total, capacity=self.capacity, per_second=self.per_second)

        await self._with_connection(work)
        return [None] * len(charges)
