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
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from referendum_service.scratch import create_database, database_name, drop_database

PREFIX = "referendum_test"


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


@pytest.fixture(scope="session")
async def migrated_template(pg_admin_dsn: str) -> AsyncIterator[str]:
    """The name of a database with every migration applied, copied for each test."""
    dsn = await create_database(pg_admin_dsn, prefix=PREFIX)
    try:
        yield database_name(dsn)
    finally:
        await drop_database(pg_admin_dsn, dsn)


@pytest.fixture
async def database_url(pg_admin_dsn: str, migrated_template: str) -> AsyncIterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    dsn = await create_database(
        pg_admin_dsn, prefix=PREFIX, migrate=False, template=migrated_template
    )
    try:
        yield dsn
    finally:
        await drop_database(pg_admin_dsn, dsn)


@pytest.fixture
async def empty_database_url(pg_admin_dsn: str) -> AsyncIterator[str]:
    """A fresh database with no migrations applied (for migration tests)."""
    dsn = await create_database(pg_admin_dsn, prefix=PREFIX, migrate=False)
    try:
        yield dsn
    finally:
        await drop_database(pg_admin_dsn, dsn)
