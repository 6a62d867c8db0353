"""A naive, recursive RFC 9162 Merkle tree: the test oracle for ``referendum_core.merkle``.

Written straight from the definitions of RFC 9162 §2.1.1 (``MTH``), §2.1.3.1 (``PATH``) and
§2.1.4.1 (``PROOF``/``SUBPROOF``), with no shortcuts, so that it is obviously right and slow.
Used only by tests and by ``scripts/gen_merkle_vectors.py``; never imported by the product.
"""

from __future__ import annotations

import hashlib

__all__ = ["mth", "path", "proof", "ref_consistency_ok", "ref_inclusion_ok", "ref_leaf_hash"]


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_leaf_hash(entry: bytes) -> bytes:
    """MTH({d0}) = SHA-256(0x00 ‖ d0)."""
    return _sha256(b"\x00" + entry)


def _k(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(entries: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1: the Merkle Tree Hash of a list of entries (not leaf hashes)."""
    n = len(entries)
    if n == 0:
        return _sha256(b"")
    if n == 1:
        return ref_leaf_hash(entries[0])
    k = _k(n)
    return _sha256(b"\x01" + mth(entries[:k]) + mth(entries[k:]))


def path(m: int, entries: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.3.1: the inclusion proof PATH(m, D[n])."""
    n = len(entries)
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*path(m, entries[:k]), mth(entries[k:])]
    return [*path(m - k, entries[k:]), mth(entries[:k])]


def _subproof(m: int, entries: list[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [mth(entries)]
    k = _k(n)
    if m <= k:
        return [*_subproof(m, entries[:k], b), mth(entries[k:])]
    return [*_subproof(m - k, entries[k:], False), mth(entries[:k])]


def proof(m: int, entries: list[bytes]) -> list[bytes]:
    """RFC 9162 §2.1.4.1: the consistency proof PROOF(m, D[n]) for 0 < m <= n."""
    return _subproof(m, entries, True)


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right)


class _Invalid(Exception):
    """A proof that does not fit the tree shape."""


def _root_from_path(m: int, n: int, leaf: bytes, proof: list[bytes]) -> bytes:
    # PATH(m, D[n]) puts the top-level sibling last, so peel the proof from its end while
    # descending the same splits PATH took.
    if n == 1:
        if proof:
            raise _Invalid
        return leaf
    if not proof:
        raise _Invalid
    k = _k(n)
    last, rest = proof[-1], proof[:-1]
    if m < k:
        return _node(_root_from_path(m, k, leaf, rest), last)
    return _node(last, _root_from_path(m - k, n - k, leaf, rest))


def ref_inclusion_ok(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """Whether a verifier must accept: recompute the root top-down from the PATH shape."""
    if not 0 <= index < size or any(len(x) != 32 for x in [leaf, root, *proof]):
        return False
    try:
        return _root_from_path(index, size, leaf, list(proof)) == root
    except _Invalid:
        return False


def _sub(
    m: int, n: int, proof: list[bytes], whole: bool, root1: bytes
) -> tuple[bytes, bytes, list[bytes]]:
    # Mirror of SUBPROOF: returns (old subtree hash, new subtree hash, unconsumed prefix).
    if m == n:
        if whole:
            return root1, root1, proof
        if not proof:
            raise _Invalid
        return proof[-1], proof[-1], proof[:-1]
    if not proof:
        raise _Invalid
    k = _k(n)
    last, rest = proof[-1], proof[:-1]
    if m <= k:
        old, new, rest = _sub(m, k, rest, whole, root1)
        return old, _node(new, last), rest
    old, new, rest = _sub(m - k, n - k, rest, False, root1)
    return _node(last, old), _node(last, new), rest


def ref_consistency_ok(
    size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
) -> bool:
    """Whether a verifier must accept: replay SUBPROOF's shape, recomputing both roots."""
    if not 0 < size1 <= size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if any(len(x) != 32 for x in [root1, root2, *proof]):
        return False
    try:
        old, new, rest = _sub(size1, size2, list(proof), True, root1)
    except _Invalid:
        return False
    return not rest and old == root1 and new == root2
