"""Child processes of a load run: each in its own process group, stopped within bounds.

Every child is stopped in a ``finally`` block: SIGTERM to its process group, then SIGKILL
after a grace period; no run outlives its bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import aiohttp

__all__ = [
    "GRACE_S",
    "READY_TIMEOUT_S",
    "ChildProcesses",
    "PhaseTimer",
    "free_port",
    "referendum_argv",
    "wait_ready",
]

READY_TIMEOUT_S = 60.0
GRACE_S = 10.0
"""How long a child gets between SIGTERM and SIGKILL."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PhaseTimer:
    """Wall-clock time of each named phase, printed as it ends."""

    def __init__(self, echo: Callable[[str], None] | None = print) -> None:
        self.phases: dict[str, float] = {}
        self.echo = echo

    @contextlib.contextmanager
    def phase(self, name: str) -> Any:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.phases[name] = elapsed
            if self.echo is not None:
                self.echo(f"[phase] {name}: {elapsed:,.2f} s")

    def table(self) -> str:
        width = max((len(n) for n in self.phases), default=5)
        lines = [f"{'phase'.ljust(width)}  seconds", f"{'-' * width}  -------"]
        lines += [f"{n.ljust(width)}  {s:>9,.2f}" for n, s in self.phases.items()]
        return "\n".join(lines)


class ChildProcesses:
    """Child processes, each in its own session (process group), all stopped on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append((name, process, log))
        return process

    def stop(self, process: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; the exit code."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(grace_s)
        # children of the group that outlived their parent
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode

    def stop_all(self) -> None:
        """Stop every child, newest first."""
        for _name, process, log in reversed(self.children):
            self.stop(process)
            log.close()
        self.children.clear()

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def referendum_argv(*args: str) -> list[str]:
    """Run a ``referendum`` subcommand with this interpreter."""
    return [sys.executable, "-c", "from referendum_cli import main; main()", *args]


async def wait_ready(base_url: str, processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Poll ``/readyz`` until it answers 200; raise if a child died or after a minute."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while True:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a server process exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(
                    base_url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base_url} not ready within {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.2)
