"""The roll commitment's entry: the bytes committed for one voter and their Merkle leaf.

The roll sorted by voter id (UTF-8 bytes) is the leaf sequence of an RFC 9162 tree
(:mod:`referendum_core.merkle`); the server commits it at open, an auditor recomputes it from
the record's ``roll.csv``.
"""

from __future__ import annotations

from referendum_core import merkle

__all__ = ["canonical_entry", "roll_leaf_hash"]


def canonical_entry(voter_id: str, public_key: bytes) -> bytes:
    """The committed bytes of one roll entry: ``u16be(len) ‖ voter_id ‖ public_key``.

    >>> canonical_entry("v1", bytes(32)).hex()[:12]
    '000276310000'
    """
    raw = voter_id.encode()
    return len(raw).to_bytes(2, "big") + raw + public_key


def roll_leaf_hash(voter_id: str, public_key: bytes) -> bytes:
    """The Merkle leaf hash of one roll entry."""
    return merkle.leaf_hash(canonical_entry(voter_id, public_key))
