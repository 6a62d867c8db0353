"""``referendum node``: run a stakeholder's node (this half: the witness), on its own database."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import sys

import click
import structlog
from aiohttp import web

from node.app import make_node_app
from node.follow import run_follower
from node.witness import NodeWitness
from referendum_core.errors import CheckpointError
from referendum_service.db import create_pool, resolve_database_url
from referendum_service.keys import load_or_create_key
from referendum_service.logs import configure_logging
from referendum_service.migrate import apply_migrations
from referendum_service.settings import Settings
from server.serving import ProblemAppRunner

__all__ = ["EXIT_SPLIT_VIEW", "node"]

EXIT_SPLIT_VIEW = 3
"""Exit status of ``referendum node`` once it has stored evidence of a fork."""

log = structlog.get_logger("node")


async def _main(
    settings: Settings, witness: NodeWitness, follow: str | None, referendums: list[str]
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    dsn = resolve_database_url(settings)
    await apply_migrations(dsn)
    runner = ProblemAppRunner(make_node_app(settings, witness, database_url=dsn))
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    log.info("node_started", name=witness.name, vkey=witness.vkey, port=settings.port)
    follower = None
    pool = None
    if follow:
        pool = await create_pool(dsn, dataclasses.replace(settings, db_pool_min=1, db_pool_max=2))
        follower = asyncio.create_task(
            run_follower(
                pool, witness, follow, referendums, settings.node_follow_poll_ms / 1000, stop
            )
        )
    fork = asyncio.create_task(witness.fork_seen.wait())
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({fork, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        for task in (fork, stopped):
            task.cancel()
        if follower is not None:
            await follower
        if pool is not None:
            await pool.close()
        await runner.cleanup()
    if witness.fork_seen.is_set():
        log.error("stopped_on_split_view", name=witness.name)
        return EXIT_SPLIT_VIEW
    return 0


@click.command()
@click.option("--port", type=int, default=None, help="Override REFERENDUM_PORT.")
@click.option(
    "--follow",
    "follow",
    default=None,
    metavar="URL",
    help="Also fetch the operator's checkpoints from this public API (with --referendum).",
)
@click.option(
    "--referendum",
    "referendums",
    multiple=True,
    help="A referendum id to follow (repeatable).",
)
def node(port: int | None, follow: str | None, referendums: tuple[str, ...]) -> None:
    """Run a stakeholder's witness node: C2SP add-checkpoint, cosignatures, evidence.

    It trusts the log key REFERENDUM_NODE_LOG_KEY for the origins NAME/<referendum id>,
    cosigns as REFERENDUM_NODE_NAME with the key of REFERENDUM_NODE_KEY_FILE (generated under
    the data folder if unset), and keeps its state in its own database (DATABASE_URL, or an
    embedded one). It exits with status 3 once it has stored evidence of a fork.
    """
    settings = Settings.from_env()
    if port is not None:
        settings = dataclasses.replace(settings, port=port)
    configure_logging(settings)
    if follow and not referendums:
        raise click.UsageError("--follow needs at least one --referendum")
    if not settings.node_log_key:
        raise click.UsageError("set REFERENDUM_NODE_LOG_KEY to the operator's log verifier key")
    key = load_or_create_key(settings.node_key_file, settings.data_dir, "witness")
    try:
        witness = NodeWitness(settings.node_name, key, settings.node_log_key)
    except CheckpointError as exc:
        raise click.UsageError(f"bad REFERENDUM_NODE_LOG_KEY or NODE_NAME: {exc}") from exc
    sys.exit(asyncio.run(_main(settings, witness, follow, list(referendums))))
