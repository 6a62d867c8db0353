"""Migrations: applied in order, recorded once, safe to rerun and to run concurrently."""

from __future__ import annotations

import asyncio

import asyncpg

from referendum_service.migrate import apply_migrations, load_migrations
from tests.server.schema_catalog import EXPECTED, HEADER, describe_schema

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
    assert applied[0] == "001_schema"
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


async def test_migrated_schema_is_the_expected_schema(empty_database_url: str) -> None:
    """Every migration applied to an empty database gives the committed expected schema."""
    await apply_migrations(empty_database_url)
    expected = EXPECTED.read_text(encoding="utf-8")
    assert expected.startswith(HEADER), "expected_schema.txt lost its generated-file header"
    assert HEADER + await describe_schema(empty_database_url) == expected, (
        "the migrated schema differs from tests/server/expected_schema.txt: a migration was"
        " added (regenerate it: python -m tests.server.schema_catalog) or one was edited"
    )
