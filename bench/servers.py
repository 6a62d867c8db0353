"""``referendum serve`` as a subprocess of a benchmark: started, ready, stopped.

``bench ingest`` and ``bench log`` both measure a real server process over 127.0.0.1, so that
the figures include HTTP, the worker processes and their database pools; this is the one place
that starts it and decides when it is ready to be measured, and that finds its database
connections (whose CPU is the PostgreSQL share of a run).
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import asyncpg
import click

from bench.loadgen import children

START_TIMEOUT_S = 60.0


@contextlib.contextmanager
def referendum_serve(
    env: dict[str, str],
    *,
    port: int,
    workers: int,
    migrate: bool = True,
    log_file: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``referendum serve`` with ``workers`` processes on 127.0.0.1:``port``, once ready.

    Requires ``env`` to be the server's whole environment (``DATABASE_URL`` and the other
    ``REFERENDUM_*`` settings); host, port and workers are set here. With ``log_file`` the
    server's stderr goes there and its stdout is dropped; else both are this process's.
    The server is terminated on leaving, and killed if it has not exited 60 s later.

    Raises:
        click.ClickException: the server exited, or was not ready within 60 s.
    """
    command = [str(Path(sys.executable).with_name("referendum")), "serve"]
    if not migrate:
        command.append("--no-migrate")
    full_env = {
        **env,
        "REFERENDUM_HOST": "127.0.0.1",
        "REFERENDUM_PORT": str(port),
        "REFERENDUM_WORKERS": str(workers),
    }
    with contextlib.ExitStack() as stack:
        errors: IO[bytes] | None = None
        stdout: int | None = None
        if log_file is not None:
            errors = stack.enter_context(log_file.open("wb"))
            stdout = subprocess.DEVNULL
        process = subprocess.Popen(command, env=full_env, stdout=stdout, stderr=errors)
        try:
            hint = f" (see {log_file})" if log_file is not None else ""
            asyncio.run(wait_ready(f"http://127.0.0.1:{port}/livez", workers, process, hint))
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def wait_ready(
    url: str, workers: int, process: subprocess.Popen[bytes], hint: str = ""
) -> None:
    """Return once ``url`` answers 200 and ``process`` has ``workers`` children.

    A 200 from one worker is not enough with several: a run started then would measure fewer
    processes than it names.
    """
    import aiohttp

    deadline = time.monotonic() + START_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while True:
            if process.poll() is not None:
                raise click.ClickException(f"the server exited during start-up{hint}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200 and len(children(process.pid)) >= workers:
                        return
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"the server did not start within {START_TIMEOUT_S:g} s{hint}"
                )
            await asyncio.sleep(0.1)


async def backend_pids(dsn: str) -> list[int]:
    """PostgreSQL backends of the database other than this one (the server's pool)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]
