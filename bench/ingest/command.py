"""``referendum bench ingest``'s options, the servers it measures, its table and JSON."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.common import drop_bench_database, write_results
from bench.ingest.attack_rows import (
    ATTACK_CASES,
    _attack_ballots,
    _attack_meta,
    _attack_rows,
    _AttackPlan,
    _measure_attacks,
)
from bench.ingest.runs import Stats, _row, _saturation, _series, bare_verifier_rate, measure
from bench.ingest.servers import SATURATION_ENV, _commit_stats, server
from bench.ingest.setup import (
    BALLOTS_PATH,
    WARM_BALLOTS,
    BallotSupply,
    _create_database,
    _stored,
    generate,
)


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
        total += per_run * runs * 5 + 5 * 300
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
            "python_inline": measured.python_inline.failures,
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
    python_inline: Stats
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
    # the same server checking every proof alone: today's path, the batching's baseline
    python_env = {**SATURATION_ENV, "REFERENDUM_VERIFY_BACKEND": "python"}
    with server(dsn, plan.port, 1, 0, data_dir, settings_env=python_env) as root:
        warm_up(root)
        python_inline = saturation("1 process, inline, python backend", root)
    with server(dsn, plan.port, 1, plan.pool_workers, data_dir) as root:
        warm_up(root)
        pooled = saturation(f"1 process, {plan.pool_workers} verify workers", root)
    with server(dsn, plan.port, 2, 0, data_dir) as root:
        warm_up(root)
        two = saturation("2 processes, inline", root)
    stored = asyncio.run(_stored(dsn))
    return _Measured(
        inline,
        python_inline,
        paced,
        pooled,
        two,
        paced_rate,
        paced_count,
        commit_stats,
        stored,
        details,
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
            "1 process inline, python backend, per server core",
            m.python_inline.per_core,
            "ballots/s/core",
            run=m.python_inline,
        ),
        _row(
            "per server core: native (batched) / python backend, same run",
            per_core / m.python_inline.per_core if m.python_inline.per_core else 0.0,
            "ratio",
            target=">= 2",
            ok=bool(m.python_inline.per_core) and per_core / m.python_inline.per_core >= 2,
        ),
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
