"""``referendum serve``: N server processes on one port, under a supervising parent.

The parent resolves the database (starting the embedded one if no ``DATABASE_URL`` is set, so
it lives as long as the parent), then starts ``settings.workers`` processes. Each binds
``settings.host:settings.port`` with ``SO_REUSEPORT`` (the kernel spreads connections over
them), runs the application under uvloop with ``handler_cancellation`` off, and serves until
told to stop. A worker that dies is restarted.

Stopping (SIGTERM or SIGINT to the parent, which forwards SIGTERM to every worker): a worker
closes its listening socket, lets every request in progress finish (their ballots are
committed or refused, and each gets its answer), drains the ingest queue, closes the pool and
exits. Nothing is acknowledged before its COMMIT, so nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

import structlog
from aiohttp import web

from referendum_service.db import resolve_database_url
from referendum_service.settings import Settings

__all__ = ["run_servers", "serve_worker"]

log = structlog.get_logger("server.serving")

SHUTDOWN_TIMEOUT_S = 30.0
"""Longest a worker waits for requests in progress when stopping (then closes them)."""
_KILL_AFTER_S = SHUTDOWN_TIMEOUT_S + 15.0
_RESTART_BACKOFF_S = 1.0


def run_servers(settings: Settings) -> None:
    """Start ``settings.workers`` server processes and supervise them until SIGTERM/SIGINT."""
    from referendum_service.logs import configure_logging

    configure_logging(settings)
    database_url = resolve_database_url(settings)
    context = multiprocessing.get_context("spawn")
    count = max(1, settings.workers)
    stopping = False

    def start(index: int) -> BaseProcess:
        process = context.Process(
            target=serve_worker,
            args=(settings, database_url, index),
            name=f"referendum-server-{index}",
            daemon=False,
        )
        process.start()
        return process

    workers: list[BaseProcess] = []
    told: set[int] = set()  # workers already sent SIGTERM (a second one would kill at exit)

    def tell_to_stop() -> None:
        for worker in workers:
            if worker.pid is not None and worker.pid not in told and worker.exitcode is None:
                told.add(worker.pid)
                os.kill(worker.pid, signal.SIGTERM)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        tell_to_stop()  # at once: the supervising loop may be asleep

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    workers.extend(start(i) for i in range(count))
    log.info("servers_started", workers=count, host=settings.host, port=settings.port)
    try:
        while not stopping:
            multiprocessing.connection.wait([w.sentinel for w in workers], timeout=0.5)
            for index, worker in enumerate(workers):
                if not worker.is_alive() and not stopping:
                    log.warning("server_restarted", worker=index, exitcode=worker.exitcode)
                    time.sleep(_RESTART_BACKOFF_S)
                    workers[index] = start(index)
        log.info("servers_stopping", workers=count)
        tell_to_stop()  # again: a worker may have been restarted while the signal came
        deadline = time.monotonic() + _KILL_AFTER_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.error("server_killed", pid=worker.pid)
                worker.kill()
                worker.join()
        exitcodes = [w.exitcode for w in workers]
        log.info("servers_stopped", exitcodes=exitcodes)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if any(code != 0 for code in exitcodes):
        raise SystemExit(1)  # a worker did not stop cleanly: say so to the process manager


def serve_worker(settings: Settings, database_url: str, index: int) -> None:
    """One server process: the application on the shared port until SIGTERM (entry point)."""
    import uvloop

    from referendum_service.logs import configure_logging

    configure_logging(settings)
    uvloop.run(_serve(settings, database_url, index))
    # stopped cleanly: a late signal (Ctrl-C reaches the whole group) must not turn that
    # into a kill
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)


async def _serve(settings: Settings, database_url: str, index: int) -> None:
    from server.app import make_app

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()

    app = make_app(settings, database_url=database_url)
    runner = web.AppRunner(
        app,
        handler_cancellation=False,  # a disconnect must not cut a write in half
        access_log=None,  # requests are counted by the metrics middleware instead
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=1024)
        await site.start()
        log.info("server_listening", worker=index, pid=os.getpid(), port=settings.port)
        while not stop.is_set():
            # an orphaned worker (the supervisor was killed) stops by itself
            if os.getppid() != parent:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=1.0)
        log.info("server_stopping", worker=index, pid=os.getpid())
    finally:
        # stops accepting, waits for requests in progress, then drains the queue and pool
        await runner.cleanup()
    log.info("server_stopped", worker=index, pid=os.getpid())
