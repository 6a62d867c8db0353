"""The roll commitment's entry encoding and leaf."""

from __future__ import annotations

from referendum_core import merkle
from referendum_core.roll import canonical_entry, roll_leaf_hash


def test_roll_leaf_is_the_length_prefixed_entry_hashed_as_a_leaf() -> None:
    """The leaf hashes ``u16be(len) ‖ id ‖ key``, not the bare id and key."""
    key = bytes(range(32))
    assert roll_leaf_hash("voter-1", key) == merkle.leaf_hash(b"\x00\x07voter-1" + key)
    assert roll_leaf_hash("voter-1", key) == merkle.leaf_hash(canonical_entry("voter-1", key))
    assert roll_leaf_hash("voter-1", key) != merkle.leaf_hash(b"voter-1" + key)
