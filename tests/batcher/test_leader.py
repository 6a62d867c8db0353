"""One leader per referendum: racing batchers never fork the log; a standby takes over."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg

from batcher.service import ReferendumBatcher, seal_block
from referendum_service.settings import Settings
from tests.batcher.logs import (
    batcher_env,
    create_referendum,
    insert_ballots,
    make_signer,
    start_batcher,
    verify_log,
    wait_for,
)

RID = "r-leader"


async def test_two_sealers_racing_never_fork(database_url: str, tmp_path: Path) -> None:
    """Two sealing loops on one log, without the leader lock, still write one linear chain."""
    signer, _ = make_signer(tmp_path)
    setup = await asyncpg.connect(database_url)
    await create_referendum(setup, RID)
    stop = asyncio.Event()

    async def feed() -> None:
        feeder = await asyncpg.connect(database_url)
        try:
            while not stop.is_set():
                await insert_ballots(feeder, RID, 37)
                await asyncio.sleep(0.005)
        finally:
            await feeder.close()

    async def race(conn: asyncpg.Connection) -> int:
        blocks = 0
        while not stop.is_set():
            if await seal_block(conn, RID, signer, max_ballots=50) is not None:
                blocks += 1
            await asyncio.sleep(0)
        return blocks

    first, second = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        feeder = asyncio.create_task(feed())
        racers = [asyncio.create_task(race(c)) for c in (first, second)]
        await wait_for(setup, "SELECT count(*) >= 200 FROM blocks")
        stop.set()
        await feeder
        counts = await asyncio.gather(*racers)
        assert all(c > 0 for c in counts), f"both sealers wrote blocks: {counts}"
        while await seal_block(first, RID, signer, max_ballots=1000) is not None:
            pass
        await verify_log(setup, RID, signer.verifier_key())
    finally:
        for conn in (first, second, setup):
            await conn.close()


async def test_only_one_of_two_batchers_leads(database_url: str, tmp_path: Path) -> None:
    """Of two batcher services on one referendum one leads; the other takes over when it stops."""
    signer, _ = make_signer(tmp_path)
    conn = await asyncpg.connect(database_url)
    await create_referendum(conn, RID)
    settings = Settings(block_max_ballots=20, block_max_ms=50)
    stops = [asyncio.Event(), asyncio.Event()]
    services = [ReferendumBatcher(database_url, RID, signer, settings, s) for s in stops]
    tasks = [asyncio.create_task(s.run()) for s in services]
    try:
        await insert_ballots(conn, RID, 50)
        await wait_for(conn, "SELECT count(*) = 50 FROM log_entries")
        leaders = [s.is_leader for s in services]
        assert sorted(leaders) == [False, True]
        leader = leaders.index(True)
        stops[leader].set()
        await asyncio.wait_for(tasks[leader], timeout=30)
        await insert_ballots(conn, RID, 30)
        await wait_for(conn, "SELECT count(*) = 80 FROM log_entries")
        assert services[1 - leader].is_leader
        await verify_log(conn, RID, signer.verifier_key())
    finally:
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
        await conn.close()


async def test_standby_takes_over_after_sigkill(database_url: str, tmp_path: Path) -> None:
    """A standby batcher process seals new ballots within seconds of the leader's SIGKILL."""
    signer, key_file = make_signer(tmp_path)
    env = batcher_env(database_url, key_file, tmp_path)
    conn = await asyncpg.connect(database_url)
    processes: list[asyncio.subprocess.Process] = []
    try:
        await create_referendum(conn, RID)
        await insert_ballots(conn, RID, 10)
        processes.append(await start_batcher(env, RID))
        await wait_for(conn, "SELECT count(*) = 10 FROM log_entries")
        processes.append(await start_batcher(env, RID))
        # the standby is up once it has a session polling for the lock
        await wait_for(
            conn,
            "SELECT count(*) = 2 FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        processes[0].send_signal(signal.SIGKILL)
        await processes[0].wait()
        await insert_ballots(conn, RID, 10)
        await wait_for(conn, "SELECT count(*) = 20 FROM log_entries", timeout=15)
        assert processes[1].returncode is None
        processes[1].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(processes[1].wait(), timeout=30) == 0
        await verify_log(conn, RID, signer.verifier_key())
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        await conn.close()


def test_batcher_timings_come_from_settings(tmp_path: Path) -> None:
    """The standby poll and the queue's VACUUM cadence are the settings' values."""
    signer, _ = make_signer(tmp_path)
    settings = Settings(standby_poll_ms=250, pending_vacuum_every=7)
    batcher = ReferendumBatcher("postgresql://unused", RID, signer, settings, asyncio.Event())
    assert batcher.standby_poll_s == 0.25 and batcher.vacuum.every == 7
