"""Proofs from stored nodes: one planner, one fold; storage only fetches hashes.

A node id ``(level, position)`` names the perfect subtree over leaves
``[position·2^level, (position+1)·2^level)``; level 0 is a leaf hash. A log stores every
completed node of level ≥ :data:`STORED_MIN_LEVEL` (``log_nodes``); the nodes below are
recomputed from the :data:`TILE_WIDTH` leaves of their *tile* (the aligned leaves under one
stored node of the lowest stored level; a *partial tile* is the last, incomplete one).

* The planner: :func:`subtree_nodes` covers a proof's leaf range with perfect nodes;
  :func:`inclusion_proof_nodes` and :func:`consistency_proof_nodes` name every node a proof
  needs, so a store can fetch exactly those.
* The fold: :func:`subtree_hash_from_nodes` joins a range's nodes into its hash;
  :func:`proof_from_nodes` folds each element of a plan, reading hashes through a
  :data:`Lookup`, and :func:`right_edge` keeps every fold of a tree's compact range.
* Tiles (:mod:`referendum_core.merkle.tiles`): the levels below the stored ones, and the
  fast inclusion route of the server's proof cache.

See ``docs/log.md`` §7.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from referendum_core.merkle.hashing import InvalidTreeSize, node_hash
from referendum_core.merkle.proof import consistency_proof_ranges, inclusion_proof_ranges

__all__ = [
    "STORED_MIN_LEVEL",
    "TILE_WIDTH",
    "Lookup",
    "NodeId",
    "StoredNodeError",
    "consistency_proof_nodes",
    "inclusion_proof_nodes",
    "node_lookup",
    "proof_from_nodes",
    "right_edge",
    "root_nodes",
    "subtree_hash_from_nodes",
    "subtree_nodes",
]

STORED_MIN_LEVEL = 4
"""Lowest level of the nodes a log stores in ``log_nodes`` (migration 020): the batcher writes
from this level, the proof cache recomputes the levels below from a tile's leaves."""

TILE_WIDTH = 1 << STORED_MIN_LEVEL
"""Leaves of one tile: the aligned leaves under one stored node of :data:`STORED_MIN_LEVEL`."""


class StoredNodeError(RuntimeError):
    """A node the log must hold is missing or wrong: a bug or a damaged database.

    Not a :class:`~referendum_core.errors.CoreError`: no caller's input causes it, so a
    service answers it as an internal error, never as a refused request.
    """


class NodeId(NamedTuple):
    """The perfect subtree over leaves ``[position·2^level, (position+1)·2^level)``."""

    level: int
    position: int


Lookup = Callable[[int, int], bytes]
"""``lookup(level, position)``: the hash of a perfect node (raises when it has none)."""


# ---------------------------------------------------------------------------------------------
# The planner


def subtree_nodes(begin: int, end: int) -> list[NodeId]:
    """The perfect subtrees that cover ``[begin, end)``, left to right, largest first.

    Requires ``0 <= begin < end`` and that ``[begin, end)`` is a subtree of some RFC 9162 tree
    (``begin`` is a multiple of a power of two at least ``end - begin``), as every range of
    :func:`inclusion_proof_ranges` and :func:`consistency_proof_ranges` is. At most
    ``log2(end - begin) + 1`` nodes.

    >>> subtree_nodes(8, 15)
    [NodeId(level=2, position=2), NodeId(level=1, position=6), NodeId(level=0, position=14)]
    """
    if type(begin) is not int or type(end) is not int or not 0 <= begin < end:
        raise InvalidTreeSize(f"empty or negative range [{begin}, {end})", check="tree.range")
    nodes: list[NodeId] = []
    while begin < end:
        level = (end - begin).bit_length() - 1
        if begin:
            level = min(level, (begin & -begin).bit_length() - 1)
        nodes.append(NodeId(level, begin >> level))
        begin += 1 << level
    return nodes


def root_nodes(size: int) -> list[NodeId]:
    """The stored nodes from which the root of the tree of ``size`` leaves is computed.

    Requires ``size > 0``. Fold their hashes with :func:`subtree_hash_from_nodes`.

    >>> root_nodes(6)
    [NodeId(level=2, position=0), NodeId(level=1, position=2)]
    """
    return subtree_nodes(0, size)


def inclusion_proof_nodes(index: int, size: int) -> list[list[NodeId]]:
    """For each inclusion proof element, the stored nodes it is computed from.

    Requires ``0 <= index < size``. Every element but at most one (the right-edge subtree of
    an incomplete tree) is one perfect node, so a proof needs O(log size) node reads.

    >>> inclusion_proof_nodes(0, 3)
    [[NodeId(level=0, position=1)], [NodeId(level=0, position=2)]]
    """
    return [subtree_nodes(b, e) for b, e in inclusion_proof_ranges(index, size)]


def consistency_proof_nodes(size1: int, size2: int) -> list[list[NodeId]]:
    """For each consistency proof element, the stored nodes it is computed from.

    Requires ``0 < size1 <= size2``. O(log size2) nodes in all.

    >>> consistency_proof_nodes(2, 3)
    [[NodeId(level=0, position=2)]]
    """
    return [subtree_nodes(b, e) for b, e in consistency_proof_ranges(size1, size2)]


# ---------------------------------------------------------------------------------------------
# The fold


def _folds(hashes: Sequence[bytes]) -> list[bytes]:
    """``folds[i]``: the hash of the subtree covered by the nodes ``hashes[i:]`` (the last,
    smallest subtrees join first). Requires a non-empty sequence."""
    folds = [hashes[-1]]
    for h in reversed(hashes[:-1]):
        folds.append(node_hash(h, folds[-1]))
    folds.reverse()
    return folds


def subtree_hash_from_nodes(hashes: Sequence[bytes]) -> bytes:
    """Hash of an RFC 9162 subtree from the hashes of its :func:`subtree_nodes`, in order.

    ``node(h0, node(h1, … node(h[k-2], h[k-1])))``. Requires a non-empty sequence.

    >>> from referendum_core.merkle import leaf_hash, root_from_leaf_hashes
    >>> ls = [leaf_hash(bytes([i])) for i in range(3)]
    >>> subtree_hash_from_nodes([node_hash(ls[0], ls[1]), ls[2]]) == root_from_leaf_hashes(ls)
    True
    """
    if not hashes:
        raise InvalidTreeSize("a subtree needs at least one node", check="tree.range")
    return _folds(hashes)[0]


def proof_from_nodes(plan: Sequence[Sequence[NodeId]], lookup: Lookup) -> list[bytes]:
    """Assemble a proof from a plan of :func:`inclusion_proof_nodes` or
    :func:`consistency_proof_nodes`, reading each node's hash through ``lookup``.

    >>> from referendum_core.merkle import inclusion_proof, leaf_hash
    >>> ls = [leaf_hash(bytes([i])) for i in range(3)]
    >>> stored = node_lookup({(0, i): h for i, h in enumerate(ls)})
    >>> proof_from_nodes(inclusion_proof_nodes(0, 3), stored) == inclusion_proof(ls, 0)
    True
    """
    return [
        subtree_hash_from_nodes([lookup(level, position) for level, position in element])
        for element in plan
    ]


def node_lookup(hashes: Mapping[tuple[int, int], bytes]) -> Lookup:
    """A :data:`Lookup` over stored hashes by node id; a node missing from ``hashes`` raises
    :class:`InvalidTreeSize` (check ``tree.node``) naming it.

    >>> node_lookup({})(1, 2)
    Traceback (most recent call last):
    referendum_core.merkle.hashing.InvalidTreeSize: node (1, 2) is not stored
    """

    def lookup(level: int, position: int) -> bytes:
        h = hashes.get((level, position))
        if h is None:
            raise InvalidTreeSize(f"node {(level, position)} is not stored", check="tree.node")
        return h

    return lookup


def right_edge(size: int, lookup: Lookup) -> dict[int, bytes]:
    """``{b: MTH(D[b:size])}`` for ``b`` = the start of each perfect subtree covering
    ``[0, size)`` (its compact range): every non-perfect range an inclusion proof in the tree
    of ``size`` leaves may hold is one of them, and ``b = 0`` gives the root.

    Requires ``size > 0``.

    >>> from referendum_core.merkle import leaf_hash, root_from_leaf_hashes
    >>> leaves = [leaf_hash(bytes([i])) for i in range(7)]
    >>> node = lambda lvl, pos: root_from_leaf_hashes(leaves[pos << lvl : (pos + 1) << lvl])
    >>> edge = right_edge(7, node)
    >>> sorted(edge), edge[0] == root_from_leaf_hashes(leaves)
    ([0, 4, 6], True)
    """
    parts = subtree_nodes(0, size)
    folds = _folds([lookup(node.level, node.position) for node in parts])
    return {node.position << node.level: h for node, h in zip(parts, folds, strict=True)}
