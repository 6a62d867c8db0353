"""The batcher killed with SIGKILL at random points under continuous ingestion loses nothing."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path

import asyncpg
import pytest

from tests.batcher.logs import (
    batcher_env,
    create_referendum,
    insert_ballots,
    make_signer,
    set_state,
    start_batcher,
    verify_log,
)

RID = "r-crash"
KILLS = 50
SEED = 20261120


async def ingest(database_url: str, stop: asyncio.Event, rng: random.Random) -> int:
    """Insert small batches of ballots (~2,000/s) until stopped; return how many."""
    conn = await asyncpg.connect(database_url)
    total = 0
    try:
        while not stop.is_set():
            count = rng.randint(1, 60)
            await insert_ballots(conn, RID, count)
            total += count
            await asyncio.sleep(rng.uniform(0, 0.02))
    finally:
        await conn.close()
    return total


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigkill_at_random_points_loses_nothing(database_url: str, tmp_path: Path) -> None:
    """50+ SIGKILLs of the batcher mid-sealing: every ballot in exactly one block, log intact."""
    rng = random.Random(SEED)
    signer, key_file = make_signer(tmp_path)
    env = batcher_env(database_url, key_file, tmp_path)
    conn = await asyncpg.connect(database_url)
    try:
        await create_referendum(conn, RID)
        stop = asyncio.Event()
        inserter = asyncio.create_task(ingest(database_url, stop, random.Random(SEED + 1)))
        heights: list[int] = []
        for _ in range(KILLS):
            process = await start_batcher(env, RID)
            # start-up takes ~0.5 s; kill anywhere from before the first round to many rounds in
            await asyncio.sleep(rng.uniform(0.4, 1.6))
            assert process.returncode is None, "the batcher exited on its own"
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), timeout=30)
            heights.append(await conn.fetchval("SELECT coalesce(max(height), 0) FROM blocks"))
        stop.set()
        inserted = await asyncio.wait_for(inserter, timeout=30)
        assert heights[-1] > heights[len(heights) // 2] > 0, "the log grew between kills"

        # closing the referendum makes one last batcher seal everything and exit by itself
        await set_state(conn, RID, "closed")
        process = await start_batcher(env, RID)
        assert await asyncio.wait_for(process.wait(), timeout=60) == 0
        summary = await verify_log(conn, RID, signer.verifier_key(), expect_final=True)
        assert summary["ballots"] == inserted
    finally:
        await conn.close()
