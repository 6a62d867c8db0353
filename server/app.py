"""The aiohttp application factory.

``make_app(settings)`` builds one application: a connection pool owned by ``cleanup_ctx``,
the routes of every API module (:mod:`server.api`: ``public``, ``operator``, ``voter``,
``tally``, ``witnesses``, each exposing ``setup(app)``), health and metrics endpoints, the OpenAPI
document, and the problem middleware of :mod:`server.http`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from referendum_service.db import create_pool, resolve_database_url
from referendum_service.settings import Settings
from server import observability, openapi
from server.api import operator, public, tally, voter, witnesses
from server.http import problem_middleware
from server.state import POOL_KEY, SETTINGS_KEY

__all__ = ["make_app"]


def _pool_context(
    settings: Settings, database_url: str | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        dsn = database_url or resolve_database_url(settings)
        pool = await create_pool(dsn, settings)
        app[POOL_KEY] = pool
        try:
            yield
        finally:
            await pool.close()

    return pool_ctx


def make_app(settings: Settings, *, database_url: str | None = None) -> web.Application:
    """Build the application: pool, routes of every API module, health, metrics, OpenAPI.

    ``database_url`` overrides ``settings.database_url`` (tests pass their fresh database).
    JSON bodies are limited to ``settings.max_body_bytes`` and read under the body deadlines
    (``body_timeout_ms``, ``body_min_bytes_per_s``); roll uploads stream under their own limit
    (``settings.max_roll_bytes``). A connection gets ``connection_idle_timeout_ms`` for each
    request head. Serve it with ``handler_cancellation`` off (aiohttp's
    default) so a client disconnect cannot cut a database write in half.
    """
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[observability.metrics_middleware, problem_middleware],
        # aiohttp's keep-alive timer also runs while a request head is arriving: it is the
        # only deadline on a connection that sends its headers slowly, or nothing at all
        handler_args={"keepalive_timeout": settings.connection_idle_timeout_ms / 1000.0},
    )
    app[SETTINGS_KEY] = settings
    app.cleanup_ctx.append(_pool_context(settings, database_url))
    observability.setup(app)
    # The public read API comes first: aiohttp tries every route under /v1/referendums in
    # registration order, and its GETs are the most frequent and cheapest requests (an
    # inclusion proof paid ~20 µs for the 17 routes tried before it).
    public.setup(app)
    operator.setup(app)
    voter.setup(app)
    tally.setup(app)
    witnesses.setup(app)
    openapi.setup(app)
    return app
