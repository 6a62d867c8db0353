"""Proofs from stored nodes: which perfect subtrees a proof needs, and the proof from their hashes.

A node id ``(level, position)`` names the perfect subtree over leaves
``[position·2^level, (position+1)·2^level)``; level 0 is a leaf hash. See ``docs/log.md``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from referendum_core.merkle.hashing import InvalidTreeSize
from referendum_core.merkle.proof import consistency_proof_ranges, inclusion_proof_ranges

__all__ = [
    "NodeId",
    "consistency_proof_nodes",
    "inclusion_proof_nodes",
    "proof_from_node_hashes",
    "root_nodes",
    "subtree_hash_from_nodes",
    "subtree_nodes",
]

_sha256 = hashlib.sha256


class NodeId(NamedTuple):
    """The perfect subtree over leaves ``[position·2^level, (position+1)·2^level)``."""

    level: int
    position: int


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


def subtree_hash_from_nodes(hashes: Sequence[bytes]) -> bytes:
    """Hash of an RFC 9162 subtree from the hashes of its :func:`subtree_nodes`, in order.

    The last (smallest) subtrees join first: ``node(h0, node(h1, … node(h[k-2], h[k-1])))``.
    Requires a non-empty sequence.

    >>> from referendum_core.merkle import leaf_hash, node_hash, root_from_leaf_hashes
    >>> ls = [leaf_hash(bytes([i])) for i in range(3)]
    >>> subtree_hash_from_nodes([node_hash(ls[0], ls[1]), ls[2]]) == root_from_leaf_hashes(ls)
    True
    """
    if not hashes:
        raise InvalidTreeSize("a subtree needs at least one node", check="tree.range")
    r = hashes[-1]
    for h in reversed(hashes[:-1]):
        r = _sha256(b"\x01" + h + r).digest()
    return r


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


def proof_from_node_hashes(
    plan: Sequence[Sequence[NodeId]], hashes: Mapping[tuple[int, int], bytes]
) -> list[bytes]:
    """Assemble a proof from a plan of :func:`inclusion_proof_nodes` or
    :func:`consistency_proof_nodes` and the stored hashes of its nodes.

    Raises :class:`InvalidTreeSize` (check ``tree.node``) naming the first node missing
    from ``hashes``.

    >>> from referendum_core.merkle import inclusion_proof, leaf_hash
    >>> ls = [leaf_hash(bytes([i])) for i in range(3)]
    >>> stored = {(0, i): h for i, h in enumerate(ls)}
    >>> proof_from_node_hashes(inclusion_proof_nodes(0, 3), stored) == inclusion_proof(ls, 0)
    True
    """
    proof: list[bytes] = []
    for element in plan:
        parts: list[bytes] = []
        for node in element:
            h = hashes.get((node[0], node[1]))
            if h is None:
                raise InvalidTreeSize(f"node {tuple(node)} is not stored", check="tree.node")
            parts.append(h)
        proof.append(subtree_hash_from_nodes(parts))
    return proof
