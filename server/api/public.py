"""The public read API of the log (``docs/log.md`` §5): checkpoints, blocks, ballots, proofs.

Routes (all ``GET``)::

    /v1/referendums/{rid}/log/checkpoint                      latest checkpoint (no-cache)
    /v1/referendums/{rid}/log/blocks/{height}                  a sealed block (immutable)
    /v1/referendums/{rid}/log/blocks/{height}/ballots          its ballots, cursor pages
    /v1/referendums/{rid}/log/proof/inclusion/{ballot_hash}    inclusion proof bundle
    /v1/referendums/{rid}/log/proof/consistency?from=&to=      consistency proof (immutable)
    /v1/keys/log                                               the checkpoint verifier key

Proofs are assembled from stored nodes, never by recomputing the tree
(:mod:`server.log_cache`): the nodes of level ≥ 4 that the batcher wrote to ``log_nodes``
are cached in memory per process, those below are recomputed from the ≤ 16 leaves of their
aligned tile. An inclusion proof is a share of one query (the checkpoint, the ballot's log
index, body and tile), which requests arriving together share. See ``docs/log.md`` §7.

Chunks of ballots are always read as ``log_entries.log_index`` *ranges* whose bounds are
values (then joined to ``ballots`` by id for the bodies), never by ``log_index = ANY(array)``
nor by a range whose bounds come from another relation: with statistics taken before the
ballots were sequenced (the normal state while voting runs), PostgreSQL 15 chose to scan the
referendum's whole sequenced range and filter it (0.3 s a proof on a 200,000-ballot log, over
1 s on 1,000,000).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from aiohttp import web

from referendum_core.block import Block
from referendum_core.checkpoint import verifier_key_string
from referendum_core.merkle import EMPTY_ROOT
from referendum_service.db import acquire, translated
from referendum_service.keys import load_or_create_key
from referendum_service.store.blocks import LogHead, block_at, log_head
from referendum_service.store.log import LOG_POSITION_SQL
from referendum_service.store.witnesses import cosignature_lines, latest_witnessed, load_policy
from server.errors import BadRequest, NotFound
from server.http import IMMUTABLE, cached_json_response, integer
from server.http import ballot_hash as parse_ballot_hash
from server.log_cache import LogProofs
from server.state import LOG_PROOFS_KEY, LOG_VERIFIER_KEY, POOL_KEY, SETTINGS_KEY

__all__ = ["setup"]

_LATEST = "no-cache"
_DEFAULT_LIMIT = 1000
_MAX_LIMIT = 10000


# ---------------------------------------------------------------------------------------------
# Reads (the block and the head are shared store queries; a ballot page is composed from the
# log-position SQL of referendum_service.store.log)

_BLOCK_BALLOTS = (
    "SELECT p.log_index, p.ballot_hash, p.body, p.credential FROM ("  # noqa: S608 (a template)
    + LOG_POSITION_SQL.ballots_in_range.format(rid="$1", lo="$2::bigint + 1", hi="$3::bigint")
    + ") AS p ORDER BY p.log_index LIMIT $4"
)


class _LoggedBallot(NamedTuple):
    log_index: int
    ballot_hash: bytes
    body: bytes
    credential: bytes


async def _ballots_page(
    conn: Any, rid: str, after: int, end: int, limit: int
) -> list[_LoggedBallot]:
    """At most ``limit`` ballots with ``after < log index < end``, in log order."""
    with translated():
        rows = await conn.fetch(_BLOCK_BALLOTS, rid, after, end, limit)
    return [
        _LoggedBallot(
            r["log_index"], bytes(r["ballot_hash"]), bytes(r["body"]), bytes(r["credential"])
        )
        for r in rows
    ]


# ---------------------------------------------------------------------------------------------
# Handlers


def _rid(request: web.Request) -> str:
    """The referendum id of the path (one with a NUL never gets here: see server.http)."""
    return request.match_info["rid"]


def _unknown(rid: str) -> NotFound:
    return NotFound(f"no referendum {rid!r}", slug="unknown-referendum")


async def latest_checkpoint(request: web.Request) -> web.Response:
    """The checkpoint of the latest sealed block (size 0 and no note before the first), its
    note followed by the cosignature lines collected so far; with ``?witnessed=true`` the
    latest checkpoint that meets the referendum's witness policy (404 without a policy)."""
    rid = _rid(request)
    witnessed = request.query.get("witnessed")
    if witnessed not in (None, "true", "false"):
        raise BadRequest("witnessed is true or false", slug="bad-parameter", field="witnessed")
    async with acquire(request.app[POOL_KEY]) as conn:
        head = await log_head(conn, rid)
        if head is None:
            raise _unknown(rid)
        lines: list[str] = []
        if witnessed == "true":
            policy = await load_policy(conn, rid)
            if policy is None:
                raise NotFound(
                    f"referendum {rid!r} has no witness policy", slug="no-witness-policy"
                )
            found = await latest_witnessed(conn, rid, policy.threshold)
            if found is None:
                head = LogHead(0, EMPTY_ROOT, None, 0)
            else:
                head = LogHead(found.tree_size, found.root, found.note, found.height)
                lines = found.lines
        elif head.checkpoint is not None:
            lines = await cosignature_lines(conn, rid, head.tree_size)
    body = {
        "tree_size": head.tree_size,
        "root": head.root.hex(),
        "note": None if head.checkpoint is None else head.checkpoint + "".join(lines),
        "height": head.height,
        "cosigners": [line[2:].split(" ", 1)[0] for line in lines],
    }
    return cached_json_response(request, body, _LATEST)


async def _block(request: web.Request) -> Block:
    rid = _rid(request)
    height = integer(request.match_info["height"], "height", minimum=1)
    async with acquire(request.app[POOL_KEY]) as conn:
        known, found = await block_at(conn, rid, height)
    if not known:
        raise _unknown(rid)
    if found is None:
        raise NotFound(f"no block {height} (yet)", slug="unknown-block")
    return found


async def block(request: web.Request) -> web.Response:
    """A sealed block, as ``Block.to_json()``."""
    return cached_json_response(request, (await _block(request)).to_json(), IMMUTABLE)


async def block_ballots(request: web.Request) -> web.Response:
    """One page of a block's ballots in log order; the cursor is the last index returned."""
    query = request.query
    limit = integer(
        query.get("limit"), "limit", minimum=1, maximum=_MAX_LIMIT, default=_DEFAULT_LIMIT
    )
    cursor_text = query.get("cursor")
    sealed = await _block(request)
    first, end = sealed.first_index, sealed.end_index
    after = first - 1
    if cursor_text is not None and cursor_text != "":
        after = integer(cursor_text, "cursor", minimum=-1)
        if not first - 1 <= after < end:
            raise BadRequest(
                f"cursor {after} is outside block {sealed.height}",
                slug="bad-parameter",
                field="cursor",
            )
    async with acquire(request.app[POOL_KEY]) as conn:
        page = await _ballots_page(conn, sealed.referendum_id, after, end, limit)
    ballots = [
        {
            "index": b.log_index,
            "ballot_hash": b.ballot_hash.hex(),
            "body": b.body.hex(),
            "credential": b.credential.hex(),
        }
        for b in page
    ]
    last = page[-1].log_index if page else end - 1
    next_cursor = str(last) if last < end - 1 else None
    body = {"ballots": ballots, "next_cursor": next_cursor}
    return cached_json_response(request, body, IMMUTABLE)


async def inclusion(request: web.Request) -> web.Response:
    """The inclusion proof bundle of a ballot against the latest or a given checkpoint.

    A share of one query (checkpoint, log index, body, the leaves of the ballot's tile);
    the nodes above the tile come from this process's cache (:mod:`server.log_cache`).
    """
    rid = _rid(request)
    ballot_hash = parse_ballot_hash(request.match_info["ballot_hash"], any_case=True)
    size_text = request.query.get("tree_size")
    wanted = None if size_text is None else integer(size_text, "tree_size", minimum=1)
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
    return cached_json_response(request, result, _LATEST if wanted is None else IMMUTABLE)


async def consistency(request: web.Request) -> web.Response:
    """The consistency proof between two tree sizes up to the latest checkpoint."""
    rid = _rid(request)
    first = integer(request.query.get("from"), "from", minimum=1)
    second = integer(request.query.get("to"), "to", minimum=1)
    if first > second:
        raise BadRequest("from must not exceed to", slug="bad-parameter", field="from")
    async with acquire(request.app[POOL_KEY]) as conn:
        head = await log_head(conn, rid)
    if head is None:
        raise _unknown(rid)
    if second > head.tree_size:
        raise BadRequest(
            f"to {second} is beyond the latest tree size {head.tree_size}",
            slug="bad-parameter",
            field="to",
        )
    proof = await request.app[LOG_PROOFS_KEY].consistency(
        rid, first, second, head.tree_size, head.root
    )
    body = {"from": first, "to": second, "proof": [h.hex() for h in proof]}
    return cached_json_response(request, body, IMMUTABLE)


async def log_key(request: web.Request) -> web.Response:
    """The C2SP verifier key of the log's checkpoints."""
    key = request.app[LOG_VERIFIER_KEY]
    return cached_json_response(
        request, {"verifier_key": key, "algorithm": "Ed25519"}, "public, max-age=300"
    )


async def _log_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS_KEY]
    key = load_or_create_key(settings.log_key_file, settings.data_dir, "log")
    app[LOG_VERIFIER_KEY] = verifier_key_string(settings.log_origin, key.public_key)
    proofs = app[LOG_PROOFS_KEY] = LogProofs(
        app[POOL_KEY],
        settings.proof_cache_mb << 20,
        page_nodes=settings.proof_page_nodes,
        sizes_per_log=settings.proof_sizes_per_log,
        query_slots=settings.proof_query_slots,
        batch_max=settings.proof_batch_max,
    )
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
