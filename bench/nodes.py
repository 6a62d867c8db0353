"""``referendum bench nodes``: merge delay until witnessed, cosignatures one witness serves.

Method (fresh databases on the configured PostgreSQL, one for the log and one per witness
node, dropped afterwards; every process on 127.0.0.1):

* **Merge delay until witnessed**: ``--witnesses`` ``referendum node`` processes (each on its
  own database) and one ``referendum batcher --referendum`` process, with a
  ``--threshold``-of-``--witnesses`` policy set before open; an inserter COPYs ``--rate``
  ballots/s (every 10 ms, paced by the clock) for ``--seconds``. A ballot is *witnessed* when
  the first checkpoint covering it (tree size > its log index) has ``threshold`` stored
  cosignatures: delay = the ``threshold``-th ``cosigned_at`` − ``accepted_at`` (both the
  database clock); p50/p99 over every ballot. The nodes witness checkpoints only (the
  verified replica is not built yet), so this is the publisher's and the witnesses' own cost.
  The same run's baseline: the plain merge delay (block ``sealed_at`` − ``accepted_at``), so
  the difference is what witnessing adds.
* **Cosignatures/s one witness serves**: one ``referendum node`` process; the client sends
  chains of add-checkpoint requests (each from the size the previous one made the latest,
  16 leaves further, with its consistency proof), one chain per origin, ``1`` and ``8``
  origins at once, for ``--cosign-seconds`` after the requests are prepared; median of
  ``--runs``. Client, node and PostgreSQL share the machine's cores.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import click
import nacl.signing
import orjson

from bench.common import create_bench_database, drop_bench_database, median, write_results
from bench.log import _copy_ballots
from referendum_core.checkpoint import Checkpoint, sign_checkpoint, verifier_key_string
from referendum_core.merkle import (
    consistency_proof_nodes,
    leaf_hash,
    node_hash,
    proof_from_nodes,
    root_nodes,
)
from referendum_core.witness import AddCheckpointRequest, Witness, WitnessPolicy

_CHAIN_LEVELS = 17  # 131,072 leaves: room for 8,192 requests of 16 leaves per chain
_STEP = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cli() -> str:
    return str(Path(sys.executable).parent / "referendum")


class _Node:
    """A ``referendum node`` subprocess on its own database."""

    def __init__(self, dsn: str, name: str, seed: bytes, log_vkey: str, folder: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.public_key = bytes(nacl.signing.SigningKey(seed).verify_key)
        key_file = folder / f"{name}.key"
        key_file.write_text(seed.hex())
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "REFERENDUM_PORT": str(self.port),
            "REFERENDUM_NODE_NAME": name,
            "REFERENDUM_NODE_KEY_FILE": str(key_file),
            "REFERENDUM_NODE_LOG_KEY": log_vkey,
            "REFERENDUM_DATA_DIR": str(folder),
            "REFERENDUM_LOG_LEVEL": "warning",
        }
        self.process = subprocess.Popen(
            [_cli(), "node"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.perf_counter() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if self.process.poll() is not None:
                    raise click.ClickException(f"node {self.name} exited at start")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                if time.perf_counter() > deadline:
                    raise click.ClickException(f"node {self.name} did not start")
                await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


# --- merge delay until witnessed ---------------------------------------------------------


async def _set_up(dsn: str, rid: str, policy: WitnessPolicy) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO referendums (id, question, options, min_selections, max_selections,"
            " opens_at, closes_at, revote_policy, threshold_k, trustees_n, state)"
            " VALUES ($1, 'Bench?', '[\"yes\", \"no\"]', 1, 1, now(), now() + interval '1 day',"
            " 'last_counts', 1, 1, 'draft')",
            rid,
        )
        await conn.execute(
            "INSERT INTO witness_policies (referendum_id, threshold, policy) VALUES ($1, $2, $3)",
            rid,
            policy.threshold,
            orjson.dumps(policy.to_json()).decode(),
        )
        await conn.execute("UPDATE referendums SET state = 'open' WHERE id = $1", rid)
    finally:
        await conn.close()


_WITNESSED = """
SELECT tree_size, (array_agg(cosigned_at ORDER BY cosigned_at))[$2] AS at
FROM checkpoint_cosignatures WHERE referendum_id = $1
GROUP BY tree_size HAVING count(*) >= $2 ORDER BY tree_size
"""


async def _delays(conn: asyncpg.Connection, rid: str, k: int) -> list[float]:
    """Per sealed ballot, ms from acceptance to its first witnessed checkpoint (none: skip)."""
    witnessed = await conn.fetch(_WITNESSED, rid, k)
    sizes = [int(r["tree_size"]) for r in witnessed]
    # the earliest witnessing among checkpoints at least this large (a suffix minimum)
    earliest: list[float] = [0.0] * len(witnessed)
    best = float("inf")
    for i in range(len(witnessed) - 1, -1, -1):
        best = min(best, witnessed[i]["at"].timestamp())
        earliest[i] = best
    ballots = await conn.fetch(
        "SELECT e.log_index, b.accepted_at FROM log_entries AS e"
        " JOIN ballots AS b ON b.id = e.ballot_id WHERE e.referendum_id = $1",
        rid,
    )
    out = []
    for row in ballots:
        if row["log_index"] == 0:
            continue  # the warm-up ballot
        i = bisect.bisect_right(sizes, int(row["log_index"]))  # first size > index
        if i < len(sizes):
            out.append((earliest[i] - row["accepted_at"].timestamp()) * 1000)
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _wait_witnessed(conn: asyncpg.Connection, rid: str, k: int, size: int) -> None:
    """Poll until the checkpoint of ``size`` ballots has ``k`` cosignatures (60 s at most)."""
    deadline = time.perf_counter() + 60
    while True:
        top = await conn.fetchval(
            "SELECT max(tree_size) FROM (SELECT tree_size FROM checkpoint_cosignatures"
            " WHERE referendum_id = $1 GROUP BY tree_size HAVING count(*) >= $2) AS w",
            rid,
            k,
        )
        if top is not None and top >= size:
            return
        if time.perf_counter() > deadline:
            raise click.ClickException(f"the log was not witnessed up to {size} in 60 s")
        await asyncio.sleep(0.05)


async def merge_until_witnessed(
    admin_dsn: str,
    folder: Path,
    log_seed: bytes,
    log_origin: str,
    rate: int,
    seconds: float,
    witnesses: int,
    threshold: int,
) -> dict[str, Any]:
    """Run the log, its batcher and the witness nodes; the delays until witnessed."""
    rid = "bench-witnessed"
    log_vkey = verifier_key_string(log_origin, bytes(nacl.signing.SigningKey(log_seed).verify_key))
    dsn = await create_bench_database(admin_dsn, "nodes")
    node_dsns = [await create_bench_database(admin_dsn, f"node{i}") for i in range(witnesses)]
    nodes: list[_Node] = []
    batcher = None
    try:
        for i, node_dsn in enumerate(node_dsns):
            nodes.append(_Node(node_dsn, f"w{i + 1}.bench", bytes([i + 1]) * 32, log_vkey, folder))
        for n in nodes:
            await n.ready()
        policy = WitnessPolicy(
            threshold, tuple(Witness(n.name, n.public_key, n.url) for n in nodes)
        )
        await _set_up(dsn, rid, policy)
        key_file = folder / "log.key"
        key_file.write_text(log_seed.hex())
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "REFERENDUM_LOG_KEY_FILE": str(key_file),
            "REFERENDUM_LOG_ORIGIN": log_origin,
            "REFERENDUM_DATA_DIR": str(folder),
            "REFERENDUM_LOG_LEVEL": "warning",
        }
        batcher = subprocess.Popen(
            [_cli(), "batcher", "--referendum", rid],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        conn = await asyncpg.connect(dsn)
        try:
            # one ballot first, sealed and witnessed before the clock starts: the batcher and
            # the nodes are up and every witness holds a checkpoint (excluded from the figures)
            await _copy_ballots(conn, rid, 0, 1)
            await _wait_witnessed(conn, rid, threshold, 1)
            inserted = 1
            started = time.perf_counter()
            tick = 0.01
            while (now := time.perf_counter() - started) < seconds:
                owed = 1 + int(now * rate) - inserted
                if owed > 0:
                    await _copy_ballots(conn, rid, inserted, owed)
                    inserted += owed
                await asyncio.sleep(max(0.0, tick - (time.perf_counter() - started - now)))
            await _wait_witnessed(conn, rid, threshold, inserted)
            delays = await _delays(conn, rid, threshold)
            sealed = [
                float(r[0])
                for r in await conn.fetch(
                    "SELECT k.sealed_at - extract(epoch FROM b.accepted_at) * 1000"
                    " FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id"
                    " JOIN blocks AS k"
                    "   ON k.referendum_id = e.referendum_id AND k.height = e.block_height"
                    " WHERE e.referendum_id = $1 AND e.log_index > 0",
                    rid,
                )
            ]
            blocks = await conn.fetchval(
                "SELECT count(*) FROM blocks WHERE referendum_id = $1", rid
            )
            cosigned = await conn.fetchval(
                "SELECT count(DISTINCT tree_size) FROM checkpoint_cosignatures"
                " WHERE referendum_id = $1",
                rid,
            )
        finally:
            await conn.close()
    finally:
        if batcher is not None:
            batcher.terminate()
            batcher.wait(timeout=30)
        for n in nodes:
            n.stop()
        for d in [dsn, *node_dsns]:
            await drop_bench_database(admin_dsn, d)
    return {
        "p50": _percentile(delays, 0.5),
        "p99": _percentile(delays, 0.99),
        "max": max(delays),
        "sealed_p50": _percentile(sealed, 0.5),
        "sealed_p99": _percentile(sealed, 0.99),
        "ballots": len(delays),
        "inserted": inserted,
        "rate": (inserted - 1) / seconds,
        "blocks": int(blocks),
        "checkpoints_cosigned": int(cosigned),
    }


# --- cosignatures per second ---------------------------------------------------------------


def _levels(size_log2: int) -> list[list[bytes]]:
    level = [leaf_hash(i.to_bytes(4, "big")) for i in range(1 << size_log2)]
    levels = [level]
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def _chain(
    levels: list[list[bytes]], origin: str, name: str, seed: bytes, count: int
) -> list[bytes]:
    """``count`` add-checkpoint bodies: 0 → 16 → 32 → ..., each with its proof."""

    def lookup(level: int, position: int) -> bytes:
        return levels[level][position]

    def root(size: int) -> bytes:
        # the root of the first `size` leaves, from the perfect subtrees that make it up
        return proof_from_nodes([root_nodes(size)], lookup)[0]

    bodies = []
    old = 0
    for i in range(1, count + 1):
        size = i * _STEP
        note = sign_checkpoint(Checkpoint(origin, size, root(size)), name, seed)
        proof = proof_from_nodes(consistency_proof_nodes(old, size), lookup) if old else []
        bodies.append(AddCheckpointRequest(old, tuple(proof), note).to_bytes())
        old = size
    return bodies


async def _drive(url: str, chains: list[list[bytes]], seconds: float) -> tuple[int, int]:
    """Send every chain in order, the chains at once, for ``seconds``; (200s, others)."""
    ok = bad = 0
    stop_at = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=len(chains))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(chain: list[bytes]) -> None:
            nonlocal ok, bad
            for body in chain:
                if time.perf_counter() > stop_at:
                    return
                async with session.post(f"{url}/add-checkpoint", data=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        ok += 1
                    else:
                        bad += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(c) for c in chains))
        elapsed = time.perf_counter() - started
    return int(ok / elapsed), bad


async def cosign_rate(
    admin_dsn: str, folder: Path, log_seed: bytes, seconds: float, origins: int, run: int
) -> tuple[int, int]:
    """Cosignatures/s of one node over ``origins`` chains; (rate, non-200 answers)."""
    name = "bench.example/log"
    log_vkey = verifier_key_string(name, bytes(nacl.signing.SigningKey(log_seed).verify_key))
    dsn = await create_bench_database(admin_dsn, "cosign")
    node = _Node(dsn, f"w-rate{run}.bench", bytes([99]) * 32, log_vkey, folder)
    try:
        levels = _levels(_CHAIN_LEVELS)
        count = (1 << _CHAIN_LEVELS) // _STEP
        chains = [
            _chain(levels, f"{name}/bench-{run}-{o}", name, log_seed, count) for o in range(origins)
        ]
        await node.ready()
        return await _drive(node.url, chains, seconds)
    finally:
        node.stop()
        await drop_bench_database(admin_dsn, dsn)


@click.command()
@click.option("--rate", default=3000, show_default=True, help="Ballots/s inserted.")
@click.option("--seconds", default=20.0, show_default=True, help="Seconds of insertion.")
@click.option("--witnesses", default=3, show_default=True, help="Witness nodes.")
@click.option("--threshold", default=2, show_default=True, help="Cosignatures needed (k).")
@click.option("--cosign-seconds", default=5.0, show_default=True, help="Seconds per rate run.")
@click.option("--runs", default=3, show_default=True, help="Runs of the cosignature rate.")
@click.option(
    "--parts", default="merge,cosign", show_default=True, help="Which parts: merge, cosign."
)
def nodes(
    rate: int,
    seconds: float,
    witnesses: int,
    threshold: int,
    cosign_seconds: float,
    runs: int,
    parts: str,
) -> None:
    """Merge delay until a checkpoint is witnessed (p50/p99), cosignatures/s one node serves."""
    from referendum_service.db import resolve_database_url
    from referendum_service.settings import Settings

    chosen = {p.strip() for p in parts.split(",") if p.strip()}
    if chosen - {"merge", "cosign"} or not 1 <= threshold <= witnesses:
        raise click.BadParameter("parts are merge and cosign; 1 <= threshold <= witnesses")
    settings = Settings.from_env()
    admin_dsn = resolve_database_url(settings)
    folder = Path(tempfile.mkdtemp(prefix="bench-nodes-"))
    log_seed = os.urandom(32)
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "rate": rate,
        "seconds": seconds,
        "witnesses": witnesses,
        "threshold": threshold,
        "block_max_ms": settings.block_max_ms,
        "block_max_ballots": settings.block_max_ballots,
        "witness_timeout_ms": settings.witness_timeout_ms,
        "node_mode": "checkpoint-only (no replica yet)",
    }
    if "merge" in chosen:
        m = asyncio.run(
            merge_until_witnessed(
                admin_dsn,
                folder,
                log_seed,
                settings.log_origin,
                rate,
                seconds,
                witnesses,
                threshold,
            )
        )
        meta["merge"] = m
        where = f"{threshold} of {witnesses} witnesses"
        rows.append(_row("ballots inserted", m["rate"], "ballots/s", "", True))
        rows.append(_row(f"witnessed merge delay p50 ({where})", m["p50"], "ms", "", True))
        rows.append(
            _row(
                f"witnessed merge delay p99 ({where})", m["p99"], "ms", "<= 2000", m["p99"] <= 2000
            )
        )
        rows.append(_row("  worst", m["max"], "ms", "", True))
        rows.append(
            _row("  baseline, same run: sealed merge delay p50", m["sealed_p50"], "ms", "", True)
        )
        rows.append(
            _row("  baseline, same run: sealed merge delay p99", m["sealed_p99"], "ms", "", True)
        )
        rows.append(_row("  witnessing adds (p50)", m["p50"] - m["sealed_p50"], "ms", "", True))
        rows.append(_row("  blocks sealed", float(m["blocks"]), "", "", True))
        rows.append(_row("  checkpoints cosigned", float(m["checkpoints_cosigned"]), "", "", True))
    if "cosign" in chosen:
        for origins in (1, 8):
            rates = []
            for run in range(runs):
                r, bad = asyncio.run(
                    cosign_rate(admin_dsn, folder, log_seed, cosign_seconds, origins, run)
                )
                print(f"  {origins} origin(s): {r:,} cosignatures/s ({bad} refused)", flush=True)
                if bad:
                    raise click.ClickException(f"{bad} requests were refused")
                rates.append(r)
            meta[f"cosign_runs_{origins}"] = rates
            rows.append(
                _row(
                    f"cosignatures/s, one node, {origins} origin(s)", median(rates), "/s", "", True
                )
            )
    write_results("nodes", rows, meta=meta)


def _row(metric: str, value: float, unit: str, target: str, ok: bool) -> dict[str, Any]:
    verdict: bool | str = ok if target else ""
    return {"metric": metric, "value": value, "unit": unit, "target": target, "ok": verdict}
