"""The batcher's checkpoint publisher with three witness nodes: 2-of-3, a slow and a stopped
witness, catching up with one proof, the public API serving the cosigned checkpoint."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import nacl.signing
import pytest
from aiohttp import web

from auditor.client import PublicLogClient
from auditor.follow import AuditFailure
from auditor.witnessed import check_prefix, latest_witnessed
from batcher.service import run_batcher, seal_block
from batcher.witnessing import CheckpointPublisher
from node.app import make_node_app
from node.witness import NodeWitness
from referendum_core.checkpoint import parse_note
from referendum_core.witness import Witness, WitnessPolicy
from referendum_service.db import create_pool
from referendum_service.scratch import create_database, drop_database
from referendum_service.settings import Settings
from server.witnesses import set_policy
from tests.batcher.logs import create_referendum, insert_ballots, make_signer, set_state
from tests.helpers import running_app
from tests.node.common import service_key

RID = "r-wit"
SEEDS = [bytes([i]) * 32 for i in (21, 22, 23)]
NAMES = ["w1.example", "w2.example", "w3.example"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class WitnessNode:
    """A node's witness service on its own database, that can be stopped and started."""

    def __init__(self, dsn: str, name: str, seed: bytes, log_vkey: str) -> None:
        self.dsn, self.name, self.seed, self.log_vkey = dsn, name, seed, log_vkey
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.runner: web.AppRunner | None = None
        self.hang: asyncio.Event | None = None  # while set to an unset event, requests hang

    async def start(self) -> None:
        witness = NodeWitness(self.name, service_key(self.seed), self.log_vkey)
        app = make_node_app(Settings(database_url=self.dsn), witness, database_url=self.dsn)

        @web.middleware
        async def slow(request: web.Request, handler: Any) -> web.StreamResponse:
            if self.hang is not None:
                await self.hang.wait()
            response: web.StreamResponse = await handler(request)
            return response

        app.middlewares.insert(0, slow)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def latest_size(self) -> int | None:
        conn = await asyncpg.connect(self.dsn)
        try:
            size = await conn.fetchval("SELECT tree_size FROM witness_latest")
            return None if size is None else int(size)
        finally:
            await conn.close()


@pytest.fixture
async def nodes(
    pg_admin_dsn: str, migrated_template: str, tmp_path: Path
) -> AsyncIterator[tuple[list[WitnessNode], Any]]:
    """Three witness nodes (each on its own fresh database), not started, and the signer."""
    signer, _ = make_signer(tmp_path)
    dsns = [
        await create_database(
            pg_admin_dsn, prefix="referendum_test", migrate=False, template=migrated_template
        )
        for _ in NAMES
    ]
    made = [
        WitnessNode(dsn, name, seed, signer.verifier_key())
        for dsn, name, seed in zip(dsns, NAMES, SEEDS, strict=True)
    ]
    try:
        yield made, signer
    finally:
        for n in made:
            if n.hang is not None:
                n.hang.set()
            await n.stop()
        for dsn in dsns:
            await drop_database(pg_admin_dsn, dsn)


def _policy(nodes: list[WitnessNode], k: int) -> WitnessPolicy:
    return WitnessPolicy(
        k,
        tuple(
            Witness(n.name, bytes(nacl.signing.SigningKey(n.seed).verify_key), n.url) for n in nodes
        ),
    )


async def _referendum(database_url: str, policy: WitnessPolicy) -> asyncpg.Connection:
    conn = await asyncpg.connect(database_url)
    await create_referendum(conn, RID, state="draft")
    await set_policy(conn, RID, policy, "test")
    await set_state(conn, RID, "open")
    return conn


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    """Poll an async predicate until true (a deadline, not a sleep as synchronisation)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _cosigned(conn: asyncpg.Connection) -> dict[str, set[int]]:
    rows = await conn.fetch("SELECT witness, tree_size FROM checkpoint_cosignatures")
    found: dict[str, set[int]] = {}
    for r in rows:
        found.setdefault(r["witness"], set()).add(int(r["tree_size"]))
    return found


async def test_two_of_three_met_with_one_witness_hanging(
    database_url: str, nodes: tuple[list[WitnessNode], Any]
) -> None:
    """w3 never answers (requests hang past the timeout): sealing goes on, every checkpoint
    of the final log is cosigned by w1 and w2, and the public API serves the final checkpoint
    as witnessed under the 2-of-3 policy."""
    made, signer = nodes
    for n in made:
        await n.start()
    made[2].hang = asyncio.Event()
    policy = _policy(made, 2)
    conn = await _referendum(database_url, policy)
    settings = Settings(database_url=database_url, block_max_ballots=50, block_max_ms=20)
    pool = await create_pool(database_url, settings)
    stop = asyncio.Event()
    try:
        async with CheckpointPublisher(pool, timeout_s=0.3) as publisher:
            batcher = asyncio.create_task(
                run_batcher(database_url, settings, signer, stop, RID, publisher)
            )
            for _ in range(3):
                await insert_ballots(conn, RID, 60)
                await _until(
                    lambda: _fetch_true(conn, "SELECT NOT EXISTS (SELECT 1 FROM log_pending)")
                )
            await set_state(conn, RID, "closed")
            await asyncio.wait_for(batcher, timeout=30)
            final = await conn.fetchval(
                "SELECT tree_size FROM blocks WHERE referendum_id = $1 AND final", RID
            )
            assert final == 180
            assert await publisher.drain(10) is False  # w3 never cosigns
        cosigned = await _cosigned(conn)
        assert 180 in cosigned["w1.example"] and 180 in cosigned["w2.example"]
        assert "w3.example" not in cosigned
        async with running_app(settings, database_url) as client:
            body = await (await client.get(f"/v1/referendums/{RID}/log/checkpoint")).json()
            witnessed = await (
                await client.get(f"/v1/referendums/{RID}/log/checkpoint?witnessed=true")
            ).json()
            served_policy = await (await client.get(f"/v1/referendums/{RID}/witness-policy")).json()
            await _auditor_checks(client, policy, signer.verifier_key(), made)
        assert body["tree_size"] == 180 and body["cosigners"] == ["w1.example", "w2.example"]
        assert witnessed["tree_size"] == 180
        assert WitnessPolicy.from_json(served_policy) == policy
        assert policy.check(witnessed["note"]) == ["w1.example", "w2.example"]
        assert parse_note(witnessed["note"])[0].size == 180
    finally:
        stop.set()
        await pool.close()
        await conn.close()


async def _auditor_checks(
    client: Any, policy: WitnessPolicy, log_vkey: str, made: list[WitnessNode]
) -> None:
    """The auditor's witness checks over the served API: met under 2-of-3, not under 3-of-3."""
    async with running_client(client) as public:
        found = await latest_witnessed(public, policy, log_vkey, None)
        assert found is not None and found.checkpoint.size == 180
        assert found.cosigners == ["w1.example", "w2.example"]
        first_block = await public.block(1)
        assert first_block is not None
        earlier = parse_note(first_block["checkpoint"])[0]
        await check_prefix(public, earlier, found.checkpoint)
        with pytest.raises(AuditFailure) as err:
            await latest_witnessed(public, _policy(made, 3), log_vkey, None)
        assert err.value.check == "witness.policy.threshold"


@contextlib.asynccontextmanager
async def running_client(client: Any) -> AsyncIterator[PublicLogClient]:
    """A PublicLogClient on a test server's base URL."""
    async with PublicLogClient(str(client.make_url("")).rstrip("/"), RID) as public:
        yield public


async def _fetch_true(conn: asyncpg.Connection, query: str) -> bool:
    return bool(await conn.fetchval(query))


async def test_stopped_witness_is_caught_up_with_one_proof(
    database_url: str, nodes: tuple[list[WitnessNode], Any]
) -> None:
    """w2 cosigns the first checkpoint, is stopped for two more, and on restart the next
    checkpoint is cosigned with one request from its last size (its latest jumps there);
    w1 cosigned every checkpoint meanwhile."""
    made, signer = nodes
    await made[0].start()
    await made[1].start()
    policy = _policy(made[:2], 1)
    conn = await _referendum(database_url, policy)
    pool = await create_pool(database_url, Settings(database_url=database_url))
    try:
        async with CheckpointPublisher(pool, timeout_s=1.0) as publisher:

            async def seal(count: int) -> int:
                await insert_ballots(conn, RID, count)
                sealed = await seal_block(conn, RID, signer, max_ballots=1000)
                assert sealed is not None
                await publisher.offer(RID, sealed.block.tree_size, sealed.block.checkpoint)
                return sealed.block.tree_size

            first = await seal(10)
            await _until(lambda: _latest_is(made[1], first))
            await made[1].stop()
            sizes = [await seal(7), await seal(40)]
            await _until(lambda: _latest_is(made[0], sizes[-1]))
            await made[1].start()  # same port, same database: it remembers `first`
            last = await seal(5)
            await _until(lambda: _latest_is(made[1], last))
            assert await publisher.drain(5)
        cosigned = await _cosigned(conn)
        assert cosigned["w1.example"] >= {first, *sizes, last}
        assert cosigned["w2.example"] == {first, last}
    finally:
        await pool.close()
        await conn.close()


async def _latest_is(node: WitnessNode, size: int) -> bool:
    return await node.latest_size() == size


async def test_policy_is_fixed_once_open(database_url: str) -> None:
    """The witness policy of an open referendum cannot be changed, even in SQL."""
    w = Witness("w.example", bytes(nacl.signing.SigningKey(bytes(32)).verify_key), "http://x")
    conn = await _referendum(database_url, WitnessPolicy(1, (w,)))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE witness_policies SET threshold = 1")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM witness_policies")
    finally:
        await conn.close()
