"""The node's HTTP service: the C2SP tlog-witness endpoint and the public evidence.

Routes::

    POST /add-checkpoint     tlog-witness: 200 cosignature line(s), 409 text/x.tlog.size, or a
                             problem (400 syntax, 403 log signature, 404 origin, 422 proof)
    GET  /evidence           split-view evidence, JSON (``?origin=`` for one log)
    GET  /witness            the node's cosigner name, verifier key and the log key it trusts
    GET  /livez /readyz /metrics

Errors other than the spec's 409 are RFC 9457 problems, through :mod:`server.http`'s
middleware. The add-checkpoint body is limited to
:data:`~referendum_core.witness.MAX_REQUEST_BYTES` (413 above).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from node.store import evidence
from node.witness import NodeWitness
from referendum_core.witness import MAX_REQUEST_BYTES
from referendum_service.db import acquire, create_pool, resolve_database_url
from referendum_service.settings import Settings
from server import observability
from server.errors import (
    ApiError,
    BadRequest,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    UnprocessableContent,
)
from server.http import json_response, problem_middleware
from server.state import POOL_KEY, SETTINGS_KEY

__all__ = ["WITNESS_KEY", "make_node_app"]

WITNESS_KEY = web.AppKey("witness", NodeWitness)

_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    403: Forbidden,
    404: NotFound,
    422: UnprocessableContent,
    503: ServiceUnavailable,
}


async def add_checkpoint(request: web.Request) -> web.Response:
    """POST /add-checkpoint: decide, persist, cosign (C2SP tlog-witness)."""
    body = await request.read()
    witness = request.app[WITNESS_KEY]
    async with acquire(request.app[POOL_KEY]) as conn:
        outcome = await witness.add_checkpoint(conn, body)
    if outcome.status in (200, 409):
        return web.Response(
            status=outcome.status,
            text=outcome.body,
            content_type=outcome.content_type.split(";")[0],
        )
    raise _ERRORS[outcome.status](outcome.body, slug="witness-refused", check=outcome.check)


async def get_evidence(request: web.Request) -> web.Response:
    """GET /evidence: every stored fork and suspect checkpoint, with both signed notes."""
    origin = request.query.get("origin")
    if origin is not None and (len(origin) > 300 or "\x00" in origin):
        raise BadRequest("bad origin parameter", slug="bad-parameter", field="origin")
    async with acquire(request.app[POOL_KEY]) as conn:
        found = await evidence(conn, origin)
    return json_response({"evidence": [e.to_json() for e in found]})


async def get_witness(request: web.Request) -> web.Response:
    """GET /witness: who this node is as a cosigner."""
    witness = request.app[WITNESS_KEY]
    name, _ = witness.log_key
    return json_response(
        {"name": witness.name, "vkey": witness.vkey, "log_key_name": name, "origin_prefix": name}
    )


def _pool_context(
    settings: Settings, database_url: str | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        pool = await create_pool(database_url or resolve_database_url(settings), settings)
        app[POOL_KEY] = pool
        try:
            yield
        finally:
            await pool.close()

    return pool_ctx


def make_node_app(
    settings: Settings, witness: NodeWitness, *, database_url: str | None = None
) -> web.Application:
    """The node's application on its own database (``database_url`` overrides settings)."""
    app = web.Application(
        client_max_size=MAX_REQUEST_BYTES,
        middlewares=[observability.metrics_middleware, problem_middleware],
        handler_args={"keepalive_timeout": settings.connection_idle_timeout_ms / 1000.0},
    )
    app[SETTINGS_KEY] = settings
    app[WITNESS_KEY] = witness
    app.cleanup_ctx.append(_pool_context(settings, database_url))
    observability.setup(app)
    app.router.add_post("/add-checkpoint", add_checkpoint)
    app.router.add_get("/evidence", get_evidence)
    app.router.add_get("/witness", get_witness)
    return app
