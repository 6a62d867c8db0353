"""Tally API: the encrypted tally, supersessions, trustees' decryption shares and the result.

Routes (``setup``)::

    GET  /v1/referendums/{rid}/tally          the encrypted tally, once closed and fully sealed
    GET  /v1/referendums/{rid}/supersessions  superseded → superseding ballots (cursor pages)
    GET  /v1/referendums/{rid}/trustees       the trustees' public commitments
    PUT  /v1/referendums/{rid}/trustees       operator: store them (draft only)
    POST /v1/referendums/{rid}/shares         a trustee's decryption share with its proofs
    GET  /v1/referendums/{rid}/shares         the accepted shares
    POST /v1/referendums/{rid}/result         operator: combine k shares, decode, publish
    GET  /v1/referendums/{rid}/result         the published result with every share and proof

The checks and the lifecycle steps are :mod:`server.decryption`'s.
"""

from __future__ import annotations

from aiohttp import web

from referendum_service.db import acquire
from referendum_service.store.tallies import load_shares, load_trustees, supersessions
from server.auth import authenticate
from server.decryption import (
    accept_share,
    final_tally,
    publish_result,
    published_result,
    store_trustees,
)
from server.errors import NotFound
from server.http import IMMUTABLE, integer, json_response, read_json_object
from server.referendums import load_referendum
from server.state import POOL_KEY

__all__ = ["setup"]

_PAGE = 1000


async def get_tally(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/tally: the final encrypted tally."""
    async with acquire(request.app[POOL_KEY]) as conn:
        ref, tally = await final_tally(conn, request.match_info["rid"])
    return json_response(tally.to_json(ref.options), headers={"Cache-Control": IMMUTABLE})


async def get_supersessions(request: web.Request) -> web.Response:
    """GET .../supersessions?cursor=&limit=: by superseded index, after ``cursor``."""
    rid = request.match_info["rid"]
    query = request.query
    cursor = integer(query.get("cursor"), "cursor", minimum=0, maximum=2**62, default=-1)
    limit = integer(query.get("limit"), "limit", minimum=1, maximum=_PAGE, default=_PAGE)
    async with acquire(request.app[POOL_KEY]) as conn:
        await load_referendum(conn, rid)
        page = await supersessions(conn, rid, cursor, limit)
    items = [s.to_json() for s in page]
    next_cursor = page[-1].superseded_index if len(page) == limit else None
    return json_response({"supersessions": items, "next_cursor": next_cursor})


async def put_trustees(request: web.Request) -> web.Response:
    """PUT /v1/referendums/{rid}/trustees: the trustees' public commitments (operator)."""
    actor = await authenticate(request)
    body = await read_json_object(request)
    async with acquire(request.app[POOL_KEY]) as conn:
        document = await store_trustees(conn, request.match_info["rid"], body, actor)
    return json_response(document)


async def get_trustees(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/trustees: the stored public commitments."""
    rid = request.match_info["rid"]
    async with acquire(request.app[POOL_KEY]) as conn:
        await load_referendum(conn, rid)
        document = await load_trustees(conn, rid)
    if document is None:
        raise NotFound("no trustee commitments stored", slug="no-trustees")
    return json_response(document)


async def post_share(request: web.Request) -> web.Response:
    """POST /v1/referendums/{rid}/shares: a trustee's partial decryption with proofs."""
    body = await read_json_object(request)
    async with acquire(request.app[POOL_KEY]) as conn:
        stored = await accept_share(conn, request.match_info["rid"], body)
    return json_response(stored, status=201)


async def get_shares(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/shares: the accepted shares."""
    rid = request.match_info["rid"]
    async with acquire(request.app[POOL_KEY]) as conn:
        await load_referendum(conn, rid)
        shares = await load_shares(conn, rid)
    return json_response({"shares": shares})


async def post_result(request: web.Request) -> web.Response:
    """POST /v1/referendums/{rid}/result: combine the shares and publish (operator)."""
    actor = await authenticate(request)
    async with acquire(request.app[POOL_KEY]) as conn:
        result = await publish_result(conn, request.match_info["rid"], actor)
    return json_response(result)


async def get_result(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/result: counts, the tally, trustees, every share and proof."""
    async with acquire(request.app[POOL_KEY]) as conn:
        body = await published_result(conn, request.match_info["rid"])
    return json_response(body, headers={"Cache-Control": IMMUTABLE})


def setup(app: web.Application) -> None:
    """Add the tally routes."""
    base = "/v1/referendums/{rid}"
    app.router.add_get(base + "/tally", get_tally)
    app.router.add_get(base + "/supersessions", get_supersessions)
    app.router.add_get(base + "/trustees", get_trustees)
    app.router.add_put(base + "/trustees", put_trustees)
    app.router.add_get(base + "/shares", get_shares)
    app.router.add_post(base + "/shares", post_share)
    app.router.add_get(base + "/result", get_result)
    app.router.add_post(base + "/result", post_result)
