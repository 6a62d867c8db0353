"""The ballot box: every check of a submission, then the group-commit queue and the receipt."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter

from referendum_core.ids import is_referendum_id, is_voter_id
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
from server.ingest.directory import ReferendumDirectory, ReferendumInfo, VoterRoll
from server.ingest.queue import BallotQueue, PendingBallot, StoredBallot
from server.ingest.rate_limit import VoterRateLimit
from server.ingest.verifier import BallotVerifier
from server.receipts import issue_receipt

__all__ = ["BALLOTS_ACCEPTED", "BALLOTS_REJECTED", "BallotBox"]

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
                retry_after=RETRY_AFTER_S,
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
        if not isinstance(voter_id, str) or not is_voter_id(voter_id):
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
        if is_referendum_id(referendum_id):
            info = await self.referendums.get(referendum_id)
        if info is None:
            raise NotFound(f"no referendum {referendum_id!r}", slug="unknown-referendum")
        if info.state != "open" or info.spec is None:
            raise Conflict(
                f"the referendum is {info.state}, not open for voting",
                slug="referendum-not-open",
            )
        return info

    async def status(self, referendum_id: str, ballot_hash: bytes) -> dict[str, Any]:
        """``accepted`` until the batcher sequences the ballot, then ``sequenced``."""
        row = None
        if is_referendum_id(referendum_id):
            with translated():
                async with self._pool.acquire() as conn:
                    row = await conn.fetchrow(
                        """SELECT b.accepted_at, e.log_index, e.block_height
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
