"""``referendum record export``: write the election record of a referendum."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import click

from referendum_service.settings import Settings

__all__ = ["record"]


def _log_key(settings: Settings) -> str:
    from referendum_core.checkpoint import verifier_key_string
    from referendum_service.keys import load_or_create_key

    key = load_or_create_key(settings.log_key_file, settings.data_dir, "log")
    return verifier_key_string(settings.log_origin, key.public_key)


async def _export(settings: Settings, referendum_id: str, out: Path) -> str:
    from referendum_service.db import resolve_database_url
    from server.record import export_record

    conn = await asyncpg.connect(resolve_database_url(settings))
    try:
        return await export_record(conn, referendum_id, out, _log_key(settings))
    finally:
        await conn.close()


@click.group()
def record() -> None:
    """The election record: static files from which anyone re-verifies the election."""


@record.command("export")
@click.option("--referendum", "referendum_id", required=True, help="Referendum id")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder to write (created; must hold no other files)",
)
def export(referendum_id: str, out: Path) -> None:
    """Export the election record of a referendum whose tally is complete (docs/record.md)."""
    from server.errors import ApiError

    try:
        digest = asyncio.run(_export(Settings.from_env(), referendum_id, out))
    except ApiError as exc:
        click.echo(f"error: {exc.detail}", err=True)
        sys.exit(1)
    click.echo(f"record written to {out}")
    click.echo(f"manifest.json SHA-256: {digest}")
