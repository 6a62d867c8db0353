"""``referendum batcher``: run the sealing service (see :mod:`batcher.service`)."""

from __future__ import annotations

import asyncio
import signal

import click

from batcher.service import LogSigner, run_batcher
from server.db import resolve_database_url
from server.keys import load_or_create_key
from server.settings import Settings

__all__ = ["batcher"]


async def _main(settings: Settings, referendum_id: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    key = load_or_create_key(settings.log_key_file, settings.data_dir, "log")
    signer = LogSigner(key, settings.log_origin)
    dsn = resolve_database_url(settings)
    await run_batcher(dsn, settings, signer, stop, referendum_id)


@click.command()
@click.option(
    "--referendum",
    "referendum_id",
    default=None,
    help="Seal only this referendum's log (and exit once it is final).",
)
def batcher(referendum_id: str | None) -> None:
    """Sequence accepted ballots into the public log: blocks and signed checkpoints.

    One leader per referendum (a PostgreSQL advisory lock); a second batcher waits and takes
    over when the first dies. SIGTERM stops after the block being sealed is committed.
    """
    from server.observability import configure_logging

    settings = Settings.from_env()
    configure_logging(settings)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        pass
    asyncio.run(_main(settings, referendum_id))
