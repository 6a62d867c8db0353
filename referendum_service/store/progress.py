"""How far a referendum's ballots have got: stored, sequenced into the log, and how fast.

The load test samples these once a second while it runs (:mod:`loadtest.runner`) and reads
the merge delays once at the end; nothing on the voting path calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["IngestProgress", "MergeDelays", "ingest_progress", "log_final", "merge_delays"]


@dataclass(frozen=True)
class IngestProgress:
    """Ballots of one referendum: stored, in the log, and the wait of the oldest not yet."""

    ballots: int
    sequenced: int
    """The log's tree size (sealed ballots)."""
    oldest_unsequenced_s: float
    """Seconds since the oldest ballot still waiting for a block was accepted (0: none)."""


@dataclass(frozen=True)
class MergeDelays:
    """Per sequenced ballot, its block's ``sealed_at`` minus its ``accepted_at``, in seconds."""

    count: int
    p50: float | None
    p99: float | None
    max: float | None
    """None while no ballot is sequenced."""


async def ingest_progress(conn: Any, referendum_id: str) -> IngestProgress:
    """Counts for ``referendum_id`` now (three quick queries, not one snapshot)."""
    ballots = await conn.fetchval(
        "SELECT count(*) FROM ballots WHERE referendum_id = $1", referendum_id
    )
    sequenced = await conn.fetchval(
        "SELECT tree_size FROM log_heads WHERE referendum_id = $1", referendum_id
    )
    oldest = await conn.fetchval(
        """SELECT extract(epoch FROM clock_timestamp() - b.accepted_at)::float8
           FROM ballots AS b
           WHERE b.id = (SELECT min(ballot_id) FROM log_pending
                         WHERE referendum_id = $1)""",
        referendum_id,
    )
    return IngestProgress(
        ballots=int(ballots),
        sequenced=int(sequenced or 0),
        oldest_unsequenced_s=float(oldest) if oldest is not None else 0.0,
    )


async def log_final(conn: Any, referendum_id: str) -> bool:
    """Whether the log's final block (sealed after closing) is in."""
    return bool(
        await conn.fetchval("SELECT final FROM log_heads WHERE referendum_id = $1", referendum_id)
    )


def _seconds(value: Any) -> float | None:
    return float(value) if value is not None else None


async def merge_delays(conn: Any, referendum_id: str) -> MergeDelays:
    """p50, p99 and the largest accepted-to-sealed delay over every sequenced ballot."""
    row = await conn.fetchrow(
        """SELECT count(*) AS n,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99,
                  max(d) AS max
           FROM (SELECT k.sealed_at / 1000.0 - extract(epoch FROM b.accepted_at) AS d
                 FROM log_entries e JOIN ballots b ON b.id = e.ballot_id
                 JOIN blocks k
                   ON k.referendum_id = e.referendum_id AND k.height = e.block_height
                 WHERE e.referendum_id = $1) AS delays""",
        referendum_id,
    )
    assert row is not None  # an aggregate always returns one row
    return MergeDelays(
        count=int(row["n"]),
        p50=_seconds(row["p50"]),
        p99=_seconds(row["p99"]),
        max=_seconds(row["max"]),
    )
