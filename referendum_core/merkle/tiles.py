"""Tiles: the aligned :data:`~referendum_core.merkle.stored.TILE_WIDTH` leaves under one stored
node of the lowest stored level, whose inner nodes are recomputed rather than stored.

:func:`tile_nodes` hashes a tile's levels below the stored ones, :func:`tile_lookup` serves a
:data:`~referendum_core.merkle.stored.Lookup` from stored nodes and tiles, and
:func:`inclusion_from_levels` is the fast route of the server's proof cache, which holds the
stored levels as concatenated hashes (:func:`stored_node`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from referendum_core.merkle.hashing import HASH_SIZE, node_hash, root_from_leaf_hashes
from referendum_core.merkle.proof import inclusion_proof
from referendum_core.merkle.stored import (
    STORED_MIN_LEVEL,
    TILE_WIDTH,
    Lookup,
    StoredNodeError,
)

__all__ = ["TileNodes", "inclusion_from_levels", "stored_node", "tile_lookup", "tile_nodes"]

_sha256 = hashlib.sha256

TileNodes = list[list[bytes]]
"""The levels below the stored ones over one tile: ``nodes[level][offset]``, complete only."""


def tile_nodes(leaf_hashes: Sequence[bytes]) -> TileNodes:
    """Every complete node of the levels below :data:`STORED_MIN_LEVEL` over one tile's leaves.

    >>> [len(level) for level in tile_nodes([bytes(32)] * 11)]
    [11, 5, 2, 1]
    """
    nodes = [list(leaf_hashes)]
    for _ in range(STORED_MIN_LEVEL - 1):
        below = nodes[-1]
        nodes.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return nodes


def tile_lookup(stored: Lookup, tiles: Mapping[int, TileNodes]) -> Lookup:
    """Nodes of the stored levels from ``stored``, those below from ``tiles`` (by tile number).

    A node below whose tile was not read raises :class:`StoredNodeError`.
    """

    def lookup(level: int, position: int) -> bytes:
        if level >= STORED_MIN_LEVEL:
            return stored(level, position)
        shift = STORED_MIN_LEVEL - level
        tile = tiles.get(position >> shift)
        offset = position - ((position >> shift) << shift)
        if tile is None or offset >= len(tile[level]):
            raise StoredNodeError(f"node {(level, position)} was not read")
        return tile[level][offset]

    return lookup


def _full_tile(leaves: Sequence[bytes], i: int) -> tuple[list[bytes], bytes]:
    """The inclusion proof of leaf ``i`` in a perfect tree of 16 leaves, and its root.

    15 hashes: the 11 of the proof's siblings and 4 up the leaf's own path. Unrolled, with the
    node hash written inline, because it is most of the work of a cached inclusion proof.

    >>> from referendum_core.merkle import leaf_hash, root_from_leaf_hashes
    >>> leaves = [leaf_hash(bytes([i])) for i in range(16)]
    >>> all(_full_tile(leaves, i) == (inclusion_proof(leaves, i),
    ...     root_from_leaf_hashes(leaves)) for i in range(16))
    True
    """
    sha = _sha256  # node_hash inline: a call per hash costs this route measurably
    own = leaves[i]
    sibling = leaves[i ^ 1]
    own = sha(b"\x01" + (own + sibling if i & 1 == 0 else sibling + own)).digest()
    j = (i >> 1 ^ 1) << 1
    pair = sha(b"\x01" + leaves[j] + leaves[j + 1]).digest()
    own = sha(b"\x01" + (own + pair if i & 2 == 0 else pair + own)).digest()
    j = (i >> 2 ^ 1) << 2
    quad = sha(
        b"\x01"
        + sha(b"\x01" + leaves[j] + leaves[j + 1]).digest()
        + sha(b"\x01" + leaves[j + 2] + leaves[j + 3]).digest()
    ).digest()
    own = sha(b"\x01" + (own + quad if i & 4 == 0 else quad + own)).digest()
    j = (i >> 3 ^ 1) << 3
    octet = sha(
        b"\x01"
        + sha(
            b"\x01"
            + sha(b"\x01" + leaves[j] + leaves[j + 1]).digest()
            + sha(b"\x01" + leaves[j + 2] + leaves[j + 3]).digest()
        ).digest()
        + sha(
            b"\x01"
            + sha(b"\x01" + leaves[j + 4] + leaves[j + 5]).digest()
            + sha(b"\x01" + leaves[j + 6] + leaves[j + 7]).digest()
        ).digest()
    ).digest()
    root = sha(b"\x01" + (own + octet if i & 8 == 0 else octet + own)).digest()
    return [sibling, pair, quad, octet], root


def stored_node(levels: Sequence[bytes | bytearray], level: int, position: int) -> bytes:
    """Node ``(level, position)`` from stored levels held as concatenated hashes:
    ``levels[k]`` holds level ``STORED_MIN_LEVEL + k``, 32 bytes a node, in position order.

    Raises :class:`StoredNodeError` for a node they do not hold.
    """
    k = level - STORED_MIN_LEVEL
    start = position << 5
    if not 0 <= k < len(levels) or start + HASH_SIZE > len(levels[k]):
        raise StoredNodeError(f"node {(level, position)} is not cached")
    return bytes(levels[k][start : start + HASH_SIZE])


def inclusion_from_levels(
    index: int,
    size: int,
    tile_leaves: Sequence[bytes],
    levels: Sequence[bytes | bytearray],
    edge: Mapping[int, bytes],
) -> list[bytes]:
    """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    ``levels`` holds every stored node of that tree (:func:`stored_node`), ``edge`` is its
    :func:`right_edge`, ``tile_leaves`` the leaf hashes of the leaf's tile clipped to ``size``.
    Elements inside the tile are hashed from ``tile_leaves`` (whose root must be the stored
    node, or edge hash, above them), the others looked up. A leaf in a complete tile (all but
    the last ≤ 15 leaves) takes the direct route: siblings up to the level where the paths to
    ``index`` and to ``size`` part, that fork's right sibling ``[end, size)``, then the
    perfect subtrees left of the fork; a leaf of the partial tile walks the path down from the
    root. Raises :class:`StoredNodeError` for leaves or nodes that do not fit.

    >>> from referendum_core.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes
    >>> leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(40)]
    >>> node = lambda lvl, pos: root_from_leaf_hashes(leaves[pos << lvl : (pos + 1) << lvl])
    >>> levels = [b"".join(node(lvl, p) for p in range(40 >> lvl)) for lvl in (4, 5)]
    >>> from referendum_core.merkle import right_edge
    >>> edge = right_edge(40, node)
    >>> all(inclusion_from_levels(i, 40, leaves[i & -16 : (i & -16) + 16], levels, edge)
    ...     == inclusion_proof(leaves, i) for i in range(40))
    True
    """
    start = index & -TILE_WIDTH
    stop = start + len(tile_leaves)
    if not start <= index < stop or stop != min(start + TILE_WIDTH, size):
        raise StoredNodeError(f"{len(tile_leaves)} leaves in the tile at {start}")
    inner = (index ^ size).bit_length() - 1  # the level where the paths to index and size part
    if inner >= STORED_MIN_LEVEL:  # the leaf's tile is complete: the usual case
        proof, top = _full_tile(tile_leaves, index - start)
        if top != stored_node(levels, STORED_MIN_LEVEL, start >> STORED_MIN_LEVEL):
            raise StoredNodeError(f"the leaves of [{start}, {stop}) do not match the log")
        try:
            # siblings up to the fork, all complete and stored
            for level in range(STORED_MIN_LEVEL, inner):
                stored = levels[level - STORED_MIN_LEVEL]
                offset = ((index >> level) ^ 1) << 5
                proof.append(bytes(stored[offset : offset + HASH_SIZE]))
            # the fork's right sibling, [end, size), when the tree goes on past the fork
            end = (size >> inner) << inner
            if end < size:
                proof.append(edge[end])
            # then the perfect subtrees left of the fork, smallest first
            begin = end - (1 << inner)
            level = inner + 1
            while begin >> level:
                if (begin >> level) & 1:
                    stored = levels[level - STORED_MIN_LEVEL]
                    offset = ((begin >> level) - 1) << 5
                    proof.append(bytes(stored[offset : offset + HASH_SIZE]))
                level += 1
        except (IndexError, KeyError) as exc:
            raise StoredNodeError(f"a node of the proof of {index} is not cached") from exc
        if any(len(h) != HASH_SIZE for h in proof):
            raise StoredNodeError(f"a node of the proof of {index} is not cached")
        return proof
    proof = []
    lo, hi = 0, size
    while True:  # [lo, hi) holds the leaf; until it lies in the tile it is over 1 wide
        if lo >= start and hi <= stop:  # the rest of the path lies in the tile
            if hi - lo == TILE_WIDTH:
                below, top = _full_tile(tile_leaves, index - lo)
                known = stored_node(levels, STORED_MIN_LEVEL, start >> STORED_MIN_LEVEL)
            else:  # the partial tile: [start, size) is on the right edge
                below = inclusion_proof(tile_leaves[lo - start : hi - start], index - lo)
                top = root_from_leaf_hashes(tile_leaves[lo - start : hi - start])
                known = edge.get(lo, b"")
            if top != known:  # the leaves read do not give the verified node above them
                raise StoredNodeError(f"the leaves of [{lo}, {hi}) do not match the log")
            below.reverse()
            proof += below
            break
        mid = lo + (1 << ((hi - lo - 1).bit_length() - 1))
        if index < mid:
            begin, end, hi = mid, hi, mid
        else:
            begin, end, lo = lo, mid, mid
        width = end - begin
        if width & (width - 1) or width < TILE_WIDTH:  # not a stored node: the right edge
            h = edge.get(begin)
            if h is None:
                raise StoredNodeError(f"no right edge [{begin}, {size}) is cached")
            proof.append(h)
            continue
        level = width.bit_length() - 1
        proof.append(stored_node(levels, level, begin >> level))
    proof.reverse()
    return proof
