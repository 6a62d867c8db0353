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

Requests aiohttp refuses before any handler runs (a malformed request line, a bad or too long
header, broken framing) are answered by :class:`ProblemAppRunner`'s request handler as
problem+json too, and logged by the error's class only: aiohttp's own answer is
``text/plain`` and quotes the offending bytes, and its log line carries them as well.
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
from aiohttp import http_exceptions, web
from aiohttp.web_request import BaseRequest

from referendum_service.db import resolve_database_url
from referendum_service.settings import Settings
from server.errors import PROBLEM_BASE
from server.http import problem_response

__all__ = ["ProblemAppRunner", "ProblemRequestHandler", "run_servers", "serve_worker"]

log = structlog.get_logger("server.serving")

SHUTDOWN_TIMEOUT_S = 30.0
"""Longest a worker waits for requests in progress when stopping (then closes them)."""
_KILL_AFTER_S = SHUTDOWN_TIMEOUT_S + 15.0
_RESTART_BACKOFF_S = 1.0

# What a refused request is told, by the parser's error (most specific first): fixed texts,
# since the exceptions' own messages quote the request.
_PARSER_ERRORS: tuple[tuple[type[Exception], str, str], ...] = (
    (http_exceptions.LineTooLong, "line-too-long", "the request line or a header is too long"),
    (http_exceptions.BadHttpMethod, "malformed-request", "the request method is malformed"),
    (http_exceptions.InvalidURLError, "malformed-request", "the request target is malformed"),
    (http_exceptions.BadStatusLine, "malformed-request", "the request line is malformed"),
    (http_exceptions.InvalidHeader, "malformed-request", "a request header is malformed"),
    (http_exceptions.PayloadEncodingError, "malformed-body", "the body's framing is malformed"),
)


class ProblemRequestHandler(web.RequestHandler):
    """aiohttp's connection handler, answering what it refuses itself as problem+json."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The answer to a request that reached no handler (or escaped every middleware).

        ``message`` (aiohttp's text, quoting the request) is neither sent nor logged.
        """
        if request.writer.output_size > 0:
            # as aiohttp does: part of an answer went out, no other can follow
            raise ConnectionError("a response was partly sent; the connection is closed")
        if status >= 500:
            slug, title, detail = "internal", "Internal error", "internal error"
            log.error("http_handler_failed", status=status, exc_info=exc)
        else:
            slug, detail = "malformed-request", "the request is malformed"
            for kind, kind_slug, kind_detail in _PARSER_ERRORS:
                if isinstance(exc, kind):
                    slug, detail = kind_slug, kind_detail
                    break
            title = "Bad request" if status == 400 else "Refused request"
            # a client's fault, frequent on a public port: the class says enough
            log.info("http_request_refused", status=status, error=type(exc).__name__)
        body = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
        response = problem_response(body, status=status)
        response.force_close()
        return response


class _ProblemServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        # aiohttp's own body, with the class swapped
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections use :class:`ProblemRequestHandler`.

    aiohttp offers no setting for the handler class, so the runner rebuilds the server it
    made around it (the same handler, request factory and arguments).
    """

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _ProblemServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )


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
    runner = ProblemAppRunner(
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
