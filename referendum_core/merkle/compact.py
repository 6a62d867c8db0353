"""Incremental append: the compact range of a growing tree (its right edge of perfect subtrees)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from referendum_core.merkle.hashing import (
    EMPTY_ROOT,
    HASH_SIZE,
    InvalidTreeSize,
    MalformedProof,
    check_hash,
)
from referendum_core.merkle.stored import NodeId, root_nodes, subtree_hash_from_nodes

__all__ = ["CompactRange", "Subtree"]

_sha256 = hashlib.sha256


class Subtree(NamedTuple):
    """A completed perfect subtree and its hash, as :class:`CompactRange` reports it."""

    level: int
    position: int
    hash: bytes


class CompactRange:
    """The right edge of a growing tree: one perfect subtree root per set bit of its size.

    Appending costs amortised one hash per leaf; :meth:`root` costs O(log n). ``extend``
    returns every perfect subtree it completes, so a batcher can store them and serve any
    proof later (:func:`inclusion_proof_nodes`) without recomputing the tree.

    >>> from referendum_core.merkle import leaf_hash, root_from_leaf_hashes
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
        hashes = [check_hash(h, "a compact range hash", "compact.hash") for h in subtree_hashes]
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
        sha = _sha256  # node hash inline: the batcher hashes every node of the log here
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
