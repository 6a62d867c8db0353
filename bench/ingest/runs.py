"""``bench ingest``'s runs: the bare verifier, saturation and paced runs, and their rows."""

from __future__ import annotations

import asyncio
import resource
import time
from dataclasses import dataclass
from typing import Any

import click
import orjson

from bench.common import median
from bench.ingest.setup import BallotSupply, _spec
from bench.loadgen import LoadResult, cpu_seconds, descendants


def bare_verifier_rate(samples: list[tuple[str, bytes, bytes]], runs: int) -> tuple[float, float]:
    """``verify_ballot`` over pre-made ballots in a loop on this core, median of ``runs``.

    Returns (ballots per wall second, ballots per CPU second of this process): on a shared,
    loaded machine only the second compares with a server's rate per CPU second.
    """
    from referendum_core.ballot import verify_ballot

    spec = _spec()
    parsed = [orjson.loads(body) for _, _, body in samples]
    rates, cpu_rates = [], []
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        for body in parsed:
            verify_ballot(spec, body)
        rates.append(len(parsed) / (time.perf_counter() - start))
        cpu_rates.append(len(parsed) / max(time.process_time() - cpu_start, 1e-9))
    return median(rates), median(cpu_rates)


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
