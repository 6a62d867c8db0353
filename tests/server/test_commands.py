"""The `referendum migrate` and `referendum create-api-key` commands."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
from click.testing import CliRunner

from referendum_cli import main


async def _key_rows(dsn: str) -> list[tuple[str, bytes]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT name, key_hash FROM api_keys ORDER BY id")
        return [(r["name"], bytes(r["key_hash"])) for r in rows]
    finally:
        await conn.close()


def test_migrate_then_create_api_key(empty_database_url: str) -> None:
    """`migrate` reports what it applied (nothing the second time); `create-api-key` prints a
    key once and stores only its SHA-256; a taken name fails without a second row."""
    runner = CliRunner()
    env = {"DATABASE_URL": empty_database_url}
    first = runner.invoke(main, ["migrate"], env=env)
    assert first.exit_code == 0, first.output
    assert "applied 001_schema" in first.output
    again = runner.invoke(main, ["migrate"], env=env)
    assert again.exit_code == 0 and "0 migration(s) applied" in again.output
    created = runner.invoke(main, ["create-api-key", "--name", "alice"], env=env)
    assert created.exit_code == 0, created.output
    token = created.output.strip()
    assert len(token) >= 43
    rows = asyncio.run(_key_rows(empty_database_url))
    assert rows == [("alice", hashlib.sha256(token.encode()).digest())]
    duplicate = runner.invoke(main, ["create-api-key", "--name", "alice"], env=env)
    assert duplicate.exit_code != 0 and "already exists" in duplicate.output
    assert asyncio.run(_key_rows(empty_database_url)) == rows
