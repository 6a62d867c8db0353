"""Test helpers: an in-process application server and operator credentials."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from referendum_service.settings import Settings
from server.app import make_app
from server.auth import create_api_key

__all__ = ["VOTER_ID_KEY", "create_operator_key", "operator_headers", "running_app"]

VOTER_ID_KEY = "5a" * 32
"""The voter-id key of the tests' servers (``Settings.voter_id_key``) and rolls."""


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings | None = None, database_url: str | None = None
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """An aiohttp test client talking to ``make_app(settings)`` on the given database."""
    settings = settings or Settings(database_url=database_url)
    app = make_app(settings, database_url=database_url)
    server = TestServer(app)
    client: TestClient[web.Request, web.Application] = TestClient(server)
    async with client:
        yield client


async def create_operator_key(database_url: str, name: str = "test-operator") -> str:
    """Create an operator API key in the database and return its token."""
    conn = await asyncpg.connect(database_url)
    try:
        return await create_api_key(conn, name)
    finally:
        await conn.close()


async def operator_headers(database_url: str, name: str = "test-operator") -> dict[str, str]:
    """Authorization headers carrying a freshly created operator key."""
    token = await create_operator_key(database_url, name)
    return {"Authorization": f"Bearer {token}"}


SNAPSHOT_TABLES = ("referendums", "voters", "roll_chunks", "audit_log", "api_keys")


async def database_snapshot(database_url: str) -> dict[str, object]:
    """Row counts of the foundation tables and every referendum's state, for before/after."""
    conn = await asyncpg.connect(database_url)
    try:
        snapshot: dict[str, object] = {}
        for table in SNAPSHOT_TABLES:
            snapshot[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
        rows = await conn.fetch(
            """SELECT id, state, roll_size, roll_root, election_public_key
               FROM referendums ORDER BY id"""
        )
        snapshot["referendum_rows"] = [tuple(r) for r in rows]
        return snapshot
    finally:
        await conn.close()
