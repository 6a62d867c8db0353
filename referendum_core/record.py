"""The election record's fixed shape, shared by the exporter and ``verify-election``.

The format is described in ``docs/record.md``. This module holds only what both sides must
agree on; reading and writing the files is the caller's business (the core does no I/O).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["RECORD_FILES", "RECORD_FORMAT", "digest_chunks"]

RECORD_FORMAT = "referendum-election-record/1"
RECORD_FILES = (
    "referendum.json",
    "roll.csv",
    "ballots.bin",
    "blocks.jsonl",
    "log_key.txt",
    "supersessions.jsonl",
    "tally.json",
    "trustees.json",
    "shares.json",
    "result.json",
)
"""Files every record holds besides ``manifest.json``."""


def digest_chunks(chunks: Iterable[bytes]) -> tuple[str, int]:
    """SHA-256 (hex) and byte count of a file given as its chunks, as the manifest lists them.

    >>> digest_chunks([b"ab", b"c"]) == (hashlib.sha256(b"abc").hexdigest(), 3)
    True
    """
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size
