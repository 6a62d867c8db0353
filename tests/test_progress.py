"""referendum_service.store.progress on a referendum nothing has reached yet.

The load-run tests (tests/loadtest/test_distributed_run.py) read it over a real run.
"""

from __future__ import annotations

import asyncpg

from referendum_service.store.progress import (
    IngestProgress,
    MergeDelays,
    ingest_progress,
    merge_delays,
)


async def test_nothing_stored_reads_as_zero(database_url: str) -> None:
    """No ballots, no log head: zero counts, no wait, no delays."""
    conn = await asyncpg.connect(database_url)
    try:
        assert await ingest_progress(conn, "none") == IngestProgress(0, 0, 0.0)
        assert await merge_delays(conn, "none") == MergeDelays(0, None, None, None)
    finally:
        await conn.close()
