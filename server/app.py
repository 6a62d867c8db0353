"""The aiohttp application factory, shared request helpers and the problem+json middleware.

``make_app(settings)`` builds one application: a connection pool owned by ``cleanup_ctx``,
the routes of every API module (``operator_api``, ``voter_api``, ``public_api``: each exposes
``setup(app)``), health and metrics endpoints, and one middleware that renders every error as
RFC 9457 ``application/problem+json``:

* :class:`server.errors.ApiError` -> its status, ``type``, ``title``, ``detail`` and extras;
* :class:`referendum_core.errors.CoreError` -> 400 naming the failed ``check``;
* :class:`referendum_service.db.StorageError` -> :func:`server.errors.from_storage`;
* aiohttp's own 404 / 405 / 413 -> the same statuses as problems;
* anything else -> a logged 500 problem (a bug).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import orjson
import structlog
from aiohttp import web

from referendum_core.errors import CoreError
from referendum_service.db import StorageError, create_pool, resolve_database_url
from referendum_service.settings import Settings
from server.errors import (
    ApiError,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    from_storage,
)

__all__ = [
    "API_MODULES",
    "DSN_KEY",
    "POOL_KEY",
    "SETTINGS_KEY",
    "json_response",
    "make_app",
    "problem_response",
    "read_json_object",
]

POOL_KEY = web.AppKey("pool", asyncpg.Pool)
SETTINGS_KEY = web.AppKey("settings", Settings)
DSN_KEY = web.AppKey("dsn", str)

# Modules adding routes. The operator API is always present; the other two are optional
# until they are written. The public read API comes first: aiohttp tries every route under
# /v1/referendums in registration order, and its GETs are the most frequent and cheapest
# requests (an inclusion proof paid ~20 µs for the 17 routes tried before it).
API_MODULES = (
    "server.public_api",
    "server.operator_api",
    "server.voter_api",
    "server.tally_api",
)
_OPTIONAL_MODULES = frozenset({"server.voter_api", "server.public_api"})

PROBLEM_CONTENT_TYPE = "application/problem+json"

log = structlog.get_logger("server.app")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def problem_response(
    body: dict[str, Any], *, status: int, headers: dict[str, str] | None = None
) -> web.Response:
    """An RFC 9457 ``application/problem+json`` response."""
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers={"Content-Type": PROBLEM_CONTENT_TYPE, **(headers or {})},
    )


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises UnsupportedMediaType unless the Content-Type is JSON, PayloadTooLarge over the
    app's body limit, BadRequest for malformed JSON or a non-object.
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type!r}"
        )
    limit = request.app[SETTINGS_KEY].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body over the limit of {limit} bytes", limit=limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"body over the limit of {limit} bytes", limit=limit) from exc
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", slug="malformed-json") from exc
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", slug="malformed-json")
    return value


def _render(error: ApiError, request: web.Request) -> web.Response:
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="referendum-operator"'
    return problem_response(
        error.to_problem(instance=request.path), status=error.status, headers=headers
    )


def _http_exception(exc: web.HTTPException, request: web.Request) -> web.Response:
    """aiohttp's own errors (unknown route, wrong method, body too large) as problems."""
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        slug, title = "method-not-allowed", "Method not allowed"
        detail = f"{request.method} is not allowed here"
    elif isinstance(exc, web.HTTPNotFound):
        slug, title, detail = NotFound.default_slug, NotFound.title, "no such resource"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        slug, title = PayloadTooLarge.default_slug, PayloadTooLarge.title
        detail = "body over the configured limit"
    else:
        slug, title, detail = "http-error", exc.reason, exc.text or exc.reason
    body = {
        "type": "https://referendum.example/problems/" + slug,
        "title": title,
        "status": exc.status,
        "detail": detail,
        "instance": request.path,
    }
    return problem_response(body, status=exc.status, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error raised by a handler as application/problem+json."""
    try:
        if any("\x00" in value for value in request.match_info.values()):
            # PostgreSQL text cannot hold NUL, so no stored resource has it in its name.
            if "\x00" in request.match_info.get("rid", ""):
                raise NotFound("no such referendum", slug="unknown-referendum")
            raise NotFound("no such resource (the path holds a NUL character)", slug="not-found")
        return await handler(request)
    except ApiError as exc:
        return _render(exc, request)
    except CoreError as exc:
        error = BadRequest(str(exc), slug="failed-check", check=exc.check)
        return _render(error, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_exception(exc, request)
    except StorageError as exc:
        return _render(from_storage(exc), request)
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        body = {
            "type": "https://referendum.example/problems/internal",
            "title": "Internal error",
            "status": 500,
            "detail": "internal error",
            "instance": request.path,
        }
        return problem_response(body, status=500)


def _pool_context(
    settings: Settings, database_url: str | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        dsn = database_url or resolve_database_url(settings)
        pool = await create_pool(dsn, settings)
        app[DSN_KEY] = dsn
        app[POOL_KEY] = pool
        try:
            yield
        finally:
            await pool.close()

    return pool_ctx


def make_app(settings: Settings, *, database_url: str | None = None) -> web.Application:
    """Build the application: pool, routes of every API module, health, metrics, OpenAPI.

    ``database_url`` overrides ``settings.database_url`` (tests pass their fresh database).
    JSON bodies are limited to ``settings.max_body_bytes``; roll uploads stream under their own
    limit (``settings.max_roll_bytes``). Serve it with ``handler_cancellation`` off (aiohttp's
    default) so a client disconnect cannot cut a database write in half.
    """
    from server import observability, openapi

    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[observability.metrics_middleware, problem_middleware],
    )
    app[SETTINGS_KEY] = settings
    app.cleanup_ctx.append(_pool_context(settings, database_url))
    observability.setup(app)
    for name in API_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if name in _OPTIONAL_MODULES and exc.name == name:
                continue  # not written yet
            raise
        module.setup(app)
    openapi.setup(app)
    return app
