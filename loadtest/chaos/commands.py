"""``referendum chaos``: faults injected under load, and the verdict (see :mod:`loadtest.chaos`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import click
import orjson

from loadtest.chaos.faults import FAULT_KINDS, INJECTORS
from loadtest.chaos.run import ChaosConfig, ChaosOutcome, run_chaos
from loadtest.chaos.verdict import render_table

__all__ = ["chaos", "write_results"]


def write_results(outcome: ChaosOutcome, config: ChaosConfig, path: Path, seconds: float) -> None:
    """The verdict, the faults and the run's facts as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": "referendum chaos",
        "faults_requested": config.faults,
        "seed": config.seed,
        "servers": config.servers,
        "concurrency": config.concurrency,
        "rate_per_s": config.rate_per_s,
        "seconds": round(seconds, 1),
        "verdict": outcome.verdict.to_json(),
        "facts": outcome.facts,
        "faults": [
            {
                "kind": f.kind,
                "injected_at": f.injected_at,
                "cleared_at": f.cleared_at,
                "commit_recovery_s": f.commit_recovery_s,
                "block_recovery_s": f.block_recovery_s,
                "after_clear_s": f.after_clear_s,
            }
            for f in outcome.faults
        ],
    }
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")


@click.command()
@click.option("--faults", type=click.IntRange(1, 100_000), default=40, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds the fault order.")
@click.option("--servers", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True)
@click.option("--rate", type=click.FloatRange(1, 10_000), default=40.0, show_default=True)
@click.option(
    "--kinds",
    default=",".join(FAULT_KINDS),
    show_default=True,
    help="Comma-separated fault kinds to draw from.",
)
@click.option(
    "--bound",
    "bound_s",
    type=float,
    default=10.0,
    show_default=True,
    help="Longest recovery (seconds after a fault is cleared) that passes.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("bench/results/chaos.json"),
    show_default=True,
)
@click.option(
    "--work-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the run's folder (database, logs, record) here.",
)
def chaos(
    faults: int,
    seed: int,
    servers: int,
    concurrency: int,
    rate: float,
    kinds: str,
    bound_s: float,
    out: Path,
    work_dir: Path | None,
) -> None:
    """Inject seeded faults under load and check nothing acknowledged is lost.

    Starts its own PostgreSQL, N servers and two batchers on 127.0.0.1; exits 1 on a lost,
    duplicated or phantom ballot, a failed audit, or a recovery slower than --bound.
    """
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip())
    unknown = sorted(set(chosen) - set(INJECTORS))
    if unknown or not chosen:
        raise click.BadParameter(
            f"unknown kinds {unknown}; known: {FAULT_KINDS}", param_hint="--kinds"
        )
    config = ChaosConfig(
        faults=faults,
        seed=seed,
        servers=servers,
        concurrency=concurrency,
        rate_per_s=rate,
        bound_s=bound_s,
        kinds=chosen,
        work_dir=work_dir,
        echo=click.echo,
    )
    started = time.perf_counter()
    outcome = asyncio.run(run_chaos(config))
    seconds = time.perf_counter() - started
    verdict = outcome.verdict
    click.echo("")
    click.echo(render_table(verdict))
    click.echo("")
    click.echo(
        f"acknowledged {verdict.acknowledged:,}, logged {verdict.logged:,}, lost "
        f"{len(verdict.lost)}, duplicated {len(verdict.duplicated)}, phantom "
        f"{len(verdict.phantom)}, logged without acknowledgement (client timeouts) "
        f"{verdict.unacknowledged_logged}; verify-election "
        f"{'OK' if outcome.facts.get('verify_ok') else 'FAILED'}; follow "
        f"{'OK' if outcome.facts.get('follow', {}).get('ok') else 'FAILED'}"
    )
    write_results(outcome, config, out, seconds)
    click.echo(f"results: {out}")
    for problem in verdict.problems:
        click.echo(f"FAILED: {problem}")
    click.echo(f"chaos: {'passed' if verdict.ok else 'FAILED'} in {seconds:.0f} s")
    if not verdict.ok:
        raise SystemExit(1)
