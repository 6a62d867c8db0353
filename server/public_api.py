"""The public read API of the log (``docs/log.md`` §5): checkpoints, blocks, ballots, proofs.

Routes (all ``GET``)::

    /v1/referendums/{rid}/log/checkpoint                      latest checkpoint (no-cache)
    /v1/referendums/{rid}/log/blocks/{height}                  a sealed block (immutable)
    /v1/referendums/{rid}/log/blocks/{height}/ballots          its ballots, cursor pages
    /v1/referendums/{rid}/log/proof/inclusion/{ballot_hash}    inclusion proof bundle
    /v1/referendums/{rid}/log/proof/consistency?from=&to=      consistency proof (immutable)
    /v1/keys/log                                               the checkpoint verifier key

Proofs are assembled from stored nodes, never by recomputing the tree
(:mod:`server.log_proofs`): the nodes of level ≥ 4 that the batcher wrote to ``log_nodes``
are cached in memory per process, those below are recomputed from the ≤ 16 leaves of their
aligned chunk. An inclusion proof is a share of one query (the checkpoint, the ballot's log
index, body and chunk), which requests arriving together share. See ``docs/log.md`` §7.

Chunks of ballots are always read as ``log_entries.log_index`` *ranges* whose bounds are
values (then joined to ``ballots`` by id for the bodies), never by ``log_index = ANY(array)``
nor by a range whose bounds come from another relation: with statistics taken before the
ballots were sequenced (the normal state while voting runs), PostgreSQL 15 chose to scan the
referendum's whole sequenced range and filter it (0.3 s a proof on a 200,000-ballot log, over
1 s on 1,000,000).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from referendum_core.checkpoint import verifier_key_string
from referendum_core.merkle import EMPTY_ROOT
from referendum_core.merkle import STORED_MIN_LEVEL as STORED_NODE_MIN_LEVEL
from referendum_service.db import acquire
from referendum_service.keys import load_or_create_key
from referendum_service.store.log import LOG_POSITION_SQL, block_from_row
from server.app import POOL_KEY, SETTINGS_KEY
from server.errors import BadRequest, NotFound
from server.log_cache import LogProofs

__all__ = ["LOG_PROOFS_KEY", "LOG_VERIFIER_KEY", "STORED_NODE_MIN_LEVEL", "setup"]

LOG_VERIFIER_KEY = web.AppKey("log_verifier_key", str)
LOG_PROOFS_KEY = web.AppKey("log_proofs", LogProofs)
"""This process's cache of stored log nodes (:class:`server.log_proofs.LogProofs`)."""

_MAX_INT = 2**63 - 1
_DECIMAL = re.compile(r"-?[0-9]{1,19}")
_HASH_HEX = re.compile(r"[0-9a-fA-F]{64}")
_IMMUTABLE = "public, max-age=31536000, immutable"
_LATEST = "no-cache"
_DEFAULT_LIMIT = 1000
_MAX_LIMIT = 10000

_LATEST_BLOCK = """
SELECT r.id AS known, k.tree_size, k.root, k.checkpoint, k.height
FROM referendums AS r
LEFT JOIN LATERAL (SELECT tree_size, root, checkpoint, height FROM blocks
                   WHERE referendum_id = r.id ORDER BY height DESC LIMIT 1) AS k ON true
WHERE r.id = $1
"""

_BLOCK = """
SELECT r.id AS known, b.height, b.first_index, b.end_index, b.tree_size, b.root, b.prev_hash,
       b.block_hash, b.sealed_at, b.checkpoint
FROM referendums AS r
LEFT JOIN blocks AS b ON b.referendum_id = r.id AND b.height = $2
WHERE r.id = $1
"""

_BLOCK_BALLOTS = (
    "SELECT p.log_index, p.ballot_hash, p.body, p.voter_id FROM ("  # noqa: S608 (a template)
    + LOG_POSITION_SQL.ballots_in_range.format(rid="$1", lo="$2::bigint + 1", hi="$3::bigint")
    + ") AS p ORDER BY p.log_index LIMIT $4"
)


# ---------------------------------------------------------------------------------------------
# Parameters


def _integer(text: str | None, name: str, *, minimum: int, default: int | None = None) -> int:
    """A decimal parameter in ``[minimum, 2^63)``; BadRequest naming ``name`` otherwise."""
    if text is None:
        if default is None:
            raise BadRequest(f"parameter {name} is required", slug="bad-parameter", field=name)
        return default
    if not _DECIMAL.fullmatch(text):
        raise BadRequest(f"{name} must be a decimal integer", slug="bad-parameter", field=name)
    value = int(text)
    if not minimum <= value <= _MAX_INT:
        raise BadRequest(
            f"{name} must be between {minimum} and {_MAX_INT}", slug="bad-parameter", field=name
        )
    return value


def _ballot_hash(text: str) -> bytes:
    if not _HASH_HEX.fullmatch(text):
        raise BadRequest(
            "the ballot hash is 64 hexadecimal digits", slug="bad-parameter", field="ballot_hash"
        )
    return bytes.fromhex(text)


def _rid(request: web.Request) -> str:
    """The referendum id of the path (one with a NUL never gets here: see server.app)."""
    return request.match_info["rid"]


def _unknown(rid: str) -> NotFound:
    return NotFound(f"no referendum {rid!r}", slug="unknown-referendum")


# ---------------------------------------------------------------------------------------------
# Responses


def _cached(request: web.Request, body: Any, cache_control: str) -> web.Response:
    """JSON with an ETag (hash of the bytes); 304 when ``If-None-Match`` names it."""
    raw = orjson.dumps(body)
    etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    wanted = request.headers.get("If-None-Match")
    if wanted is not None and (
        wanted.strip() == "*" or etag in (t.strip().removeprefix("W/") for t in wanted.split(","))
    ):
        return web.Response(status=304, headers=headers)
    return web.Response(body=raw, content_type="application/json", headers=headers)


# ---------------------------------------------------------------------------------------------
# Handlers


async def latest_checkpoint(request: web.Request) -> web.Response:
    """The checkpoint of the latest sealed block (size 0 and no note before the first)."""
    rid = _rid(request)
    async with acquire(request.app[POOL_KEY]) as conn:
        row = await conn.fetchrow(_LATEST_BLOCK, rid)
    if row is None:
        raise _unknown(rid)
    if row["height"] is None:
        body = {"tree_size": 0, "root": EMPTY_ROOT.hex(), "note": None, "height": 0}
    else:
        body = {
            "tree_size": row["tree_size"],
            "root": bytes(row["root"]).hex(),
            "note": row["checkpoint"],
            "height": row["height"],
        }
    return _cached(request, body, _LATEST)


async def _block_row(request: web.Request) -> tuple[str, Any]:
    rid = _rid(request)
    height = _integer(request.match_info["height"], "height", minimum=1)
    async with acquire(request.app[POOL_KEY]) as conn:
        row = await conn.fetchrow(_BLOCK, rid, height)
    if row is None:
        raise _unknown(rid)
    if row["height"] is None:
        raise NotFound(f"no block {height} (yet)", slug="unknown-block")
    return rid, row


async def block(request: web.Request) -> web.Response:
    """A sealed block, as ``Block.to_json()``."""
    rid, row = await _block_row(request)
    body = block_from_row(rid, row).to_json()
    return _cached(request, body, _IMMUTABLE)


async def block_ballots(request: web.Request) -> web.Response:
    """One page of a block's ballots in log order; the cursor is the last index returned."""
    query = request.query
    limit = _integer(query.get("limit"), "limit", minimum=1, default=_DEFAULT_LIMIT)
    if limit > _MAX_LIMIT:
        raise BadRequest(f"limit is at most {_MAX_LIMIT}", slug="bad-parameter", field="limit")
    cursor_text = query.get("cursor")
    rid, row = await _block_row(request)
    first, end = row["first_index"], row["end_index"]
    after = first - 1
    if cursor_text is not None and cursor_text != "":
        after = _integer(cursor_text, "cursor", minimum=-1)
        if not first - 1 <= after < end:
            raise BadRequest(
                f"cursor {after} is outside block {row['height']}",
                slug="bad-parameter",
                field="cursor",
            )
    async with acquire(request.app[POOL_KEY]) as conn:
        rows = await conn.fetch(_BLOCK_BALLOTS, rid, after, end, limit)
    ballots = [
        {
            "index": r["log_index"],
            "ballot_hash": bytes(r["ballot_hash"]).hex(),
            "body": bytes(r["body"]).hex(),
            "voter_id": r["voter_id"],
        }
        for r in rows
    ]
    last = rows[-1]["log_index"] if rows else end - 1
    next_cursor = str(last) if last < end - 1 else None
    return _cached(request, {"ballots": ballots, "next_cursor": next_cursor}, _IMMUTABLE)


async def inclusion(request: web.Request) -> web.Response:
    """The inclusion proof bundle of a ballot against the latest or a given checkpoint.

    A share of one query (checkpoint, log index, body, the leaves of the ballot's chunk);
    the nodes above the chunk come from this process's cache (:mod:`server.log_proofs`).
    """
    rid = _rid(request)
    ballot_hash = _ballot_hash(request.match_info["ballot_hash"])
    size_text = request.query.get("tree_size")
    wanted = None if size_text is None else _integer(size_text, "tree_size", minimum=1)
    proofs = request.app[LOG_PROOFS_KEY]
    row = await proofs.read_inclusion(rid, ballot_hash, wanted)
    if row is None:
        raise _unknown(rid)
    size, index = row.tree_size, row.log_index
    if size is None or row.root is None:
        if wanted is not None:
            raise BadRequest(
                f"no checkpoint of tree size {wanted}", slug="bad-parameter", field="tree_size"
            )
        raise NotFound("the log is empty", slug="not-sequenced")
    if index is None or row.leaves is None or row.body is None:
        raise NotFound(
            f"ballot {ballot_hash.hex()} is not in the log at tree size {size}",
            slug="not-sequenced",
        )
    proof = await proofs.inclusion(rid, index, size, row.root, row.leaves)
    result = {
        "leaf_index": index,
        "tree_size": size,
        "proof": [h.hex() for h in proof],
        "checkpoint": row.checkpoint,
        "body": row.body.hex(),
    }
    return _cached(request, result, _LATEST if wanted is None else _IMMUTABLE)


async def consistency(request: web.Request) -> web.Response:
    """The consistency proof between two tree sizes up to the latest checkpoint."""
    rid = _rid(request)
    first = _integer(request.query.get("from"), "from", minimum=1)
    second = _integer(request.query.get("to"), "to", minimum=1)
    if first > second:
        raise BadRequest("from must not exceed to", slug="bad-parameter", field="from")
    async with acquire(request.app[POOL_KEY]) as conn:
        row = await conn.fetchrow(_LATEST_BLOCK, rid)
    if row is None:
        raise _unknown(rid)
    latest = row["tree_size"] or 0
    if second > latest:
        raise BadRequest(
            f"to {second} is beyond the latest tree size {latest}",
            slug="bad-parameter",
            field="to",
        )
    proof = await request.app[LOG_PROOFS_KEY].consistency(
        rid, first, second, latest, bytes(row["root"])
    )
    body = {"from": first, "to": second, "proof": [h.hex() for h in proof]}
    return _cached(request, body, _IMMUTABLE)


async def log_key(request: web.Request) -> web.Response:
    """The C2SP verifier key of the log's checkpoints."""
    key = request.app[LOG_VERIFIER_KEY]
    return _cached(request, {"verifier_key": key, "algorithm": "Ed25519"}, "public, max-age=300")


async def _log_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    key = load_or_create_key(settings.log_key_file, settings.data_dir, "log")
    app[LOG_VERIFIER_KEY] = verifier_key_string(settings.log_origin, key.public_key)
    proofs = app[LOG_PROOFS_KEY] = LogProofs(app[POOL_KEY], settings.proof_cache_mb << 20)
    yield
    await proofs.close()


def setup(app: web.Application) -> None:
    """Add the public log routes to ``app``."""
    app.cleanup_ctx.append(_log_ctx)
    base = "/v1/referendums/{rid}/log"
    # routes under /v1/referendums are tried in this order: the most requested first
    app.router.add_get(f"{base}/proof/inclusion/{{ballot_hash}}", inclusion)
    app.router.add_get(f"{base}/checkpoint", latest_checkpoint)
    app.router.add_get(f"{base}/proof/consistency", consistency)
    app.router.add_get(f"{base}/blocks/{{height}}", block)
    app.router.add_get(f"{base}/blocks/{{height}}/ballots", block_ballots)
    app.router.add_get("/v1/keys/log", log_key)
