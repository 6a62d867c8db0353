"""The roll commitment: computed at open, stored as chunk roots, and voters' inclusion proofs.

Commitment. The roll's credentials sorted by their bytes are the leaf sequence of an RFC 9162
Merkle tree (``referendum_core.merkle``); a leaf is the SHA-256 leaf hash of the 32-byte
credential (:func:`referendum_core.roll.roll_leaf_hash`): no voter id is committed or
published. At open the roll is walked once in order and cut into aligned chunks of 1024
leaves whose subtree hashes go into ``roll_chunks``; the root is the tree over the chunk
hashes. A credential's proof is the proof inside its chunk (1024 leaves recomputed) followed
by the chunk's proof in the tree of chunk hashes: the same path RFC 9162 gives over the whole
roll. Anyone proves a credential's membership; finding the credential of a voter id needs the
voter-id key and the operator's bearer key (:func:`voter_lookup`).

The chunk trees (the tree over one roll's chunk roots) of the last few rolls proved against are
kept by a :class:`ChunkTreeCache`, one per application (``server.state.ROLL_TREES_KEY``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from referendum_core import merkle
from referendum_core.credential import credential_to_did
from referendum_core.ids import is_voter_id
from referendum_core.roll import VoterIdHasher, roll_leaf_hash
from referendum_service.db import translated
from server.errors import NotFound

__all__ = [
    "CHUNK_LEAVES",
    "ChunkTreeCache",
    "InclusionProof",
    "commit_roll",
    "roll_digest",
    "roll_inclusion_proof",
    "voter_lookup",
]

CHUNK_LEAVES = 1024
"""Leaves per stored roll chunk (a power of two, so chunks are subtrees of the roll tree)."""


async def commit_roll(conn: Any, rid: str) -> tuple[bytes, int]:
    """Compute and store the roll commitment of ``rid``; return ``(root, size)``.

    Requires a transaction holding the referendum row lock. Walks the roll once in credential
    order, keeping one chunk of leaf hashes and the chunk hashes in memory (32 bytes per 1024
    voters).
    """
    chunk_roots: list[bytes] = []
    size = 0
    with translated():
        await conn.execute("DELETE FROM roll_chunks WHERE referendum_id = $1", rid)
        cursor = await conn.cursor(
            "SELECT credential FROM voters WHERE referendum_id = $1 ORDER BY credential",
            rid,
        )
        while True:
            records = await cursor.fetch(CHUNK_LEAVES)
            if not records:
                break
            leaves = [roll_leaf_hash(bytes(r["credential"])) for r in records]
            root = merkle.root_from_leaf_hashes(leaves)
            await conn.execute(
                """INSERT INTO roll_chunks
                       (referendum_id, chunk_index, first_credential, leaf_count, root)
                   VALUES ($1, $2, $3, $4, $5)""",
                rid,
                len(chunk_roots),
                bytes(records[0]["credential"]),
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
    """A credential's RFC 9162 inclusion proof in the roll commitment."""

    credential: bytes
    index: int
    size: int
    proof: list[bytes]
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "credential": self.credential.hex(),
            "did": credential_to_did(self.credential),
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


async def _committed_root(conn: Any, rid: str) -> tuple[bytes, int]:
    ref = await conn.fetchrow("SELECT roll_root, roll_size FROM referendums WHERE id = $1", rid)
    if ref is None:
        raise NotFound(f"no referendum {rid!r}")
    if ref["roll_root"] is None:
        raise NotFound("the roll is committed when the referendum opens", slug="no-commitment")
    return bytes(ref["roll_root"]), int(ref["roll_size"])


async def roll_inclusion_proof(
    conn: Any, rid: str, credential: bytes, trees: ChunkTreeCache
) -> InclusionProof:
    """The inclusion proof of ``credential`` in the committed roll of ``rid``, the tree over
    the chunk roots taken from ``trees``.

    Raises NotFound when the referendum is unknown, its roll not yet committed (before open),
    or the credential is not on it.
    """
    with translated():
        root, size = await _committed_root(conn, rid)
        chunk = await conn.fetchrow(
            """SELECT chunk_index, first_credential, leaf_count FROM roll_chunks
               WHERE referendum_id = $1 AND first_credential <= $2
               ORDER BY first_credential DESC LIMIT 1""",
            rid,
            credential,
        )
        if chunk is None:
            raise NotFound("no such credential on the roll", slug="no-credential")
        records = await conn.fetch(
            """SELECT credential FROM voters
               WHERE referendum_id = $1 AND credential >= $2 ORDER BY credential LIMIT $3""",
            rid,
            chunk["first_credential"],
            chunk["leaf_count"],
        )
    keys = [bytes(r["credential"]) for r in records]
    position = next((i for i, k in enumerate(keys) if k == credential), None)
    if position is None:
        raise NotFound("no such credential on the roll", slug="no-credential")
    leaves = [roll_leaf_hash(k) for k in keys]
    tree = await trees.tree(conn, rid, root)
    index = chunk["chunk_index"] * CHUNK_LEAVES + position
    proof = merkle.inclusion_proof(leaves, position) + tree.proof(chunk["chunk_index"])
    return InclusionProof(credential, index, size, proof, root)


async def voter_lookup(
    conn: Any, rid: str, voter_id: str, hasher: VoterIdHasher, trees: ChunkTreeCache
) -> dict[str, Any]:
    """The operator's view of one voter id: registered or not, its credential, whether a
    ballot signed by that credential is stored, and (once the roll is committed) the
    credential's roll proof. The voter id is hashed with ``hasher`` and looked up by hash.

    Raises NotFound when the referendum is unknown.
    """
    with translated():
        known = await conn.fetchval("SELECT 1 FROM referendums WHERE id = $1", rid)
        if known is None:
            raise NotFound(f"no referendum {rid!r}")
        row = None
        if is_voter_id(voter_id):
            row = await conn.fetchrow(
                """SELECT v.credential,
                          EXISTS (SELECT 1 FROM ballots AS b WHERE b.referendum_id = $1
                                  AND b.credential = v.credential) AS voted
                   FROM voters AS v WHERE v.referendum_id = $1 AND v.voter_hash = $2""",
                rid,
                hasher(voter_id.encode()),
            )
    if row is None:
        return {"voter_id": voter_id, "registered": False}
    credential = bytes(row["credential"])
    answer: dict[str, Any] = {
        "voter_id": voter_id,
        "registered": True,
        "credential": credential.hex(),
        "did": credential_to_did(credential),
        "voted": bool(row["voted"]),
        "roll_proof": None,
    }
    try:
        proof = await roll_inclusion_proof(conn, rid, credential, trees)
    except NotFound:
        return answer  # before open: nothing is committed yet
    answer["roll_proof"] = proof.to_json()
    return answer


def roll_digest(credentials: Sequence[bytes]) -> bytes:
    """Root over ``credentials`` sorted by their bytes: the commitment recomputed in memory
    (tests)."""
    return merkle.root_from_leaf_hashes([roll_leaf_hash(k) for k in sorted(credentials)])
