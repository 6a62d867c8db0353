"""Stored tallies: the running encrypted tally of each referendum, as the batcher folds it.

The batcher writes the ``tallies`` table (:mod:`batcher.tally`); the server's tally API, the
lifecycle's tally step (:func:`server.referendums.transition`) and the record export read it
through :func:`load_tally`. The rest of a tally's record is written by the
server (:mod:`server.decryption`) and read by the record export too: the supersessions the
batcher found, the trustees' public commitments, their decryption shares and the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from referendum_core.tally import split_ciphertexts, tally_hash
from referendum_service.db import translated

__all__ = [
    "Supersession",
    "TallyState",
    "insert_result",
    "insert_share",
    "load_result",
    "load_shares",
    "load_tally",
    "load_trustees",
    "save_trustees",
    "supersessions",
]


@dataclass(frozen=True)
class TallyState:
    """The stored running tally of a referendum (one ciphertext per option)."""

    referendum_id: str
    folded_height: int
    folded_size: int
    ballots_counted: int
    ciphertexts: tuple[bytes, ...]
    final: bool
    """Whether the folded block is the log's final block: the tally is complete."""

    def tally_hash(self) -> bytes:
        """:func:`tally_hash` of this tally."""
        return tally_hash(self.referendum_id, self.ciphertexts)

    def to_json(self, options: Sequence[str]) -> dict[str, Any]:
        """The public encrypted tally document (what trustees decrypt)."""
        return {
            "referendum_id": self.referendum_id,
            "referendum": self.referendum_id,  # the key `referendum trustee decrypt` reads
            "options": list(options),
            "block_height": self.folded_height,
            "tree_size": self.folded_size,
            "ballots_counted": self.ballots_counted,
            "final": self.final,
            "ciphertexts": [ct.hex() for ct in self.ciphertexts],
            "tally_hash": self.tally_hash().hex(),
        }


async def load_tally(conn: Any, referendum_id: str) -> TallyState | None:
    """The stored tally of a referendum, or ``None`` before its first fold."""
    with translated():
        row = await conn.fetchrow(
            "SELECT t.*, coalesce(b.final, false) AS final FROM tallies AS t"
            " LEFT JOIN blocks AS b ON b.referendum_id = t.referendum_id"
            " AND b.height = t.folded_height WHERE t.referendum_id = $1",
            referendum_id,
        )
    if row is None:
        return None
    return TallyState(
        referendum_id,
        int(row["folded_height"]),
        int(row["folded_size"]),
        int(row["ballots_counted"]),
        split_ciphertexts(bytes(row["ciphertexts"])),
        bool(row["final"]),
    )


@dataclass(frozen=True)
class Supersession:
    """A ballot (by log index and hash) replaced by a later ballot of the same credential."""

    superseded_index: int
    superseded_hash: bytes
    superseding_index: int
    superseding_hash: bytes
    block_height: int

    def to_json(self) -> dict[str, Any]:
        """The public form: hashes in hex."""
        return {
            "superseded_index": self.superseded_index,
            "superseded_hash": self.superseded_hash.hex(),
            "superseding_index": self.superseding_index,
            "superseding_hash": self.superseding_hash.hex(),
            "block_height": self.block_height,
        }


async def supersessions(
    conn: Any, referendum_id: str, after: int, limit: int
) -> list[Supersession]:
    """At most ``limit`` supersessions with a superseded index above ``after``, in its order."""
    with translated():
        rows = await conn.fetch(
            "SELECT * FROM supersessions WHERE referendum_id = $1 AND superseded_index > $2"
            " ORDER BY superseded_index LIMIT $3",
            referendum_id,
            after,
            limit,
        )
    return [
        Supersession(
            int(r["superseded_index"]),
            bytes(r["superseded_hash"]),
            int(r["superseding_index"]),
            bytes(r["superseding_hash"]),
            int(r["block_height"]),
        )
        for r in rows
    ]


async def load_trustees(conn: Any, referendum_id: str) -> Any:
    """The stored trustees document (``None`` when none was stored)."""
    with translated():
        raw = await conn.fetchval(
            "SELECT document FROM trustee_commitments WHERE referendum_id = $1", referendum_id
        )
    return None if raw is None else orjson.loads(raw)


async def save_trustees(conn: Any, referendum_id: str, document: dict[str, Any]) -> None:
    """Store (or replace) the trustees document of a referendum."""
    with translated():
        await conn.execute(
            "INSERT INTO trustee_commitments (referendum_id, document) VALUES ($1, $2)"
            " ON CONFLICT (referendum_id) DO UPDATE SET document = EXCLUDED.document,"
            " created_at = now()",
            referendum_id,
            orjson.dumps(document).decode(),
        )


async def load_shares(conn: Any, referendum_id: str) -> list[Any]:
    """Every accepted decryption share, by trustee index."""
    with translated():
        rows = await conn.fetch(
            "SELECT share FROM decryption_shares WHERE referendum_id = $1 ORDER BY trustee_index",
            referendum_id,
        )
    return [orjson.loads(r["share"]) for r in rows]


async def insert_share(
    conn: Any, referendum_id: str, trustee: int, tally_hash: bytes, share: dict[str, Any]
) -> bool:
    """Store a trustee's share; ``False`` (nothing stored) when that trustee sent one before."""
    with translated():
        inserted = await conn.fetchval(
            "INSERT INTO decryption_shares (referendum_id, trustee_index, tally_hash, share)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING trustee_index",
            referendum_id,
            trustee,
            tally_hash,
            orjson.dumps(share).decode(),
        )
    return inserted is not None


async def load_result(conn: Any, referendum_id: str) -> Any:
    """The published result document (``None`` before publication)."""
    with translated():
        raw = await conn.fetchval(
            "SELECT document FROM results WHERE referendum_id = $1", referendum_id
        )
    return None if raw is None else orjson.loads(raw)


async def insert_result(
    conn: Any, referendum_id: str, counts: list[int], result: dict[str, Any]
) -> None:
    """Store the result of a referendum (once: a second raises Duplicate)."""
    with translated():
        await conn.execute(
            "INSERT INTO results (referendum_id, counts, document) VALUES ($1, $2, $3)",
            referendum_id,
            orjson.dumps(counts).decode(),
            orjson.dumps(result),
        )
