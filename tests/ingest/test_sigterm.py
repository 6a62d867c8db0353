"""SIGTERM under load: `referendum serve` with two workers loses no acknowledged ballot."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from tests.ingest import Load, create_referendum, wait_until

BALLOTS = 600
ACKED_BEFORE_SIGTERM = 80
DEADLINE_S = 90.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_ready(url: str, process: subprocess.Popen[bytes], deadline_s: float) -> None:
    """Poll /livez until it answers (bounded), failing early if the server died."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    async with aiohttp.ClientSession() as session:
        while True:
            assert process.poll() is None, "referendum serve exited before it was ready"
            try:
                async with session.get(url + "/livez") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert loop.time() < deadline, "referendum serve never became ready"
            await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_sigterm_under_load_loses_no_acknowledged_ballot(
    database_url: str, tmp_path: Path
) -> None:
    """Every ballot answered 201/200 before, during or after SIGTERM is in the database."""
    electorate = await create_referendum(
        database_url, "ref-term", voters=BALLOTS, policy="last_counts"
    )
    bodies = [orjson.dumps(electorate.ballot(f"v{i}")) for i in range(BALLOTS)]
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REFERENDUM_HOST": "127.0.0.1",
        "REFERENDUM_PORT": str(port),
        "REFERENDUM_WORKERS": "2",
        "REFERENDUM_DATA_DIR": str(tmp_path),
        "REFERENDUM_VOTER_RATE_PER_MINUTE": "1000",
    }
    referendum = str(Path(sys.executable).with_name("referendum"))
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [referendum, "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_ready(base, process, 60.0)
            load = Load(base + electorate.path, bodies, concurrency=16)
            running = asyncio.create_task(load.run(DEADLINE_S))
            await wait_until(
                lambda: len(load.acked) >= ACKED_BEFORE_SIGTERM or running.done(),
                DEADLINE_S,
                "ballots acknowledged before SIGTERM",
            )
            load.marked = True
            process.send_signal(signal.SIGTERM)
            await running
            returncode = await asyncio.get_running_loop().run_in_executor(
                None, lambda: process.wait(timeout=60)
            )
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    log_text = log_path.read_text(errors="replace")
    assert returncode == 0, log_text[-3000:]
    assert 500 not in load.statuses
    assert len(load.acked) >= ACKED_BEFORE_SIGTERM
    assert len(load.acked) < BALLOTS, "SIGTERM came after the load ended: nothing was tested"
    assert load.started_after_mark > 0
    assert load.acked_after_mark > 0, "requests in progress at SIGTERM were not answered"
    conn = await asyncpg.connect(database_url)
    try:
        stored = {
            bytes(r["ballot_hash"]).hex()
            for r in await conn.fetch("SELECT ballot_hash FROM ballots")
        }
    finally:
        await conn.close()
    lost = set(load.acked.values()) - stored
    assert not lost, f"{len(lost)} acknowledged ballots are not in the database"
