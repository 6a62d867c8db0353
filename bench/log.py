"""``referendum bench log``: sealing rate, merge delay, proofs served, sealing as the log grows.

Method (against a fresh database on the configured PostgreSQL, dropped afterwards):

* **Sealing with a backlog**: ``--backlog`` ballots (300 random bytes each) are COPYed in
  first, then sealed by :func:`batcher.service.seal_block` rounds of ``block_max_ballots``
  (what the leader does when ballots wait); rate = ballots / seconds. A fresh referendum per
  run, median of ``--runs``.
* **Merge delay**: ``referendum batcher`` runs as a subprocess with the configured
  ``block_max_ms``/``block_max_ballots`` while an inserter adds ``--rate`` ballots/s (every
  10 ms, paced by the clock) for ``--merge-seconds``; merge delay = block ``sealed_at`` −
  ballot ``accepted_at`` (both the database clock), p50/p99 over every ballot.
* **Proofs/s**: one server process (``referendum serve``, 1 worker) over 127.0.0.1 answers
  ``GET …/log/proof/inclusion/{hash}`` for distinct random sealed ballots of the backlog log
  (never one asked before in the benchmark), from wrk (``bench.loadgen``; aiohttp when wrk is
  absent, named in the output) with ``--connections`` connections, for ``--proof-seconds``
  after a 1 s warm-up; every answer must be 200 (others are reported as failures). Median of
  ``--runs``. The server's and the client's CPU use are reported: on a 2-core machine the
  client and PostgreSQL share the cores with the server.
* **Growth**: one log grows a million at a time to ``--max-entries``; each million is COPYed
  then sealed, and its sealing rate reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import click

from bench.common import create_bench_database, drop_bench_database, median, write_results
from bench.servers import backend_pids, referendum_serve

MILLION = 1_000_000
_BODY_BYTES = 300
_COPY_CHUNK = 50_000


async def _create_referendum(conn: asyncpg.Connection, rid: str) -> None:
    await conn.execute(
        "INSERT INTO referendums (id, question, options, min_selections, max_selections,"
        " opens_at, closes_at, revote_policy, threshold_k, trustees_n, state)"
        " VALUES ($1, 'Bench?', '[\"yes\", \"no\"]', 1, 1, now(), now() + interval '1 day',"
        " 'last_counts', 1, 1, 'open')",
        rid,
    )


def _records(rid: str, start: int, count: int) -> list[tuple[str, bytes, bytes, bytes, bytes]]:
    pool = os.urandom(_BODY_BYTES * count)  # one read of random bytes, sliced per ballot
    sha = hashlib.sha256
    records = []
    for n, i in enumerate(range(start, start + count)):
        body = pool[n * _BODY_BYTES : (n + 1) * _BODY_BYTES]
        records.append((rid, sha(b"v%d" % i).digest(), sha(body).digest(), body, b"{}"))
    return records


async def _copy_ballots(conn: asyncpg.Connection, rid: str, start: int, count: int) -> None:
    """COPY ``count`` ballots with random 300-byte bodies (stand-in credentials, one per
    ballot, from ``start``)."""
    for offset in range(0, count, _COPY_CHUNK):
        records = _records(rid, start + offset, min(_COPY_CHUNK, count - offset))
        await conn.copy_records_to_table(
            "ballots",
            records=records,
            columns=["referendum_id", "credential", "ballot_hash", "body", "receipt"],
        )


async def _seal_all(conn: asyncpg.Connection, rid: str, signer: Any, block: int) -> int:
    """Seal every waiting ballot as a leader does: rounds, and the queue's periodic VACUUM."""
    from batcher.service import PendingVacuum, seal_block

    vacuum = PendingVacuum()
    total = 0
    while (sealed := await seal_block(conn, rid, signer, max_ballots=block)) is not None:
        total += sealed.ballots
        await vacuum.sealed(conn, sealed.ballots)
    return total


# --- sealing -----------------------------------------------------------------------------


async def sealing_rate(dsn: str, rid: str, signer: Any, backlog: int, block: int) -> float:
    """Seal a backlog of ``backlog`` waiting ballots; return ballots/s."""
    conn = await asyncpg.connect(dsn)
    try:
        await _create_referendum(conn, rid)
        await _copy_ballots(conn, rid, 0, backlog)
        await conn.execute("ANALYZE ballots")
        started = time.perf_counter()
        sealed = await _seal_all(conn, rid, signer, block)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    assert sealed == backlog
    return backlog / elapsed


async def growth(
    dsn: str, rid: str, signer: Any, max_entries: int, block: int
) -> list[tuple[int, float]]:
    """Grow one log a million at a time; return (entries after, sealing rate) per step."""
    conn = await asyncpg.connect(dsn)
    rates = []
    try:
        await _create_referendum(conn, rid)
        size = 0
        while size < max_entries:
            step = min(MILLION, max_entries - size)
            await _copy_ballots(conn, rid, size, step)
            started = time.perf_counter()
            sealed = await _seal_all(conn, rid, signer, block)
            elapsed = time.perf_counter() - started
            assert sealed == step
            size += step
            rates.append((size, step / elapsed))
            print(f"  growth: {size:,} entries, {step / elapsed:,.0f} ballots/s", flush=True)
    finally:
        await conn.close()
    return rates


# --- merge delay ---------------------------------------------------------------------------


def _batcher_env(dsn: str, key_file: Path, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": dsn,
        "REFERENDUM_LOG_KEY_FILE": str(key_file),
        "REFERENDUM_DATA_DIR": str(data_dir),
        "REFERENDUM_LOG_LEVEL": "warning",
    }


async def merge_delay(
    dsn: str, rid: str, env: dict[str, str], rate: int, seconds: float
) -> dict[str, float]:
    """Insert ``rate`` ballots/s for ``seconds`` with a batcher running; merge delay in ms."""
    conn = await asyncpg.connect(dsn)
    cli = str(Path(sys.executable).parent / "referendum")
    batcher = subprocess.Popen(
        [cli, "batcher", "--referendum", rid],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _create_referendum(conn, rid)
        inserted = 0
        started = time.perf_counter()
        tick = 0.01
        while (now := time.perf_counter() - started) < seconds:
            owed = int(now * rate) - inserted
            if owed > 0:
                await _copy_ballots(conn, rid, inserted, owed)
                inserted += owed
            await asyncio.sleep(max(0.0, tick - (time.perf_counter() - started - now)))
        deadline = time.perf_counter() + 60
        while await conn.fetchval("SELECT count(*) FROM log_pending WHERE referendum_id = $1", rid):
            if time.perf_counter() > deadline:
                raise click.ClickException("the batcher did not seal every ballot within 60 s")
            await asyncio.sleep(0.1)
        row = await conn.fetchrow(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY d) AS p99, max(d) AS worst,"
            " count(*) AS n"
            " FROM (SELECT k.sealed_at - extract(epoch FROM b.accepted_at) * 1000 AS d"
            "       FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id"
            "       JOIN blocks AS k"
            "         ON k.referendum_id = e.referendum_id AND k.height = e.block_height"
            "       WHERE e.referendum_id = $1) AS delays",
            rid,
        )
        blocks = await conn.fetchval("SELECT count(*) FROM blocks WHERE referendum_id = $1", rid)
    finally:
        batcher.terminate()
        batcher.wait(timeout=30)
        await conn.close()
    assert row is not None
    return {
        "p50": float(row["p50"]),
        "p99": float(row["p99"]),
        "max": float(row["worst"]),
        "ballots": float(row["n"]),
        "blocks": float(blocks),
        "rate": inserted / seconds,
    }


# --- proofs served -------------------------------------------------------------------------


async def _proof_paths(dsn: str, rid: str, count: int) -> list[str]:
    """Paths of inclusion proofs for ``count`` distinct random sealed ballots (shuffled)."""
    conn = await asyncpg.connect(dsn)
    try:
        size = await conn.fetchval(
            "SELECT max(tree_size) FROM blocks WHERE referendum_id = $1", rid
        )
        indexes = random.Random(7).sample(range(size), min(count, size))
        rows = await conn.fetch(
            "SELECT b.ballot_hash FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id"
            " WHERE e.referendum_id = $1 AND e.log_index = ANY($2)",
            rid,
            indexes,
        )
    finally:
        await conn.close()
    paths = [f"/v1/referendums/{rid}/log/proof/inclusion/{bytes(r[0]).hex()}" for r in rows]
    random.Random(11).shuffle(paths)
    return paths


def proofs_per_second(
    dsn: str,
    rid: str,
    env: dict[str, str],
    port: int,
    *,
    connections: int,
    seconds: float,
    runs: int,
    paths_count: int,
    client_cpus: str | None,
) -> tuple[float, dict[str, Any]]:
    """Median proofs/s of one server process and the runs' details.

    Every run asks for proofs of ballots no earlier request of the benchmark asked for (a
    disjoint slice of ``paths_count`` random sealed ballots), after a 1 s warm-up with its own
    slice: what a cache of whole responses would serve is not counted, what a cache of the
    shared upper Merkle nodes serves is.
    """
    from bench.loadgen import client_name, cpu_seconds, descendants, run_load

    url = f"http://127.0.0.1:{port}"
    paths = asyncio.run(_proof_paths(dsn, rid, paths_count))
    per_run = len(paths) // (runs + 1)
    warm, slices = (
        paths[:per_run],
        [paths[(i + 1) * per_run : (i + 2) * per_run] for i in range(runs)],
    )
    client = client_name()
    print(f"  proofs: load client {client}, {per_run:,} distinct proofs per run", flush=True)
    results, db_cpus = [], []
    server_env = {**env, "DATABASE_URL": dsn}
    log_file = Path(env["REFERENDUM_DATA_DIR"]) / "server.log"
    with referendum_serve(server_env, port=port, workers=1, log_file=log_file) as server:
        pids = descendants(server.pid)
        run_load(
            url, warm, server_pids=pids, seconds=1.0, connections=connections, cpus=client_cpus
        )
        # the server's database connections (opened by the warm-up): PostgreSQL's share
        backends = asyncio.run(backend_pids(dsn))
        for part in slices:
            db_before, wall_before = cpu_seconds(backends), time.perf_counter()
            result = run_load(
                url,
                part,
                server_pids=pids,
                seconds=seconds,
                connections=connections,
                cpus=client_cpus,
            )
            db_cpu = (cpu_seconds(backends) - db_before) / (time.perf_counter() - wall_before)
            results.append(result)
            db_cpus.append(db_cpu)
            print(
                f"  proofs: {result.rate(200):,.0f}/s, p50 {result.latency_ms['p50']:.1f} ms"
                f" p99 {result.latency_ms['p99']:.1f} ms, server cpu {result.server_cpu:.2f},"
                f" database cpu {db_cpu:.2f}, client cpu {result.client_cpu:.2f},"
                f" failures {result.failures(200)}"
                + (" EXHAUSTED: raise --proof-paths" if result.exhausted else ""),
                flush=True,
            )
    ordered = sorted(results, key=lambda r: r.rate(200))
    middle = ordered[len(ordered) // 2]
    details = {
        "client": client,
        "connections": connections,
        "client_cpus": client_cpus,
        "distinct_proofs_per_run": per_run,
        "median_run": middle.as_json(),
        "rates": [r.rate(200) for r in results],
        "server_cpu": [r.server_cpu for r in results],
        "client_cpu": [r.client_cpu for r in results],
        "database_cpu": db_cpus,
        "median_run_database_cpu": db_cpus[results.index(middle)],
        "failures": sum(sum(r.failures(200).values()) for r in results),
        "exhausted": any(r.exhausted for r in results),
    }
    return middle.rate(200), details


# --- the command ---------------------------------------------------------------------------


@click.command()
@click.option("--backlog", default=MILLION, show_default=True, help="Ballots waiting to seal.")
@click.option("--runs", default=3, show_default=True, help="Runs per figure (median).")
@click.option("--rate", default=3000, show_default=True, help="Ballots/s for the merge delay.")
@click.option("--merge-seconds", default=20.0, show_default=True)
@click.option("--proof-seconds", default=5.0, show_default=True)
@click.option(
    "--connections",
    default=64,
    show_default=True,
    help="Proof client connections (32 leaves the server waiting on its queries: ~4,900/s).",
)
@click.option(
    "--proof-paths",
    default=200_000,
    show_default=True,
    help="Distinct sealed ballots whose proofs are asked (split over the runs).",
)
@click.option(
    "--client-cpus",
    default="",
    help="Pin the load client to these CPUs (taskset -c list); empty: not pinned.",
)
@click.option("--port", default=18081, show_default=True)
@click.option(
    "--max-entries",
    default=10 * MILLION,
    show_default=True,
    help="Grow one log to this many entries (0 skips the growth series).",
)
@click.option(
    "--parts",
    default="sealing,merge,proofs,growth",
    show_default=True,
    help="Comma-separated parts to run.",
)
@click.option("--keep", is_flag=True, help="Keep the benchmark database.")
def log(
    backlog: int,
    runs: int,
    rate: int,
    merge_seconds: float,
    proof_seconds: float,
    connections: int,
    proof_paths: int,
    client_cpus: str,
    port: int,
    max_entries: int,
    parts: str,
    keep: bool,
) -> None:
    """Sealing rate, merge delay p50/p99, proofs/s per process, sealing rate as the log grows."""
    from nacl.signing import SigningKey

    from batcher.service import LogSigner
    from referendum_service.db import resolve_database_url
    from referendum_service.keys import load_or_create_key
    from referendum_service.settings import Settings

    chosen = {p.strip() for p in parts.split(",") if p.strip()}
    unknown = chosen - {"sealing", "merge", "proofs", "growth"}
    if unknown:
        raise click.BadParameter(f"unknown parts {sorted(unknown)}", param_hint="--parts")
    settings = Settings.from_env()
    admin_dsn = resolve_database_url(settings)
    block = settings.block_max_ballots
    data_dir = Path(tempfile.mkdtemp(prefix="bench-log-"))
    key_file = data_dir / "log.key"
    key_file.write_text(bytes(SigningKey.generate()).hex())
    signer = LogSigner(load_or_create_key(key_file, data_dir, "log"), settings.log_origin)
    env = _batcher_env("", key_file, data_dir)
    dsn = asyncio.run(create_bench_database(admin_dsn, "log"))
    env["DATABASE_URL"] = dsn
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {
        "backlog": backlog,
        "runs": runs,
        "block_max_ballots": block,
        "block_max_ms": settings.block_max_ms,
        "body_bytes": _BODY_BYTES,
    }
    try:
        if "sealing" in chosen or "proofs" in chosen:
            seal_rates = []
            for run in range(runs if "sealing" in chosen else 1):
                r = asyncio.run(sealing_rate(dsn, f"bench-seal-{run}", signer, backlog, block))
                print(f"  sealing {backlog:,} waiting: {r:,.0f} ballots/s", flush=True)
                seal_rates.append(r)
            if "sealing" in chosen:
                seal = median(seal_rates)
                meta["sealing_runs"] = seal_rates
                rows.append(
                    _row(
                        f"sealing, {backlog:,} waiting",
                        seal,
                        "ballots/s",
                        ">= 50,000",
                        seal >= 50_000,
                    )
                )

        if "merge" in chosen:
            delay = asyncio.run(merge_delay(dsn, "bench-merge", env, rate, merge_seconds))
            meta["merge"] = delay
            label = f"merge delay at {delay['rate']:,.0f}/s"
            rows.append(_row(f"{label} p50", delay["p50"], "ms", "", True))
            rows.append(_row(f"{label} p99", delay["p99"], "ms", "<= 2,000", delay["p99"] <= 2000))

        if "proofs" in chosen:
            proofs, details = proofs_per_second(
                dsn,
                "bench-seal-0",
                env,
                port,
                connections=connections,
                seconds=proof_seconds,
                runs=runs,
                paths_count=proof_paths,
                client_cpus=client_cpus or None,
            )
            meta["proofs"] = details
            median_run = details["median_run"]
            cpu = median_run["server_cpu"]
            clean = details["failures"] == 0 and not details["exhausted"]
            rows.append(
                _row(
                    f"inclusion proofs ({backlog:,} log), 1 process, {details['client']}",
                    proofs,
                    "proofs/s",
                    ">= 5,000",
                    proofs >= 5000 and clean,
                )
            )
            rows.append(_row("  p50 latency", median_run["latency_ms"]["p50"], "ms", "", True))
            rows.append(_row("  p99 latency", median_run["latency_ms"]["p99"], "ms", "", True))
            rows.append(_row("  server CPU during proofs", cpu, "cores", "", True))
            rows.append(
                _row("  client CPU during proofs", median_run["client_cpu"], "cores", "", True)
            )
            db_cpu = details["median_run_database_cpu"]
            rows.append(_row("  database CPU during proofs", db_cpu, "cores", "", True))
            rows.append(
                _row(
                    "  proofs per core of server + database",
                    proofs / max(cpu + db_cpu, 1e-9),
                    "proofs/s",
                    "",
                    True,
                )
            )
            # on a machine shared with the client and PostgreSQL: what one busy core would serve
            rows.append(
                _row(
                    "  proofs per server core",
                    proofs / max(cpu, 1e-9),
                    "proofs/s",
                    ">= 5,000",
                    proofs / max(cpu, 1e-9) >= 5000 and clean,
                )
            )
            rows.append(_row("  failed requests", details["failures"], "", "0", clean))

        if "growth" in chosen and max_entries > 0:
            series = asyncio.run(growth(dsn, "bench-growth", signer, max_entries, block))
            meta["growth"] = series
            for size, r in series:
                rows.append(_row(f"sealing at {size:,} entries", r, "ballots/s", "", True))
            first, last = series[0][1], series[-1][1]
            ratio = last / first
            rows.append(
                _row(
                    f"rate at {series[-1][0]:,} / rate at {series[0][0]:,}",
                    ratio,
                    "ratio",
                    ">= 0.8",
                    ratio >= 0.8,
                )
            )
    finally:
        if not keep:
            asyncio.run(drop_bench_database(admin_dsn, dsn))
    write_results("log", rows, meta=meta)


def _row(metric: str, value: float, unit: str, target: str, ok: bool) -> dict[str, Any]:
    verdict: bool | str = ok if target else ""  # a verdict only against a target
    return {"metric": metric, "value": value, "unit": unit, "target": target, "ok": verdict}
