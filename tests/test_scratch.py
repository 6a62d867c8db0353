"""referendum_service.scratch: throwaway databases made and dropped on the test server."""

from __future__ import annotations

import doctest

import asyncpg

from referendum_service import scratch
from referendum_service.scratch import (
    create_database,
    database_name,
    drop_database,
    scratch_database,
)


async def _exists(admin_dsn: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await conn.close()


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


def test_doctests() -> None:
    """The DSN helpers' examples hold."""
    assert doctest.testmod(scratch).failed == 0


async def test_create_migrates_and_drop_removes(pg_admin_dsn: str) -> None:
    """A created database carries the prefix and the schema; dropping it removes it."""
    dsn = await create_database(pg_admin_dsn, prefix="referendum_scratchtest")
    name = database_name(dsn)
    assert name.startswith("referendum_scratchtest_")
    assert {"referendums", "ballots", "schema_migrations"} <= await _tables(dsn)
    await drop_database(pg_admin_dsn, dsn)
    assert not await _exists(pg_admin_dsn, name)


async def test_template_copy_without_migrating(pg_admin_dsn: str, migrated_template: str) -> None:
    """``template=`` copies the template's tables; ``migrate=False`` alone leaves it empty."""
    async with scratch_database(pg_admin_dsn, migrate=False, template=migrated_template) as copied:
        assert "referendums" in await _tables(copied)
    async with scratch_database(pg_admin_dsn, migrate=False) as empty:
        assert await _tables(empty) == set()
        name = database_name(empty)
    assert not await _exists(pg_admin_dsn, name)


async def test_keep_leaves_the_database(pg_admin_dsn: str) -> None:
    """``keep=True`` leaves the database behind after the block."""
    async with scratch_database(pg_admin_dsn, keep=True) as dsn:
        pass
    try:
        assert await _exists(pg_admin_dsn, database_name(dsn))
    finally:
        await drop_database(pg_admin_dsn, dsn)
