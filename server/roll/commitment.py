"""The roll commitment: computed at open, stored as chunk roots, and voters' inclusion proofs.

Commitment. The roll sorted by voter id (bytes) is the leaf sequence of an RFC 9162 Merkle
tree (``referendum_core.merkle``); a voter's leaf is the SHA-256 leaf hash of the canonical
entry ``u16 big-endian length of voter_id (UTF-8) ‖ voter_id ‖ 32-byte public key``. At open
the roll is walked once in order and cut into aligned chunks of 1024 leaves whose subtree
hashes go into ``roll_chunks``; the root is the tree over the chunk hashes. A voter's proof is
the proof inside their chunk (1024 leaves recomputed) followed by the chunk's proof in the
tree of chunk hashes: the same path RFC 9162 gives over the whole roll.

The chunk trees (the tree over one roll's chunk roots) of the last few rolls proved against are
kept by a :class:`ChunkTreeCache`, one per application (``server.state.ROLL_TREES_KEY``).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from referendum_core import merkle
from referendum_core.ids import VOTER_ID_PATTERN
from referendum_core.roll import roll_leaf_hash
from referendum_service.db import translated
from server.errors import NotFound

__all__ = [
    "CHUNK_LEAVES",
    "ChunkTreeCache",
    "InclusionProof",
    "commit_roll",
    "roll_digest",
    "roll_inclusion_proof",
]

CHUNK_LEAVES = 1024
"""Leaves per stored roll chunk (a power of two, so chunks are subtrees of the roll tree)."""

_VOTER_ID_TEXT = re.compile(VOTER_ID_PATTERN)


async def commit_roll(conn: Any, rid: str) -> tuple[bytes, int]:
    """Compute and store the roll commitment of ``rid``; return ``(root, size)``.

    Requires a transaction holding the referendum row lock. Walks the roll once in voter-id
    order, keeping one chunk of leaf hashes and the chunk hashes in memory (32 bytes per 1024
    voters).
    """
    chunk_roots: list[bytes] = []
    size = 0
    with translated():
        await conn.execute("DELETE FROM roll_chunks WHERE referendum_id = $1", rid)
        cursor = await conn.cursor(
            "SELECT voter_id, public_key FROM voters WHERE referendum_id = $1 ORDER BY voter_id",
            rid,
        )
        while True:
            records = await cursor.fetch(CHUNK_LEAVES)
            if not records:
                break
            leaves = [roll_leaf_hash(r["voter_id"], bytes(r["public_key"])) for r in records]
            root = merkle.root_from_leaf_hashes(leaves)
            await conn.execute(
                """INSERT INTO roll_chunks
                       (referendum_id, chunk_index, first_voter_id, leaf_count, root)
                   VALUES ($1, $2, $3, $4, $5)""",
                rid,
                len(chunk_roots),
                records[0]["voter_id"],
                len(records),
                root,
            )
            chunk_roots.append(root)
            size += len(records)
            if len(records) < CHUNK_LEAVES:
                break
    return merkle.root_from_leaf_hashes(chunk_roots), size


@dataclass(frozen=True)
class InclusionProof:
    """A voter's entry and its RFC 9162 inclusion proof in the roll commitment."""

    voter_id: str
    public_key: bytes
    index: int
    size: int
    proof: list[bytes]
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "voter_id": self.voter_id,
            "public_key": self.public_key.hex(),
            "index": self.index,
            "size": self.size,
            "proof": [h.hex() for h in self.proof],
            "root": self.root.hex(),
        }


class _ChunkTree:
    """The tree over one roll's chunk hashes, with memoised subtree hashes."""

    def __init__(self, roots: list[bytes]) -> None:
        self.roots = roots
        self._memo: dict[tuple[int, int], bytes] = {}

    def proof(self, index: int) -> list[bytes]:
        out = []
        for begin, end in merkle.inclusion_proof_ranges(index, len(self.roots)):
            value = self._memo.get((begin, end))
            if value is None:
                value = merkle.root_from_leaf_hashes(self.roots[begin:end])
                self._memo[(begin, end)] = value
            out.append(value)
        return out


class ChunkTreeCache:
    """The chunk trees of the ``kept`` rolls proved against last, for one application.

    A committed roll never changes, so ``(referendum id, root)`` names its tree for good.
    """

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._trees: OrderedDict[tuple[str, bytes], _ChunkTree] = OrderedDict()

    async def tree(self, conn: Any, rid: str, root: bytes) -> _ChunkTree:
        """The chunk tree of the roll of ``rid`` committed to ``root``, read once and kept."""
        key = (rid, root)
        tree = self._trees.get(key)
        if tree is None:
            with translated():
                rows = await conn.fetch(
                    "SELECT root FROM roll_chunks WHERE referendum_id = $1 ORDER BY chunk_index",
                    rid,
                )
            tree = _ChunkTree([bytes(r["root"]) for r in rows])
            self._trees[key] = tree
            while len(self._trees) > self.kept:
                self._trees.popitem(last=False)
        self._trees.move_to_end(key)
        return tree


"""The application's :class:`ChunkTreeCache` (sized by ``Settings.roll_trees_kept``)."""


async def roll_inclusion_proof(
    conn: Any, rid: str, voter_id: str, trees: ChunkTreeCache
) -> InclusionProof:
    """The inclusion proof of ``voter_id`` in the committed roll of ``rid``, the tree over the
    chunk roots taken from ``trees``.

    Raises NotFound when the referendum is unknown, its roll not yet committed (before open),
    or the voter is not on it.
    """
    with translated():
        ref = await conn.fetchrow("SELECT roll_root, roll_size FROM referendums WHERE id = $1", rid)
        if ref is None:
            raise NotFound(f"no referendum {rid!r}")
        if ref["roll_root"] is None:
            raise NotFound("the roll is committed when the referendum opens", slug="no-commitment")
        if _VOTER_ID_TEXT.fullmatch(voter_id) is None:
            raise NotFound("no such voter on the roll", slug="no-voter")
        chunk = await conn.fetchrow(
            """SELECT chunk_index, first_voter_id, leaf_count FROM roll_chunks
               WHERE referendum_id = $1 AND first_voter_id <= $2
               ORDER BY first_voter_id DESC LIMIT 1""",
            rid,
            voter_id,
        )
        if chunk is None:
            raise NotFound("no such voter on the roll", slug="no-voter")
        records = await conn.fetch(
            """SELECT voter_id, public_key FROM voters
               WHERE referendum_id = $1 AND voter_id >= $2 ORDER BY voter_id LIMIT $3""",
            rid,
            chunk["first_voter_id"],
            chunk["leaf_count"],
        )
    position = next((i for i, r in enumerate(records) if r["voter_id"] == voter_id), None)
    if position is None:
        raise NotFound("no such voter on the roll", slug="no-voter")
    leaves = [roll_leaf_hash(r["voter_id"], bytes(r["public_key"])) for r in records]
    root = bytes(ref["roll_root"])
    tree = await trees.tree(conn, rid, root)
    index = chunk["chunk_index"] * CHUNK_LEAVES + position
    proof = merkle.inclusion_proof(leaves, position) + tree.proof(chunk["chunk_index"])
    return InclusionProof(
        voter_id,
        bytes(records[position]["public_key"]),
        index,
        int(ref["roll_size"]),
        proof,
        root,
    )


def roll_digest(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """Root over ``entries`` sorted by voter id: the commitment recomputed in memory (tests)."""
    ordered = sorted(entries, key=lambda e: e[0].encode())
    return merkle.root_from_leaf_hashes([roll_leaf_hash(v, k) for v, k in ordered])
