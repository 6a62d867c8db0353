"""Throwaway databases: create a fresh, migrated database on a server and drop it afterwards.

The tests, the benchmarks and the load test each need a database nobody else uses. They all
make it here: ``CREATE DATABASE`` with a random name on the server of an admin DSN (one whose
role may create databases), the migrations applied, ``DROP DATABASE … WITH (FORCE)`` at the end.

Migrating takes a while per database; a caller that needs many (the test suite: one per test)
migrates one template once and copies it with ``template=``, which PostgreSQL does by copying
files.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from referendum_service.migrate import apply_migrations

__all__ = [
    "create_database",
    "database_name",
    "drop_database",
    "scratch_database",
    "with_database",
]


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database.

    >>> with_database("postgresql://u@h:5432/postgres?sslmode=off", "other")
    'postgresql://u@h:5432/other?sslmode=off'
    """
    return urlunsplit(urlsplit(dsn)._replace(path="/" + database))


def database_name(dsn: str) -> str:
    """The database a DSN points at.

    >>> database_name("postgresql://u@h:5432/referendum_test_ab12")
    'referendum_test_ab12'
    """
    return urlsplit(dsn).path.lstrip("/")


async def create_database(
    admin_dsn: str,
    *,
    prefix: str = "referendum_scratch",
    migrate: bool = True,
    template: str | None = None,
) -> str:
    """Create ``PREFIX_<random>`` on the server of ``admin_dsn`` and return its DSN.

    Args:
        admin_dsn: Any database on the server, as a role that may create databases.
        prefix: The start of the new name (it says who made it, when one is left behind).
        migrate: Apply every migration to the new database.
        template: Copy this database (e.g. one already migrated) instead of the empty default.
    """
    name = f"{prefix}_{secrets.token_hex(8)}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        if template is None:
            await conn.execute(f'CREATE DATABASE "{name}"')
        else:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    dsn = with_database(admin_dsn, name)
    if migrate:
        try:
            await apply_migrations(dsn)
        except BaseException:
            await drop_database(admin_dsn, dsn)
            raise
    return dsn


async def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop the database ``dsn`` points at, disconnecting whoever is still on it."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database_name(dsn)}" WITH (FORCE)')
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def scratch_database(
    admin_dsn: str,
    *,
    prefix: str = "referendum_scratch",
    migrate: bool = True,
    template: str | None = None,
    keep: bool = False,
) -> AsyncIterator[str]:
    """:func:`create_database` for the ``async with`` block, dropped after it unless ``keep``."""
    dsn = await create_database(admin_dsn, prefix=prefix, migrate=migrate, template=template)
    try:
        yield dsn
    finally:
        if not keep:
            await drop_database(admin_dsn, dsn)
