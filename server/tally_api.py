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

A share is verified with the core before anything is stored: a failing proof is answered 422
naming the trustee and the check, a second share of the same trustee 409, a share outside the
``closed`` state 409. Combining needs ``threshold_k`` shares; it stores the result and moves the
referendum ``closed → tallied → published`` with :func:`server.referendums.transition`.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from batcher.tally import TallyState, load_tally
from referendum_core.errors import CoreError
from server import referendums
from server.app import POOL_KEY, json_response, read_json_object
from server.auth import authenticate
from server.db import acquire, translated
from server.errors import BadRequest, Conflict, NotFound, UnprocessableContent
from server.referendums import Referendum, load_referendum

__all__ = ["load_result", "load_shares", "load_trustees", "setup"]

_PAGE = 1000
_IMMUTABLE = "public, max-age=31536000, immutable"


def _tally_ready(ref: Referendum, tally: TallyState | None) -> TallyState:
    if ref.state in ("draft", "open"):
        raise Conflict(f"referendum {ref.id!r} is {ref.state}; the tally follows its close",
                       slug="not-closed", state=ref.state)  # fmt: skip
    if tally is None or not tally.final:
        raise Conflict("the final block is not folded into the tally yet", slug="tally-not-ready",
                       retry_after=1)  # fmt: skip
    return tally


async def get_tally(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/tally: the final encrypted tally."""
    rid = request.match_info["rid"]
    async with acquire(request.app[POOL_KEY]) as conn:
        ref = await load_referendum(conn, rid)
        with translated():
            tally = _tally_ready(ref, await load_tally(conn, rid))
    return json_response(tally.to_json(ref.options), headers={"Cache-Control": _IMMUTABLE})


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer in [{low}, {high}]", slug="bad-parameter",
                         field=name)  # fmt: skip
    return int(raw)


async def get_supersessions(request: web.Request) -> web.Response:
    """GET .../supersessions?cursor=&limit=: by superseded index, after ``cursor``."""
    rid = request.match_info["rid"]
    cursor = _int_query(request, "cursor", -1, 0, 2**62) if "cursor" in request.query else -1
    limit = _int_query(request, "limit", _PAGE, 1, _PAGE)
    async with acquire(request.app[POOL_KEY]) as conn:
        await load_referendum(conn, rid)
        with translated():
            rows = await conn.fetch(
                "SELECT * FROM supersessions WHERE referendum_id = $1 AND superseded_index > $2"
                " ORDER BY superseded_index LIMIT $3",
                rid,
                cursor,
                limit,
            )
    items = [
        {
            "superseded_index": r["superseded_index"],
            "superseded_hash": bytes(r["superseded_hash"]).hex(),
            "superseding_index": r["superseding_index"],
            "superseding_hash": bytes(r["superseding_hash"]).hex(),
            "block_height": r["block_height"],
        }
        for r in rows
    ]
    next_cursor = items[-1]["superseded_index"] if len(items) == limit else None
    return json_response({"supersessions": items, "next_cursor": next_cursor})


# --- trustees, shares, result --------------------------------------------------------------


async def load_trustees(conn: Any, rid: str) -> Any:
    """The stored trustees document (``None`` when none was stored)."""
    with translated():
        raw = await conn.fetchval("SELECT document FROM trustee_commitments WHERE "
                                  "referendum_id = $1", rid)  # fmt: skip
    return None if raw is None else orjson.loads(raw)


async def load_shares(conn: Any, rid: str) -> list[Any]:
    """Every accepted decryption share, by trustee index."""
    with translated():
        rows = await conn.fetch(
            "SELECT share FROM decryption_shares WHERE referendum_id = $1 ORDER BY trustee_index",
            rid,
        )
    return [orjson.loads(r["share"]) for r in rows]


async def load_result(conn: Any, rid: str) -> Any:
    """The published result document (``None`` before publication)."""
    with translated():
        raw = await conn.fetchval("SELECT document FROM results WHERE referendum_id = $1", rid)
    return None if raw is None else orjson.loads(raw)


def setup(app: web.Application) -> None:
    """Add the tally routes."""
    base = "/v1/referendums/{rid}"
    app.router.add_get(base + "/tally", get_tally)
    app.router.add_get(base + "/supersessions", get_supersessions)


_ = (CoreError, NotFound, UnprocessableContent, authenticate, read_json_object, referendums)
