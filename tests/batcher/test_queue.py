"""The sealing queue (log_pending) and the log entries (migration 022): what the database does.

Every path that inserts a ballot queues it in the same statement; sealing moves it from the
queue to log_entries without writing the ballot; the log is append-only and a ballot is in it
at most once; the round's plan does not depend on the queue's (always stale) statistics.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from batcher.service import _TAKE_BALLOTS, PendingVacuum, seal_block
from referendum_core.merkle import leaf_hash
from tests.batcher.logs import (
    insert_ballots,
    make_signer,
    open_referendum_connection,
    random_body,
    verify_log,
)

RID = "r-queue"
INSERT_ONE = (
    "INSERT INTO ballots (referendum_id, credential, ballot_hash, body, receipt)"
    " VALUES ($1, sha256(convert_to($2, 'UTF8')), $3, $4, '{}') ON CONFLICT DO NOTHING"
)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh database holding one open referendum."""
    async for connection in open_referendum_connection(database_url, RID):
        yield connection


async def _queue(conn: asyncpg.Connection) -> dict[int, bytes]:
    rows = await conn.fetch(
        "SELECT ballot_id, leaf_hash FROM log_pending WHERE referendum_id = $1", RID
    )
    return {r["ballot_id"]: bytes(r["leaf_hash"]) for r in rows}


async def _bodies(conn: asyncpg.Connection) -> dict[int, bytes]:
    rows = await conn.fetch("SELECT id, body FROM ballots WHERE referendum_id = $1", RID)
    return {r["id"]: bytes(r["body"]) for r in rows}


async def test_every_insert_path_queues_its_ballots(conn: asyncpg.Connection) -> None:
    """INSERT, INSERT … ON CONFLICT and COPY queue exactly the rows they store, leaf hashed."""
    await insert_ballots(conn, RID, 3)
    body = random_body()
    await conn.execute(INSERT_ONE, RID, "solo", hashlib.sha256(body).digest(), body)
    # the same ballot again: ON CONFLICT skips it, and so does the queue
    await conn.execute(INSERT_ONE, RID, "solo", hashlib.sha256(body).digest(), body)
    copied = [random_body() for _ in range(4)]
    await conn.copy_records_to_table(
        "ballots",
        records=[
            (RID, hashlib.sha256(b"c%d" % i).digest(), hashlib.sha256(b).digest(), b, b"{}")
            for i, b in enumerate(copied)
        ],
        columns=["referendum_id", "credential", "ballot_hash", "body", "receipt"],
    )
    rolled_back = conn.transaction()
    await rolled_back.start()
    other = random_body()
    await conn.execute(INSERT_ONE, RID, "gone", hashlib.sha256(other).digest(), other)
    await rolled_back.rollback()

    bodies = await _bodies(conn)
    assert len(bodies) == 8
    assert await _queue(conn) == {i: leaf_hash(b) for i, b in bodies.items()}


async def test_sealing_moves_ballots_without_writing_them(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A round empties the queue into log_entries and leaves every ballot row as it was."""
    signer, _ = make_signer(tmp_path)
    await insert_ballots(conn, RID, 40)
    versions = "SELECT id, ctid::text, xmin::text FROM ballots ORDER BY id"
    before = [tuple(r) for r in await conn.fetch(versions)]
    assert len(await _queue(conn)) == 40
    sealed = await seal_block(conn, RID, signer, max_ballots=25)
    assert sealed is not None and sealed.ballots == 25
    queued = await _queue(conn)
    entries = await conn.fetch(
        "SELECT log_index, ballot_id, block_height FROM log_entries ORDER BY log_index"
    )
    ids = [row[0] for row in before]
    assert [tuple(e) for e in entries] == [(n, ids[n], 1) for n in range(25)]
    assert sorted(queued) == ids[25:]
    assert await seal_block(conn, RID, signer, max_ballots=25) is not None
    assert await _queue(conn) == {}
    assert [tuple(r) for r in await conn.fetch(versions)] == before, "sealing wrote a ballot"
    await verify_log(conn, RID, signer.verifier_key())


async def test_database_keeps_ballots_and_entries_unchanged(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """ballots and log_entries refuse UPDATE, DELETE, TRUNCATE; no ballot enters the log twice."""
    signer, _ = make_signer(tmp_path)
    await insert_ballots(conn, RID, 3)
    assert await seal_block(conn, RID, signer, max_ballots=10) is not None
    for statement in (
        "UPDATE ballots SET body = '\\x00'::bytea",
        "DELETE FROM ballots",
        "TRUNCATE ballots CASCADE",
        "UPDATE log_entries SET log_index = log_index + 1",
        "DELETE FROM log_entries",
        "TRUNCATE log_entries",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(statement)
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(
            "INSERT INTO log_entries (referendum_id, log_index, ballot_id, block_height, leaf_hash)"
            " SELECT $1, 3, ballot_id, 2, leaf_hash FROM log_entries WHERE log_index = 0",
            RID,
        )
    await verify_log(conn, RID, signer.verifier_key())


async def test_round_plan_ignores_stale_queue_statistics(conn: asyncpg.Connection) -> None:
    """With statistics of an empty queue, the round still deletes by address, not by filter.

    Written with ``referendum_id = $1`` beside the addresses, the DELETE was planned on such
    statistics as a primary-key scan testing every waiting row against every address.
    """
    await conn.execute("VACUUM ANALYZE log_pending")  # the queue is empty: reltuples = 0
    await insert_ballots(conn, RID, 2000)
    async with conn.transaction():
        await conn.execute(
            "SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;"
            " SET LOCAL plan_cache_mode = force_generic_plan"
        )
        await conn.execute(f"PREPARE take(text, bigint) AS {_TAKE_BALLOTS}")
        plan = "\n".join(
            r[0] for r in await conn.fetch("EXPLAIN (COSTS OFF) EXECUTE take('r-queue', 100)")
        )
        await conn.execute("DEALLOCATE take")
    assert "Tid Scan on log_pending" in plan, plan
    assert "Index Scan using log_pending_pkey" in plan, plan
    assert "Filter" not in plan, plan


async def test_pending_vacuum_runs_every_n_ballots(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """The leader's VACUUM comes once the threshold is sealed and clears the dead queue rows."""
    signer, _ = make_signer(tmp_path)
    vacuum = PendingVacuum(every=30)
    size = "SELECT pg_relation_size('log_pending')"
    await insert_ballots(conn, RID, 40)
    sealed = await seal_block(conn, RID, signer, max_ballots=20)
    assert sealed is not None and not await vacuum.sealed(conn, sealed.ballots)
    assert await conn.fetchval(size) > 0
    sealed = await seal_block(conn, RID, signer, max_ballots=20)
    assert sealed is not None and await vacuum.sealed(conn, sealed.ballots)
    assert vacuum.since == 0
    # every row was dead: VACUUM removed them and gave the emptied pages back
    assert await conn.fetchval(size) == 0, "no VACUUM ran, or it left the dead rows"
    await insert_ballots(conn, RID, 10)
    sealed = await seal_block(conn, RID, signer, max_ballots=20)
    assert sealed is not None and not await vacuum.sealed(conn, sealed.ballots)
    assert vacuum.since == 10 and await conn.fetchval(size) > 0
    await verify_log(conn, RID, signer.verifier_key())


async def test_pending_vacuum_failure_is_not_fatal(conn: asyncpg.Connection) -> None:
    """A VACUUM that cannot run (here: inside a transaction) is logged; the leader goes on."""
    vacuum = PendingVacuum(every=1)
    async with conn.transaction():
        assert await vacuum.sealed(conn, 5) is False
    assert vacuum.since == 0
