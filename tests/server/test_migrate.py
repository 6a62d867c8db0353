"""Migrations: applied in order, recorded once, safe to rerun and to run concurrently."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
import pytest

from referendum_core.merkle import leaf_hash
from referendum_service.migrate import apply_migrations, load_migrations

FOUNDATION_TABLES = {"referendums", "voters", "roll_chunks", "api_keys", "audit_log"}


async def _applied(dsn: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()


async def test_migrations_create_the_foundation(empty_database_url: str) -> None:
    """A fresh database gets every migration, in order, including the foundation tables."""
    applied = await apply_migrations(empty_database_url)
    shipped = load_migrations()
    assert applied == [f"{m.version:03d}_{m.name}" for m in shipped]
    assert applied[0] == "001_foundation"
    conn = await asyncpg.connect(empty_database_url)
    try:
        tables = {
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
    finally:
        await conn.close()
    assert tables >= FOUNDATION_TABLES | {"ballots", "schema_migrations"}


async def test_running_twice_is_safe(empty_database_url: str) -> None:
    """A second run applies nothing and leaves the record as it was."""
    await apply_migrations(empty_database_url)
    first = await _applied(empty_database_url)
    assert await apply_migrations(empty_database_url) == []
    assert await _applied(empty_database_url) == first


async def test_concurrent_runs_apply_each_migration_once(empty_database_url: str) -> None:
    """Two runs at once both succeed and, between them, apply each migration exactly once."""
    one, two = await asyncio.gather(
        apply_migrations(empty_database_url), apply_migrations(empty_database_url)
    )
    shipped = [f"{m.version:03d}_{m.name}" for m in load_migrations()]
    assert sorted(one + two) == sorted(shipped)
    assert [v for v, _ in await _applied(empty_database_url)] == [
        m.version for m in load_migrations()
    ]


async def test_log_entries_migration_moves_an_existing_log(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """022 moves sequenced ballots to log_entries and queues the rest with their leaf hashes."""
    import referendum_service.migrate

    shipped = load_migrations()
    monkeypatch.setattr(
        referendum_service.migrate,
        "load_migrations",
        lambda: [m for m in shipped if m.version < 22],
    )
    await apply_migrations(empty_database_url)
    bodies = [bytes([n]) * 40 for n in range(4)]
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute(
            "INSERT INTO referendums (id, question, options, min_selections, max_selections,"
            " opens_at, closes_at, revote_policy, threshold_k, trustees_n, state)"
            " VALUES ('r-old', 'Q?', '[\"yes\", \"no\"]', 1, 1, now(),"
            " now() + interval '1 day', 'last_counts', 1, 1, 'open')"
        )
        ids = [
            await conn.fetchval(
                "INSERT INTO ballots (referendum_id, voter_id, ballot_hash, body, receipt,"
                " log_index, block_height) VALUES ('r-old', $1, $2, $3, '{}', $4, $5)"
                " RETURNING id",
                f"v{n}",
                hashlib.sha256(body).digest(),
                body,
                index,
                height,
            )
            for n, (body, index, height) in enumerate(
                zip(bodies, (1, 0, None, None), (1, 1, None, None), strict=True)
            )
        ]
        monkeypatch.undo()
        assert await apply_migrations(empty_database_url) == [
            f"{m.version:03d}_{m.name}" for m in shipped if m.version >= 22
        ]
        entries = await conn.fetch(
            "SELECT referendum_id, log_index, ballot_id, block_height, leaf_hash FROM log_entries"
            " ORDER BY log_index"
        )
        queued = await conn.fetch(
            "SELECT referendum_id, ballot_id, leaf_hash FROM log_pending ORDER BY ballot_id"
        )
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'ballots'"
        )
        old_function = await conn.fetchval("SELECT to_regproc('log_inclusion_rows')")
    finally:
        await conn.close()
    assert [tuple(e) for e in entries] == [
        ("r-old", 0, ids[1], 1, leaf_hash(bodies[1])),
        ("r-old", 1, ids[0], 1, leaf_hash(bodies[0])),
    ]
    assert [tuple(q) for q in queued] == [("r-old", ids[n], leaf_hash(bodies[n])) for n in (2, 3)]
    assert {"log_index", "block_height"}.isdisjoint(c["column_name"] for c in columns)
    assert old_function is None  # proofs come from server.log_proofs now
