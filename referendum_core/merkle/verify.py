"""Verifying proofs: RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency).

Both return ``None`` or raise a :class:`~referendum_core.errors.MerkleError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from referendum_core.merkle.hashing import MalformedProof, RootMismatch, check_hash

__all__ = ["verify_consistency", "verify_inclusion"]

_sha256 = hashlib.sha256  # node hash inline: an auditor verifies a proof per ballot


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves and ``root``.

    RFC 9162 §2.1.3.2: left or right is derived from ``index`` and ``size`` alone. Raises
    :class:`MalformedProof` for an index outside the tree, a hash that is not 32 bytes or a
    proof of the wrong length, and :class:`RootMismatch` when the path leads elsewhere.

    >>> from referendum_core.merkle import leaf_hash, root_from_leaf_hashes
    >>> leaves = [leaf_hash(b"a"), leaf_hash(b"b")]
    >>> verify_inclusion(leaves[0], 0, 2, [leaves[1]], root_from_leaf_hashes(leaves))
    >>> verify_inclusion(leaves[0], 1, 2, [leaves[1]], root_from_leaf_hashes(leaves))
    Traceback (most recent call last):
    referendum_core.merkle.hashing.RootMismatch: inclusion proof leads to a different root
    """
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        raise MalformedProof(
            f"index {index!r} is outside a tree of size {size!r}", check="inclusion.index"
        )
    check_hash(leaf_hash, "the leaf hash", "inclusion.leaf")
    check_hash(root, "the root", "inclusion.root")
    fn, sn = index, size - 1
    r = leaf_hash
    for i, p in enumerate(proof):
        check_hash(p, f"proof element {i}", "inclusion.proof")
        if sn == 0:
            raise MalformedProof("inclusion proof is too long", check="inclusion.length")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MalformedProof("inclusion proof is too short", check="inclusion.length")
    if r != root:
        raise RootMismatch("inclusion proof leads to a different root", check="inclusion.root")


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree ``(size1, root1)`` is a prefix of the tree ``(size2, root2)``.

    RFC 9162 §2.1.4.2. Requires ``0 < size1 <= size2``; a consistency check from the empty
    tree is refused as meaningless. Equal sizes need an empty proof and equal roots (nothing
    is hashed then, so the roots are only compared). Raises :class:`MalformedProof` for sizes
    out of order, hashes that are not 32 bytes or a proof of the wrong length, and
    :class:`RootMismatch` when a recomputed root differs.

    >>> from referendum_core.merkle import leaf_hash
    >>> verify_consistency(1, 1, [], leaf_hash(b"a"), leaf_hash(b"a"))
    >>> verify_consistency(1, 1, [], leaf_hash(b"a"), leaf_hash(b"b"))
    Traceback (most recent call last):
    referendum_core.merkle.hashing.RootMismatch: equal sizes with different roots
    """
    if type(size1) is not int or type(size2) is not int or not 0 < size1 <= size2:
        raise MalformedProof(
            f"no consistency from size {size1!r} to size {size2!r}", check="consistency.size"
        )
    if size1 == size2:
        if len(proof) != 0:
            raise MalformedProof("equal sizes need an empty proof", check="consistency.length")
        if not isinstance(root1, bytes) or root1 != root2:
            raise RootMismatch("equal sizes with different roots", check="consistency.root")
        return
    check_hash(root1, "the first root", "consistency.root1")
    check_hash(root2, "the second root", "consistency.root2")
    if len(proof) == 0:
        raise MalformedProof("consistency proof is empty", check="consistency.length")
    path = [check_hash(p, f"proof element {i}", "consistency.proof") for i, p in enumerate(proof)]
    if size1 & (size1 - 1) == 0:
        # The old tree is a perfect subtree of the new one: its root is the first node.
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise MalformedProof("consistency proof is too long", check="consistency.length")
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise MalformedProof("consistency proof is too short", check="consistency.length")
    if fr != root1:
        raise RootMismatch(
            "consistency proof does not lead to the first root", check="consistency.root1"
        )
    if sr != root2:
        raise RootMismatch(
            "consistency proof does not lead to the second root", check="consistency.root2"
        )
