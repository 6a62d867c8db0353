"""Stored ballots as the tally reads them: the ballot that counts for each voter."""

from __future__ import annotations

from typing import Any

import asyncpg

from referendum_service.db import translated

__all__ = ["current_ballots"]


async def current_ballots(conn: Any, referendum_id: str) -> list[asyncpg.Record]:
    """The ballot that counts for each voter: the one with the highest log index.

    Only sequenced ballots (those with a ``log_entries`` row) are considered: the log order,
    not arrival time at one of several servers, decides which ballot is newest. Under
    ``forbid`` each voter has one ballot, so this returns all of them. Rows carry
    ``voter_id``, ``ballot_hash``, ``body``, ``log_index`` and ``block_height``, ordered by
    ``log_index``.
    """
    with translated():
        rows: list[asyncpg.Record] = await conn.fetch(
            """SELECT voter_id, ballot_hash, body, log_index, block_height FROM (
                   SELECT DISTINCT ON (b.voter_id) b.voter_id, b.ballot_hash, b.body,
                          e.log_index, e.block_height
                   FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id
                   WHERE e.referendum_id = $1
                   ORDER BY b.voter_id, e.log_index DESC
               ) AS latest
               ORDER BY log_index""",
            referendum_id,
        )
    return rows
