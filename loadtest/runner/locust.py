"""Distributed Locust: one headless master and its workers, bounded in time."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.runner.processes import ChildProcesses, free_port

__all__ = ["DEFAULT_USER_CLASSES", "LOCUSTFILE", "SHAPESFILE", "LocustOutcome", "run_locust"]

LOADTEST_DIR = Path(__file__).resolve().parent.parent
LOCUSTFILE = LOADTEST_DIR / "locustfile.py"
SHAPESFILE = LOADTEST_DIR / "shapes.py"
DEFAULT_USER_CLASSES = ("Voter", "ReVoter", "Auditor", "Operator")


@dataclass(frozen=True)
class LocustOutcome:
    """How a Locust run ended: where its CSV files are, its exit code, whether it was cut off."""

    csv_prefix: Path
    returncode: int | None
    timed_out: bool
    seconds: float


async def run_locust(
    base_url: str,
    pool_dir: Path,
    out_dir: Path,
    children: ChildProcesses,
    *,
    duration_s: float,
    users: int,
    spawn_rate: float,
    workers: int = 1,
    shape: str | None = None,
    user_classes: Sequence[str] = DEFAULT_USER_CLASSES,
    api_key: str = "",
    extra_env: dict[str, str] | None = None,
    stop_when: Callable[[], Any] | None = None,
) -> LocustOutcome:
    """One headless Locust master and ``workers`` workers against ``base_url``, bounded.

    The master runs ``duration_s`` (``--run-time``, or the shape's length); it is stopped
    (SIGTERM, so it still writes its files) 60 s after that at the latest, or earlier when the
    awaitable ``stop_when()`` returns true (checked every second).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    master_port = free_port()
    env = {
        **os.environ,
        "REFERENDUM_LOADTEST_POOL": str(pool_dir),
        "REFERENDUM_LOADTEST_SHARDS": str(max(1, workers)),
        "REFERENDUM_LOADTEST_API_KEY": api_key,
        "REFERENDUM_LOADTEST_PEAK_USERS": str(users),
        "REFERENDUM_LOADTEST_DURATION_S": str(duration_s),
        "REFERENDUM_LOADTEST_SPAWN_RATE": str(spawn_rate),
        **(extra_env or {}),
    }
    files = str(LOCUSTFILE)
    if shape:
        env["REFERENDUM_LOADTEST_SHAPE"] = shape
        files += "," + str(SHAPESFILE)
    prefix = out_dir / "locust"
    common = [sys.executable, "-m", "locust", "-f", files, "--loglevel", "WARNING"]
    master_argv = [
        *common,
        "--master",
        "--headless",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(master_port),
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        "60",
        "-H",
        base_url,
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "--run-time",
        f"{max(1, round(duration_s))}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--json-file",
        str(out_dir / "locust"),
        "--html",
        str(out_dir / "locust.html"),
        "--only-summary",
        "--exit-code-on-error",
        "0",  # failures are judged by the report's objectives, not by Locust
        *user_classes,
    ]
    worker_argv = [
        *common,
        "--worker",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(master_port),
        *user_classes,
    ]
    started = time.monotonic()
    master = children.start("locust-master", master_argv, env)
    worker_processes = [
        children.start(f"locust-worker-{i}", worker_argv, env) for i in range(max(1, workers))
    ]
    deadline = started + duration_s + 60.0
    timed_out = False
    while master.poll() is None:
        if time.monotonic() > deadline:
            timed_out = True
            break
        if stop_when is not None and await stop_when():
            break
        await asyncio.sleep(1.0)
    returncode = master.poll()
    if returncode is None:
        returncode = children.stop(master, grace_s=30.0)
    for worker in worker_processes:
        children.stop(worker)
    return LocustOutcome(prefix, returncode, timed_out, time.monotonic() - started)
