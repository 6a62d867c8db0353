"""The RFC 9162 Merkle tree of the public log: hashing, proofs and their verification.

One tree per referendum, over the canonical bytes of accepted ballots, in log order::

    leaf  = SHA-256(0x00 ‖ ballot bytes)
    node  = SHA-256(0x01 ‖ left ‖ right)
    MTH({}) = SHA-256("")          (the empty tree)
    MTH(D[0:n]) = node(MTH(D[0:k]), MTH(D[k:n]))   k = largest power of two < n

Three groups of functions:

* computing from leaf hashes in memory: :func:`root_from_leaf_hashes`,
  :func:`inclusion_proof`, :func:`consistency_proof` (for tests, tools and small trees);
* verifying: :func:`verify_inclusion` (RFC 9162 §2.1.3.2) and :func:`verify_consistency`
  (§2.1.4.2); both return ``None`` or raise a :class:`~referendum_core.errors.MerkleError`;
* serving from stored nodes: :class:`CompactRange` appends leaves in amortised O(1) hashing and
  reports every perfect subtree it completes (:class:`Subtree`); :func:`inclusion_proof_nodes`
  and :func:`consistency_proof_nodes` name the O(log n) stored nodes a proof needs, and
  :func:`proof_from_node_hashes` assembles the proof from them. See ``docs/log.md``.

A node id ``(level, position)`` names the perfect subtree over leaves
``[position·2^level, (position+1)·2^level)``; level 0 is a leaf hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from referendum_core.errors import MerkleError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "InvalidTreeSize",
    "MalformedProof",
    "MerkleAccumulator",
    "NodeId",
    "RootMismatch",
    "Subtree",
    "consistency_proof",
    "consistency_proof_nodes",
    "consistency_proof_ranges",
    "inclusion_proof",
    "inclusion_proof_nodes",
    "inclusion_proof_ranges",
    "leaf_hash",
    "node_hash",
    "proof_from_node_hashes",
    "root_from_leaf_hashes",
    "root_nodes",
    "subtree_hash_from_nodes",
    "subtree_nodes",
    "verify_consistency",
    "verify_inclusion",
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


class NodeId(NamedTuple):
    """The perfect subtree over leaves ``[position·2^level, (position+1)·2^level)``."""

    level: int
    position: int


class Subtree(NamedTuple):
    """A completed perfect subtree and its hash, as :class:`CompactRange` reports it."""

    level: int
    position: int
    hash: bytes


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


def _split(n: int) -> int:
    """Largest power of two strictly below ``n``. Requires ``n >= 2``."""
    return 1 << ((n - 1).bit_length() - 1)


def _promote_root(hashes: Sequence[bytes]) -> bytes:
    """Root of a non-empty list by pairing each level and promoting a lone last node.

    Pairing neighbours level by level, carrying an odd last node up unchanged, builds exactly
    the RFC 9162 tree (the split at the largest power of two below n).
    """
    sha = _sha256
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
        mid = lo + _split(hi - lo)
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
        mid = lo + _split(hi - lo)
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

    >>> leaves = [leaf_hash(bytes([i])) for i in range(7)]
    >>> proof = consistency_proof(leaves, 3)
    >>> verify_consistency(3, 7, proof, root_from_leaf_hashes(leaves[:3]),
    ...                    root_from_leaf_hashes(leaves))
    """
    return [
        root_from_leaf_hashes(leaf_hashes[b:e])
        for b, e in consistency_proof_ranges(size1, len(leaf_hashes))
    ]


def _check_hash(value: object, what: str, check: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MalformedProof(f"{what} is not a {HASH_SIZE}-byte hash", check=check)
    return value


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves and ``root``.

    RFC 9162 §2.1.3.2: left or right is derived from ``index`` and ``size`` alone. Raises
    :class:`MalformedProof` for an index outside the tree, a hash that is not 32 bytes or a
    proof of the wrong length, and :class:`RootMismatch` when the path leads elsewhere.

    >>> leaves = [leaf_hash(b"a"), leaf_hash(b"b")]
    >>> verify_inclusion(leaves[0], 0, 2, [leaves[1]], root_from_leaf_hashes(leaves))
    >>> verify_inclusion(leaves[0], 1, 2, [leaves[1]], root_from_leaf_hashes(leaves))
    Traceback (most recent call last):
    referendum_core.merkle.RootMismatch: inclusion proof leads to a different root
    """
    if type(index) is not int or type(size) is not int or not 0 <= index < size:
        raise MalformedProof(
            f"index {index!r} is outside a tree of size {size!r}", check="inclusion.index"
        )
    _check_hash(leaf_hash, "the leaf hash", "inclusion.leaf")
    _check_hash(root, "the root", "inclusion.root")
    fn, sn = index, size - 1
    r = leaf_hash
    for i, p in enumerate(proof):
        _check_hash(p, f"proof element {i}", "inclusion.proof")
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

    >>> verify_consistency(1, 1, [], leaf_hash(b"a"), leaf_hash(b"a"))
    >>> verify_consistency(1, 1, [], leaf_hash(b"a"), leaf_hash(b"b"))
    Traceback (most recent call last):
    referendum_core.merkle.RootMismatch: equal sizes with different roots
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
    _check_hash(root1, "the first root", "consistency.root1")
    _check_hash(root2, "the second root", "consistency.root2")
    if len(proof) == 0:
        raise MalformedProof("consistency proof is empty", check="consistency.length")
    path = [_check_hash(p, f"proof element {i}", "consistency.proof") for i, p in enumerate(proof)]
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


# ---------------------------------------------------------------------------------------------
# Serving proofs from stored nodes


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


# ---------------------------------------------------------------------------------------------
# Incremental append


class CompactRange:
    """The right edge of a growing tree: one perfect subtree root per set bit of its size.

    Appending costs amortised one hash per leaf; :meth:`root` costs O(log n). ``extend``
    returns every perfect subtree it completes, so a batcher can store them and serve any
    proof later (:func:`inclusion_proof_nodes`) without recomputing the tree.

    >>> acc = CompactRange()
    >>> done = acc.extend([leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c")])
    >>> [(s.level, s.position) for s in done]
    [(0, 0), (0, 1), (1, 0), (0, 2)]
    >>> acc.root() == root_from_leaf_hashes([leaf_hash(x) for x in (b"a", b"b", b"c")])
    True
    >>> CompactRange.from_bytes(acc.to_bytes()).root() == acc.root()
    True
    """

    __slots__ = ("_size", "_stack")

    _MAGIC = b"RFC9162-CR1"

    def __init__(self, size: int = 0, subtree_hashes: Sequence[bytes] = ()) -> None:
        """Requires ``len(subtree_hashes) == popcount(size)``: the right edge, largest first."""
        if type(size) is not int or size < 0:
            raise InvalidTreeSize(f"bad tree size {size!r}", check="compact.size")
        hashes = [_check_hash(h, "a compact range hash", "compact.hash") for h in subtree_hashes]
        if len(hashes) != size.bit_count():
            raise MalformedProof(
                f"a tree of size {size} has {size.bit_count()} edge subtrees, got {len(hashes)}",
                check="compact.length",
            )
        self._size = size
        self._stack = hashes

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def subtree_hashes(self) -> list[bytes]:
        """The right-edge perfect subtree roots, largest (leftmost) first."""
        return list(self._stack)

    def edge_nodes(self) -> list[NodeId]:
        """Node ids of :attr:`subtree_hashes`, in the same order (``root_nodes(size)``)."""
        return root_nodes(self._size) if self._size else []

    def copy(self) -> CompactRange:
        """An independent copy (to try a block and keep the old state if it is not sealed)."""
        return CompactRange(self._size, self._stack)

    def append(self, leaf_hash: bytes) -> list[Subtree]:
        """Append one leaf hash; return the perfect subtrees completed (the leaf first)."""
        return self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes], *, min_level: int = 0) -> list[Subtree]:
        """Append leaf hashes in order; return the perfect subtrees they complete.

        Subtrees come in completion order, each leaf before the parents it completes;
        those below ``min_level`` are not reported (a batcher that keeps leaf hashes elsewhere
        passes 1). Raises :class:`MalformedProof` for a hash that is not 32 bytes, leaving the
        leaves before it appended.
        """
        stack = self._stack
        size = self._size
        done: list[Subtree] = []
        report = done.append
        sha = _sha256
        for h in leaf_hashes:
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                self._size = size
                raise MalformedProof(f"leaf {size} is not a 32-byte hash", check="compact.hash")
            if min_level == 0:
                report(Subtree(0, size, h))
            level = 0
            index = size
            while index & 1:
                h = sha(b"\x01" + stack.pop() + h).digest()
                level += 1
                index >>= 1
                if level >= min_level:
                    report(Subtree(level, index, h))
            stack.append(h)
            size += 1
        self._size = size
        return done

    def root(self) -> bytes:
        """Root hash of the tree of :attr:`size` leaves (``EMPTY_ROOT`` when empty)."""
        if not self._stack:
            return EMPTY_ROOT
        return subtree_hash_from_nodes(self._stack)

    def to_bytes(self) -> bytes:
        """Serialise as magic ‖ size (8 bytes, big-endian) ‖ the edge hashes."""
        return self._MAGIC + self._size.to_bytes(8, "big") + b"".join(self._stack)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        """Parse :meth:`to_bytes` output; raises :class:`MalformedProof` on anything else."""
        m = len(cls._MAGIC)
        if not isinstance(data, bytes) or len(data) < m + 8 or data[:m] != cls._MAGIC:
            raise MalformedProof("not a serialised compact range", check="compact.encoding")
        size = int.from_bytes(data[m : m + 8], "big")
        body = data[m + 8 :]
        if len(body) != HASH_SIZE * size.bit_count():
            raise MalformedProof("compact range of the wrong length", check="compact.length")
        return cls(size, [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._stack == other._stack

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()[:16]}…)"


MerkleAccumulator = CompactRange
"""Alias: the incremental accumulator of the log is a compact range."""
