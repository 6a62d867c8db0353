"""Witness routes: the policy (operator sets, anyone reads) and the collected cosignatures.

    PUT /v1/referendums/{rid}/witness-policy            operator; drafts only (409 after open)
    GET /v1/referendums/{rid}/witness-policy            public
    GET /v1/referendums/{rid}/log/cosignatures/{size}   public: the lines of one checkpoint size

The latest checkpoint (``GET .../log/checkpoint``, :mod:`server.api.public`) carries the lines
too, appended to its note; ``?witnessed=true`` asks for the latest one that meets the policy.
"""

from __future__ import annotations

from aiohttp import web

from referendum_service.db import acquire
from referendum_service.store.witnesses import cosignature_lines
from server import witnesses
from server.auth import authenticate
from server.http import cached_json_response, integer, json_response, read_json_object
from server.referendums import load_referendum
from server.state import POOL_KEY

__all__ = ["setup"]


async def put_policy(request: web.Request) -> web.Response:
    """PUT .../witness-policy: set the witness policy of a draft."""
    actor = await authenticate(request)
    policy = witnesses.parse_policy(await read_json_object(request))
    async with acquire(request.app[POOL_KEY]) as conn:
        await witnesses.set_policy(conn, request.match_info["rid"], policy, actor)
    return json_response(policy.to_json())


async def get_policy(request: web.Request) -> web.Response:
    """GET .../witness-policy: the public witness policy."""
    async with acquire(request.app[POOL_KEY]) as conn:
        policy = await witnesses.get_policy(conn, request.match_info["rid"])
    return cached_json_response(request, policy.to_json(), "no-cache")


async def get_cosignatures(request: web.Request) -> web.Response:
    """GET .../log/cosignatures/{tree_size}: the cosignature lines collected for a size."""
    rid = request.match_info["rid"]
    size = integer(request.match_info["tree_size"], "tree_size", minimum=0)
    async with acquire(request.app[POOL_KEY]) as conn:
        await load_referendum(conn, rid)
        lines = await cosignature_lines(conn, rid, size)
    return cached_json_response(request, {"tree_size": size, "cosignatures": lines}, "no-cache")


def setup(app: web.Application) -> None:
    """Add the witness routes to ``app``."""
    base = "/v1/referendums/{rid}"
    app.router.add_put(f"{base}/witness-policy", put_policy)
    app.router.add_get(f"{base}/witness-policy", get_policy)
    app.router.add_get(f"{base}/log/cosignatures/{{tree_size}}", get_cosignatures)
