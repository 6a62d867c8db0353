"""What the chaos run starts and breaks: its PostgreSQL, the proxy, N servers, two batchers.

Servers and batchers reach the database through the :class:`~loadtest.chaos.proxy.NetworkProxy`
(so the network can be cut); the run itself watches the database directly. Each batcher's
connections carry ``application_name=chaos-batcher-N``, so the run finds the leader as the
session holding the referendum's advisory lock, without asking the batchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from loadtest.chaos.cluster import PrivateCluster, children_of
from loadtest.chaos.proxy import NetworkProxy
from loadtest.runner.processes import ChildProcesses, free_port, referendum_argv, wait_ready
from referendum_service.scratch import with_database

__all__ = ["Stack"]

BATCHER_APP = "chaos-batcher-"


@dataclass
class Stack:
    """The running system under test; :meth:`start` it, :meth:`stop` it in a ``finally``."""

    folder: Path
    servers: int
    server_env: dict[str, str] = field(default_factory=dict)
    server_argv: list[str] | None = None
    """Command that runs the servers (default ``referendum serve``; a test swaps in a build)."""
    wal_disk_mb: int | None = 48
    """Size of the WAL's own disk (a tmpfs; only as root and where mounting works)."""

    def __post_init__(self) -> None:
        # in a folder of its own under the system's temporary folder: the cluster's system
        # user must reach it, and a test's folder has parents private to root
        self.cluster = PrivateCluster(wal_disk_mb=self.wal_disk_mb)
        self.children = ChildProcesses(self.folder / "logs")
        self.proxy: NetworkProxy | None = None
        self.database = "referendum_chaos"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.batchers: dict[str, subprocess.Popen[bytes]] = {}
        self._batcher_count = 0
        self.referendum_id = ""
        # the servers' voter-id key (roll imports need one): made per run, kept in memory
        self.voter_id_key = secrets.token_hex(32)

    @property
    def direct_dsn(self) -> str:
        """The run's own way in, bypassing the proxy."""
        return with_database(self.cluster.dsn, self.database)

    @property
    def service_dsn(self) -> str:
        """What servers and batchers are given: through the proxy."""
        assert self.proxy is not None
        return f"postgresql://postgres@127.0.0.1:{self.proxy.port}/{self.database}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a service process."""
        return {
            **os.environ,
            "DATABASE_URL": self.service_dsn,
            "REFERENDUM_HOST": "127.0.0.1",
            "REFERENDUM_PORT": str(self.port),
            "REFERENDUM_WORKERS": str(self.servers),
            "REFERENDUM_DATA_DIR": str(self.folder / "data"),
            "REFERENDUM_LOG_LEVEL": "info",
            "REFERENDUM_VOTER_ID_KEY": self.voter_id_key,
            **self.server_env,
            **extra,
        }

    async def start_database(self) -> None:
        """initdb, start, create and migrate the database, start the proxy."""
        from referendum_service.migrate import apply_migrations

        await asyncio.to_thread(self.cluster.init)
        await asyncio.to_thread(self.cluster.start)
        conn = await asyncpg.connect(self.cluster.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await conn.close()
        await apply_migrations(self.direct_dsn)
        self.proxy = NetworkProxy(self.cluster.port)
        await self.proxy.start()

    async def start_servers(self) -> None:
        """``referendum serve`` (N workers on one port, no migration) until ``/readyz``."""
        argv = self.server_argv or referendum_argv("serve", "--no-migrate")
        self.supervisor = self.children.start("servers", argv, self.env())
        await wait_ready(self.base_url, [self.supervisor])

    def start_batcher(self) -> str:
        """One more ``referendum batcher --referendum RID``; its name."""
        self._batcher_count += 1
        name = f"{BATCHER_APP}{self._batcher_count}"
        dsn = f"{self.service_dsn}?application_name={name}"
        argv = referendum_argv("batcher", "--referendum", self.referendum_id)
        self.batchers[name] = self.children.start(name, argv, self.env(DATABASE_URL=dsn))
        return name

    def live_batchers(self) -> dict[str, subprocess.Popen[bytes]]:
        """The batchers still running (a killed one is forgotten)."""
        for name, process in list(self.batchers.items()):
            if process.poll() is not None:
                del self.batchers[name]
        return dict(self.batchers)

    async def leader(self) -> str | None:
        """The batcher holding the leader lock now (``None`` while none does)."""
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn = await asyncpg.connect(self.direct_dsn, timeout=3)
            try:
                name = await conn.fetchval(
                    "SELECT a.application_name FROM pg_locks AS l"
                    " JOIN pg_stat_activity AS a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.granted"
                    " AND a.application_name LIKE $1 LIMIT 1",
                    BATCHER_APP + "%",
                )
                return str(name) if name else None
            finally:
                await conn.close()
        return None

    def server_workers(self) -> list[int]:
        """Pids of the server worker processes (children of the supervisor)."""
        assert self.supervisor is not None
        workers = []
        for pid in children_of(self.supervisor.pid):
            with contextlib.suppress(OSError):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
                    workers.append(pid)
        return workers

    async def stop(self) -> None:
        """Stop every child, the proxy and the cluster (each step bounded)."""
        await asyncio.to_thread(self.children.stop_all)
        if self.proxy is not None:
            await self.proxy.close()
        with contextlib.suppress(OSError):  # the database's log stays with the run's logs
            (self.folder / "logs").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.cluster.folder / "pg.log", self.folder / "logs" / "postgresql.log")
        await asyncio.to_thread(self.cluster.remove)
