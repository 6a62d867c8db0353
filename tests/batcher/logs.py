"""Helpers of the batcher tests, shared with the read-API tests.

They write referendums and ballots straight into the database (no HTTP, no ballot
cryptography: the log treats a ballot body as opaque bytes) and check a sealed log from the
database alone with the pure core, the way an auditor would.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from nacl.signing import SigningKey

from batcher.service import LogSigner
from referendum_core.block import Block, check_link
from referendum_core.merkle import (
    STORED_MIN_LEVEL,
    CompactRange,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
)
from referendum_service.keys import load_or_create_key
from referendum_service.store.log import block_from_row

__all__ = [
    "LOG_ORIGIN",
    "batcher_env",
    "create_referendum",
    "insert_ballots",
    "make_signer",
    "random_body",
    "referendum_cli",
    "set_state",
    "start_batcher",
    "verify_log",
    "wait_for",
]

LOG_ORIGIN = "test.example/log"


def make_signer(folder: Path) -> tuple[LogSigner, Path]:
    """A log signer with a fresh key stored as ``folder/log.key`` (for subprocesses too)."""
    path = folder / "log.key"
    path.write_text(bytes(SigningKey.generate()).hex())
    return LogSigner(load_or_create_key(path, folder, "log"), LOG_ORIGIN), path


def referendum_cli() -> str:
    """The ``referendum`` entry point of this virtualenv."""
    return str(Path(sys.executable).parent / "referendum")


def batcher_env(database_url: str, key_file: Path, folder: Path) -> dict[str, str]:
    """Environment of a batcher subprocess: small, frequent blocks so kills land mid-round."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REFERENDUM_LOG_KEY_FILE": str(key_file),
        "REFERENDUM_LOG_ORIGIN": "test.example/log",
        "REFERENDUM_DATA_DIR": str(folder),
        "REFERENDUM_BLOCK_MAX_BALLOTS": "300",
        "REFERENDUM_BLOCK_MAX_MS": "20",
        "REFERENDUM_LOG_LEVEL": "warning",
    }


async def start_batcher(env: dict[str, str], rid: str) -> asyncio.subprocess.Process:
    """``referendum batcher --referendum RID`` as a subprocess."""
    return await asyncio.create_subprocess_exec(
        referendum_cli(),
        "batcher",
        "--referendum",
        rid,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def random_body(size: int = 300) -> bytes:
    """Opaque ballot bytes of a realistic size."""
    return os.urandom(size)


async def create_referendum(conn: asyncpg.Connection, rid: str, state: str = "open") -> None:
    """Insert a minimal referendum row in ``state``."""
    await conn.execute(
        "INSERT INTO referendums (id, question, options, min_selections, max_selections,"
        " opens_at, closes_at, revote_policy, threshold_k, trustees_n, state)"
        " VALUES ($1, 'Q?', '[\"yes\", \"no\"]', 1, 1, now(), now() + interval '1 day',"
        " 'last_counts', 1, 1, $2)",
        rid,
        state,
    )


async def open_referendum_connection(
    database_url: str, rid: str
) -> AsyncIterator[asyncpg.Connection]:
    """For a fixture: a connection to a fresh database holding one open referendum ``rid``."""
    connection = await asyncpg.connect(database_url)
    await create_referendum(connection, rid)
    yield connection
    await connection.close()


async def set_state(conn: asyncpg.Connection, rid: str, state: str) -> None:
    """Move a referendum to ``state`` (what the operator API's open/close do)."""
    await conn.execute("UPDATE referendums SET state = $2 WHERE id = $1", rid, state)


async def insert_ballots(
    conn: asyncpg.Connection, rid: str, count: int, *, size: int = 300
) -> list[bytes]:
    """Insert ``count`` accepted ballots with random bodies in one statement; return bodies."""
    bodies = [random_body(size) for _ in range(count)]
    await conn.execute(
        "INSERT INTO ballots (referendum_id, credential, ballot_hash, body, receipt)"
        " SELECT $1, sha256(convert_to('v' || h.i, 'UTF8')), h.hash, h.body, '{}'::bytea"
        " FROM unnest($2::bytea[], $3::bytea[]) WITH ORDINALITY AS h(hash, body, i)",
        rid,
        [hashlib.sha256(b).digest() for b in bodies],
        bodies,
    )
    return bodies


def _levels(leaves: list[bytes]) -> list[list[bytes]]:
    """Every complete node level over ``leaves``: ``levels[k][p]`` is node (k, p)."""
    levels = [leaves]
    while len(levels[-1]) >= 2:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


async def verify_log(
    conn: asyncpg.Connection, rid: str, verifier_key: str, *, expect_final: bool = False
) -> dict[str, Any]:
    """Check a referendum's whole log from the database; raise AssertionError on any flaw.

    Every ballot is sequenced exactly once with indexes 0..n-1 in block order; blocks are
    1..H, each links to the previous one, covers its ballots, states the root recomputed from
    the ballot bodies and carries a checkpoint signed by ``verifier_key``; every stored node
    equals the node recomputed from the leaves and none is missing. Returns a summary.
    """
    ballots = await conn.fetch(
        "SELECT e.log_index, e.block_height, b.body FROM ballots AS b"
        " LEFT JOIN log_entries AS e ON e.ballot_id = b.id WHERE b.referendum_id = $1"
        " ORDER BY e.log_index",
        rid,
    )
    assert all(b["log_index"] is not None for b in ballots), "an accepted ballot is unsequenced"
    assert [b["log_index"] for b in ballots] == list(range(len(ballots))), "indexes not 0..n-1"
    entries = await conn.fetchval("SELECT count(*) FROM log_entries WHERE referendum_id = $1", rid)
    assert entries == len(ballots), "a log entry names a ballot of another referendum"
    queued = await conn.fetchval("SELECT count(*) FROM log_pending WHERE referendum_id = $1", rid)
    assert queued == 0, "a sequenced ballot is still queued"
    leaves = [leaf_hash(b["body"]) for b in ballots]
    blocks = await conn.fetch("SELECT * FROM blocks WHERE referendum_id = $1 ORDER BY height", rid)
    assert [b["height"] for b in blocks] == list(range(1, len(blocks) + 1)), "heights not 1..H"
    prev: Block | None = None
    tree = CompactRange()
    origin = f"{LOG_ORIGIN}/{rid}"
    for row in blocks:
        block = block_from_row(rid, row)
        check_link(prev, block)
        assert block.block_hash() == bytes(row["block_hash"]), f"block {block.height} hash"
        heights = {b["block_height"] for b in ballots[block.first_index : block.end_index]}
        assert heights <= {block.height}, f"ballots of block {block.height} name another block"
        tree.extend(leaves[block.first_index : block.end_index])
        assert tree.root() == block.root, f"block {block.height} root does not recompute"
        block.verify_checkpoint(verifier_key, origin=origin)
        assert row["final"] == (expect_final and row["height"] == len(blocks)), "final flag"
        prev = block
    size = blocks[-1]["tree_size"] if blocks else 0
    assert size == len(ballots), "ballots outside every block"
    if leaves:
        assert root_from_leaf_hashes(leaves) == tree.root()
    levels = _levels(leaves)
    nodes = await conn.fetch(
        "SELECT level, position, hash FROM log_nodes WHERE referendum_id = $1", rid
    )
    for node in nodes:
        assert levels[node["level"]][node["position"]] == bytes(node["hash"]), "stored node"
    expected = sum(len(level) for level in levels[STORED_MIN_LEVEL:])
    assert len(nodes) == expected, f"{len(nodes)} stored nodes, expected {expected}"
    return {"ballots": len(ballots), "blocks": len(blocks), "nodes": len(nodes)}


async def wait_for(conn: asyncpg.Connection, query: str, timeout: float = 30.0) -> None:
    """Poll ``query`` (a boolean) until true; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await conn.fetchval(query):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {query}"
        await asyncio.sleep(0.05)
