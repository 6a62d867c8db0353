"""``referendum bench roll-import``: voter-roll import rate and the server's peak memory.

A roll (``voter_id,credential``) of real Ed25519 keys (derived from seeds, cached as CSV under
``data_dir/bench``) is streamed over HTTP into a server running in a subprocess (this module
run with ``--serve``), once per run and roll size, each time into a fresh database and server
process, so its peak resident memory (``VmHWM``) belongs to that one import. The server keeps
each voter id only as its HMAC under a voter-id key made for that import. Two sizes show
whether memory grows with the roll. Each measurement is the median of ``--runs`` runs.
Targets: >= 100,000 rows/s; peak memory flat in the roll size (< 200 MB for 10,000,000 lines).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import click
from nacl.bindings import crypto_sign_seed_keypair

from bench.common import median, write_results
from referendum_service.db import resolve_database_url
from referendum_service.scratch import create_database, drop_database
from referendum_service.settings import Settings
from server.auth import create_api_key

__all__ = ["roll_import"]

TARGET_ROWS_PER_S = 100_000
TARGET_PEAK_MB = 200
_ELECTION_KEY = "02" + "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"


def roll_file(folder: Path, voters: int) -> Path:
    """A CSV roll (``voter_id,credential``) of ``voters`` real keys, generated once and
    cached."""
    path = folder / f"roll-credential-{voters}.csv"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with partial.open("w", encoding="ascii") as out:
        out.write("voter_id,credential\n")
        for start in range(0, voters, 10_000):
            lines = []
            for i in range(start, min(start + 10_000, voters)):
                seed = hashlib.sha256(b"bench-voter:%d" % i).digest()
                lines.append(f"v{i:08d},{crypto_sign_seed_keypair(seed)[0].hex()}\n")
            out.write("".join(lines))
    partial.rename(path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


async def _wait_ready(session: aiohttp.ClientSession, server: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise click.ClickException("the bench server exited during startup")
        try:
            async with session.get("/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise click.ClickException("the bench server did not become ready")


async def _file_chunks(path: Path) -> Any:
    with path.open("rb") as f:
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
            yield chunk


async def measure(dsn: str, token: str, path: Path, voters: int, commit: bool) -> dict[str, float]:
    """One import into a fresh server subprocess: rows/s, baseline and peak RSS, open time."""
    port = _free_port()
    # a fresh voter-id key per import: the server keeps HMAC(voter id) under it
    env = {**os.environ, "DATABASE_URL": dsn, "REFERENDUM_VOTER_ID_KEY": secrets.token_hex(32)}
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.roll_import", "--serve", str(port)], env=env
    )
    try:
        headers = {"Authorization": f"Bearer {token}"}
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", timeout=timeout) as http:
            await _wait_ready(http, server)
            baseline_kb = _memory_kb(server.pid, "VmRSS")
            rid = f"bench-{uuid.uuid4().hex[:12]}"
            definition = {
                "id": rid,
                "question": "bench?",
                "options": ["a", "b"],
                "min_selections": 1,
                "max_selections": 1,
                "opens_at": "2030-01-01T00:00:00Z",
                "closes_at": "2030-01-02T00:00:00Z",
                "revote_policy": "forbid",
                "threshold_k": 1,
                "trustees_n": 1,
                "election_public_key": _ELECTION_KEY,
            }
            async with http.post("/v1/referendums", json=definition, headers=headers) as r:
                if r.status != 201:
                    raise click.ClickException(f"create: {r.status} {await r.text()}")
            started = time.perf_counter()
            async with http.put(
                f"/v1/referendums/{rid}/roll",
                data=_file_chunks(path),
                headers={**headers, "Content-Type": "text/csv"},
            ) as r:
                if r.status != 200:
                    raise click.ClickException(f"import: {r.status} {await r.text()}")
            seconds = time.perf_counter() - started
            peak_kb = _memory_kb(server.pid, "VmHWM")
            open_s = float("nan")
            if commit:
                started = time.perf_counter()
                async with http.post(f"/v1/referendums/{rid}/open", headers=headers) as r:
                    if r.status != 200:
                        raise click.ClickException(f"open: {r.status} {await r.text()}")
                open_s = time.perf_counter() - started
        return {
            "rows_per_s": voters / seconds,
            "seconds": seconds,
            "baseline_mb": baseline_kb / 1024,
            "peak_mb": peak_kb / 1024,
            "open_s": open_s,
        }
    finally:
        server.terminate()
        server.wait(timeout=60)


async def _prepare(settings: Settings) -> tuple[str, str, str]:
    admin = await asyncio.to_thread(resolve_database_url, settings)
    dsn = await create_database(admin, prefix="referendum_bench")
    conn = await asyncpg.connect(dsn)
    try:
        token = await create_api_key(conn, "bench")
    finally:
        await conn.close()
    return admin, dsn, token


def key_check_rate(path: Path, runs: int) -> float:
    """Credential keys checked per second by one thread, in bulk as an import checks them
    (median of ``runs``): the bulk of an import's CPU time, which the server spreads over
    ``roll_check_threads`` threads."""
    from referendum_core.credential import bad_key_positions

    with path.open("rb") as f:
        f.readline()
        lines = [line for line in itertools.islice(f, 5000) if line.strip()]
    keys = b"".join(bytes.fromhex(line.split(b",")[1].strip().decode()) for line in lines)
    count = len(lines)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        assert bad_key_positions(keys) == []
        rates.append(count / (time.perf_counter() - started))
    return median(rates)


def voter_hash_rate(path: Path, runs: int) -> float:
    """Voter ids hashed per second by one thread (HMAC-SHA-256 under the voter-id key, as an
    import hashes every line's id), median of ``runs``."""
    from referendum_core.roll import VoterIdHasher

    with path.open("rb") as f:
        f.readline()
        ids = [line.split(b",", 1)[0] for line in itertools.islice(f, 50_000) if line.strip()]
    hasher = VoterIdHasher(secrets.token_bytes(32), "bench")
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        digests = [hasher(v) for v in ids]
        rates.append(len(digests) / (time.perf_counter() - started))
    return median(rates)


async def _run(sizes: list[int], runs: int, commit: bool) -> list[dict[str, Any]]:
    settings = Settings.from_env()
    folder = settings.data_dir / "bench"
    paths = {}
    for size in sizes:
        click.echo(f"roll of {size:,} voters: generating (cached in {folder}) ...")
        paths[size] = await asyncio.to_thread(roll_file, folder, size)
    rows: list[dict[str, Any]] = [
        {
            "metric": "credential key check, one thread",
            "value": key_check_rate(paths[sizes[0]], runs),
            "unit": "keys/s",
            "target": "",
            "ok": "",
        },
        {
            "metric": "voter-id keyed hash (HMAC-SHA-256), one thread",
            "value": voter_hash_rate(paths[sizes[0]], runs),
            "unit": "ids/s",
            "target": "",
            "ok": "",
        },
    ]
    for size in sizes:
        results = []
        for run in range(runs):
            admin, dsn, token = await _prepare(settings)  # a fresh database for each run
            try:
                result = await measure(dsn, token, paths[size], size, commit)
            finally:
                await drop_database(admin, dsn)
            click.echo(
                f"  {size:,} voters, run {run + 1}: {result['rows_per_s']:,.0f} rows/s, "
                f"peak {result['peak_mb']:.0f} MB, open {result['open_s']:.1f} s"
            )
            results.append(result)
        rate = median([r["rows_per_s"] for r in results])
        peak = median([r["peak_mb"] for r in results])
        rows.append(
            {
                "metric": f"import {size:,} voters",
                "value": rate,
                "unit": "rows/s",
                "target": f">= {TARGET_ROWS_PER_S:,}",
                "ok": rate >= TARGET_ROWS_PER_S,
            }
        )
        rows.append(
            {
                "metric": f"server peak RSS, {size:,} voters",
                "value": peak,
                "unit": "MB",
                "target": f"< {TARGET_PEAK_MB}",
                "ok": peak < TARGET_PEAK_MB,
            }
        )
        rows.append(
            {
                "metric": f"server RSS at start, {size:,} voters",
                "value": median([r["baseline_mb"] for r in results]),
                "unit": "MB",
                "target": "",
                "ok": "",
            }
        )
        if commit:
            rows.append(
                {
                    "metric": f"open (roll commitment), {size:,} voters",
                    "value": median([r["open_s"] for r in results]),
                    "unit": "s",
                    "target": "",
                    "ok": "",
                }
            )
    return rows


@click.command("roll-import")
@click.option(
    "--voters",
    type=click.IntRange(1000, 10_000_000),
    default=1_000_000,
    show_default=True,
    help="The large roll.",
)
@click.option(
    "--small",
    type=click.IntRange(1000, 10_000_000),
    default=200_000,
    show_default=True,
    help="The small roll (memory must not grow from it).",
)
@click.option("--runs", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option(
    "--open/--no-open",
    "commit",
    default=True,
    show_default=True,
    help="Also time the open transition (computing the roll commitment).",
)
def roll_import(voters: int, small: int, runs: int, commit: bool) -> None:
    """Import rolls over HTTP into a server subprocess: rows/s and the server's peak memory."""
    rows = asyncio.run(_run(sorted({small, voters}), runs, commit))
    write_results(
        "roll_import",
        rows,
        meta={"voters": voters, "small": small, "runs": runs, "statistic": "median"},
    )


def _serve(port: int) -> None:
    """The bench server: the application alone in this process (DATABASE_URL set)."""
    from aiohttp import web

    from server.app import make_app

    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is absent only on Windows
        pass
    from referendum_service.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings)
    web.run_app(
        make_app(settings),
        host="127.0.0.1",
        port=port,
        access_log=None,
        handler_cancellation=False,
        print=None,
    )


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        _serve(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m bench.roll_import --serve PORT (use `referendum bench`)")
