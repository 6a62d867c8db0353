"""The RFC 9162 Merkle tree of the public log: hashing, proofs and their verification.

One tree per referendum, over the canonical bytes of accepted ballots, in log order::

    leaf  = SHA-256(0x00 ‖ ballot bytes)
    node  = SHA-256(0x01 ‖ left ‖ right)
    MTH({}) = SHA-256("")          (the empty tree)
    MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n]))   k = largest power of two < n

The package follows the cut of transparency-dev/merkle:

* :mod:`~referendum_core.merkle.hashing`: :func:`leaf_hash`, :func:`node_hash`,
  :data:`EMPTY_ROOT`, :func:`root_from_leaf_hashes` and the errors;
* :mod:`~referendum_core.merkle.proof`: proofs computed from leaf hashes in memory
  (:func:`inclusion_proof`, :func:`consistency_proof`, and the leaf ranges they are made of);
* :mod:`~referendum_core.merkle.verify`: :func:`verify_inclusion` (RFC 9162 §2.1.3.2) and
  :func:`verify_consistency` (§2.1.4.2); both return ``None`` or raise a
  :class:`~referendum_core.errors.MerkleError`;
* :mod:`~referendum_core.merkle.compact`: :class:`CompactRange` appends leaves in amortised
  O(1) hashing and reports every perfect subtree it completes (:class:`Subtree`);
* :mod:`~referendum_core.merkle.stored`: proofs from stored nodes (one planner, one fold), the
  one implementation the server's proof cache, the batcher and the tests share, with
  :mod:`~referendum_core.merkle.tiles` for the unstored levels below. See ``docs/log.md``.

A node id ``(level, position)`` names the perfect subtree over leaves
``[position·2^level, (position+1)·2^level)``; level 0 is a leaf hash.
"""

from referendum_core.merkle.compact import CompactRange, Subtree
from referendum_core.merkle.hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    InvalidTreeSize,
    MalformedProof,
    RootMismatch,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
)
from referendum_core.merkle.proof import (
    consistency_proof,
    consistency_proof_ranges,
    inclusion_proof,
    inclusion_proof_ranges,
)
from referendum_core.merkle.stored import (
    STORED_MIN_LEVEL,
    TILE_WIDTH,
    Lookup,
    NodeId,
    StoredNodeError,
    consistency_proof_nodes,
    inclusion_proof_nodes,
    node_lookup,
    proof_from_nodes,
    right_edge,
    root_nodes,
    subtree_hash_from_nodes,
    subtree_nodes,
)
from referendum_core.merkle.tiles import (
    TileNodes,
    inclusion_from_levels,
    stored_node,
    tile_lookup,
    tile_nodes,
)
from referendum_core.merkle.verify import verify_consistency, verify_inclusion

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "STORED_MIN_LEVEL",
    "TILE_WIDTH",
    "CompactRange",
    "InvalidTreeSize",
    "Lookup",
    "MalformedProof",
    "NodeId",
    "RootMismatch",
    "StoredNodeError",
    "Subtree",
    "TileNodes",
    "consistency_proof",
    "consistency_proof_nodes",
    "consistency_proof_ranges",
    "inclusion_from_levels",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "inclusion_proof_ranges",
    "leaf_hash",
    "node_hash",
    "node_lookup",
    "proof_from_nodes",
    "right_edge",
    "root_from_leaf_hashes",
    "root_nodes",
    "stored_node",
    "subtree_hash_from_nodes",
    "subtree_nodes",
    "tile_lookup",
    "tile_nodes",
    "verify_consistency",
    "verify_inclusion",
]
