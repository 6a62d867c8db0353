"""Migrations: applied in order, recorded once, safe to rerun and to run concurrently."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

import referendum_service.migrate
from referendum_service.migrate import (
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
)
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
    assert applied == [m.label for m in shipped]
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
    shipped = [m.label for m in load_migrations()]
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


async def test_an_edited_migration_is_refused(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shipped file whose text changed after it was applied stops the run, naming it."""
    await apply_migrations(empty_database_url)
    shipped = load_migrations()
    edited = dataclasses.replace(shipped[0], sql=shipped[0].sql + "\n-- an afterthought\n")
    later = Migration(shipped[-1].version + 1, "later", "CREATE TABLE later (id integer)")
    monkeypatch.setattr(
        referendum_service.migrate, "load_migrations", lambda: [edited, *shipped[1:], later]
    )
    with pytest.raises(MigrationError, match=f"{edited.label} changed after it was applied"):
        await apply_migrations(empty_database_url)
    assert [v for v, _ in await _applied(empty_database_url)] == [m.version for m in shipped]


async def test_a_pending_migration_below_the_highest_applied_is_refused(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file numbered below one already applied is refused, not applied out of order."""
    shipped = load_migrations()
    top = shipped[-1].version
    late = Migration(top + 20, "late", "CREATE TABLE late (id integer)")
    early = Migration(top + 10, "early", "CREATE TABLE early (id integer)")
    monkeypatch.setattr(referendum_service.migrate, "load_migrations", lambda: [*shipped, late])
    await apply_migrations(empty_database_url)
    monkeypatch.setattr(
        referendum_service.migrate, "load_migrations", lambda: [*shipped, early, late]
    )
    with pytest.raises(MigrationError, match=f"{early.label} is numbered below {late.version:03d}"):
        await apply_migrations(empty_database_url)
    versions = [v for v, _ in await _applied(empty_database_url)]
    assert versions == [m.version for m in shipped] + [late.version]


async def test_the_record_table_is_created_under_the_lock(empty_database_url: str) -> None:
    """A run waits for the migration lock before creating schema_migrations."""
    holder = await asyncpg.connect(empty_database_url)
    try:
        lock = holder.transaction()
        await lock.start()
        await holder.execute(
            "SELECT pg_advisory_xact_lock($1)", referendum_service.migrate._LOCK_KEY
        )
        run = asyncio.create_task(apply_migrations(empty_database_url))
        # each query yields to the run's connection until it queues behind the held lock
        while not await holder.fetchval(
            "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        ):
            assert not run.done(), run
        assert await holder.fetchval("SELECT to_regclass('schema_migrations')") is None
        await lock.rollback()
        assert await run == [m.label for m in load_migrations()]
    finally:
        await holder.close()
