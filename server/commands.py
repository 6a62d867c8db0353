"""``referendum serve``, ``referendum migrate`` and ``referendum create-api-key``."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import click

from referendum_service.db import Duplicate, resolve_database_url
from referendum_service.migrate import apply_migrations
from referendum_service.settings import Settings
from server.auth import create_api_key as _create_api_key

__all__ = ["create_api_key", "migrate", "serve"]


@click.command()
@click.option("--host", default=None, help="Override REFERENDUM_HOST.")
@click.option("--port", type=int, default=None, help="Override REFERENDUM_PORT.")
@click.option("--workers", type=int, default=None, help="Override REFERENDUM_WORKERS.")
@click.option(
    "--migrate/--no-migrate",
    default=True,
    show_default=True,
    help="Apply pending migrations before serving.",
)
def serve(host: str | None, port: int | None, workers: int | None, migrate: bool) -> None:
    """Run the HTTP servers (operator, voter and public APIs) until SIGTERM/SIGINT."""
    from server.serving import run_servers  # imported lazily: the command group loads fast

    settings = Settings.from_env()
    changes = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v}
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    if migrate:
        asyncio.run(apply_migrations(resolve_database_url(settings)))
    run_servers(settings)


@click.command()
def migrate() -> None:
    """Apply pending database migrations (safe to run twice, or from two places at once)."""
    settings = Settings.from_env()
    applied = asyncio.run(apply_migrations(resolve_database_url(settings)))
    for name in applied:
        click.echo(f"applied {name}")
    click.echo(f"{len(applied)} migration(s) applied; the schema is up to date")


async def _new_key(dsn: str, name: str) -> str:
    await apply_migrations(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        return await _create_api_key(conn, name)
    finally:
        await conn.close()


@click.command("create-api-key")
@click.option("--name", required=True, help="Who the key is for (shown in the audit log).")
def create_api_key(name: str) -> None:
    """Create an operator API key and print it once (only its SHA-256 is stored)."""
    if not 1 <= len(name) <= 128:
        raise click.BadParameter("1 to 128 characters", param_hint="--name")
    settings = Settings.from_env()
    try:
        token = asyncio.run(_new_key(resolve_database_url(settings), name))
    except Duplicate as exc:
        raise click.ClickException(f"a key named {name!r} already exists") from exc
    click.echo(token)
