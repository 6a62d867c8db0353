"""Tests of the voter write path; shared helpers build open referendums and real ballots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from nacl.signing import SigningKey

from referendum_core.ballot import SIGNING_PREFIX, BallotSpec
from referendum_core.ballot_codec import ballot_from_json, encode_body
from referendum_core.client import make_ballot, new_voter_key
from referendum_core.group import Point
from referendum_core.roll import VoterIdHasher, voter_id_key_id
from referendum_service.settings import Settings
from tests.helpers import VOTER_ID_KEY

ELECTION_SECRET = 0x5EED

OPTIONS = ("yes", "no")


@dataclass
class Electorate:
    """An open (or closed/draft) yes/no referendum with its voters' secret keys."""

    referendum_id: str
    spec: BallotSpec
    secrets: dict[str, bytes] = field(default_factory=dict)
    credentials: dict[str, bytes] = field(default_factory=dict)

    def ballot(self, voter_id: str, yes: bool = True) -> dict[str, Any]:
        """A fresh valid ballot of ``voter_id`` (new randomness each call).

        For a yes/no question ``yes`` picks the option; otherwise the first option alone.
        """
        k = len(self.spec.options)
        selections = [0] * k
        selections[0 if yes or k != 2 else 1] = 1
        return make_ballot(self.spec, self.secrets[voter_id], selections)

    @property
    def path(self) -> str:
        return f"/v1/referendums/{self.referendum_id}/ballots"


def ingest_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for an in-process app: keys under ``tmp_path``, a generous voter rate, the
    tests' voter-id key."""
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "voter_rate_per_minute": 1000,
        "voter_id_key": VOTER_ID_KEY,
    }
    values.update(overrides)
    return Settings(**values)


async def create_referendum(
    dsn: str,
    referendum_id: str,
    *,
    voters: int = 4,
    policy: str = "forbid",
    state: str = "open",
    options: tuple[str, ...] = OPTIONS,
    selections: tuple[int, int] = (1, 1),
) -> Electorate:
    """Insert a referendum in ``state`` with ``voters`` voters v0, v1, … on its roll.

    By default a yes/no question; ``options`` and ``selections`` (min, max) make another.
    Its voting window is from now to a day from now.
    """
    election_key = Point.base_mul(ELECTION_SECRET).to_compressed()
    spec = BallotSpec(referendum_id, options, selections[0], selections[1], election_key)
    electorate = Electorate(referendum_id, spec)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """INSERT INTO referendums (id, question, options, min_selections, max_selections,
                   opens_at, closes_at, revote_policy, threshold_k, trustees_n, state,
                   election_public_key)
               VALUES ($1, 'Which?', $2::jsonb, $6, $7, now(), now() + interval '1 day',
                       $3, 1, 1, $4, $5)""",
            referendum_id,
            orjson.dumps(list(options)).decode(),
            policy,
            state,
            election_key,
            selections[0],
            selections[1],
        )
        rows = []
        hasher = VoterIdHasher(bytes.fromhex(VOTER_ID_KEY), referendum_id)
        for i in range(voters):
            secret, public = new_voter_key()
            electorate.secrets[f"v{i}"] = secret
            electorate.credentials[f"v{i}"] = public
            rows.append((referendum_id, public, hasher(f"v{i}".encode())))
        await conn.copy_records_to_table(
            "voters", records=rows, columns=["referendum_id", "credential", "voter_hash"]
        )
        await conn.execute(
            "UPDATE referendums SET voter_key_id = $2 WHERE id = $1",
            referendum_id,
            voter_id_key_id(bytes.fromhex(VOTER_ID_KEY)),
        )
    finally:
        await conn.close()
    return electorate


def resign(body: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """``body`` with its signature recomputed under ``secret`` (to reach the proof checks)."""
    record = ballot_from_json(body)
    signature = SigningKey(secret).sign(SIGNING_PREFIX + encode_body(record)).signature
    return {**body, "signature": bytes(signature).hex()}


async def count_ballots(dsn: str, referendum_id: str | None = None) -> int:
    """Rows in ``ballots`` (of one referendum, or all)."""
    conn = await asyncpg.connect(dsn)
    try:
        if referendum_id is None:
            return int(await conn.fetchval("SELECT count(*) FROM ballots"))
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM ballots WHERE referendum_id = $1", referendum_id
            )
        )
    finally:
        await conn.close()


@dataclass
class Load:
    """A bounded closed-loop client: ``concurrency`` workers POST pre-made ballot bodies.

    ``acked`` maps ballot index → ballot hash (hex) for every 201/200. Bodies answered with a
    status in ``retry_statuses`` (or a connection error, if ``retry_errors``) go back into the
    queue after ``retry_pause_s``; others are final.
    """

    url: str
    bodies: list[bytes]
    concurrency: int = 16
    retry_statuses: frozenset[int] = frozenset()
    retry_errors: bool = False
    retry_pause_s: float = 0.05
    acked: dict[int, str] = field(default_factory=dict)
    statuses: list[int] = field(default_factory=list)
    errors: int = 0
    missing_retry_after: int = 0
    started_after_mark: int = 0
    acked_after_mark: int = 0
    marked: bool = False

    async def run(self, deadline_s: float) -> None:
        """Submit every body (retrying as configured) or stop at the deadline."""
        import aiohttp

        todo: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(self.bodies)):
            todo.put_nowait(i)
        remaining = len(self.bodies)
        done = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=30)

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal remaining
            while not done.is_set():
                try:
                    index = await asyncio.wait_for(todo.get(), timeout=0.2)
                except TimeoutError:
                    continue
                if self.marked:
                    self.started_after_mark += 1
                retry = False
                try:
                    async with session.post(
                        self.url,
                        data=self.bodies[index],
                        headers={"Content-Type": "application/json"},
                    ) as response:
                        body = await response.read()
                        self.statuses.append(response.status)
                        if response.status in (429, 503) and (
                            "Retry-After" not in response.headers
                            or response.content_type != "application/problem+json"
                        ):
                            self.missing_retry_after += 1
                        if response.status in (200, 201):
                            self.acked[index] = orjson.loads(body)["ballot_hash"]
                            if self.marked:
                                self.acked_after_mark += 1
                        retry = response.status in self.retry_statuses
                except (aiohttp.ClientError, TimeoutError):
                    self.errors += 1
                    retry = self.retry_errors
                if retry:
                    await asyncio.sleep(self.retry_pause_s)
                    todo.put_nowait(index)
                else:
                    remaining -= 1
                    if remaining == 0:
                        done.set()

        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            workers = [asyncio.create_task(worker(session)) for _ in range(self.concurrency)]
            try:
                await asyncio.wait_for(done.wait(), timeout=deadline_s)
            finally:
                done.set()
                await asyncio.gather(*workers)


async def wait_until(predicate: Any, deadline_s: float, what: str) -> None:
    """Poll ``predicate()`` every 10 ms until true; fail the test after ``deadline_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def roll_locked(dsn: str) -> AsyncIterator[asyncpg.transaction.Transaction]:
    """The roll (``voters``) locked by another connection until the yielded transaction ends.

    Submissions read the roll before their proofs, so while it is held they stay in progress,
    holding their admission places. Commit the transaction to let them through; it is rolled
    back on the way out otherwise.
    """
    blocker = await asyncpg.connect(dsn)
    try:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute("LOCK TABLE voters IN ACCESS EXCLUSIVE MODE")
        try:
            yield tx
        finally:
            if not blocker.is_closed() and blocker.is_in_transaction():
                await tx.rollback()
    finally:
        await blocker.close()
