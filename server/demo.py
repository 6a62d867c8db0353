"""``referendum demo``: the whole system on one machine, phase by phase.

Each phase is a function taking the :class:`Demo` context, so later stages add phases
(ballots under load, sealing, tally) to :data:`PHASES` without touching the earlier ones.
At this stage: start the database (embedded when ``DATABASE_URL`` is unset) and migrate, start
the application in-process on an ephemeral port, create an operator key, create a
referendum, import a generated roll of real Ed25519 keys over HTTP, open it, and print the
roll commitment with one voter's verified inclusion proof.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import click
import coincurve
from aiohttp import web
from nacl.bindings import crypto_sign_seed_keypair
from tqdm import tqdm

from referendum_core import merkle
from server.app import make_app
from server.auth import create_api_key
from server.db import resolve_database_url
from server.migrate import apply_migrations
from server.roll import roll_leaf_hash
from server.settings import Settings

__all__ = ["PHASES", "Demo", "demo", "voter_id", "voter_seed"]


def voter_seed(i: int) -> bytes:
    """The Ed25519 seed of demo voter ``i`` (deterministic, so later phases can sign)."""
    return hashlib.sha256(b"referendum-demo-voter:%d" % i).digest()


def voter_id(i: int) -> str:
    return f"voter-{i:07d}"


@dataclass
class Demo:
    """What the phases share."""

    settings: Settings
    voters: int
    database_url: str = ""
    base_url: str = ""
    token: str = ""
    referendum_id: str = ""
    election_secret: bytes = b""
    roll_root: str = ""
    runner: web.AppRunner | None = None
    session: aiohttp.ClientSession | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None, "the server phase runs first"
        return self.session


def say(text: str) -> None:
    click.echo(text)


async def phase_database(demo: Demo) -> None:
    """Find or start PostgreSQL and apply migrations."""
    if demo.settings.database_url:
        say("database: DATABASE_URL")
    else:
        say(f"database: starting embedded PostgreSQL under {demo.settings.data_dir}/pg ...")
    demo.database_url = await asyncio.to_thread(resolve_database_url, demo.settings)
    applied = await apply_migrations(demo.database_url)
    say(f"database: ready, {len(applied)} migration(s) applied")


async def phase_server(demo: Demo) -> None:
    """Start the application in this process on 127.0.0.1, ephemeral port."""
    app = make_app(demo.settings, database_url=demo.database_url)
    demo.runner = web.AppRunner(app, handler_cancellation=False, access_log=None)
    await demo.runner.setup()
    site = web.TCPSite(demo.runner, "127.0.0.1", 0)
    await site.start()
    port = demo.runner.addresses[0][1]
    demo.base_url = f"http://127.0.0.1:{port}"
    demo.session = aiohttp.ClientSession(demo.base_url)
    say(f"server: listening on {demo.base_url}")


async def phase_operator_key(demo: Demo) -> None:
    """Create an operator API key (as `referendum create-api-key` would)."""
    conn = await asyncpg.connect(demo.database_url)
    try:
        name = f"demo-operator-{datetime.now(UTC):%Y%m%dT%H%M%S.%f}"
        demo.token = await create_api_key(conn, name)
    finally:
        await conn.close()
    say(f"operator: API key created for {name}")


async def _check(response: aiohttp.ClientResponse, expected: int) -> Any:
    body = await response.json(content_type=None)
    if response.status != expected:
        raise click.ClickException(f"{response.method} {response.url}: {response.status} {body}")
    return body


async def phase_create_referendum(demo: Demo) -> None:
    """Create a draft referendum with an election key (a stand-in until trustees exist)."""
    demo.election_secret = hashlib.sha256(b"referendum-demo-election").digest()
    election_key = coincurve.PrivateKey(demo.election_secret).public_key.format(compressed=True)
    now = datetime.now(UTC).replace(microsecond=0)
    demo.referendum_id = f"demo-{now:%Y%m%d-%H%M%S}"
    definition = {
        "id": demo.referendum_id,
        "question": "Should the city build a new bridge?",
        "options": ["yes", "no", "abstain"],
        "min_selections": 1,
        "max_selections": 1,
        "opens_at": now.isoformat(),
        "closes_at": (now + timedelta(days=1)).isoformat(),
        "revote_policy": "last_counts",
        "threshold_k": 2,
        "trustees_n": 3,
        "election_public_key": election_key.hex(),
    }
    response = await demo.http().post("/v1/referendums", json=definition, headers=demo.headers)
    await _check(response, 201)
    say(f"referendum: {demo.referendum_id} created (draft)")


def roll_file(folder: Path, count: int) -> Path:
    """The demo roll as CSV, generated once (keys derived from seeds, ~20 µs each) and cached."""
    path = folder / f"roll-{count}.csv"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with (
        partial.open("w", encoding="ascii") as out,
        tqdm(total=count, unit="voters", desc="roll: generate keys") as progress,
    ):
        out.write("voter_id,public_key\n")
        for start in range(0, count, 10_000):
            stop = min(start + 10_000, count)
            out.write(
                "".join(
                    f"{voter_id(i)},{crypto_sign_seed_keypair(voter_seed(i))[0].hex()}\n"
                    for i in range(start, stop)
                )
            )
            progress.update(stop - start)
    partial.rename(path)
    return path


async def _file_chunks(path: Path, progress: tqdm[Any]) -> AsyncIterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            progress.update(len(chunk))
            yield chunk


async def phase_import_roll(demo: Demo) -> None:
    """Upload the generated roll over HTTP (streamed CSV)."""
    path = await asyncio.to_thread(roll_file, demo.settings.data_dir / "demo", demo.voters)
    started = time.perf_counter()
    size = path.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc="roll: upload") as progress:
        response = await demo.http().put(
            f"/v1/referendums/{demo.referendum_id}/roll",
            data=_file_chunks(path, progress),
            headers={**demo.headers, "Content-Type": "text/csv"},
        )
        result = await _check(response, 200)
    seconds = time.perf_counter() - started
    demo.facts["roll_import_s"] = seconds
    rate = result["imported"] / seconds
    say(f"roll: {result['imported']:,} voters imported in {seconds:.1f} s ({rate:,.0f} rows/s)")


async def phase_open(demo: Demo) -> None:
    """Open the referendum: commits and freezes the roll; print the commitment."""
    response = await demo.http().post(
        f"/v1/referendums/{demo.referendum_id}/open", headers=demo.headers
    )
    opened = await _check(response, 200)
    demo.roll_root = opened["roll_root"]
    commitment = await _check(
        await demo.http().get(f"/v1/referendums/{demo.referendum_id}/roll/commitment"), 200
    )
    say(f"referendum: {demo.referendum_id} is open")
    say(f"roll commitment: root {commitment['root']} over {commitment['size']:,} voters")


async def phase_verify_roll_proof(demo: Demo) -> None:
    """Fetch one voter's inclusion proof and verify it against the commitment."""
    who = voter_id(demo.voters // 2)
    proof = await _check(
        await demo.http().get(f"/v1/referendums/{demo.referendum_id}/roll/proof/{who}"), 200
    )
    public = crypto_sign_seed_keypair(voter_seed(demo.voters // 2))[0]
    merkle.verify_inclusion(
        roll_leaf_hash(who, public),
        proof["index"],
        proof["size"],
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(demo.roll_root),
    )
    say(f"roll proof: {who} is leaf {proof['index']:,}; {len(proof['proof'])}-hash proof verified")


Phase = Callable[[Demo], Awaitable[None]]

PHASES: list[Phase] = [
    phase_database,
    phase_server,
    phase_operator_key,
    phase_create_referendum,
    phase_import_roll,
    phase_open,
    phase_verify_roll_proof,
]
"""The demo, in order. Later stages append their phases."""


async def run_demo(demo: Demo, phases: list[Phase] | None = None) -> Demo:
    """Run the phases, then stop the server and close the client."""
    try:
        for phase in phases or PHASES:
            await phase(demo)
    finally:
        if demo.session is not None:
            await demo.session.close()
        if demo.runner is not None:
            await demo.runner.cleanup()
    return demo


@click.command()
@click.option("--voters", type=click.IntRange(1, 10_000_000), default=100_000, show_default=True)
def demo(voters: int) -> None:
    """Run the system end to end on this machine and print what it proves."""
    from server.observability import configure_logging

    settings = Settings.from_env()
    configure_logging(settings)
    started = time.perf_counter()
    asyncio.run(run_demo(Demo(settings=settings, voters=voters)))
    say(f"demo: done in {time.perf_counter() - started:.1f} s")
