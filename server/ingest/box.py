"""The ballot box: every check of a submission, then the group-commit queue and the receipt."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter

from referendum_core.ids import is_referendum_id
from referendum_core.receipt import format_time
from referendum_service.db import RETRY_AFTER_S, StorageError, translated
from referendum_service.keys import ServiceKey
from referendum_service.settings import Settings
from server.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidBallot,
    NotFound,
    ServiceUnavailable,
    from_storage,
)
from server.ingest.directory import ReferendumDirectory, ReferendumInfo
from server.ingest.queue import BallotQueue, PendingBallot, StoredBallot
from server.ingest.rate_limit import AdmitRequest, VoterRateLimit
from server.ingest.verifier import (
    BallotVerifier,
    CheckedBallot,
    ParsedBallot,
    RejectedBallot,
    parse_ballot,
)
from server.receipts import issue_receipt

__all__ = ["BALLOTS_ACCEPTED", "BALLOTS_REJECTED", "BallotBox"]

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
        self.rate = VoterRateLimit(
            pool,
            settings.voter_rate_per_minute,
            acquire_timeout_s=settings.db_acquire_timeout_ms / 1000.0,
            penalty_delay_s=settings.penalty_delay_ms / 1000.0,
        )
        self.verifier = BallotVerifier(
            settings.verify_workers,
            backend=settings.verify_backend,
            batch_max=settings.verify_batch_max,
        )
        self.queue = BallotQueue(
            pool,
            batch_max=settings.commit_batch_max,
            slots=settings.commit_slots,
            queue_limit=settings.queue_limit,
            acquire_timeout_s=settings.db_acquire_timeout_ms / 1000.0,
        )
        self._limit = max(1, settings.admission_limit)
        self.receiving_bodies = 0
        self.in_flight = 0

    def _full(self) -> ServiceUnavailable:
        return ServiceUnavailable(
            "this server has too many ballots in progress",
            slug="queue-full",
            retry_after=RETRY_AFTER_S,
        )

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Count a submission whose body is still arriving (:attr:`receiving_bodies`).

        Bodies are read before a place is taken (:meth:`admission`): a body arrives at the
        client's pace, under the body deadlines of ``server.http``, so slow senders hold a
        connection each and never a place that an honest ballot needs.
        """
        self.receiving_bodies += 1
        try:
            yield
        finally:
            self.receiving_bodies -= 1

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of ``admission_limit`` places for a received ballot until its answer.

        Raises ServiceUnavailable (``queue-full``, Retry-After) at once when every place is
        taken: when proofs are the bottleneck, submissions pile up before the write queue,
        and they must be refused rather than left to time out.
        """
        if self.in_flight >= self._limit:
            BALLOTS_REJECTED.labels("queue-full").inc()
            raise self._full()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    @contextlib.contextmanager
    def _more_places(self, extra: int) -> Iterator[None]:
        # A costly ballot holds places in proportion to its proof work until that work is
        # done, so the places bound the CPU work waiting, not only the number of requests.
        if extra > 0 and self.in_flight + extra > self._limit:
            raise self._full()
        self.in_flight += max(0, extra)
        try:
            yield
        finally:
            self.in_flight -= max(0, extra)

    async def cast(self, referendum_id: str, body: dict[str, Any]) -> tuple[bytes, StoredBallot]:
        """Check and store one ballot; returns its hash and the stored outcome.

        Raises NotFound (no such referendum), Conflict (not open, outside the voting window,
        already voted), Forbidden (credential not on the roll), InvalidBallot (a failed check),
        TooManyRequests, ServiceUnavailable (places or queue full, database down).
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
        info = await self._referendum(referendum_id)
        # cheap checks first: canonical bytes and hash, no curve arithmetic
        parsed = parse_ballot(body)
        if parsed.referendum_id != referendum_id:
            raise InvalidBallot("ballot is for another referendum", check="referendum")
        refusal = _refusal(info, datetime.now(UTC))
        with self._more_places(min(info.cost, self._limit) - 1):
            admitted = await self.rate.admit(
                AdmitRequest(referendum_id, parsed.credential, parsed.hash, refusal is None)
            )
            if admitted.receipt is not None:
                # stored before: its receipt, whatever the state now; no token, no proof check
                return parsed.hash, StoredBallot(False, admitted.receipt)
            if refusal is not None:
                raise refusal
            if admitted.public_key is None:
                raise Forbidden(
                    "this credential is not on the referendum's roll", slug="not-on-roll"
                )
            if not admitted.granted:
                raise self.rate.refused(admitted)
            assert info.spec is not None  # an open referendum has its election key
            checked = await self._verify(info, parsed)
        accepted_at = datetime.now(UTC)
        receipt = issue_receipt(
            self.receipt_key, referendum_id, checked.hash, accepted_at, self._merge_delay_ms
        )
        pending = PendingBallot(
            referendum_id, parsed.credential, checked.hash, checked.canonical, receipt, accepted_at
        )
        stored = await self.queue.submit(pending)
        return checked.hash, stored

    async def _verify(self, info: ReferendumInfo, parsed: ParsedBallot) -> CheckedBallot:
        assert info.spec is not None
        try:
            return await self.verifier.check(info.spec, parsed)
        except RejectedBallot as rejected:
            # the token taken stays spent on a ballot the voter signed, with the rest of its
            # cost on top; one nobody can attribute to the voter costs them nothing
            charge = info.cost - 1 if rejected.signed else -1
            try:
                await self.rate.settle(info.referendum_id, parsed.credential, charge)
            except ApiError:
                log.warning("ingest_charge_failed")
            raise rejected.error from None

    async def _referendum(self, referendum_id: str) -> ReferendumInfo:
        info = None
        if is_referendum_id(referendum_id):
            info = await self.referendums.get(referendum_id)
        if info is None:
            raise NotFound(f"no referendum {referendum_id!r}", slug="unknown-referendum")
        return info

    async def status(self, referendum_id: str, ballot_hash: bytes) -> dict[str, Any]:
        """``accepted`` until the batcher sequences the ballot, then ``sequenced`` with its log
        index and block. Public, so it carries no acceptance time (the voter's receipt does)."""
        row = None
        if is_referendum_id(referendum_id):
            with translated():
                async with self._pool.acquire() as conn:
                    row = await conn.fetchrow(
                        """SELECT e.log_index, e.block_height
                           FROM ballots AS b LEFT JOIN log_entries AS e ON e.ballot_id = b.id
                           WHERE b.referendum_id = $1 AND b.ballot_hash = $2""",
                        referendum_id,
                        ballot_hash,
                    )
        if row is None:
            raise NotFound("no such ballot in this referendum", slug="unknown-ballot")
        status: dict[str, Any] = {
            "referendum": referendum_id,
            "ballot_hash": ballot_hash.hex(),
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


def _refusal(info: ReferendumInfo, now: datetime) -> Conflict | None:
    """Why a new ballot cannot be taken now (checked after the stored-ballot lookup)."""
    if info.state != "open" or info.spec is None:
        return Conflict(
            f"the referendum is {info.state}, not open for voting", slug="referendum-not-open"
        )
    if not info.in_window(now):
        return Conflict(
            f"voting is open from {format_time(info.opens_at)} to {format_time(info.closes_at)}",
            slug="outside-voting-window",
        )
    return None
