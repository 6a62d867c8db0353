"""``referendum node`` as a process: it serves add-checkpoint and exits 3 on a fork; and
``--follow``'s pull of the operator's checkpoints through the same witness path."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestServer

from auditor.client import PublicLogClient
from node.follow import follow_once
from node.witness import NodeWitness
from referendum_core.merkle import consistency_proof
from tests.node.common import LOG_VKEY, RID, leaves, request_body, service_key, signed_note


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_live(url: str, proc: asyncio.subprocess.Process) -> None:
    deadline = asyncio.get_running_loop().time() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            assert proc.returncode is None, "the node exited before serving"
            try:
                async with session.get(f"{url}/livez") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "node did not start"
            await asyncio.sleep(0.1)


async def test_node_process_exits_3_on_a_fork(database_url: str, tmp_path: Path) -> None:
    """The command cosigns, then a forked checkpoint of the same size makes it store the
    evidence and exit with status 3."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REFERENDUM_NODE_LOG_KEY": LOG_VKEY,
        "REFERENDUM_NODE_NAME": "w-proc.example",
        "REFERENDUM_PORT": str(port),
        "REFERENDUM_DATA_DIR": str(tmp_path),
        "REFERENDUM_LOG_LEVEL": "warning",
    }
    cli = str(Path(sys.executable).parent / "referendum")
    proc = await asyncio.create_subprocess_exec(
        cli, "node", env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_live(url, proc)
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/add-checkpoint", data=request_body(0, 5)) as resp:
                assert resp.status == 200
                assert (await resp.text()).startswith("\u2014 w-proc.example ")
            async with session.post(
                f"{url}/add-checkpoint", data=request_body(5, 5, tag=b"fork")
            ) as resp:
                assert resp.status == 409
        assert await asyncio.wait_for(proc.wait(), timeout=30) == 3
        assert (tmp_path / "keys" / "witness.key").exists()  # its key persists for a restart
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT kind FROM witness_evidence") == "fork"
    finally:
        await conn.close()


def _operator(state: dict[str, Any]) -> web.Application:
    """A fake operator's public API: the latest checkpoint and consistency proofs of
    ``state['size']`` leaves of history ``state['tag']``."""

    async def checkpoint(request: web.Request) -> web.Response:
        size, tag = state["size"], state["tag"]
        return web.json_response({"tree_size": size, "note": signed_note(size, tag)})

    async def consistency(request: web.Request) -> web.Response:
        first, second = int(request.query["from"]), int(request.query["to"])
        proof = consistency_proof(leaves(second, state["tag"]), first)
        return web.json_response({"from": first, "to": second, "proof": [h.hex() for h in proof]})

    app = web.Application()
    app.router.add_get(f"/v1/referendums/{RID}/log/checkpoint", checkpoint)
    app.router.add_get(f"/v1/referendums/{RID}/log/proof/consistency", consistency)
    return app


async def test_follow_pulls_checkpoints_and_catches_a_rewritten_history(
    database_url: str,
) -> None:
    """Following cosigns the operator's growing log from the node's size; when the operator
    starts showing another history, the node refuses it and stores the evidence."""
    state: dict[str, Any] = {"size": 6, "tag": b""}
    witness = NodeWitness("w-follow.example", service_key(bytes([3]) * 32), LOG_VKEY)
    server = TestServer(_operator(state))
    await server.start_server()
    conn = await asyncpg.connect(database_url)
    try:
        async with PublicLogClient(str(server.make_url("")).rstrip("/"), RID) as client:
            first = await follow_once(conn, witness, client)
            assert first is not None and first.status == 200
            assert await follow_once(conn, witness, client) is None  # nothing new
            state["size"] = 20
            grown = await follow_once(conn, witness, client)
            assert grown is not None and grown.status == 200
            state["size"], state["tag"] = 20, b"rewritten"
            forked = await follow_once(conn, witness, client)
            assert forked is not None and forked.status == 409
        assert witness.fork_seen.is_set()
        assert await conn.fetchval("SELECT tree_size FROM witness_latest") == 20
        assert await conn.fetchval("SELECT count(*) FROM witness_evidence WHERE kind = 'fork'") == 1
    finally:
        await conn.close()
        await server.close()
