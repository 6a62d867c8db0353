"""The election record's fixed shape, shared by the exporter and ``verify-election``.

The format is described in ``docs/record.md``. This module holds only what both sides must
agree on: the files, the members of each JSON object they hold, and how a record's JSON is
read; reading and writing the files is the caller's business (the core does no I/O).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "BLOCK_MEMBERS",
    "COMMITMENT_MEMBERS",
    "DEFINITION_MEMBERS",
    "FILE_ENTRY_MEMBERS",
    "MANIFEST_MEMBERS",
    "RECORD_FILES",
    "RECORD_FORMAT",
    "RESULT_MEMBERS",
    "SHARE_MEMBERS",
    "SUPERSESSION_MEMBERS",
    "TALLY_MEMBERS",
    "TRUSTEES_MEMBERS",
    "digest_chunks",
    "member_problems",
    "parse_json",
]

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

MANIFEST_MEMBERS = ("format", "referendum_id", "files")
FILE_ENTRY_MEMBERS = ("sha256", "bytes")
"""The members of each entry of the manifest's ``files``."""
DEFINITION_MEMBERS = (
    "id",
    "question",
    "options",
    "min_selections",
    "max_selections",
    "opens_at",
    "closes_at",
    "revote_policy",
    "threshold_k",
    "trustees_n",
    "state",
    "election_public_key",
    "roll_root",
    "roll_size",
    "created_at",
)
"""The members of ``referendum.json``: the public definition the read API serves."""
BLOCK_MEMBERS = (
    "height",
    "first_index",
    "end_index",
    "tree_size",
    "root",
    "prev_hash",
    "block_hash",
    "sealed_at",
    "checkpoint",
    "final",
)
"""The members of a line of ``blocks.jsonl``: the read API's block object and ``final``."""
SUPERSESSION_MEMBERS = (
    "superseded_index",
    "superseded_hash",
    "superseding_index",
    "superseding_hash",
)
TALLY_MEMBERS = (
    "referendum_id",
    "referendum",
    "options",
    "block_height",
    "tree_size",
    "ballots_counted",
    "final",
    "ciphertexts",
    "tally_hash",
)
"""The members of ``tally.json`` (``referendum`` repeats the id: the trustee tools read it)."""
TRUSTEES_MEMBERS = ("referendum", "threshold", "trustees", "election_public_key", "commitments")
COMMITMENT_MEMBERS = ("index", "commitments", "proof")
"""The members of each trustee's entry of ``trustees.json``'s ``commitments``."""
SHARE_MEMBERS = ("referendum", "tally_hash", "trustee", "shares", "proofs")
"""The members of each decryption share of ``shares.json``."""
RESULT_MEMBERS = (
    "referendum_id",
    "options",
    "counts",
    "counts_by_option",
    "ballots_counted",
    "block_height",
    "tree_size",
    "tally_hash",
    "trustees",
)


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


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"member {key!r} appears twice in one object")
        obj[key] = value
    return obj


def parse_json(data: bytes | str) -> Any:
    """Parse one JSON text of a record; ValueError when it is not JSON or an object repeats
    a member (parsers resolve a repeat differently, so such a record has no one meaning).

    >>> parse_json(b'{"a": 1}')
    {'a': 1}
    >>> parse_json(b'{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ValueError: member 'a' appears twice in one object
    """
    return json.loads(data, object_pairs_hook=_unique_members)


def member_problems(obj: Any, members: Sequence[str]) -> list[str]:
    """What keeps ``obj`` from being a JSON object with exactly ``members``: each missing
    member, then the unknown ones; empty when it has exactly them.

    >>> member_problems({"a": 1, "c": 2}, ("a", "b"))
    ["lacks 'b'", "has unknown member 'c'"]
    >>> member_problems([], ("a",))
    ['is not a JSON object']
    """
    if not isinstance(obj, dict):
        return ["is not a JSON object"]
    missing = [f"lacks {m!r}" for m in members if m not in obj]
    extra = [f"has unknown member {m!r}" for m in sorted(set(obj) - set(members))]
    return missing + extra
