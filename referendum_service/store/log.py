"""Stored log rows read by more than one part: the server's read API, its proof cache, the
record export, the batcher.

The tables are made by the migrations (``blocks``, ``log_entries``, ``log_nodes``,
``log_heads``); the batcher is their only writer. All SQL that reads *where a ballot sits in
the log* is built from :data:`LOG_POSITION_SQL`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import asyncpg

from referendum_core.block import Block
from referendum_core.merkle import TILE_WIDTH

__all__ = [
    "INCLUSION_AT",
    "INCLUSION_LATEST",
    "LOGGED_BODIES",
    "LOG_POSITION_SQL",
    "NODES_BY_ID",
    "NODE_RANGE",
    "LogPositionSql",
    "block_from_row",
    "tiles_query",
]


class LogPositionSql(NamedTuple):
    """SQL templates that read where ballots sit in the log; placeholders in braces.

    Every query of the proof cache, the public API and the record export that needs a
    ballot's log index is composed from these, so the log position's storage
    (``log_entries``, migration 022) is named here only. Range bounds must stay values or
    per-row parameters, never an array or a join (``docs/log.md`` §7, "Reading stored
    tiles").
    """

    index_of_hash: str
    """Rows ``(log_index, body)`` for the ballot ``{ballot_hash}`` of referendum ``{rid}``
    (one, or none for an unknown ballot); a NULL index while it waits to be sequenced."""

    ballots_in_range: str
    """Rows ``(log_index, ballot_hash, body, credential)`` of referendum ``{rid}`` with
    ``{lo} <= log_index < {hi}``."""

    leaves_in_range: str
    """Rows ``(log_index, leaf_hash)`` of referendum ``{rid}`` with ``{lo} <= log_index <
    {hi}``: one range scan of ``log_entries``' primary key, no ballot read."""


LOG_POSITION_SQL = LogPositionSql(
    index_of_hash=(
        "SELECT e.log_index, b.body FROM ballots AS b"
        " LEFT JOIN log_entries AS e ON e.ballot_id = b.id"
        " WHERE b.referendum_id = {rid} AND b.ballot_hash = {ballot_hash}"
    ),
    ballots_in_range=(
        "SELECT e.log_index, b.ballot_hash, b.body, b.credential FROM log_entries AS e"
        " JOIN ballots AS b ON b.id = e.ballot_id"
        " WHERE e.referendum_id = {rid} AND e.log_index >= {lo} AND e.log_index < {hi}"
    ),
    leaves_in_range=(
        "SELECT log_index, leaf_hash FROM log_entries"
        " WHERE referendum_id = {rid} AND log_index >= {lo} AND log_index < {hi}"
    ),
)

# For a known referendum ($1; no rows otherwise), one row per ballot hash of the array $2,
# in array order (n from 1): its log index and body and, when that index is below the
# checkpoint's size, the leaf hashes of its tile clipped to that size, in log order; the
# first row also carries the checkpoint (the latest, or the first block of tree size $3).
# The ballot is a lateral subquery with a LIMIT and the tile an ARRAY subquery, so both run
# per hash with per-row parameters: a unique-index probe and an index range scan, whatever
# the statistics say (no join the planner could turn into a scan of the referendum). The
# tile's LIMIT (TILE_WIDTH) changes no result but keeps the estimate honest: without it a
# generic plan priced each range at the default selectivity (10,000 rows of a 2,000,000-ballot
# table), a batch crossed jit_above_cost and every execution paid ~25 ms of JIT compilation.
_INCLUSION = """
SELECT h.n, p.log_index, p.body,
       CASE WHEN p.log_index < k.tree_size THEN ARRAY(
           SELECT c.leaf_hash FROM ({tile}) AS c
           ORDER BY c.log_index LIMIT {width}
       ) END AS leaves,
       CASE WHEN h.n = 1 THEN k.tree_size END AS tree_size,
       CASE WHEN h.n = 1 THEN k.root END AS root,
       CASE WHEN h.n = 1 THEN k.checkpoint END AS checkpoint
FROM referendums AS r
LEFT JOIN LATERAL ({checkpoint}) AS k ON true
CROSS JOIN unnest($2::bytea[]) WITH ORDINALITY AS h(hash, n)
LEFT JOIN LATERAL ({index} LIMIT 1) AS p ON true
WHERE r.id = $1
ORDER BY h.n
"""
_INCLUSION_PARTS = {
    "tile": LOG_POSITION_SQL.leaves_in_range.format(
        rid="$1",
        lo=f"(p.log_index & -{TILE_WIDTH})",
        hi=f"least((p.log_index & -{TILE_WIDTH}) + {TILE_WIDTH}, k.tree_size)",
    ),
    "index": LOG_POSITION_SQL.index_of_hash.format(rid="$1", ballot_hash="h.hash"),
    "width": str(TILE_WIDTH),
}
INCLUSION_LATEST = _INCLUSION.format(
    checkpoint="SELECT tree_size, root, checkpoint FROM blocks WHERE referendum_id = $1"
    " ORDER BY height DESC LIMIT 1",
    **_INCLUSION_PARTS,
)
"""Inclusion rows against the latest checkpoint: ``(rid, ballot_hashes)``."""
INCLUSION_AT = _INCLUSION.format(
    checkpoint="SELECT tree_size, root, checkpoint FROM blocks"
    " WHERE referendum_id = $1 AND tree_size = $3 ORDER BY height LIMIT 1",
    **_INCLUSION_PARTS,
)
"""Inclusion rows against the checkpoint of a given size: ``(rid, ballot_hashes, size)``."""

NODE_RANGE = """
SELECT string_agg(hash, ''::bytea ORDER BY position) AS hashes, count(*) AS n
FROM log_nodes WHERE referendum_id = $1 AND level = $2 AND position >= $3 AND position < $4
"""
"""Stored nodes of one level, positions ``[$3, $4)``, concatenated in position order:
``(hashes, n)`` for ``(rid, level, begin, end)``."""

NODES_BY_ID = """
SELECT level::integer AS level, position, hash FROM log_nodes
WHERE referendum_id = $1
  AND (level, position) IN (SELECT * FROM unnest($2::smallint[], $3::bigint[]))
"""
"""Stored nodes by id, ``(level, position, hash)`` for ``(rid, levels, positions)``: only for
a log too large for the proof cache."""


def tiles_query(count: int) -> str:
    """Leaf hashes of ``count`` tiles of referendum $1, one range each ($2k+2, $2k+3), as
    ``(log_index, leaf_hash)``: separate range scans whose bounds are values."""
    return "\nUNION ALL\n".join(
        "SELECT c.log_index, c.leaf_hash FROM ("  # noqa: S608 (templates)
        + LOG_POSITION_SQL.leaves_in_range.format(
            rid="$1", lo=f"${2 * k + 2}::bigint", hi=f"${2 * k + 3}::bigint"
        )
        + ") AS c"
        for k in range(count)
    )


LOGGED_BODIES = (
    "SELECT p.log_index, p.body FROM ("  # noqa: S608 (a template)
    + LOG_POSITION_SQL.ballots_in_range.format(rid="$1", lo="0", hi="$2")
    + ") AS p ORDER BY p.log_index"
)
"""Rows ``(log_index, body)`` of referendum $1 below log index $2, in log order."""


def block_from_row(referendum_id: str, row: Mapping[str, Any] | asyncpg.Record) -> Block:
    """The :class:`Block` of a ``blocks`` row (any row holding its columns)."""
    return Block(
        referendum_id,
        int(row["height"]),
        int(row["first_index"]),
        int(row["end_index"]),
        int(row["tree_size"]),
        bytes(row["root"]),
        bytes(row["prev_hash"]),
        int(row["sealed_at"]),
        str(row["checkpoint"]),
    )
