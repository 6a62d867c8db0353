"""Re-voting inside PostgreSQL: one voter racing through many connections and two servers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from referendum_service.store.ballots import current_ballots
from tests.helpers import running_app
from tests.ingest import count_ballots, create_referendum, ingest_settings

SUBMISSIONS = 16


async def _race(
    database_url: str, tmp_path: Path, path: str, bodies: list[dict[str, Any]]
) -> list[tuple[int, bytes]]:
    """POST every body at once, alternating between two independent server instances."""
    settings = ingest_settings(tmp_path)
    async with (
        running_app(settings, database_url) as first,
        running_app(settings, database_url) as second,
    ):
        clients = [first, second]

        async def post(i: int, body: dict[str, Any]) -> tuple[int, bytes]:
            response = await clients[i % 2].post(
                path, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
            )
            return response.status, await response.read()

        return await asyncio.gather(*(post(i, b) for i, b in enumerate(bodies)))


async def test_forbid_stores_exactly_one_ballot(database_url: str, tmp_path: Path) -> None:
    """Under forbid, 16 different ballots of one voter at once: one 201, the rest 409."""
    electorate = await create_referendum(database_url, "ref-forbid", policy="forbid")
    bodies = [electorate.ballot("v0", yes=i % 2 == 0) for i in range(SUBMISSIONS)]
    results = await _race(database_url, tmp_path, electorate.path, bodies)
    statuses = sorted(status for status, _ in results)
    assert statuses == [201] + [409] * (SUBMISSIONS - 1), statuses
    for status, raw in results:
        if status == 409:
            assert orjson.loads(raw)["type"].endswith("/already-voted")
    assert await count_ballots(database_url) == 1


async def test_identical_resubmissions_race_to_one_row(database_url: str, tmp_path: Path) -> None:
    """The same ballot sent 16 times at once: one 201, fifteen 200, all with the same receipt."""
    electorate = await create_referendum(database_url, "ref-same", policy="forbid")
    body = electorate.ballot("v2")
    results = await _race(database_url, tmp_path, electorate.path, [body] * SUBMISSIONS)
    assert sorted(s for s, _ in results) == [200] * (SUBMISSIONS - 1) + [201]
    assert len({raw for _, raw in results}) == 1
    assert await count_ballots(database_url) == 1


async def test_last_counts_keeps_every_ballot(database_url: str, tmp_path: Path) -> None:
    """Under last_counts all 16 racing ballots are stored; the highest log index counts."""
    electorate = await create_referendum(database_url, "ref-last", policy="last_counts")
    bodies = [electorate.ballot("v0", yes=i % 2 == 0) for i in range(SUBMISSIONS)]
    results = await _race(database_url, tmp_path, electorate.path, bodies)
    assert [s for s, _ in results] == [201] * SUBMISSIONS
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id, revote_key FROM ballots ORDER BY id")
        assert len(rows) == SUBMISSIONS and all(r["revote_key"] is None for r in rows)
        # the batcher's job, done here: log order = row order
        await conn.execute(
            """INSERT INTO log_entries
                   (referendum_id, log_index, ballot_id, block_height, leaf_hash)
               SELECT referendum_id, row_number() OVER (ORDER BY id) - 1, id, 1,
                      sha256('\\x00'::bytea || body) FROM ballots"""
        )
        [current] = await current_ballots(conn, "ref-last")
        newest = await conn.fetchval("SELECT ballot_hash FROM ballots ORDER BY id DESC LIMIT 1")
    finally:
        await conn.close()
    assert (bytes(current["credential"]), current["log_index"]) == (
        electorate.credentials["v0"],
        SUBMISSIONS - 1,
    )
    assert current["ballot_hash"] == newest


async def test_current_ballots_follow_log_index_not_arrival(
    database_url: str, tmp_path: Path
) -> None:
    """current_ballots picks each credential's highest log index, ignoring row order and
    unsequenced ballots."""
    electorate = await create_referendum(database_url, "ref-order", policy="last_counts")
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        for voter, count in (("v0", 3), ("v1", 2), ("v2", 1)):
            for i in range(count):
                body = electorate.ballot(voter, yes=i % 2 == 0)
                assert (await client.post(electorate.path, json=body)).status == 201
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT id, credential, ballot_hash FROM ballots ORDER BY id")
        # sequence v0 and v1 in the reverse of arrival; leave v2 unsequenced
        voter_of = {k: v for v, k in electorate.credentials.items()}
        sequenced = [r for r in rows if voter_of[bytes(r["credential"])] != "v2"][::-1]
        for index, row in enumerate(sequenced):
            await conn.execute(
                "INSERT INTO log_entries"
                " (referendum_id, log_index, ballot_id, block_height, leaf_hash)"
                " VALUES ('ref-order', $1, $2, 1, decode(repeat('00', 32), 'hex'))",
                index,
                row["id"],
            )
        current = await current_ballots(conn, "ref-order")
    finally:
        await conn.close()
    first_of = {
        v: next(r for r in rows if voter_of[bytes(r["credential"])] == v) for v in ("v0", "v1")
    }
    assert [(voter_of[bytes(r["credential"])], r["ballot_hash"]) for r in current] == [
        ("v1", first_of["v1"]["ballot_hash"]),
        ("v0", first_of["v0"]["ballot_hash"]),
    ]
    assert [r["log_index"] for r in current] == [1, 4]
