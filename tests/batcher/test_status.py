"""The operator status counts sequenced and waiting ballots without a full table count."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from batcher.service import seal_block
from server.referendums import referendum_status
from tests.batcher.logs import create_referendum, insert_ballots, make_signer


async def test_status_adds_sequenced_and_waiting_ballots(database_url: str, tmp_path: Path) -> None:
    """After sealing 5 of 8 ballots, status says 8 accepted, block 1 at tree size 5."""
    signer, _ = make_signer(tmp_path)
    conn = await asyncpg.connect(database_url)
    try:
        await create_referendum(conn, "status-1")
        await insert_ballots(conn, "status-1", 5)
        await seal_block(conn, "status-1", signer, max_ballots=100)
        await insert_ballots(conn, "status-1", 3)
        status = await referendum_status(conn, "status-1")
    finally:
        await conn.close()
    assert status["ballots_accepted"] == 8
    assert status["latest_block"] == {"height": 1, "tree_size": 5}
