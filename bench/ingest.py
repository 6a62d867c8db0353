"""``referendum bench ingest``: fully verified ballots per second through HTTP and the database.

Method:

* Ballots are generated before any timing, in a process pool (one fresh voter and one valid
  yes/no ballot each), stored as ready-to-send JSON bytes; the load client does no
  cryptography. The roll holds every generated voter; each ballot is sent once.
* Servers run as a subprocess (``referendum serve``) on 127.0.0.1 against a fresh database
  on the configured PostgreSQL (``DATABASE_URL``, else the embedded one).
* Saturation runs (1 process inline, 1 process with verify workers, 2 processes) use wrk
  (``bench.loadgen``; the aiohttp client there when wrk is absent, named in the output and
  the JSON meta) with ``--concurrency`` connections for ``--seconds``: each run POSTs its own
  slice of pre-made ballots (each wrk thread a disjoint part, each ballot sent once), and
  only 201 answers count as accepted; any other answer or socket error is reported (and fails
  the row). Latency percentiles are wrk's, over every answer.
* The 80% run keeps the aiohttp open-loop pacer (one uvloop process): stock wrk cannot pace
  at a constant rate nor count latency from each request's scheduled start, which this run
  must (a stall is not hidden). It sends ``0.8 × saturation × --seconds`` ballots.
* The bare verifier's rate (``verify_ballot`` in a loop, one core) is measured in the same run.
* CPU accounting: on a small machine the client and PostgreSQL share the cores with the
  server, so each run reports the server processes' CPU use (from psutil) and the client's
  own; "per server core" divides the rate by the server's CPU fraction.

Each throughput figure is the median of ``--runs`` runs.

Under attack (``--attack``, the default; ``--no-throughput`` runs only this part):

* Honest yes/no ballots are paced at ``--attack-rate`` (a fixed, modest rate, so that an
  attacker, not saturation, is what moves their latency) for ``--attack-seconds``, by the
  same open-loop pacer and with the same p50/p99 (of 201 answers, from each request's
  scheduled start) as the 80% run; every other answer (503 above all) is counted apart.
* Each attack (:data:`ATTACK_CASES`) is one such run while an attacker of
  :mod:`bench.attack` runs in its own process, started ``SETTLE_S`` before it and stopped
  after it, next to a quiet run just before it on the same server (once the server is idle
  again after the previous attack's backlog): costly invalid ballots
  (64 options, a valid voter signature, another ballot's sum proof) on 4 and on 32
  connections, against a server with its default settings; 16 slow-body connections (a
  partial ballot, 2 bytes a second) against one whose ``admission_limit`` is
  ``--slow-admission-limit`` (16: the slow connections can take every place).
* An honest ballot not answered ``--attack-seconds`` after its scheduled start is given up
  and counted as a ``timeout`` failure (so that a server falling behind cannot stretch a
  run without bound); the p50/p99 are of the 201 answers.
* A row is ok when the honest p99 under attack is at most twice the quiet one and every
  honest ballot got 201. The attacker's outcomes (400, 429, 408, closed, open …) are in the
  row and in the JSON, with its CPU use.

One run per figure: the attack part takes 6 to 9 × ``--attack-seconds`` (the attacked runs
wait out their timeouts) plus two server starts. On a machine so loaded that 16 honest
ballots are in progress at once (p50 of ~80 ms at 200/s), the quiet run beside the slow
bodies gets 503s of its own: raise ``--slow-admission-limit`` (and read the row so) there.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson

from bench.attack import AttackReport
from bench.common import drop_bench_database, median, write_results
from bench.loadgen import LoadResult, children, cpu_seconds, descendants

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
    """``count`` voters from ``start``: (voter id, public key, JSON ballot bytes)."""
    from referendum_core.client import make_ballot, new_voter_key

    spec = _spec()
    made = []
    for i in range(start, start + count):
        voter = f"voter-{i:07d}"
        secret, public = new_voter_key()
        body = make_ballot(spec, voter, secret, [1, 0] if i % 3 else [0, 1])
        made.append((voter, public, orjson.dumps(body)))
    return made


def generate(count: int, processes: int) -> list[tuple[str, bytes, bytes]]:
    """Every ballot of the benchmark, made in ``processes`` worker processes."""
    chunk = 500
    jobs = [(s, min(chunk, count - s)) for s in range(0, count, chunk)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.starmap(_make_ballots, jobs)
    return [item for part in parts for item in part]


def bare_verifier_rate(samples: list[tuple[str, bytes, bytes]], runs: int) -> tuple[float, float]:
    """``verify_ballot`` over pre-made ballots in a loop on this core, median of ``runs``.

    Returns (ballots per wall second, ballots per CPU second of this process): on a shared,
    loaded machine only the second compares with a server's rate per CPU second.
    """
    from referendum_core.ballot import verify_ballot

    spec = _spec()
    parsed = [(orjson.loads(body), public) for _, public, body in samples]
    rates, cpu_rates = [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        for body, public in parsed:
            verify_ballot(spec, body, public)
        rates.append(len(parsed) / (time.perf_counter() - start))
        cpu_rates.append(len(parsed) / max(time.process_time() - cpu_start, 1e-9))
    return median(rates), median(cpu_rates)


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
    referendum of :func:`bench.attack.attack_spec` with them on its roll.
    """
    import asyncpg

    from bench.attack import attack_spec, create_attack_referendum
    from referendum_service.scratch import create_database
    from server.referendums import ReferendumDefinition, create_referendum, transition
    from server.roll import import_roll

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
            await import_roll(conn, REFERENDUM, _roll_csv(voters), "csv", lines_conn=lines_conn)
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


# --- the server under test -----------------------------------------------------------------


# Saturation runs push far more ballots at once than a server's defaults admit.
SATURATION_ENV = {
    "REFERENDUM_VOTER_RATE_PER_MINUTE": "100",
    "REFERENDUM_ADMISSION_LIMIT": "20000",
    "REFERENDUM_QUEUE_LIMIT": "20000",
}


@contextlib.contextmanager
def server(
    dsn: str,
    port: int,
    workers: int,
    verify_workers: int,
    data_dir: Path,
    settings_env: dict[str, str] | None = None,
) -> Iterator[int]:
    """``workers`` server processes on ``port``; yields the supervisor's pid.

    ``settings_env`` (``REFERENDUM_*`` variables) defaults to :data:`SATURATION_ENV`; the
    attack runs pass their own, keeping the server's defaults for the rest.
    """
    env = {
        **os.environ,
        "DATABASE_URL": dsn,
        "REFERENDUM_HOST": "127.0.0.1",
        "REFERENDUM_PORT": str(port),
        "REFERENDUM_WORKERS": str(workers),
        "REFERENDUM_VERIFY_WORKERS": str(verify_workers),
        "REFERENDUM_DATA_DIR": str(data_dir),
        "REFERENDUM_LOG_LEVEL": "warning",
        **(SATURATION_ENV if settings_env is None else settings_env),
    }
    referendum = str(Path(sys.executable).with_name("referendum"))
    process = subprocess.Popen([referendum, "serve", "--no-migrate"], env=env)
    try:
        asyncio.run(_wait_ready(f"http://127.0.0.1:{port}/livez", workers, process))
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _wait_ready(url: str, workers: int, process: subprocess.Popen[bytes]) -> None:
    import aiohttp

    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while True:
            if process.poll() is not None:
                raise click.ClickException("the server exited during start-up")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200 and len(children(process.pid)) >= workers:
                        return
            if time.monotonic() > deadline:
                raise click.ClickException("the server did not start within 60 s")
            await asyncio.sleep(0.1)


# --- load ------------------------------------------------------------------------------

SOCKET_ERROR = 0
"""The status a paced run counts a request under when no answer came (a socket error)."""
TIMED_OUT = -1
"""The status a paced run counts a request under when it gave up waiting for the answer."""
_FAILURE_NAMES = {SOCKET_ERROR: "socket-error", TIMED_OUT: "timeout"}


@dataclass
class Run:
    """One measured run."""

    accepted: int
    seconds: float
    latencies_ms: list[float]
    other_statuses: dict[int, int]
    server_cpu: float  # fraction of one core, summed over server processes
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _closed_loop(
    url: str, bodies: list[bytes], concurrency: int
) -> tuple[int, float, list[float], dict[int, int]]:
    import aiohttp

    latencies: list[float] = []
    others: dict[int, int] = {}
    accepted = 0
    feed = iter(bodies)
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal accepted
            for body in feed:
                start = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 201:
                        accepted += 1
                        latencies.append((time.perf_counter() - start) * 1000)
                    else:
                        others[response.status] = others.get(response.status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return accepted, seconds, latencies, others


async def _open_loop(
    url: str, bodies: list[bytes], rate: float, timeout_s: float | None = None
) -> tuple[int, float, list[float], dict[int, int]]:
    import aiohttp

    latencies: list[float] = []
    others: dict[int, int] = {}
    accepted = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(body: bytes) -> int:
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status

        async def send(body: bytes, scheduled: float) -> None:
            nonlocal accepted
            try:
                if timeout_s is None:
                    status = await post(body)
                else:
                    # from the scheduled start, like the latency
                    async with asyncio.timeout(scheduled + timeout_s - time.perf_counter()):
                        status = await post(body)
            except TimeoutError:
                status = TIMED_OUT
            except aiohttp.ClientError:
                status = SOCKET_ERROR  # under attack a connection may fail: count it
            if status == 201:
                accepted += 1
                # from the scheduled start: a late send counts against the server
                latencies.append((time.perf_counter() - scheduled) * 1000)
            else:
                others[status] = others.get(status, 0) + 1

        tasks = []
        start = time.perf_counter()
        for i, body in enumerate(bodies):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(body, scheduled)))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - start
    return accepted, seconds, latencies, others


def measure(
    url: str,
    bodies: list[bytes],
    root: int,
    *,
    concurrency: int,
    rate: float | None,
    timeout_s: float | None = None,
) -> Run:
    """One run: closed loop (``rate`` None) or paced at ``rate`` requests/s.

    A paced request not answered ``timeout_s`` after its scheduled start is given up and
    counted as :data:`TIMED_OUT` (None: waited for).
    """
    import uvloop

    pids = descendants(root)[
        1:
    ]  # not the supervisor; after warm-up: proof-checking processes start on demand
    server_before = cpu_seconds(pids)
    client_before = resource.getrusage(resource.RUSAGE_SELF)
    if rate is None:
        result = uvloop.run(_closed_loop(url, bodies, concurrency))
    else:
        result = uvloop.run(_open_loop(url, bodies, rate, timeout_s))
    client_after = resource.getrusage(resource.RUSAGE_SELF)
    accepted, seconds, latencies, others = result
    client = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    return Run(
        accepted,
        seconds,
        latencies,
        others,
        (cpu_seconds(pids) - server_before) / seconds,
        client / seconds,
    )


def _commit_stats(port: int) -> dict[str, float]:
    """Mean group-commit size and transaction time, from the server's own metrics."""
    import urllib.request

    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (
            "referendum_ingest_batch_size_sum",
            "referendum_ingest_batch_size_count",
            "referendum_ingest_commit_seconds_sum",
        ):
            values[name] = float(value)
    batches = max(values.get("referendum_ingest_batch_size_count", 0.0), 1.0)
    return {
        "batches": batches,
        "mean_batch_ballots": round(values.get("referendum_ingest_batch_size_sum", 0) / batches, 1),
        "mean_commit_ms": round(
            1000 * values.get("referendum_ingest_commit_seconds_sum", 0) / batches, 2
        ),
    }


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


@dataclass
class Stats:
    """What a row reports about one run, whichever client made it."""

    rate: float  # accepted (201) per second
    p50: float
    p99: float
    server_cpu: float
    client_cpu: float
    client: str
    failures: dict[str, int]

    @classmethod
    def of_run(cls, run: Run) -> Stats:
        return cls(
            run.rate,
            run.percentile(0.5),
            run.percentile(0.99),
            run.server_cpu,
            run.client_cpu,
            "aiohttp",
            {_FAILURE_NAMES.get(k, str(k)): v for k, v in run.other_statuses.items()},
        )

    @classmethod
    def of_load(cls, result: LoadResult) -> Stats:
        failures = result.failures(201)
        if result.exhausted:
            failures["exhausted"] = result.filler
        return cls(
            result.rate(201),
            result.latency_ms["p50"],
            result.latency_ms["p99"],
            result.server_cpu,
            result.client_cpu,
            result.client,
            failures,
        )

    @property
    def per_core(self) -> float:
        return self.rate / max(self.server_cpu, 1e-9)


def _row(
    metric: str,
    value: float,
    unit: str,
    *,
    run: Stats | None = None,
    target: str = "",
    ok: bool | None = None,
) -> dict[str, Any]:
    if run is not None and run.failures and ok is not None:
        ok = False
    return {
        "metric": metric,
        "value": round(value, 3),
        "unit": unit,
        "p50_ms": round(run.p50, 2) if run else "",
        "p99_ms": round(run.p99, 2) if run else "",
        "server_cpu": round(run.server_cpu, 2) if run else "",
        "client_cpu": round(run.client_cpu, 2) if run else "",
        "per_server_core": round(run.per_core) if run else "",
        "client": run.client if run else "",
        "failures": sum(run.failures.values()) if run else "",
        "target": target,
        "ok": "" if ok is None else ok,
    }


def _median_run(runs: list[Run]) -> Run:
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[len(ordered) // 2]


def _saturation(
    label: str,
    base_url: str,
    path: str,
    supply: BallotSupply,
    root: int,
    *,
    runs: int,
    per_run: int,
    seconds: float,
    concurrency: int,
    threads: int,
    client_cpus: str | None,
) -> tuple[Stats, list[dict[str, Any]]]:
    """``runs`` closed-loop runs by :func:`bench.loadgen.run_load`; the median one and all."""
    from bench.loadgen import run_load

    pids = descendants(root)
    measured = []
    for _ in range(runs):
        result = run_load(
            base_url,
            supply.take(per_run),
            server_pids=pids,
            seconds=seconds,
            connections=concurrency,
            method="POST",
            path=path,
            threads=threads,
            cpus=client_cpus,
        )
        stats = Stats.of_load(result)
        if stats.failures:
            click.echo(f"  {label}: FAILURES {stats.failures}", err=True)
        click.echo(
            f"  {label} ({result.client}): {stats.rate:,.0f}/s p50 {stats.p50:.1f} ms "
            f"p99 {stats.p99:.1f} ms server cpu {stats.server_cpu:.2f} "
            f"client cpu {stats.client_cpu:.2f} per server core {stats.per_core:,.0f}",
            err=True,
        )
        measured.append((stats, result.as_json()))
    ordered = sorted(measured, key=lambda m: m[0].rate)
    return ordered[len(ordered) // 2][0], [m[1] for m in measured]


def _series(
    label: str,
    url: str,
    supply: BallotSupply,
    root: int,
    *,
    runs: int,
    per_run: int,
    concurrency: int,
    rate: float | None = None,
) -> Run:
    measured = []
    for _ in range(runs):
        run = measure(url, supply.take(per_run), root, concurrency=concurrency, rate=rate)
        if run.other_statuses:
            click.echo(f"  {label}: non-201 answers {run.other_statuses}", err=True)
        click.echo(
            f"  {label}: {run.rate:,.0f}/s p50 {run.percentile(0.5):.1f} ms "
            f"p99 {run.percentile(0.99):.1f} ms server cpu {run.server_cpu:.2f} "
            f"client cpu {run.client_cpu:.2f}",
            err=True,
        )
        measured.append(run)
    return _median_run(measured)


@click.command("ingest")
@click.option("--runs", default=3, show_default=True, help="Runs per figure (medians).")
@click.option(
    "--per-run",
    default=10000,
    show_default=True,
    help="Ballots made for each saturation run (more than it can send in --seconds).",
)
@click.option("--seconds", default=4.0, show_default=True, help="Length of a saturation run.")
@click.option("--concurrency", default=256, show_default=True, help="Closed-loop connections.")
@click.option("--threads", default=1, show_default=True, help="wrk threads.")
@click.option(
    "--client-cpus", default="", help="Pin the load client (taskset -c list); empty: not pinned."
)
@click.option("--port", default=18642, show_default=True)
@click.option("--gen-processes", default=os.cpu_count() or 1, show_default=True)
@click.option(
    "--pool-workers",
    default=os.cpu_count() or 1,
    show_default=True,
    help="verify_workers for the process-pool variant.",
)
@click.option(
    "--throughput/--no-throughput",
    default=True,
    show_default=True,
    help="The saturation, 80% paced and bare verifier rows.",
)
@click.option(
    "--attack/--no-attack",
    default=True,
    show_default=True,
    help="The under-attack rows (costly invalid ballots, slow bodies), each beside a quiet run.",
)
@click.option(
    "--attack-seconds", default=10.0, show_default=True, help="Length of each attack-part run."
)
@click.option(
    "--attack-rate",
    default=200.0,
    show_default=True,
    help="Honest yes/no ballots per second (paced) in the attack part.",
)
@click.option(
    "--attack-voters",
    default=1,
    show_default=True,
    help="Voters on the roll whose credentials the costly attacker signs with.",
)
@click.option(
    "--slow-admission-limit",
    default=16,
    show_default=True,
    help="admission_limit of the slow-body server (the slow connections take every place); "
    "0 keeps the server's default.",
)
def ingest(
    runs: int,
    per_run: int,
    seconds: float,
    concurrency: int,
    threads: int,
    client_cpus: str,
    port: int,
    gen_processes: int,
    pool_workers: int,
    throughput: bool,
    attack: bool,
    attack_seconds: float,
    attack_rate: float,
    attack_voters: int,
    slow_admission_limit: int,
) -> None:
    """Accepted ballots/s and latency of one and two server processes, and under attack."""
    from bench.loadgen import client_name
    from referendum_service.db import resolve_database_url
    from referendum_service.settings import Settings

    if not (throughput or attack):
        raise click.UsageError("nothing to measure: --no-throughput and --no-attack")
    settings = Settings.from_env()
    admin_dsn = resolve_database_url(settings)
    load_at_start = list(os.getloadavg())
    client = client_name()
    attack_plan = _AttackPlan(
        seconds=attack_seconds,
        rate=attack_rate,
        voters=max(1, attack_voters),
        slow_admission_limit=slow_admission_limit,
        port=port,
        concurrency=concurrency,
    )
    # saturation: inline, pool, two processes; paced: one process (80% of inline)
    total = WARM_BALLOTS
    if throughput:
        total += per_run * runs * 4 + 4 * 300
    if attack:
        total += len(ATTACK_CASES) * 2 * attack_plan.honest_count + 1  # + the slow body
    click.echo(f"generating {total:,} ballots in {gen_processes} processes …", err=True)
    made = generate(total, gen_processes)
    costly: list[bytes] = []
    attackers: list[tuple[str, bytes, bytes]] = []
    if attack:
        attackers, costly = _attack_ballots(attack_plan.voters, gen_processes)
    dsn = asyncio.run(_create_database(admin_dsn, made, attackers))
    warm_supply = BallotSupply([body for _, _, body in made[:WARM_BALLOTS]])
    supply = BallotSupply([body for _, _, body in made[WARM_BALLOTS:]])
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {"runs": runs, "parts": {"throughput": throughput, "attack": attack}}
    try:
        if throughput:
            click.echo(f"load client for saturation runs: {client}", err=True)
            verifier, verifier_cpu = bare_verifier_rate(made[:2000], runs)
            click.echo(
                f"  bare verifier: {verifier:,.0f}/s wall, {verifier_cpu:,.0f} per CPU second",
                err=True,
            )
            plan = _Plan(
                runs=runs,
                per_run=per_run,
                seconds=seconds,
                concurrency=concurrency,
                threads=threads,
                client_cpus=client_cpus or None,
                port=port,
                pool_workers=pool_workers,
            )
            measured = _measure_servers(plan, dsn, warm_supply, supply, Path(settings.data_dir))
            rows += _rows(measured, verifier, verifier_cpu, pool_workers)
            meta.update(_throughput_meta(plan, measured, client))
        if attack:
            attacked = _measure_attacks(
                attack_plan, dsn, warm_supply, supply, costly, Path(settings.data_dir)
            )
            rows += _attack_rows(attack_plan, attacked)
            meta["attack"] = _attack_meta(attack_plan, attacked, costly)
    finally:
        asyncio.run(drop_bench_database(admin_dsn, dsn))
    meta.update(
        {
            "cpus": os.cpu_count(),
            "load_average_at_start": load_at_start,
            "load_average_at_end": list(os.getloadavg()),
            "note": (
                "client, server(s) and PostgreSQL share this machine's cores; server_cpu and "
                "client_cpu are cores used during the run (from psutil and the client's rusage)"
            ),
        }
    )
    write_results("ingest", rows, meta=meta)


WARM_BALLOTS = 2000
"""Ballots kept for warm-ups (300 a server started) and the bare verifier's sample."""


def _throughput_meta(plan: _Plan, measured: _Measured, client: str) -> dict[str, Any]:
    return {
        "saturation_client": client,
        "saturation_seconds": plan.seconds,
        "ballots_made_per_saturation_run": plan.per_run,
        "closed_loop_connections": plan.concurrency,
        "client_threads": plan.threads,
        "client_cpus": plan.client_cpus,
        "paced_client": "aiohttp open-loop pacer (latency from scheduled start)",
        "paced_rate": round(measured.paced_rate, 1),
        "paced_ballots_per_run": measured.paced_count,
        "ballots_stored": measured.stored,
        "one_process_commits": measured.commit_stats,
        "saturation_runs": measured.details,
        "failures": {
            "inline": measured.inline.failures,
            "pooled": measured.pooled.failures,
            "two": measured.two.failures,
            "paced": measured.paced.failures,
        },
    }


@dataclass(frozen=True)
class _Plan:
    """How the command's runs are sized (its options)."""

    runs: int
    per_run: int
    seconds: float
    concurrency: int
    threads: int
    client_cpus: str | None
    port: int
    pool_workers: int


@dataclass
class _Measured:
    """Every server configuration's figures, and what the JSON meta says about them."""

    inline: Stats
    paced: Stats
    pooled: Stats
    two: Stats
    paced_rate: float
    paced_count: int
    commit_stats: dict[str, float]
    stored: int
    details: dict[str, Any]


def _measure_servers(
    plan: _Plan, dsn: str, warm_supply: BallotSupply, supply: BallotSupply, data_dir: Path
) -> _Measured:
    """Inline (saturated and paced at 80%), with verify workers, and two processes."""
    base_url = f"http://127.0.0.1:{plan.port}"
    path = BALLOTS_PATH
    url = base_url + path
    details: dict[str, Any] = {}

    def saturation(label: str, root: int) -> Stats:
        stats, runs_json = _saturation(
            label,
            base_url,
            path,
            supply,
            root,
            runs=plan.runs,
            per_run=plan.per_run,
            seconds=plan.seconds,
            concurrency=plan.concurrency,
            threads=plan.threads,
            client_cpus=plan.client_cpus,
        )
        details[label] = runs_json
        return stats

    def warm_up(root: int) -> None:
        measure(url, warm_supply.take(300), root, concurrency=plan.concurrency, rate=None)

    with server(dsn, plan.port, 1, 0, data_dir) as root:
        warm_up(root)
        inline = saturation("1 process, inline", root)
        paced_rate = 0.8 * inline.rate
        paced_count = max(100, min(plan.per_run, int(paced_rate * plan.seconds)))
        paced = Stats.of_run(
            _series(
                "1 process, 80% paced",
                url,
                supply,
                root,
                runs=plan.runs,
                per_run=paced_count,
                concurrency=plan.concurrency,
                rate=paced_rate,
            )
        )
        commit_stats = _commit_stats(plan.port)
    with server(dsn, plan.port, 1, plan.pool_workers, data_dir) as root:
        warm_up(root)
        pooled = saturation(f"1 process, {plan.pool_workers} verify workers", root)
    with server(dsn, plan.port, 2, 0, data_dir) as root:
        warm_up(root)
        two = saturation("2 processes, inline", root)
    stored = asyncio.run(_stored(dsn))
    return _Measured(
        inline, paced, pooled, two, paced_rate, paced_count, commit_stats, stored, details
    )


def _rows(
    m: _Measured, verifier: float, verifier_cpu: float, pool_workers: int
) -> list[dict[str, Any]]:
    """The table: each rate, and each ratio against the bare verifier or one process."""
    inline, pooled, paced, two = m.inline, m.pooled, m.paced, m.two
    per_core = inline.per_core
    return [
        _row("bare verifier, one core", verifier, "ballots/s"),
        _row("bare verifier, per CPU second", verifier_cpu, "ballots/s/core"),
        _row(
            "1 process inline, saturation",
            inline.rate,
            "ballots/s",
            run=inline,
            target=">= 3000",
            ok=inline.rate >= 3000,
        ),
        _row("1 process inline, per server core", per_core, "ballots/s/core", run=inline),
        _row(
            f"1 process + {pool_workers} verify workers, saturation",
            pooled.rate,
            "ballots/s",
            run=pooled,
        ),
        _row(
            "1 process, paced at 80% of saturation",
            paced.rate,
            "ballots/s",
            run=paced,
            target="p99 <= 50 ms",
            ok=paced.p99 <= 50,
        ),
        _row(
            "inline saturation / bare verifier",
            inline.rate / verifier,
            "ratio",
            target=">= 0.85",
            ok=inline.rate / verifier >= 0.85,
        ),
        _row(
            "per server core / bare verifier per CPU second",
            per_core / verifier_cpu,
            "ratio",
            target=">= 0.85",
            ok=per_core / verifier_cpu >= 0.85,
        ),
        _row("2 processes, saturation", two.rate, "ballots/s", run=two),
        _row(
            "2 processes, per server core / bare verifier per CPU second",
            two.per_core / verifier_cpu,
            "ratio",
            run=two,
        ),
        _row(
            "2 processes / 1 process",
            two.rate / inline.rate,
            "ratio",
            target=">= 1.8",
            ok=two.rate / inline.rate >= 1.8,
        ),
        _row(
            "2 processes / 1 process, per server core",
            two.per_core / per_core,
            "ratio",
        ),
    ]


# --- under attack ---------------------------------------------------------------------------

SETTLE_S = 1.0
"""How long an attack runs before the honest run starts: its steady state, not its ramp-up."""


@dataclass(frozen=True)
class _AttackCase:
    """One attack of the table: what kind, on how many connections."""

    label: str
    kind: str  # "costly" or "slow"
    connections: int


ATTACK_CASES = (
    _AttackCase("4 connections of costly invalid ballots", "costly", 4),
    _AttackCase("32 connections of costly invalid ballots", "costly", 32),
    _AttackCase("16 slow-body connections", "slow", 16),
)


@dataclass(frozen=True)
class _AttackPlan:
    """How the attack part is sized (its options)."""

    seconds: float
    rate: float
    voters: int
    slow_admission_limit: int
    port: int
    concurrency: int

    @property
    def honest_count(self) -> int:
        """Honest ballots of one paced run."""
        return max(100, int(self.rate * self.seconds))


@dataclass
class _Attacked:
    """One attack and the quiet run just before it, on the same server."""

    case: _AttackCase
    server: str  # the settings that server ran with, as the table names them
    quiet: Run
    attacked: Run
    report: AttackReport


def _attack_ballots(
    voters: int, processes: int
) -> tuple[list[tuple[str, bytes, bytes]], list[bytes]]:
    """The attacking voters (id, public key, secret) and their costly invalid ballots."""
    from bench.attack import attack_spec, costly_invalid_ballots
    from referendum_core.client import new_voter_key

    attackers = []
    for i in range(voters):
        secret, public = new_voter_key()
        attackers.append((f"attacker-{i:04d}", public, secret))
    spec = attack_spec(_spec().election_public_key)
    click.echo(
        f"making costly invalid ballots ({len(spec.options)} options) for {voters} attacking "
        "voter(s) …",
        err=True,
    )
    signers = [(voter, secret) for voter, _, secret in attackers]
    return attackers, costly_invalid_ballots(spec, signers, processes=processes)


def _measure_attacks(
    plan: _AttackPlan,
    dsn: str,
    warm_supply: BallotSupply,
    supply: BallotSupply,
    costly: list[bytes],
    data_dir: Path,
) -> list[_Attacked]:
    """Each attack of :data:`ATTACK_CASES` during a paced honest run, after a quiet one.

    The costly attacks go to a server with its default settings; the slow bodies to one
    whose ``admission_limit`` is ``--slow-admission-limit`` (the slow connections can take
    every place: without body deadlines, honest ballots then get 503).
    """
    from bench.attack import (
        ATTACK_REFERENDUM,
        AttackProcess,
        CostlyAttacker,
        SlowBodyAttacker,
    )

    host = "127.0.0.1"
    url = f"http://{host}:{plan.port}{BALLOTS_PATH}"
    attack_path = f"/v1/referendums/{ATTACK_REFERENDUM}/ballots"
    slow_body = supply.take(1)[0]  # a real ballot's bytes, never sent in full
    slow_env: dict[str, str] = {}
    slow_server = "server defaults"
    if plan.slow_admission_limit > 0:
        slow_env = {"REFERENDUM_ADMISSION_LIMIT": str(plan.slow_admission_limit)}
        slow_server = f"admission_limit {plan.slow_admission_limit}"
    groups: list[tuple[dict[str, str], str, list[_AttackCase]]] = [
        ({}, "server defaults", [c for c in ATTACK_CASES if c.kind == "costly"]),
        (slow_env, slow_server, [c for c in ATTACK_CASES if c.kind == "slow"]),
    ]

    def honest(label: str, root: int) -> Run:
        run = measure(
            url,
            supply.take(plan.honest_count),
            root,
            concurrency=plan.concurrency,
            rate=plan.rate,
            timeout_s=plan.seconds,  # a server that falls behind must not stretch the run
        )
        failures = Stats.of_run(run).failures
        others = f" non-201 answers {failures}" if failures else ""
        click.echo(
            f"  honest {plan.rate:g}/s, {label}: {run.rate:,.0f}/s p50 "
            f"{run.percentile(0.5):.1f} ms p99 {run.percentile(0.99):.1f} ms server cpu "
            f"{run.server_cpu:.2f}{others}",
            err=True,
        )
        return run

    def attacker(case: _AttackCase) -> CostlyAttacker | SlowBodyAttacker:
        if case.kind == "costly":
            return CostlyAttacker(host, plan.port, attack_path, costly, case.connections)
        return SlowBodyAttacker(host, plan.port, BALLOTS_PATH, slow_body, case.connections)

    results = []
    for env, server_label, cases in groups:
        with server(dsn, plan.port, 1, 0, data_dir, env) as root:
            # closed loop on a few connections: a small admission limit must not refuse it
            measure(url, warm_supply.take(300), root, concurrency=8, rate=None)
            for case in cases:
                _wait_idle(root)  # the previous attack's backlog must not slow the quiet run
                quiet = honest(f"quiet ({server_label})", root)
                process = AttackProcess(
                    attacker(case), max_seconds=SETTLE_S + 3 * plan.seconds + 60
                )
                with process:
                    time.sleep(SETTLE_S)
                    attacked = honest(f"under {case.label} ({server_label})", root)
                assert process.report is not None  # set on leaving the block
                click.echo(
                    f"  attacker, {case.label}: {process.report.rate:,.0f}/s "
                    f"{process.report.summary()} cpu {process.report.cpu:.2f}",
                    err=True,
                )
                results.append(_Attacked(case, server_label, quiet, attacked, process.report))
    return results


def _wait_idle(
    root: int, *, cores: float = 0.2, window_s: float = 0.5, limit_s: float = 30
) -> None:
    """Wait (up to ``limit_s``) until the server uses under ``cores`` over ``window_s``."""
    pids = descendants(root)[1:]
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = cpu_seconds(pids)
        time.sleep(window_s)
        if (cpu_seconds(pids) - before) / window_s < cores:
            return
    click.echo(f"  the server was still busy after {limit_s:g} s; measuring anyway", err=True)


def _attack_rows(plan: _AttackPlan, attacked: list[_Attacked]) -> list[dict[str, Any]]:
    """Per attack: the quiet run's rate, then the attacked run's p99 against the quiet one."""
    rows = []
    for a in attacked:
        quiet, under = Stats.of_run(a.quiet), Stats.of_run(a.attacked)
        ratio = under.p99 / quiet.p99 if quiet.p99 > 0 else float("nan")
        before = _row(
            f"honest {plan.rate:g}/s, quiet ({a.server})", quiet.rate, "ballots/s", run=quiet
        )
        during = _row(
            f"honest {plan.rate:g}/s, under {a.case.label} ({a.server})",
            ratio,
            "x quiet p99",
            run=under,
            target="<= 2, no honest 503",
            ok=ratio <= 2 and not under.failures,
        )
        before.update(honest_503=quiet.failures.get("503", 0), attacker="")
        during.update(honest_503=under.failures.get("503", 0), attacker=a.report.summary())
        rows += [before, during]
    return rows


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "accepted": run.accepted,
        "seconds": round(run.seconds, 3),
        "p50_ms": round(run.percentile(0.5), 2),
        "p99_ms": round(run.percentile(0.99), 2),
        "max_ms": round(max(run.latencies_ms), 2) if run.latencies_ms else None,
        "other_statuses": Stats.of_run(run).failures,
        "server_cpu": round(run.server_cpu, 3),
        "client_cpu": round(run.client_cpu, 3),
    }


def _attack_meta(
    plan: _AttackPlan, attacked: list[_Attacked], costly: list[bytes]
) -> dict[str, Any]:
    from bench.attack import ATTACK_OPTIONS, SLOW_INTERVAL_S, SLOW_STEP_BYTES

    return {
        "honest_rate": plan.rate,
        "honest_ballots_per_run": plan.honest_count,
        "honest_client": "aiohttp open-loop pacer (latency from scheduled start), as the 80% run",
        "settle_seconds": SETTLE_S,
        "costly_ballot": {
            "options": ATTACK_OPTIONS,
            "selections": f"1..{ATTACK_OPTIONS}",
            "ciphertexts": ATTACK_OPTIONS,
            "sum_proof_branches": ATTACK_OPTIONS,
            "json_bytes": len(costly[0]) if costly else 0,
            "distinct_bodies": len(costly),
            "attacking_voters": plan.voters,
            "invalid_because": "its sum proof is another ballot's; its signature verifies",
        },
        "slow_body": {
            "interval_s": SLOW_INTERVAL_S,
            "step_bytes": SLOW_STEP_BYTES,
            "admission_limit": plan.slow_admission_limit or "server default",
        },
        "runs": [
            {
                "attack": a.case.label,
                "kind": a.case.kind,
                "connections": a.case.connections,
                "server": a.server,
                "quiet": _run_json(a.quiet),
                "attacked": _run_json(a.attacked),
                "attacker": a.report.as_json(),
            }
            for a in attacked
        ],
    }
