"""What the run watches while it runs: ballots stored and sequenced, merge delays, /metrics."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from referendum_service.store.progress import ingest_progress, log_final, merge_delays

__all__ = ["DatabaseSampler", "scrape_metrics", "wait_final", "wait_sequenced"]


class DatabaseSampler:
    """Samples the ballots table each ``interval_s`` into ``samples.jsonl``."""

    def __init__(self, dsn: str, referendum_id: str, path: Path, interval_s: float = 1.0):
        self.dsn, self.rid, self.path, self.interval_s = dsn, referendum_id, path, interval_s
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one query at a time on the shared connection

    async def sample(self) -> dict[str, Any]:
        async with self._lock:
            return await self._sample()

    async def _sample(self) -> dict[str, Any]:
        if self._conn is None:
            self._conn = await asyncpg.connect(self.dsn)
        progress = await ingest_progress(self._conn, self.rid)
        return {
            "t": time.time(),
            "ballots": progress.ballots,
            "sequenced": progress.sequenced,
            "oldest_unsequenced_s": progress.oldest_unsequenced_s,
        }

    async def _loop(self) -> None:
        with self.path.open("ab") as out:
            while True:
                row = await self.sample()
                out.write(orjson.dumps(row) + b"\n")
                out.flush()
                await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def merge_delays(self) -> dict[str, Any]:
        """Per sequenced ballot, block ``sealed_at`` minus ``accepted_at``: p50, p99, max."""
        conn = await asyncpg.connect(self.dsn)
        try:
            delays = await merge_delays(conn, self.rid)
        finally:
            await conn.close()
        return {
            "t": time.time(),
            "sequenced_ballots": delays.count,
            "merge_delay_p50_s": delays.p50,
            "merge_delay_p99_s": delays.p99,
            "merge_delay_max_s": delays.max,
        }


async def wait_sequenced(
    sampler: DatabaseSampler, timeout_s: float, batcher: subprocess.Popen[bytes] | None
) -> bool:
    """Wait until every stored ballot is in the log; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = await sampler.sample()
        if row["ballots"] == row["sequenced"]:
            return True
        if batcher is not None and batcher.poll() is not None:
            return False
        await asyncio.sleep(0.5)
    return False


async def scrape_metrics(base_url: str, out_dir: Path, times: int) -> None:
    """Save ``/metrics`` a few times (each answer comes from whichever worker got it)."""
    async with aiohttp.ClientSession() as session:
        for i in range(times):
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(
                    base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)
                ) as response:
                    (out_dir / f"metrics-{i}.txt").write_bytes(await response.read())


async def wait_final(
    sampler: DatabaseSampler, timeout_s: float, batcher: subprocess.Popen[bytes]
) -> bool:
    """Wait until the log's final block is sealed; False after ``timeout_s`` or if the batcher
    failed."""
    deadline = time.monotonic() + timeout_s
    conn = await asyncpg.connect(sampler.dsn)
    try:
        while not await log_final(conn, sampler.rid):
            if time.monotonic() > deadline or batcher.poll() not in (None, 0):
                return False
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return True
