"""Operator API: referendums, the voter roll, the lifecycle, status; and the public roll reads.

Handlers parse, call the domain (:mod:`server.referendums`, :mod:`server.roll`) and serialise.
State-changing routes need a bearer API key (:mod:`server.auth`) and are audited by the
domain. ``GET /v1/referendums/{rid}`` and the roll commitment and a credential's roll proof
are public; a voter id is looked up only by the operator (``GET .../voters/{voter_id}``),
through its keyed hash (:mod:`server.roll.voter_keys`): voter ids appear in no public
response, record, log line or metric.

The lifecycle routes (``open``, ``close``, ``tally``, ``publish``) are refused with a 409 naming
what is missing until the step's preconditions hold (:func:`server.referendums.transition`);
``close`` before ``closes_at`` takes ``{"early": true, "reason": "..."}``; ``publish`` combines
the trustees' shares into the result first (:func:`server.decryption.publish_result`, as
``POST .../result`` does), so a referendum is never published without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aiohttp import web

from referendum_core.credential import parse_credential
from referendum_core.ids import is_voter_id
from referendum_service.db import acquire
from server import referendums, roll
from server.audit import record_action
from server.auth import authenticate
from server.decryption import publish_result
from server.errors import (
    BadRequest,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from server.http import json_response, read_json_object
from server.observability import ROLL_ROWS_IMPORTED
from server.roll import ChunkTreeCache
from server.roll.voter_keys import VoterIdKeys
from server.state import (
    POOL_KEY,
    ROLL_CONNECTIONS_LOCK_KEY,
    ROLL_EXECUTOR_KEY,
    ROLL_TREES_KEY,
    SETTINGS_KEY,
    VOTER_ID_KEYS_KEY,
)

__all__ = ["setup"]

log = structlog.get_logger("server.api.operator")

_READ_CHUNK = 1 << 20
_ROLL_TYPES: dict[str, roll.RollFormat] = {
    "text/csv": "csv",
    "application/x-ndjson": "ndjson",
    "application/jsonl": "ndjson",
}
_ACTIONS = {"open": "open", "close": "closed", "tally": "tallied", "publish": "published"}


def _threads(request: web.Request) -> int:
    configured = request.app[SETTINGS_KEY].roll_check_threads
    return configured if configured > 0 else os.cpu_count() or 1


async def create_referendum(request: web.Request) -> web.Response:
    """POST /v1/referendums: create a draft."""
    actor = await authenticate(request)
    definition = referendums.parse_definition(await read_json_object(request))
    async with acquire(request.app[POOL_KEY]) as conn:
        ref = await referendums.create_referendum(conn, definition, actor)
    location = f"/v1/referendums/{ref.id}"
    return json_response(ref.to_json(), status=201, headers={"Location": location})


async def get_referendum(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}: the public definition."""
    async with acquire(request.app[POOL_KEY]) as conn:
        ref = await referendums.load_referendum(conn, request.match_info["rid"])
    return json_response(ref.to_json())


async def put_election_key(request: web.Request) -> web.Response:
    """PUT /v1/referendums/{rid}/election-key: set the key of a draft."""
    actor = await authenticate(request)
    body = await read_json_object(request)
    referendums.check_fields(body, {"election_public_key": str}, set())
    key = referendums.parse_election_key(body["election_public_key"])
    async with acquire(request.app[POOL_KEY]) as conn:
        ref = await referendums.set_election_key(conn, request.match_info["rid"], key, actor)
    return json_response(ref.to_json())


async def _body_chunks(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The request body in chunks; PayloadTooLarge as soon as it passes ``limit`` bytes."""
    received = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"roll part over the limit of {limit} bytes", limit=limit)
        yield chunk


@contextlib.asynccontextmanager
async def _roll_connections(app: web.Application) -> AsyncIterator[tuple[Any, Any]]:
    """The two pooled connections a roll import uses, taken together under a lock, so that
    imports holding one and waiting for another cannot use up the pool between them."""
    pool = app[POOL_KEY]
    if pool.get_max_size() < 2:
        raise ServiceUnavailable("a roll import needs REFERENDUM_DB_POOL_MAX of 2 or more")
    async with contextlib.AsyncExitStack() as stack:
        async with app[ROLL_CONNECTIONS_LOCK_KEY]:
            conn = await stack.enter_async_context(acquire(pool))
            lines_conn = await stack.enter_async_context(acquire(pool))
        yield conn, lines_conn


async def put_roll(request: web.Request) -> web.Response:
    """PUT /v1/referendums/{rid}/roll: import one part of the roll, all or nothing."""
    actor = await authenticate(request)
    rid = request.match_info["rid"]
    fmt = _ROLL_TYPES.get(request.content_type)
    if fmt is None:
        raise UnsupportedMediaType("send text/csv or application/x-ndjson")
    limit = request.app[SETTINGS_KEY].max_roll_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"roll part over the limit of {limit} bytes", limit=limit)
    body = _body_chunks(request, limit)
    async with _roll_connections(request.app) as (conn, lines_conn), conn.transaction():
        result = await roll.import_roll(
            conn,
            rid,
            body,
            fmt,
            lines_conn=lines_conn,
            voter_keys=request.app[VOTER_ID_KEYS_KEY],
            executor=request.app[ROLL_EXECUTOR_KEY],
            threads=_threads(request),
        )
        await record_action(conn, actor, "roll.import", rid, {"format": fmt, **result})
    ROLL_ROWS_IMPORTED.inc(result["imported"])
    log.info("roll_imported", referendum=rid, actor=actor, format=fmt, **result)
    return json_response(result)


def _transition_handler(action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    to_state = _ACTIONS[action]

    async def handler(request: web.Request) -> web.Response:
        actor = await authenticate(request)
        rid = request.match_info["rid"]
        early: bool = False
        reason: str | None = None
        if action == "close":
            # the body is optional: closing at or after closes_at needs none
            body = await read_json_object(request) if request.body_exists else None
            early, reason = referendums.parse_close(body)
        async with acquire(request.app[POOL_KEY]) as conn:
            if action == "publish":
                await publish_result(conn, rid, actor, from_tallied=True)
                ref = await referendums.load_referendum(conn, rid)
            else:
                ref = await referendums.transition(
                    conn, rid, to_state, actor, early=early, reason=reason
                )
        log.info("referendum_state", referendum=ref.id, actor=actor, state=ref.state)
        return json_response(ref.to_json())

    handler.__name__ = f"{action}_referendum"
    handler.__doc__ = f"POST /v1/referendums/{{rid}}/{action}: move the referendum to {to_state}."
    return handler


async def get_status(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/status: counts for the operator."""
    await authenticate(request)
    async with acquire(request.app[POOL_KEY]) as conn:
        status = await referendums.referendum_status(conn, request.match_info["rid"])
    return json_response(status)


async def get_roll_commitment(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/roll/commitment: root and size, once open."""
    async with acquire(request.app[POOL_KEY]) as conn:
        ref = await referendums.load_referendum(conn, request.match_info["rid"])
    if ref.roll_root is None:
        raise NotFound("the roll is committed when the referendum opens", slug="no-commitment")
    return json_response({"root": ref.roll_root.hex(), "size": ref.roll_size})


async def get_roll_proof(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/roll/proof/{credential}: a credential's inclusion proof (the
    credential as 64 hex digits or as a did:key)."""
    rid = request.match_info["rid"]
    credential = parse_credential(request.match_info["credential"])
    if credential is None:
        raise NotFound("no such credential on the roll", slug="no-credential")
    async with acquire(request.app[POOL_KEY]) as conn:
        proof = await roll.roll_inclusion_proof(conn, rid, credential, request.app[ROLL_TREES_KEY])
    return json_response(proof.to_json(), headers={"Cache-Control": "public, max-age=300"})


async def get_voter(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/voters/{voter_id} (operator): registered, its credential,
    voted, roll proof."""
    await authenticate(request)
    rid, voter_id = request.match_info["rid"], request.match_info["voter_id"]
    if not is_voter_id(voter_id):
        raise BadRequest(
            "voter_id must be 1 to 128 of A-Z a-z 0-9 . _ : @ -",
            slug="bad-parameter",
            field="voter_id",
        )
    keys = request.app[VOTER_ID_KEYS_KEY]
    async with acquire(request.app[POOL_KEY]) as conn:
        key_id = await conn.fetchval("SELECT voter_key_id FROM referendums WHERE id = $1", rid)
        hasher = None if key_id is None else keys.hasher(rid, key_id)
        if hasher is None:  # no roll imported yet (or no such referendum)
            await referendums.load_referendum(conn, rid)
            return json_response(
                {"voter_id": voter_id, "registered": False}, headers={"Cache-Control": "no-store"}
            )
        answer = await roll.voter_lookup(conn, rid, voter_id, hasher, request.app[ROLL_TREES_KEY])
    return json_response(answer, headers={"Cache-Control": "no-store"})


async def _executor_context(app: web.Application) -> AsyncIterator[None]:
    """Worker threads checking credential keys during roll imports; the imports' lock; the
    roll proofs' chunk trees."""
    threads = app[SETTINGS_KEY].roll_check_threads or os.cpu_count() or 1
    executor = ThreadPoolExecutor(threads, thread_name_prefix="roll-check")
    app[ROLL_EXECUTOR_KEY] = executor
    app[ROLL_CONNECTIONS_LOCK_KEY] = asyncio.Lock()
    app[ROLL_TREES_KEY] = ChunkTreeCache(app[SETTINGS_KEY].roll_trees_kept)
    app[VOTER_ID_KEYS_KEY] = VoterIdKeys.from_settings(app[SETTINGS_KEY])
    try:
        yield
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def setup(app: web.Application) -> None:
    """Add the operator routes and the public roll reads."""
    app.cleanup_ctx.append(_executor_context)
    base = "/v1/referendums/{rid}"
    app.router.add_post("/v1/referendums", create_referendum)
    app.router.add_get(base, get_referendum)
    app.router.add_put(base + "/election-key", put_election_key)
    app.router.add_put(base + "/roll", put_roll)
    for action in _ACTIONS:
        app.router.add_post(f"{base}/{action}", _transition_handler(action))
    app.router.add_get(base + "/status", get_status)
    app.router.add_get(base + "/roll/commitment", get_roll_commitment)
    app.router.add_get(base + "/roll/proof/{credential}", get_roll_proof)
    app.router.add_get(base + "/voters/{voter_id}", get_voter)
