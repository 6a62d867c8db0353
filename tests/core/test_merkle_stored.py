"""Proofs from stored nodes and tiles (``referendum_core.merkle.stored`` and ``.tiles``) against
the naive reference in merkle_reference.

Every proof from the stored levels must equal the reference's PATH: for every size and index
of small trees (nodes beyond a size must never leak into its proofs), for larger ones, and
never from leaves or nodes that do not fit.
"""

from __future__ import annotations

import random
from functools import cache

import pytest

from referendum_core import merkle
from referendum_core.merkle import STORED_MIN_LEVEL, TILE_WIDTH, StoredNodeError

from .merkle_reference import mth, path, proof, ref_leaf_hash


class Log:
    """The stored levels and right edges of a log of ``n`` entries, from the reference."""

    def __init__(self, n: int, sizes: list[int]) -> None:
        self.entries = [i.to_bytes(4, "big") for i in range(n)]
        self.leaves = [ref_leaf_hash(e) for e in self.entries]
        self.levels = [
            bytearray(b"".join(self.perfect(level, p) for p in range(n >> level)))
            for level in range(STORED_MIN_LEVEL, n.bit_length())
        ]
        self.edges = {size: merkle.right_edge(size, self.perfect) for size in sizes}

    def perfect(self, level: int, position: int) -> bytes:
        """The reference hash of node ``(level, position)``."""
        return _mth(tuple(self.entries[position << level : (position + 1) << level]))

    def tile(self, index: int, size: int) -> list[bytes]:
        """The leaf hashes of the tile of ``index``, clipped to ``size``."""
        start = index - index % TILE_WIDTH
        return self.leaves[start : min(start + TILE_WIDTH, size)]

    def inclusion(self, index: int, size: int, tile: list[bytes] | None = None) -> list[bytes]:
        """The proof from the stored levels and the right edge of ``size``."""
        leaves = self.tile(index, size) if tile is None else tile
        return merkle.inclusion_from_levels(index, size, leaves, self.levels, self.edges[size])


@cache
def _mth(entries: tuple[bytes, ...]) -> bytes:
    return mth(list(entries))


def test_right_edge_gives_every_root() -> None:
    """The right edge of every size holds the root and the hash of each suffix it names."""
    log = Log(300, [])
    for size in range(1, 301):
        edge = merkle.right_edge(size, log.perfect)
        assert edge[0] == mth(log.entries[:size]), size
        for begin, h in edge.items():
            assert h == mth(log.entries[begin:size]), (size, begin)


def test_stored_inclusion_equals_reference_for_every_small_tree() -> None:
    """Every index of every size up to 140, from levels stored for a larger tree: nodes
    beyond a size must never leak into its proofs."""
    sizes = list(range(1, 141))
    log = Log(200, sizes)
    for size in sizes:
        for index in range(size):
            assert log.inclusion(index, size) == path(index, log.entries[:size]), (index, size)


def test_stored_inclusion_equals_reference_for_larger_trees() -> None:
    """Sizes around tile and level boundaries of a 5,000-leaf log give the reference's PATH."""
    sizes = [1024, 1040, 1041, 2047, 2048, 2049, 4097, 4111, 4112, 5000]
    log = Log(5000, sizes)
    pick = random.Random(5)
    for size in sizes:
        indexes = {0, size - 1, size // 2, *pick.sample(range(size), 40)}
        for index in indexes:
            assert log.inclusion(index, size) == path(index, log.entries[:size])


def test_stored_inclusion_refuses_what_does_not_fit() -> None:
    """A short tile, a leaf the log does not hold or a missing node raise StoredNodeError."""
    log = Log(100, [64, 100])
    with pytest.raises(StoredNodeError):
        log.inclusion(3, 100, log.tile(3, 100)[:-1])  # a tile short of a leaf
    wrong = log.tile(3, 100)
    wrong[7] = ref_leaf_hash(b"another ballot")  # a leaf the log does not hold
    with pytest.raises(StoredNodeError):
        log.inclusion(3, 100, wrong)
    wrong = log.tile(97, 100)
    wrong[0] = ref_leaf_hash(b"another ballot")  # the same in the partial tile
    with pytest.raises(StoredNodeError):
        log.inclusion(97, 100, wrong)
    small = Log(17, [1, 17])
    with pytest.raises(StoredNodeError):
        small.inclusion(0, 1, [ref_leaf_hash(b"another ballot")])  # a tree of one leaf
    with pytest.raises(StoredNodeError):
        small.inclusion(16, 17, [ref_leaf_hash(b"another ballot")])  # a lone last leaf
    assert small.inclusion(16, 17, small.leaves[16:17]) == path(16, small.entries[:17])
    log.levels[0] = log.levels[0][:32]  # keep node (4, 0) only
    with pytest.raises(StoredNodeError):
        log.inclusion(3, 100)  # needs (4, 1)


def test_consistency_from_tiles_and_stored_nodes() -> None:
    """A plan folded through tile_lookup (stored levels above, tiles below) is PROOF."""
    log = Log(77, [])
    tiles = {
        t: merkle.tile_nodes(log.leaves[t * TILE_WIDTH : (t + 1) * TILE_WIDTH]) for t in range(5)
    }
    lookup = merkle.tile_lookup(lambda lvl, pos: merkle.stored_node(log.levels, lvl, pos), tiles)
    for first in range(1, 78, 3):
        plan = merkle.consistency_proof_nodes(first, 77)
        assert merkle.proof_from_nodes(plan, lookup) == proof(first, log.entries)
    with pytest.raises(StoredNodeError):
        merkle.tile_lookup(lookup, {})(0, 3)  # a tile that was not read
