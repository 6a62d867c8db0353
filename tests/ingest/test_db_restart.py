"""The database stopped and restarted under load: 503s, recovery, no acknowledged ballot lost.

Uses a private PostgreSQL cluster (initdb in a temporary folder, its own port), never the
shared server: the test stops it like a crash (``pg_ctl stop -m immediate``) and starts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import orjson
import pytest

from referendum_service.migrate import apply_migrations
from tests.helpers import running_app
from tests.ingest import Load, create_referendum, ingest_settings, wait_until

BALLOTS = 500
DEADLINE_S = 120.0


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "pg_ctl").exists():
            return candidate
    try:
        import pgserver._commands as commands

        return Path(commands.POSTGRES_BIN_PATH)
    except ImportError:
        return None


class PrivatePostgres:
    """A throwaway cluster this test may stop and start at will."""

    def __init__(self, folder: Path) -> None:
        binaries = _pg_bin()
        if binaries is None:
            pytest.skip("no PostgreSQL binaries (pg_ctl, initdb) found")
        self.bin = binaries
        self.folder = folder
        self.data = folder / "data"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            for name in ("postgres", "pgserver"):
                with contextlib.suppress(KeyError):
                    entry = pwd.getpwnam(name)
                    self.user = name
                    os.chown(folder, entry.pw_uid, entry.pw_gid)
                    break
            else:
                pytest.skip("running as root and no 'postgres' system user")

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace')}")

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c shared_buffers=32MB -c max_connections=50"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.folder / "pg.log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private cluster, stopped and removed afterwards."""
    # not under pytest's tmp folder: its parents are private to root, and the server's
    # system user must reach this one
    folder = Path(tempfile.mkdtemp(prefix="referendum-private-pg-"))
    folder.chmod(0o755)
    server = PrivatePostgres(folder)
    server.init()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError, RuntimeError):
            server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
async def test_database_restart_under_load(
    private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    """While PostgreSQL is down ballots get 503 + Retry-After; afterwards all are stored once."""
    await apply_migrations(private_postgres.dsn)
    electorate = await create_referendum(
        private_postgres.dsn, "ref-restart", voters=BALLOTS, policy="last_counts"
    )
    bodies = [orjson.dumps(electorate.ballot(f"v{i}")) for i in range(BALLOTS)]
    loop = asyncio.get_running_loop()
    async with running_app(ingest_settings(tmp_path), private_postgres.dsn) as client:
        url = str(client.make_url(electorate.path))
        # a client that honours 503 by trying again later, as the voter app would
        load = Load(url, bodies, concurrency=16, retry_statuses=frozenset({503}))
        running = asyncio.create_task(load.run(DEADLINE_S))
        await wait_until(lambda: len(load.acked) >= 60, DEADLINE_S, "first acknowledgements")
        await loop.run_in_executor(None, private_postgres.stop, "immediate")
        acked_before_restart = len(load.acked)
        await wait_until(lambda: load.statuses.count(503) >= 20, DEADLINE_S, "503 answers")
        await loop.run_in_executor(None, private_postgres.start)
        await running
        # a probe after recovery: the status resource answers again
        probe = await client.get(f"{electorate.path}/{next(iter(load.acked.values()))}")
        assert probe.status == 200
    assert set(load.statuses) <= {200, 201, 503}, sorted(set(load.statuses))
    assert load.statuses.count(503) >= 20
    assert load.missing_retry_after == 0, "a 503 came without Retry-After or problem+json"
    assert len(load.acked) == BALLOTS > acked_before_restart
    conn = await asyncpg.connect(private_postgres.dsn)
    try:
        rows = await conn.fetch("SELECT ballot_hash FROM ballots")
    finally:
        await conn.close()
    stored = [bytes(r["ballot_hash"]).hex() for r in rows]
    assert len(stored) == len(set(stored)) == BALLOTS
    assert set(load.acked.values()) == set(stored)
