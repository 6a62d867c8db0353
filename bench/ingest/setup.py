"""What ``bench ingest`` prepares before any timing: ballots, the database, the roll.

Ballots are made in a process pool and stored as ready-to-send JSON bytes, so that the load
client does no cryptography; :class:`BallotSupply` hands each one out once.
"""

from __future__ import annotations

import multiprocessing
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import click
import orjson

REFERENDUM = "bench-ingest"
BALLOTS_PATH = f"/v1/referendums/{REFERENDUM}/ballots"
ELECTION_SECRET = 0xB0B


# --- ballots, made before timing ---------------------------------------------------------


def _spec() -> Any:
    from referendum_core.ballot import BallotSpec
    from referendum_core.group import Point

    key = Point.base_mul(ELECTION_SECRET).to_compressed()
    return BallotSpec(REFERENDUM, ("yes", "no"), 1, 1, key)


def _make_ballots(start: int, count: int) -> list[tuple[str, bytes, bytes]]:
    """``count`` voters from ``start``: (voter id, credential, JSON ballot bytes)."""
    from referendum_core.client import make_ballot, new_voter_key

    spec = _spec()
    made = []
    for i in range(start, start + count):
        voter = f"voter-{i:07d}"
        secret, public = new_voter_key()
        body = make_ballot(spec, secret, [1, 0] if i % 3 else [0, 1])
        made.append((voter, public, orjson.dumps(body)))
    return made


def generate(count: int, processes: int) -> list[tuple[str, bytes, bytes]]:
    """Every ballot of the benchmark, made in ``processes`` worker processes."""
    chunk = 500
    jobs = [(s, min(chunk, count - s)) for s in range(0, count, chunk)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(_make_ballots, jobs)
    return [item for part in parts for item in part]


# --- the database ------------------------------------------------------------------------


async def _roll_csv(voters: list[tuple[str, bytes, bytes]]) -> AsyncIterator[bytes]:
    """The roll of ``voters`` as CSV, in the ~1 MiB parts an upload arrives in."""
    step = 10_000
    for start in range(0, len(voters), step):
        part = voters[start : start + step]
        yield b"".join(f"{voter},{public.hex()}\n".encode() for voter, public, _ in part)


async def _create_database(
    admin_dsn: str,
    voters: list[tuple[str, bytes, bytes]],
    attackers: list[tuple[str, bytes, bytes]] | None = None,
) -> str:
    """A fresh database holding the open referendum, its roll ``voters``, as an operator does.

    With ``attackers`` (voter id, public key, secret) it also holds the open 64-option
    referendum of :func:`bench.attack_ballots.attack_spec` with them on its roll.
    """
    import asyncpg

    from bench.attack_ballots import attack_spec, create_attack_referendum
    from referendum_service.scratch import create_database
    from referendum_service.settings import Settings
    from server.referendums import ReferendumDefinition, create_referendum, transition
    from server.roll import import_roll
    from server.roll.voter_keys import VoterIdKeys

    dsn = await create_database(admin_dsn, prefix="bench_ingest")
    now = datetime.now(UTC)
    definition = ReferendumDefinition(
        id=REFERENDUM,
        question="Benchmark?",
        options=("yes", "no"),
        min_selections=1,
        max_selections=1,
        opens_at=now,
        closes_at=now + timedelta(days=1),
        revote_policy="forbid",
        threshold_k=1,
        trustees_n=1,
        election_public_key=_spec().election_public_key,
    )
    conn = await asyncpg.connect(dsn)
    lines_conn = await asyncpg.connect(dsn)
    try:
        await create_referendum(conn, definition, "bench")
        async with conn.transaction():
            await import_roll(
                conn,
                REFERENDUM,
                _roll_csv(voters),
                "csv",
                lines_conn=lines_conn,
                voter_keys=VoterIdKeys.from_settings(Settings(voter_id_key=secrets.token_hex(32))),
            )
        await transition(conn, REFERENDUM, "open", "bench")
        if attackers:
            spec = attack_spec(_spec().election_public_key)
            roll = [(voter, public) for voter, public, _ in attackers]
            await create_attack_referendum(conn, lines_conn, spec, roll, now=now)
    finally:
        await lines_conn.close()
        await conn.close()
    return dsn


async def _stored(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM ballots"))
    finally:
        await conn.close()


class BallotSupply:
    """Hands out each pre-made ballot once."""

    def __init__(self, bodies: list[bytes]) -> None:
        self._bodies = bodies
        self._next = 0

    def take(self, count: int) -> list[bytes]:
        if self._next + count > len(self._bodies):
            raise click.ClickException("ran out of pre-made ballots; raise --ballots")
        part = self._bodies[self._next : self._next + count]
        self._next += count
        return part


WARM_BALLOTS = 2000
"""Ballots kept for warm-ups (300 a server started) and the bare verifier's sample."""
