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

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from referendum_core.elgamal import Ciphertext
from referendum_core.errors import CoreError, TrusteeError
from referendum_core.trustee import (
    DealerCommitment,
    DecryptionShare,
    TrusteeParams,
    combine_decryption,
    election_public_key,
    verify_decryption_share,
)
from referendum_service.db import acquire, translated
from referendum_service.store.tallies import TallyState, load_tally
from server.audit import record_action
from server.auth import authenticate
from server.errors import BadRequest, Conflict, NotFound, UnprocessableContent
from server.http import integer, json_response, read_json_object
from server.referendums import Referendum, load_referendum, set_election_key, transition
from server.state import POOL_KEY

__all__ = [
    "accept_share",
    "load_result",
    "load_shares",
    "load_trustees",
    "publish_result",
    "setup",
    "store_trustees",
]

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


async def get_supersessions(request: web.Request) -> web.Response:
    """GET .../supersessions?cursor=&limit=: by superseded index, after ``cursor``."""
    rid = request.match_info["rid"]
    query = request.query
    cursor = integer(query.get("cursor"), "cursor", minimum=0, maximum=2**62, default=-1)
    limit = integer(query.get("limit"), "limit", minimum=1, maximum=_PAGE, default=_PAGE)
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


# --- trustees -----------------------------------------------------------------------------


def _params(ref: Referendum) -> TrusteeParams:
    return TrusteeParams(ref.id, ref.threshold_k, ref.trustees_n)


def _commitments(document: Any) -> list[DealerCommitment]:
    return [DealerCommitment.from_json(c) for c in document["commitments"]]


async def load_trustees(conn: Any, rid: str) -> Any:
    """The stored trustees document (``None`` when none was stored)."""
    with translated():
        raw = await conn.fetchval("SELECT document FROM trustee_commitments WHERE "
                                  "referendum_id = $1", rid)  # fmt: skip
    return None if raw is None else orjson.loads(raw)


async def store_trustees(conn: Any, rid: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
    """Check and store every trustee's public commitments (drafts only).

    ``body["commitments"]`` lists each trustee's ``commitments.json`` of the trustee tools;
    only the public fields are kept. The election key they imply must equal the referendum's
    (which is set from them when still unset). 422 names the failing check.
    """
    items = body.get("commitments")
    if (
        set(body) != {"commitments"}
        or not isinstance(items, list)
        or not all(isinstance(c, dict) for c in items)
    ):
        raise BadRequest("the body is {\"commitments\": [each trustee's commitments]}",
                         slug="bad-trustees", field="commitments")  # fmt: skip
    async with conn.transaction():
        ref = await load_referendum(conn, rid, for_update=True)
        if ref.state != "draft":
            raise Conflict(f"referendum {rid!r} is {ref.state}; trustees are fixed at open",
                           slug="not-draft", state=ref.state)  # fmt: skip
        params = _params(ref)
        try:
            published = [DealerCommitment.from_json(c) for c in items]
            pk = election_public_key(params, published).to_compressed()
        except CoreError as exc:
            raise UnprocessableContent(f"trustee commitments fail: {exc}", slug="bad-trustees",
                                       check=exc.check) from exc  # fmt: skip
        if ref.election_public_key is None:
            await set_election_key(conn, rid, pk, actor)
        elif ref.election_public_key != pk:
            raise UnprocessableContent(
                "the trustees' commitments imply another election key",
                slug="election-key-mismatch",
                check="election_public_key",
            )
        document = {
            "referendum": rid,
            "threshold": params.threshold,
            "trustees": params.trustees,
            "election_public_key": pk.hex(),
            "commitments": [c.to_json() for c in sorted(published, key=lambda c: c.index)],
        }
        with translated():
            await conn.execute(
                "INSERT INTO trustee_commitments (referendum_id, document) VALUES ($1, $2)"
                " ON CONFLICT (referendum_id) DO UPDATE SET document = EXCLUDED.document,"
                " created_at = now()",
                rid,
                orjson.dumps(document).decode(),
            )
        await record_action(conn, actor, "referendum.trustees", rid, {"election_key": pk.hex()})
    return document


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


# --- decryption shares ---------------------------------------------------------------------


def _tally_ciphertexts(tally: TallyState) -> list[Ciphertext]:
    return [Ciphertext.from_bytes(c) for c in tally.ciphertexts]


async def load_shares(conn: Any, rid: str) -> list[Any]:
    """Every accepted decryption share, by trustee index."""
    with translated():
        rows = await conn.fetch(
            "SELECT share FROM decryption_shares WHERE referendum_id = $1 ORDER BY trustee_index",
            rid,
        )
    return [orjson.loads(r["share"]) for r in rows]


def _verify_share(params: TrusteeParams, document: Any, tally: TallyState,
                  body: dict[str, Any]) -> DecryptionShare:  # fmt: skip
    """Parse and verify a share (CPU: run off the event loop)."""
    share = DecryptionShare.from_json(body)
    try:
        verify_decryption_share(params, _commitments(document), _tally_ciphertexts(tally), share)
    except TrusteeError as exc:
        raise UnprocessableContent(
            f"decryption share of trustee {share.trustee} refused: {exc}",
            slug="invalid-decryption-share", trustee_index=share.trustee, check=exc.check,
        ) from exc  # fmt: skip
    return share


async def accept_share(conn: Any, rid: str, body: dict[str, Any]) -> dict[str, Any]:
    """Verify a trustee's decryption share against the final tally and store it.

    Nothing is stored unless every proof holds: 422 naming trustee and check otherwise; 409
    when the referendum is not ``closed`` with its tally final, or the trustee sent one before.
    """
    if body.get("referendum", rid) != rid:
        raise UnprocessableContent("share of another referendum", slug="invalid-decryption-share",
                                   check="referendum")  # fmt: skip
    ref = await load_referendum(conn, rid)
    if ref.state != "closed":
        raise Conflict(f"referendum {rid!r} is {ref.state}; shares are taken while closed",
                       slug="wrong-state", state=ref.state)  # fmt: skip
    tally = _tally_ready(ref, await load_tally(conn, rid))
    document = await load_trustees(conn, rid)
    if document is None:
        raise Conflict("no trustee commitments stored for this referendum", slug="no-trustees")
    params = _params(ref)
    loop = asyncio.get_running_loop()
    share = await loop.run_in_executor(None, _verify_share, params, document, tally, body)
    stored = {"referendum": rid, "tally_hash": tally.tally_hash().hex(), **share.to_json()}
    async with conn.transaction():
        locked = await load_referendum(conn, rid, for_update=True)
        if locked.state != "closed":
            raise Conflict(f"referendum {rid!r} is {locked.state}", slug="wrong-state",
                           state=locked.state)  # fmt: skip
        with translated():
            inserted = await conn.fetchval(
                "INSERT INTO decryption_shares (referendum_id, trustee_index, tally_hash, share)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING trustee_index",
                rid, share.trustee, tally.tally_hash(), orjson.dumps(stored).decode(),
            )  # fmt: skip
        if inserted is None:
            raise Conflict(f"trustee {share.trustee} already sent a share",
                           slug="duplicate-share", trustee_index=share.trustee)  # fmt: skip
    return stored


async def post_share(request: web.Request) -> web.Response:
    """POST /v1/referendums/{rid}/shares: a trustee's partial decryption with proofs."""
    body = await read_json_object(request)
    rid = request.match_info["rid"]
    async with acquire(request.app[POOL_KEY]) as conn:
        stored = await accept_share(conn, rid, body)
    return json_response(stored, status=201)


async def get_shares(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/shares: the accepted shares."""
    rid = request.match_info["rid"]
    async with acquire(request.app[POOL_KEY]) as conn:
        await load_referendum(conn, rid)
        shares = await load_shares(conn, rid)
    return json_response({"shares": shares})


# --- result ---------------------------------------------------------------------------------


async def load_result(conn: Any, rid: str) -> Any:
    """The published result document (``None`` before publication)."""
    with translated():
        raw = await conn.fetchval("SELECT document FROM results WHERE referendum_id = $1", rid)
    return None if raw is None else orjson.loads(raw)


def _combine(params: TrusteeParams, document: Any, tally: TallyState,
             shares: Sequence[Any]) -> tuple[list[int], list[int]]:  # fmt: skip
    parsed = [DecryptionShare.from_json(s) for s in shares]
    counts = combine_decryption(params, _commitments(document), _tally_ciphertexts(tally),
                                parsed, max(tally.ballots_counted, 0))  # fmt: skip
    chosen = sorted(s.trustee for s in parsed)[: params.threshold]
    return counts, chosen


async def publish_result(conn: Any, rid: str, actor: str) -> dict[str, Any]:
    """Combine ``threshold_k`` shares, decode, store the result and publish the referendum.

    The referendum moves ``closed → tallied → published`` (or ``tallied → published`` if the
    operator already marked it tallied). 409 when fewer than k shares are in or the state is
    wrong.
    """
    ref = await load_referendum(conn, rid)
    if ref.state not in ("closed", "tallied"):
        raise Conflict(f"referendum {rid!r} is {ref.state}; a result follows its close",
                       slug="wrong-state", state=ref.state)  # fmt: skip
    tally = _tally_ready(ref, await load_tally(conn, rid))
    document = await load_trustees(conn, rid)
    shares = await load_shares(conn, rid)
    params = _params(ref)
    if document is None or len(shares) < params.threshold:
        raise Conflict(f"{len(shares)} decryption shares in, {params.threshold} needed",
                       slug="not-enough-shares", shares=len(shares))  # fmt: skip
    loop = asyncio.get_running_loop()
    counts, chosen = await loop.run_in_executor(None, _combine, params, document, tally, shares)
    result = {
        "referendum_id": rid,
        "options": list(ref.options),
        "counts": counts,
        "counts_by_option": dict(zip(ref.options, counts, strict=True)),
        "ballots_counted": tally.ballots_counted,
        "block_height": tally.folded_height,
        "tree_size": tally.folded_size,
        "tally_hash": tally.tally_hash().hex(),
        "trustees": chosen,
    }
    async with conn.transaction():
        if ref.state == "closed":
            await transition(conn, rid, "tallied", actor)
        with translated():
            await conn.execute(
                "INSERT INTO results (referendum_id, counts, document) VALUES ($1, $2, $3)",
                rid, orjson.dumps(counts).decode(), orjson.dumps(result),
            )  # fmt: skip
        await transition(conn, rid, "published", actor)
    return result


async def post_result(request: web.Request) -> web.Response:
    """POST /v1/referendums/{rid}/result: combine the shares and publish (operator)."""
    actor = await authenticate(request)
    async with acquire(request.app[POOL_KEY]) as conn:
        result = await publish_result(conn, request.match_info["rid"], actor)
    return json_response(result)


async def get_result(request: web.Request) -> web.Response:
    """GET /v1/referendums/{rid}/result: counts, the tally, trustees, every share and proof."""
    rid = request.match_info["rid"]
    async with acquire(request.app[POOL_KEY]) as conn:
        ref = await load_referendum(conn, rid)
        result = await load_result(conn, rid)
        if result is None or ref.state != "published":
            raise Conflict(f"referendum {rid!r} is {ref.state}; no published result",
                           slug="not-published", state=ref.state)  # fmt: skip
        tally = await load_tally(conn, rid)
        assert tally is not None
        body = {
            **result,
            "encrypted_tally": tally.to_json(ref.options),
            "trustees_document": await load_trustees(conn, rid),
            "shares": await load_shares(conn, rid),
        }
    return json_response(body, headers={"Cache-Control": _IMMUTABLE})


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
