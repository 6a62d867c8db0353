"""Sealing rounds: blocks, checkpoints, stored nodes, late ballots, closing, fencing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from batcher.service import ReferendumBatcher, leader_lock_key, run_batcher, seal_block
from referendum_core.merkle import CompactRange, leaf_hash
from referendum_service.settings import Settings
from tests.batcher.logs import (
    create_referendum,
    insert_ballots,
    make_signer,
    open_referendum_connection,
    random_body,
    set_state,
    verify_log,
    wait_for,
)

RID = "r-seal"


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a fresh database holding one open referendum."""
    async for connection in open_referendum_connection(database_url, RID):
        yield connection


async def test_blocks_chain_and_verify(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Blocks of several sizes form one chain whose roots, nodes and checkpoints verify."""
    signer, _ = make_signer(tmp_path)
    assert await seal_block(conn, RID, signer, max_ballots=10) is None
    sizes = []
    for count in (1, 7, 16, 33, 100, 3):
        await insert_ballots(conn, RID, count)
        while (sealed := await seal_block(conn, RID, signer, max_ballots=40)) is not None:
            sizes.append(sealed.ballots)
    assert sizes == [1, 7, 16, 33, 40, 40, 20, 3]
    summary = await verify_log(conn, RID, signer.verifier_key())
    assert summary == {"ballots": 160, "blocks": 8, "nodes": 10 + 5 + 2 + 1}


async def test_late_lower_id_is_sequenced(
    conn: asyncpg.Connection, database_url: str, tmp_path: Path
) -> None:
    """A ballot committed after higher ids were sealed still gets the next log index."""
    signer, _ = make_signer(tmp_path)
    late = await asyncpg.connect(database_url)
    try:
        late_tx = late.transaction()
        await late_tx.start()
        late_body = random_body()
        late_id = await late.fetchval(
            "INSERT INTO ballots (referendum_id, credential, ballot_hash, body, receipt)"
            " VALUES ($1, sha256('late'::bytea), sha256($2), $2, '{}') RETURNING id",
            RID,
            late_body,
        )
        await insert_ballots(conn, RID, 5)
        sealed = await seal_block(conn, RID, signer, max_ballots=100)
        assert sealed is not None and sealed.ballots == 5
        await late_tx.commit()
    finally:
        await late.close()
    assert await conn.fetchval("SELECT min(id) FROM ballots WHERE referendum_id = $1", RID) == (
        late_id
    )
    sealed = await seal_block(conn, RID, signer, max_ballots=100)
    assert sealed is not None and (sealed.block.first_index, sealed.block.end_index) == (5, 6)
    row = await conn.fetchrow(
        "SELECT log_index, block_height FROM log_entries WHERE ballot_id = $1", late_id
    )
    assert (row["log_index"], row["block_height"]) == (5, 2)
    await verify_log(conn, RID, signer.verifier_key())


async def test_close_seals_rest_and_finalises(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """Closing seals every waiting ballot into a final block; nothing can follow it."""
    signer, _ = make_signer(tmp_path)
    await insert_ballots(conn, RID, 25)
    first = await seal_block(conn, RID, signer, max_ballots=10, close=True)
    assert first is not None and not first.final
    second = await seal_block(conn, RID, signer, max_ballots=10, close=True)
    assert second is not None and not second.final
    last = await seal_block(conn, RID, signer, max_ballots=10, close=True)
    assert last is not None and last.final and last.ballots == 5
    assert await seal_block(conn, RID, signer, max_ballots=10, close=True) is None
    await verify_log(conn, RID, signer.verifier_key(), expect_final=True)


async def test_close_with_nothing_waiting_writes_empty_final_block(
    conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """A log closed with nothing waiting gets an empty final block with a fresh checkpoint."""
    signer, _ = make_signer(tmp_path)
    await insert_ballots(conn, RID, 10)
    assert await seal_block(conn, RID, signer, max_ballots=10) is not None
    last = await seal_block(conn, RID, signer, max_ballots=10, close=True)
    assert last is not None and last.final and last.ballots == 0
    assert last.block.tree_size == 10 and last.block.height == 2
    await verify_log(conn, RID, signer.verifier_key(), expect_final=True)


async def test_database_refuses_forks_and_changes(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """The blocks table refuses a block that does not extend the chain, and any update."""
    signer, _ = make_signer(tmp_path)
    await insert_ballots(conn, RID, 16)
    sealed = await seal_block(conn, RID, signer, max_ballots=20)
    assert sealed is not None
    row = dict(await conn.fetchrow("SELECT * FROM blocks WHERE referendum_id = $1", RID))
    columns = ", ".join(row)
    placeholders = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    insert = f"INSERT INTO blocks ({columns}) VALUES ({placeholders})"  # noqa: S608 - own column names
    forged = {**row, "height": 2, "first_index": 16, "end_index": 16, "tree_size": 16}
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="does not extend"):
        await conn.execute(insert, *{**forged, "prev_hash": bytes(32)}.values())
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="does not extend"):
        await conn.execute(
            insert,
            *{**forged, "prev_hash": row["block_hash"], "first_index": 15}.values(),
        )
    with pytest.raises(asyncpg.UniqueViolationError):
        await conn.execute(insert, *row.values())
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("UPDATE blocks SET root = $1", bytes(32))
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("DELETE FROM log_nodes")
    await verify_log(conn, RID, signer.verifier_key())


async def test_extends_tree_incrementally(conn: asyncpg.Connection, tmp_path: Path) -> None:
    """The stored head is the compact range of all sequenced leaves, in log order."""
    signer, _ = make_signer(tmp_path)
    bodies = await insert_ballots(conn, RID, 37)
    for _ in range(4):
        await seal_block(conn, RID, signer, max_ballots=10)
    head = await conn.fetchval("SELECT compact_range FROM log_heads WHERE referendum_id = $1", RID)
    expected = CompactRange()
    expected.extend(leaf_hash(b) for b in bodies)  # inserted in one statement: ids in order
    assert CompactRange.from_bytes(head) == expected


async def test_service_closes_blocks_by_count_and_time(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """The leader seals full blocks at once, a partial one after block_max_ms, then finalises."""
    signer, _ = make_signer(tmp_path)
    settings = Settings(block_max_ballots=5, block_max_ms=200)
    stop = asyncio.Event()
    service = ReferendumBatcher(database_url, RID, signer, settings, stop)
    task = asyncio.create_task(service.run())
    try:
        await insert_ballots(conn, RID, 12)
        await wait_for(conn, "SELECT count(*) = 12 FROM log_entries")
        assert (
            await conn.fetchval("SELECT pg_try_advisory_lock($1)", leader_lock_key(RID)) is False
        ), "the service holds the leader lock"
        await set_state(conn, RID, "closed")
        await asyncio.wait_for(task, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    sizes = [
        r["n"]
        for r in await conn.fetch("SELECT end_index - first_index AS n FROM blocks ORDER BY height")
    ]
    assert sizes == [5, 5, 2, 0]
    await verify_log(conn, RID, signer.verifier_key(), expect_final=True)


async def test_batcher_serves_every_referendum(
    database_url: str, conn: asyncpg.Connection, tmp_path: Path
) -> None:
    """Without --referendum the batcher finds every open referendum and finalises closed ones."""
    signer, _ = make_signer(tmp_path)
    await create_referendum(conn, "r-other")
    await create_referendum(conn, "r-draft", state="draft")
    stop = asyncio.Event()
    settings = Settings(block_max_ballots=100, block_max_ms=50)
    task = asyncio.create_task(run_batcher(database_url, settings, signer, stop))
    try:
        for rid in (RID, "r-other"):
            await insert_ballots(conn, rid, 7)
        await wait_for(conn, "SELECT count(*) = 14 FROM log_entries")
        await set_state(conn, "r-other", "closed")
        await wait_for(conn, "SELECT final FROM log_heads WHERE referendum_id = 'r-other'")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
    await verify_log(conn, RID, signer.verifier_key())
    await verify_log(conn, "r-other", signer.verifier_key(), expect_final=True)
    assert (
        await conn.fetchval("SELECT count(*) FROM log_heads WHERE referendum_id = 'r-draft'") == 0
    )
