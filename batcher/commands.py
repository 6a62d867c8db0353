"""``referendum batcher``: run the sealing service (see :mod:`batcher.service`)."""

from __future__ import annotations

import asyncio
import dataclasses
import signal

import click

from batcher.service import LogSigner, run_batcher
from batcher.tally import fold_new_blocks, run_tally_follower
from batcher.witnessing import CheckpointPublisher
from referendum_service.db import create_pool, resolve_database_url
from referendum_service.keys import load_or_create_key
from referendum_service.logs import configure_logging
from referendum_service.settings import Settings

__all__ = ["batcher", "tally_follow"]


async def _main(settings: Settings, referendum_id: str | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    key = load_or_create_key(settings.log_key_file, settings.data_dir, "log")
    signer = LogSigner(key, settings.log_origin)
    dsn = resolve_database_url(settings)
    # The encrypted tally follows the log block by block in this process, so it is ready
    # seconds after close; its own small pool keeps it off the sealing connection.
    pool = await create_pool(dsn, dataclasses.replace(settings, db_pool_min=1, db_pool_max=4))
    follower_stop = asyncio.Event()
    follower = asyncio.create_task(
        run_tally_follower(pool, follower_stop, poll_s=settings.tally_poll_ms / 1000)
    )
    publisher = CheckpointPublisher(pool, settings.witness_timeout_ms / 1000)
    try:
        async with publisher:
            await run_batcher(dsn, settings, signer, stop, referendum_id, publisher)
            if not stop.is_set():
                # the log is final: give the witnesses a moment to cosign its last checkpoint
                await publisher.drain(3 * settings.witness_timeout_ms / 1000)
        if referendum_id is not None and not stop.is_set():
            # the log is final: fold its last blocks before exiting
            async with pool.acquire() as conn:
                await fold_new_blocks(conn, referendum_id)
    finally:
        follower_stop.set()
        await follower
        await pool.close()


@click.command()
@click.option(
    "--referendum",
    "referendum_id",
    default=None,
    help="Seal only this referendum's log (and exit once it is final).",
)
def batcher(referendum_id: str | None) -> None:
    """Sequence accepted ballots into the public log: blocks and signed checkpoints.

    The same process keeps each referendum's encrypted tally folded up to the last block.

    One leader per referendum (a PostgreSQL advisory lock); a second batcher waits and takes
    over when the first dies. SIGTERM stops after the block being sealed is committed.
    """
    settings = Settings.from_env()
    configure_logging(settings)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is absent on Windows only
        pass
    asyncio.run(_main(settings, referendum_id))


async def _follow(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    pool = await create_pool(resolve_database_url(settings), settings)
    try:
        await run_tally_follower(pool, stop, poll_s=settings.tally_poll_ms / 1000)
    finally:
        await pool.close()


@click.command("tally-follow")
def tally_follow() -> None:
    """Keep every referendum's encrypted tally folded up to its last sealed block.

    ``referendum batcher`` already does this in its own process; run this alone when the
    tally should follow the log without sealing (a standby, a recovery).
    """
    settings = Settings.from_env()
    configure_logging(settings)
    asyncio.run(_follow(settings))
