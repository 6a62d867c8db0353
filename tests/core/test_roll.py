"""The roll: the committed entry (a credential), its leaf, and the keyed hash of voter ids."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from referendum_core import merkle
from referendum_core.roll import VoterIdHasher, canonical_entry, roll_leaf_hash, voter_id_key_id


def test_roll_leaf_is_the_bare_credential_hashed_as_a_leaf() -> None:
    """The leaf is SHA-256(0x00 ‖ 32-byte key): no voter id, no length prefix."""
    key = bytes(range(32))
    assert canonical_entry(key) == key
    assert roll_leaf_hash(key) == hashlib.sha256(b"\x00" + key).digest()
    assert roll_leaf_hash(key) == merkle.leaf_hash(key)
    assert roll_leaf_hash(key) != hashlib.sha256(key).digest()
    for bad in (b"", bytes(31), bytes(33)):
        with pytest.raises(ValueError):
            roll_leaf_hash(bad)


def test_voter_id_hash_is_hmac_over_tag_referendum_and_id() -> None:
    """HMAC-SHA-256(key, tag ‖ 0 ‖ rid ‖ 0 ‖ id), computed here from the formula; it depends on
    the key, the referendum and the id, and a wrong-length key is refused."""
    key = bytes(range(32))
    hasher = VoterIdHasher(key, "ref-2026")
    want = hmac.new(key, b"referendum/v1/voter-id\x00ref-2026\x00alice@example.org", "sha256")
    assert hasher(b"alice@example.org") == want.digest()
    assert hasher(b"alice@example.org") == hasher(b"alice@example.org")
    assert hasher(b"alice@example.org") != hasher(b"alice@example.orh")
    assert VoterIdHasher(key, "ref-2027")(b"alice@example.org") != hasher(b"alice@example.org")
    assert VoterIdHasher(bytes(32), "ref-2026")(b"alice@example.org") != hasher(
        b"alice@example.org"
    )
    for bad in (bytes(16), bytes(33)):
        with pytest.raises(ValueError):
            VoterIdHasher(bad, "ref-2026")


def test_voter_id_key_id_names_a_key_without_revealing_it() -> None:
    """The key id is 16 hex digits of an HMAC under the key, different for different keys."""
    a, b = voter_id_key_id(bytes(32)), voter_id_key_id(bytes(range(32)))
    assert len(a) == 16 and int(a, 16) >= 0 and a != b
    assert a == hmac.new(bytes(32), b"referendum/v1/voter-id-key-id", "sha256").hexdigest()[:16]
