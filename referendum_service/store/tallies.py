"""Stored tallies: the running encrypted tally of each referendum, as the batcher folds it.

The batcher writes the ``tallies`` table (:mod:`batcher.tally`); the server's tally API and the
record export read it through :func:`load_tally`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from referendum_core.tally import split_ciphertexts, tally_hash

__all__ = ["TallyState", "load_tally"]


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
