"""The group-commit queue: shared inserts, all-or-nothing batches, admission, close races."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
from prometheus_client import REGISTRY

from referendum_service.db import create_pool
from referendum_service.settings import Settings
from server.errors import ApiError, Conflict, ServiceUnavailable
from server.ingest import BallotQueue, PendingBallot, StoredBallot
from tests.ingest import count_ballots, create_referendum

DEADLINE_S = 20.0


def pending(referendum_id: str, voter_id: str, n: int = 0) -> PendingBallot:
    """A stand-in ballot: the queue stores bytes; the proofs were checked before it. Its
    credential stands for ``voter_id`` (the queue never looks at the roll)."""
    body = f"{referendum_id}/{voter_id}/{n}".encode()
    ballot_hash = hashlib.sha256(body).digest()
    return PendingBallot(
        referendum_id,
        hashlib.sha256(voter_id.encode()).digest(),
        ballot_hash,
        body,
        b'{"receipt":"' + body + b'"}',
        datetime.now(UTC),
    )


def batches_written() -> float:
    return REGISTRY.get_sample_value("referendum_ingest_batch_size_count") or 0.0


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on the test's database."""
    pool = await create_pool(database_url, Settings(db_pool_min=1, db_pool_max=6))
    try:
        yield pool
    finally:
        await pool.close()


async def wait_for_lock_waiters(dsn: str, count: int, exclude: Sequence[int] = ()) -> list[int]:
    """Poll (bounded) until ``count`` backends wait on a lock; return their pids."""
    conn = await asyncpg.connect(dsn)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while True:
            pids = await conn.fetch(
                """SELECT pid FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'
                     AND pid <> ALL($1::int[])""",
                list(exclude),
            )
            if len(pids) >= count:
                return [r["pid"] for r in pids]
            assert loop.time() < deadline, "no batch ever waited on the referendum lock"
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def settle(
    futures: list[asyncio.Future[StoredBallot]],
) -> list[StoredBallot | BaseException]:
    async with asyncio.timeout(DEADLINE_S):
        return await asyncio.gather(*futures, return_exceptions=True)


@pytest.mark.parametrize(("batch_max", "expected_batches"), [(500, 2), (10, 5)])
async def test_waiting_ballots_share_one_insert(
    database_url: str, pool: asyncpg.Pool, batch_max: int, expected_batches: int
) -> None:
    """With the only write slot busy, the next 39 ballots go in one insert (or cap-sized ones)."""
    await create_referendum(database_url, "ref-gc", policy="last_counts")
    queue = BallotQueue(pool, batch_max=batch_max, slots=1, queue_limit=1000)
    before = batches_written()
    futures = [queue.submit(pending("ref-gc", f"v{i % 4}", i)) for i in range(40)]
    results = await settle(futures)
    assert all(isinstance(r, StoredBallot) and r.created for r in results), results
    assert batches_written() - before == expected_batches
    assert await count_ballots(database_url) == 40


async def test_database_failure_fails_whole_batch_then_recovers(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """A connection killed mid-batch answers every ballot 503, stores none, and the next works."""
    await create_referendum(database_url, "ref-fail", policy="last_counts")
    queue = BallotQueue(pool, batch_max=500, slots=1, queue_limit=1000)
    blocker = await asyncpg.connect(database_url)
    try:
        # hold the referendum row so the batch's FOR SHARE waits, then kill its backend
        blocker_tx = blocker.transaction()
        await blocker_tx.start()
        await blocker.execute("UPDATE referendums SET question = 'held' WHERE id = 'ref-fail'")
        futures = [queue.submit(pending("ref-fail", f"v{i}", i)) for i in range(4)]
        # the first ballot's batch, then the other three's: kill each while it waits
        killed: list[int] = []
        for _ in range(2):
            [victim] = await wait_for_lock_waiters(database_url, 1, exclude=killed)
            await blocker.fetchval("SELECT pg_terminate_backend($1)", victim)
            killed.append(victim)
        results = await settle(futures)
        await blocker_tx.rollback()
    finally:
        await blocker.close()
    assert all(isinstance(r, ServiceUnavailable) for r in results), results
    assert all(isinstance(r, ApiError) and r.retry_after for r in results)
    assert await count_ballots(database_url) == 0
    again = await settle([queue.submit(pending("ref-fail", f"v{i}", i)) for i in range(4)])
    assert all(isinstance(r, StoredBallot) and r.created for r in again), again
    assert await count_ballots(database_url) == 4


async def test_full_queue_refuses_at_once(database_url: str, pool: asyncpg.Pool) -> None:
    """Past queue_limit a submission raises 503 with Retry-After without waiting."""
    await create_referendum(database_url, "ref-full", policy="last_counts")
    queue = BallotQueue(pool, batch_max=500, slots=1, queue_limit=3)
    blocker = await asyncpg.connect(database_url)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("UPDATE referendums SET question = 'held' WHERE id = 'ref-full'")
        futures = [queue.submit(pending("ref-full", f"v{i}", i)) for i in range(3)]
        await wait_for_lock_waiters(database_url, 1)
        with pytest.raises(ServiceUnavailable) as refused:
            queue.submit(pending("ref-full", "v3", 3))
        assert refused.value.retry_after == 1 and refused.value.slug == "queue-full"
        await tx.commit()
    finally:
        await blocker.close()
    results = await settle(futures)
    assert all(isinstance(r, StoredBallot) for r in results), results
    assert queue.depth == 0


async def test_close_committed_during_a_batch_refuses_it(
    database_url: str, pool: asyncpg.Pool
) -> None:
    """A batch racing a close waits for it and then stores nothing: no ballot after close."""
    await create_referendum(database_url, "ref-race")
    queue = BallotQueue(pool, batch_max=500, slots=1, queue_limit=100)
    closer = await asyncpg.connect(database_url)
    try:
        tx = closer.transaction()
        await tx.start()
        await closer.execute("UPDATE referendums SET state = 'closed' WHERE id = 'ref-race'")
        futures = [queue.submit(pending("ref-race", f"v{i}", i)) for i in range(3)]
        await wait_for_lock_waiters(database_url, 1)
        await tx.commit()
    finally:
        await closer.close()
    results = await settle(futures)
    assert all(isinstance(r, Conflict) and r.slug == "referendum-not-open" for r in results)
    assert await count_ballots(database_url) == 0


async def test_duplicates_inside_one_batch(database_url: str, pool: asyncpg.Pool) -> None:
    """Identical twins in a batch: one 201, one 200 with its receipt; a second vote gets 409."""
    await create_referendum(database_url, "ref-twins", policy="forbid")
    queue = BallotQueue(pool, batch_max=500, slots=1, queue_limit=100)
    first = queue.submit(pending("ref-twins", "v0", 0))  # occupies the slot alone
    twin_a = queue.submit(pending("ref-twins", "v1", 1))
    twin_b = queue.submit(pending("ref-twins", "v1", 1))
    revote = queue.submit(pending("ref-twins", "v1", 2))
    again = queue.submit(pending("ref-twins", "v0", 0))
    results = await settle([first, twin_a, twin_b, revote, again])
    a, b, c, d, e = results
    assert isinstance(a, StoredBallot) and a.created
    assert isinstance(b, StoredBallot) and b.created
    assert isinstance(c, StoredBallot) and not c.created and c.receipt == b.receipt
    assert isinstance(d, Conflict) and d.slug == "already-voted"
    assert isinstance(e, StoredBallot) and not e.created and e.receipt == a.receipt
    assert await count_ballots(database_url) == 2


async def test_drain_answers_everything_then_refuses(database_url: str, pool: asyncpg.Pool) -> None:
    """drain() returns once every queued ballot is committed; later ones get 503 at once."""
    await create_referendum(database_url, "ref-drain", policy="last_counts")
    queue = BallotQueue(pool, batch_max=7, slots=2, queue_limit=1000)
    futures = [queue.submit(pending("ref-drain", f"v{i % 4}", i)) for i in range(50)]
    async with asyncio.timeout(DEADLINE_S):
        await queue.drain()
    assert all(f.done() and not f.exception() for f in futures)
    with pytest.raises(ServiceUnavailable):
        queue.submit(pending("ref-drain", "v0", 99))
    assert await count_ballots(database_url) == 50
