"""The reported bug: after SIGKILL of the postmaster, PostgreSQL did not come back for minutes.

What was found: a SIGKILLed postmaster stays in the process table (a zombie) until its parent
reaps it, and its orphaned backends run on until they notice; a new postmaster refuses to start
while ``postmaster.pid`` names a live process ('lock file "postmaster.pid" already exists') or
while an orphan still holds the old shared memory. A restart that tries once fails, and the
servers see ``connection refused`` for as long as nothing tries again: with a parent that never
reaps (a container whose PID 1 does not), for ever. The services were not at fault: their pools
and the batcher reconnect by themselves once the database listens again.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.chaos.cluster import ClusterError, PrivateCluster, postgres_binaries
from referendum_service.db import create_pool, ping
from referendum_service.settings import Settings

pytestmark = pytest.mark.skipif(postgres_binaries() is None, reason="no PostgreSQL binaries")


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A started private cluster, removed afterwards."""
    server = PrivateCluster()
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.remove()


def _stand_in(cluster: PrivateCluster, seconds: float) -> subprocess.Popen[bytes]:
    """A live process of the cluster's user, as the killed postmaster is until it is reaped.

    Reaped by a thread as soon as it exits: left a zombie, it would hold the lock for ever,
    which is the bug itself.
    """
    process = subprocess.Popen(["sleep", str(seconds)], user=cluster.user)
    threading.Thread(target=process.wait, daemon=True).start()
    return process


async def test_restart_after_postmaster_kill_waits_for_its_lock_and_the_pool_recovers(
    cluster: PrivateCluster,
) -> None:
    """A one-shot restart is refused while the dead postmaster's pid lives; start() waits it out,
    and a service pool made before the crash serves again without being re-created."""
    pool = await create_pool(cluster.dsn, Settings(db_pool_min=2, db_pool_max=4))
    try:
        await ping(pool, 2.0)
        cluster.kill_postmaster()
        lock = cluster.data / "postmaster.pid"
        sleeper = _stand_in(cluster, 4.0)
        try:
            lines = lock.read_text().splitlines()
            lock.write_text("\n".join([str(sleeper.pid), *lines[1:]]) + "\n")
            with pytest.raises(ClusterError):
                await asyncio.to_thread(cluster.start, 0.0)  # one attempt: what failed
            log = (cluster.folder / "pg.log").read_text()
            assert 'lock file "postmaster.pid" already exists' in log
            with pytest.raises(Exception):  # noqa: B017 - any driver error: nothing listens
                await ping(pool, 1.0)
            took = await asyncio.to_thread(cluster.start, 30.0)
            assert sleeper.poll() is not None, "started while the lock's process still lived"
            assert took > 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                sleeper.kill()
            sleeper.wait()
        back = time.monotonic()
        while True:
            try:
                await ping(pool, 1.0)
                break
            except Exception:
                assert time.monotonic() - back < 10.0, "the pool did not recover in 10 s"
                await asyncio.sleep(0.1)  # polling the pool's recovery, with a deadline
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


def test_real_postmaster_kill_then_start_brings_the_database_back(
    cluster: PrivateCluster,
) -> None:
    """SIGKILL of the postmaster with a client connected; start() (retrying) restores it."""
    import asyncpg

    async def kill_with_a_client() -> None:
        conn = await asyncpg.connect(cluster.dsn)
        try:
            cluster.kill_postmaster()
            assert cluster.postmaster_pid() is None
            assert not cluster.ready()
        finally:
            conn.terminate()

    asyncio.run(kill_with_a_client())
    cluster.start(60.0)
    assert cluster.ready()


def test_folder_is_private_to_the_run(tmp_path: Path) -> None:
    """Each cluster lives in its own new folder on its own port."""
    a, b = PrivateCluster(), PrivateCluster()
    try:
        assert a.folder != b.folder and a.port != b.port
    finally:
        a.remove()
        b.remove()
