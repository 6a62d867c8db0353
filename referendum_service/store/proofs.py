"""Consistency proofs read straight from the stored log (no cache): for the batcher's witness
publisher, which needs one proof per checkpoint and witness, from the witness's last size.

The server's proof cache (:mod:`server.log_cache`) answers the public API from memory; this is
the same plan (:func:`~referendum_core.merkle.consistency_proof_nodes`) folded from the nodes
of ``log_nodes`` (levels >= 4) and the leaf hashes of the tiles below them.
"""

from __future__ import annotations

from typing import Any

from referendum_core.merkle import (
    STORED_MIN_LEVEL,
    TILE_WIDTH,
    StoredNodeError,
    consistency_proof_nodes,
    proof_from_nodes,
)
from referendum_core.merkle.tiles import TileNodes, tile_lookup, tile_nodes
from referendum_service.db import translated
from referendum_service.store.log import NODES_BY_ID, tiles_query

__all__ = ["stored_consistency_proof"]


async def stored_consistency_proof(conn: Any, rid: str, first: int, second: int) -> list[bytes]:
    """The RFC 9162 consistency proof from ``first`` to ``second`` leaves of ``rid``'s log.

    Requires ``0 < first <= second <=`` the sealed tree size; raises
    :class:`~referendum_core.merkle.StoredNodeError` when a node it needs is not stored.
    """
    plan = consistency_proof_nodes(first, second)
    wanted = sorted(
        {
            position >> (STORED_MIN_LEVEL - level)
            for element in plan
            for level, position in element
            if level < STORED_MIN_LEVEL
        }
    )
    tiles: dict[int, TileNodes] = {}
    needed = sorted({n for element in plan for n in element if n.level >= STORED_MIN_LEVEL})
    with translated():
        if wanted:
            bounds = [
                b for c in wanted for b in (c * TILE_WIDTH, min((c + 1) * TILE_WIDTH, second))
            ]
            rows = await conn.fetch(tiles_query(len(wanted)), rid, *bounds)
            for c in wanted:
                leaves = [bytes(r[1]) for r in sorted(rows) if r[0] >> STORED_MIN_LEVEL == c]
                if len(leaves) != min(TILE_WIDTH, second - c * TILE_WIDTH):
                    raise StoredNodeError(f"tile {c} of {rid!r} is not fully sequenced")
                tiles[c] = tile_nodes(leaves)
        stored: dict[tuple[int, int], bytes] = {}
        if needed:
            found = await conn.fetch(
                NODES_BY_ID, rid, [n.level for n in needed], [n.position for n in needed]
            )
            stored = {(r[0], r[1]): bytes(r[2]) for r in found}

    def node(level: int, position: int) -> bytes:
        h = stored.get((level, position))
        if h is None:
            raise StoredNodeError(f"node {(level, position)} of {rid!r} is not stored")
        return h

    return proof_from_nodes(plan, tile_lookup(node, tiles))
