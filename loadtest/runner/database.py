"""The run's database: the server to create it on and the operator key the run uses."""

from __future__ import annotations

import secrets

import asyncpg

__all__ = ["admin_dsn", "create_operator_key"]


def admin_dsn(database_url: str | None) -> str:
    """``database_url`` when given, else ``DATABASE_URL``, else the embedded server's DSN."""
    from referendum_service.db import resolve_database_url
    from referendum_service.settings import Settings

    if database_url:
        return database_url
    return resolve_database_url(Settings.from_env())


async def create_operator_key(dsn: str) -> str:
    """A new operator API key in the database of ``dsn``; the bearer token."""
    from server.auth import create_api_key

    conn = await asyncpg.connect(dsn)
    try:
        return await create_api_key(conn, f"loadtest-{secrets.token_hex(4)}")
    finally:
        await conn.close()
