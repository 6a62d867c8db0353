"""Proofs computed from leaf hashes in memory (RFC 9162 §2.1.3.1 ``PATH``, §2.1.4.1 ``PROOF``).

The ``*_ranges`` functions name the leaf ranges whose subtree hashes make up a proof; they are
the plan every other proof builder follows (:mod:`referendum_core.merkle.stored` serves the same
ranges from stored nodes). :func:`inclusion_proof` and :func:`consistency_proof` hash the whole
tree: for tests, tools and small trees.
"""

from __future__ import annotations

from collections.abc import Sequence

from referendum_core.merkle.hashing import InvalidTreeSize, root_from_leaf_hashes, split

__all__ = [
    "consistency_proof",
    "consistency_proof_ranges",
    "inclusion_proof",
    "inclusion_proof_ranges",
]


def _check_index(index: int, size: int) -> None:
    if type(index) is not int or type(size) is not int:
        raise InvalidTreeSize("index and size must be integers", check="tree.size")
    if not 0 <= index < size:
        raise InvalidTreeSize(f"index {index} is outside a tree of size {size}", check="tree.size")


def _check_sizes(size1: int, size2: int) -> None:
    if type(size1) is not int or type(size2) is not int:
        raise InvalidTreeSize("sizes must be integers", check="tree.size")
    if not 0 < size1 <= size2:
        raise InvalidTreeSize(
            f"no consistency proof from size {size1} to size {size2}", check="tree.size"
        )


def inclusion_proof_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges ``[begin, end)`` whose subtree hashes form the inclusion proof, leaf first.

    Follows RFC 9162 §2.1.3.1 (``PATH``). Requires ``0 <= index < size``.

    >>> inclusion_proof_ranges(2, 5)
    [(3, 4), (0, 2), (4, 5)]
    """
    _check_index(index, size)
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def consistency_proof_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose subtree hashes form the consistency proof, in proof order.

    Follows RFC 9162 §2.1.4.1 (``SUBPROOF``). Requires ``0 < size1 <= size2``; the proof
    from a size to itself is empty (RFC 9162 gives no proof from the empty tree: every tree
    extends it, so the question is refused rather than answered with a useless proof).

    >>> consistency_proof_ranges(3, 7)
    [(2, 3), (3, 4), (0, 2), (4, 7)]
    >>> consistency_proof_ranges(4, 4)
    []
    """
    _check_sizes(size1, size2)
    ranges: list[tuple[int, int]] = []
    lo, hi, whole_old_tree = 0, size2, True
    while hi != size1:
        mid = lo + split(hi - lo)
        if size1 <= mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
            whole_old_tree = False
    if not whole_old_tree:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """Return the inclusion proof of leaf ``index`` in the tree over all ``leaf_hashes``.

    Requires ``0 <= index < len(leaf_hashes)``; raises :class:`InvalidTreeSize` otherwise.
    Costs O(n) hashing: a server builds proofs from stored nodes instead
    (:func:`inclusion_proof_nodes`).

    >>> from referendum_core.merkle import leaf_hash, verify_inclusion
    >>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
    >>> proof = inclusion_proof(leaves, 2)
    >>> verify_inclusion(leaves[2], 2, 5, proof, root_from_leaf_hashes(leaves))
    """
    return [
        root_from_leaf_hashes(leaf_hashes[b:e])
        for b, e in inclusion_proof_ranges(index, len(leaf_hashes))
    ]


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int) -> list[bytes]:
    """Return the proof that the tree of size ``size1`` is a prefix of the tree of all leaves.

    Requires ``0 < size1 <= len(leaf_hashes)``; raises :class:`InvalidTreeSize` otherwise.
    ``size1 == len(leaf_hashes)`` gives the empty proof.

    >>> from referendum_core.merkle import leaf_hash, verify_consistency
    >>> leaves = [leaf_hash(bytes([i])) for i in range(7)]
    >>> proof = consistency_proof(leaves, 3)
    >>> verify_consistency(3, 7, proof, root_from_leaf_hashes(leaves[:3]),
    ...                    root_from_leaf_hashes(leaves))
    """
    return [
        root_from_leaf_hashes(leaf_hashes[b:e])
        for b, e in consistency_proof_ranges(size1, len(leaf_hashes))
    ]
