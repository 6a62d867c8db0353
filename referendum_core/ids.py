"""The grammar of identifiers every part checks: referendum ids, voter ids, ballot hashes.

One definition, used by the server (paths, ballots, the roll), the batcher and the auditor.
A referendum id is part of every Fiat–Shamir challenge and of the log's origin line, so it is
kept to lower-case letters, digits and ``-``; a voter id is what an election office uses
(a resident number, an e-mail address), kept printable and unambiguous in a CSV roll.

>>> is_referendum_id("city-2026") and not is_referendum_id("City 2026")
True
>>> is_voter_id("v-001@example.org")
True
>>> is_ballot_hash("ab" * 32) and not is_ballot_hash("AB" * 32)
True
"""

from __future__ import annotations

import re

__all__ = [
    "BALLOT_HASH_PATTERN",
    "REFERENDUM_ID_PATTERN",
    "VOTER_ID_PATTERN",
    "is_ballot_hash",
    "is_referendum_id",
    "is_voter_id",
]

REFERENDUM_ID_PATTERN = r"[a-z0-9-]{1,64}"
"""A referendum id: 1 to 64 lower-case ASCII letters, digits and ``-``."""

VOTER_ID_PATTERN = r"[A-Za-z0-9._:@-]{1,128}"
"""A voter id of the roll: 1 to 128 ASCII letters, digits and ``. _ : @ -``."""

BALLOT_HASH_PATTERN = r"[0-9a-f]{64}"
"""A ballot hash as it is written everywhere: SHA-256, 64 lower-case hex digits."""

_REFERENDUM_ID = re.compile(REFERENDUM_ID_PATTERN)
_VOTER_ID = re.compile(VOTER_ID_PATTERN)
_BALLOT_HASH = re.compile(BALLOT_HASH_PATTERN)


def is_referendum_id(text: str) -> bool:
    """Whether ``text`` is a well-formed referendum id."""
    return _REFERENDUM_ID.fullmatch(text) is not None


def is_voter_id(text: str) -> bool:
    """Whether ``text`` is a well-formed voter id."""
    return _VOTER_ID.fullmatch(text) is not None


def is_ballot_hash(text: str) -> bool:
    """Whether ``text`` is a ballot hash in its canonical (lower-case hex) spelling."""
    return _BALLOT_HASH.fullmatch(text) is not None
