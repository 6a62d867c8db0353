"""The server processes ``bench ingest`` measures, their settings, metrics and idleness."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import click

from bench.loadgen import cpu_seconds, descendants
from bench.servers import referendum_serve

# Saturation runs push far more ballots at once than a server's defaults admit.
SATURATION_ENV = {
    "REFERENDUM_VOTER_RATE_PER_MINUTE": "100",
    "REFERENDUM_ADMISSION_LIMIT": "20000",
    "REFERENDUM_QUEUE_LIMIT": "20000",
}


@contextlib.contextmanager
def server(
    dsn: str,
    port: int,
    workers: int,
    verify_workers: int,
    data_dir: Path,
    settings_env: dict[str, str] | None = None,
) -> Iterator[int]:
    """``workers`` server processes on ``port``; yields the supervisor's pid.

    ``settings_env`` (``REFERENDUM_*`` variables) defaults to :data:`SATURATION_ENV`; the
    attack runs pass their own, keeping the server's defaults for the rest.
    """
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "REFERENDUM_VERIFY_WORKERS": str(verify_workers),
        "REFERENDUM_DATA_DIR": str(data_dir),
        "REFERENDUM_LOG_LEVEL": "warning",
        **(SATURATION_ENV if settings_env is None else settings_env),
    }
    # the database was migrated when it was made: a start must not touch the schema
    with referendum_serve(env, port=port, workers=workers, migrate=False) as process:
        yield process.pid


def _commit_stats(port: int) -> dict[str, float]:
    """Mean group-commit size and transaction time, from the server's own metrics."""
    import urllib.request

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (
            "referendum_ingest_batch_size_sum",
            "referendum_ingest_batch_size_count",
            "referendum_ingest_commit_seconds_sum",
        ):
            values[name] = float(value)
    batches = max(values.get("referendum_ingest_batch_size_count", 0.0), 1.0)
    return {
        "batches": batches,
        "mean_batch_ballots": round(values.get("referendum_ingest_batch_size_sum", 0) / batches, 1),
        "mean_commit_ms": round(
            1000 * values.get("referendum_ingest_commit_seconds_sum", 0) / batches, 2
        ),
    }


def _wait_idle(
    root: int, *, cores: float = 0.2, window_s: float = 0.5, limit_s: float = 30
) -> None:
    """Wait (up to ``limit_s``) until the server uses under ``cores`` over ``window_s``."""
    pids = descendants(root)[1:]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(window_s)
        if (cpu_seconds(pids) - before) / window_s < cores:
            return
    click.echo(f"  the server was still busy after {limit_s:g} s; measuring anyway", err=True)
