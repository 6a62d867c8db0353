"""Metrics and health: Prometheus metrics, ``/livez``, ``/readyz``.

Logging is configured by :mod:`referendum_service.logs`. Metrics are labelled by route template,
never by raw path, so no voter or ballot identifier becomes a label. A client that leaves
mid-request is counted with status 499 (a client event), so a 500 here is always the server's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from prometheus_client import REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from referendum_service.db import ping
from server.state import POOL_KEY

__all__ = [
    "HTTP_REQUESTS",
    "HTTP_REQUEST_SECONDS",
    "ROLL_ROWS_IMPORTED",
    "metrics_middleware",
    "setup",
]

HTTP_REQUESTS = Counter(
    "referendum_http_requests_total",
    "HTTP requests answered, by route and status.",
    ["method", "route", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "referendum_http_request_seconds",
    "Time to answer an HTTP request, by route.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
ROLL_ROWS_IMPORTED = Counter(
    "referendum_roll_rows_imported_total", "Voter-roll rows imported into a referendum."
)

READY_TIMEOUT_S = 1.0

log = structlog.get_logger("server.observability")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request by its route template (never by raw path)."""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        # with handler_cancellation on, aiohttp cancels the handler of a client that left:
        # a client event (499), not a server failure
        status = 499
        log.info("client_closed_request", path=request.path, method=request.method)
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        key = (request.method, route, status)
        series = _SERIES.get(key)
        if series is None:
            series = (
                HTTP_REQUESTS.labels(request.method, route, str(status)),
                HTTP_REQUEST_SECONDS.labels(request.method, route),
            )
            if info is not None:  # a route's methods are known; unmatched ones are anyone's
                _SERIES[key] = series
        series[0].inc()
        series[1].observe(time.perf_counter() - start)


# The labelled series of each (method, route, status) of a matched route: prometheus_client's
# labels() costs a few µs a call, a fair share of a cheap request. Routes are templates and a
# route answers only its own methods, so this stays small.
_SERIES: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


async def livez(request: web.Request) -> web.Response:
    """The process answers."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """The database answers ``SELECT 1`` within a second; 503 problem otherwise."""
    await ping(request.app[POOL_KEY], READY_TIMEOUT_S)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this process's metrics."""
    body = generate_latest(REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup(app: web.Application) -> None:
    """Add /livez, /readyz and /metrics."""
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
