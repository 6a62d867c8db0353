"""Shared fixtures: a PostgreSQL server for the session and a fresh database per test.

``DATABASE_URL`` (any database on the server; CI points it at 127.0.0.1:5432) is used when
set; otherwise an embedded throwaway server from the ``pgserver`` package is started in a
temporary folder. Each test that asks for ``database_url`` gets its own freshly migrated
database, dropped afterwards, so no test depends on state left by another. The migrations run
once per session into a template database; each test's database is a copy of it (fast).
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from referendum_service.migrate import apply_migrations


def dsn_with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A DSN with rights to create databases: DATABASE_URL or an embedded server."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    from referendum_service.db import embedded_database_url

    folder = Path(tempfile.mkdtemp(prefix="referendum-test-pg-"))
    folder.chmod(0o755)  # the embedded server runs as system user 'pgserver' under root
    yield embedded_database_url(folder)


async def _create_database(admin_dsn: str, migrate: bool, template: str | None = None) -> str:
    name = f"referendum_test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        if template is None:
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    dsn = dsn_with_database(admin_dsn, name)
    if migrate:
        await apply_migrations(dsn)
    return dsn


async def _drop_database(admin_dsn: str, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def migrated_template(pg_admin_dsn: str) -> AsyncIterator[str]:
    """The name of a database with every migration applied, copied for each test."""
    dsn = await _create_database(pg_admin_dsn, migrate=True)
    try:
        yield urlsplit(dsn).path.lstrip("/")
    finally:
        await _drop_database(pg_admin_dsn, dsn)


@pytest.fixture
async def database_url(pg_admin_dsn: str, migrated_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    dsn = await _create_database(pg_admin_dsn, migrate=False, template=migrated_template)
    try:
        yield dsn
    finally:
        await _drop_database(pg_admin_dsn, dsn)


@pytest.fixture
async def empty_database_url(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database with no migrations applied (for migration tests)."""
    dsn = await _create_database(pg_admin_dsn, migrate=False)
    try:
        yield dsn
    finally:
        await _drop_database(pg_admin_dsn, dsn)
