"""The RFC 9162 hashes of the log's tree, its root from leaf hashes, and the Merkle errors.

::

    leaf  = SHA-256(0x00 ‖ ballot bytes)
    node  = SHA-256(0x01 ‖ left ‖ right)
    MTH({}) = SHA-256("")          (the empty tree)
    MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n]))   k = largest power of two < n
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from referendum_core.errors import MerkleError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "InvalidTreeSize",
    "MalformedProof",
    "RootMismatch",
    "leaf_hash",
    "node_hash",
    "root_from_leaf_hashes",
]

HASH_SIZE = 32
_sha256 = hashlib.sha256
EMPTY_ROOT: bytes = _sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string."""

# Leaves hashed together per chunk in root_from_leaf_hashes: bounds memory for 10M leaves.
_CHUNK_LEVEL = 16


class MalformedProof(MerkleError):
    """A proof, hash, index or size that cannot be part of a valid proof."""


class RootMismatch(MerkleError):
    """A well-formed proof that leads to a different root than the one claimed."""


class InvalidTreeSize(MerkleError):
    """A proof was asked for an index or sizes outside the tree."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 9162 leaf hash ``SHA-256(0x00 ‖ data)``.

    >>> leaf_hash(b"").hex()[:16]
    '6e340b9cffb37a98'
    """
    return _sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 interior node hash ``SHA-256(0x01 ‖ left ‖ right)``.

    >>> node_hash(leaf_hash(b"a"), leaf_hash(b"b")) == root_from_leaf_hashes(
    ...     [leaf_hash(b"a"), leaf_hash(b"b")])
    True
    """
    return _sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """Largest power of two strictly below ``n``: where RFC 9162 splits a tree of ``n``.

    Requires ``n >= 2``.

    >>> [split(n) for n in (2, 3, 4, 5, 8, 9)]
    [1, 2, 2, 4, 4, 8]
    """
    return 1 << ((n - 1).bit_length() - 1)


def check_hash(value: object, what: str, check: str) -> bytes:
    """``value`` if it is a 32-byte hash; :class:`MalformedProof` (with ``check``) otherwise."""
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MalformedProof(f"{what} is not a {HASH_SIZE}-byte hash", check=check)
    return value


def _promote_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a non-empty list by pairing each level and promoting a lone last node.

    Pairing neighbours level by level, carrying an odd last node up unchanged, builds exactly
    the RFC 9162 tree (the split at the largest power of two below n).
    """
    sha = _sha256  # inline node hash: this loop hashes every node of the tree
    level = list(hashes)
    while len(level) > 1:
        paired = [
            sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_from_leaf_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Return the root hash of the tree over ``leaf_hashes``, in O(n) hashing.

    Requires every element to be a 32-byte leaf hash. Memory stays bounded for 10 million
    leaves: leaves are reduced in aligned chunks of 2^16 (perfect subtrees), then the chunk
    roots are reduced.

    >>> root_from_leaf_hashes([]) == EMPTY_ROOT
    True
    >>> root_from_leaf_hashes([leaf_hash(b"x")]) == leaf_hash(b"x")
    True
    """
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    chunk = 1 << _CHUNK_LEVEL
    if n <= chunk:
        return _promote_root(leaf_hashes)
    # A chunk-aligned run of leaves is a subtree of the RFC tree, and a lone last node is
    # promoted unchanged, so the chunk roots reduce like leaves.
    chunk_roots = [_promote_root(leaf_hashes[i : i + chunk]) for i in range(0, n, chunk)]
    return _promote_root(chunk_roots)
