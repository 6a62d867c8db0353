"""``referendum loadtest ...``: the ballot pool, load runs, reports, sizing and the rehearsal.

Subcommands import their modules only when run, so ``referendum loadtest size`` never imports
locust (which monkey-patches the standard library through gevent).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

__all__ = ["loadtest"]


@click.group()
def loadtest() -> None:
    """Load tests with Locust, the capacity report and the sizing model."""


@loadtest.command()
@click.option("--voters", type=int, default=10_000_000, show_default=True)
@click.option("--turnout", type=float, default=None, help="Fraction of voters who vote.")
@click.option("--window-hours", type=float, default=None, help="Length of the voting day.")
@click.option(
    "--peak-hour-share", type=float, default=None, help="Fraction of ballots in the busiest hour."
)
@click.option(
    "--peak-factor", type=float, default=None, help="Busiest minute over the peak hour's mean."
)
@click.option("--revote-ratio", type=float, default=0.0, show_default=True)
@click.option("--reads-per-ballot", type=float, default=3.0, show_default=True)
@click.option(
    "--scenario",
    "scenarios",
    type=click.Choice(["day", "rush", "flash", "custom"]),
    multiple=True,
    help="Scenarios to size (default: day, rush, flash, plus custom when demand options given).",
)
@click.option(
    "--per-core-rate", type=float, default=None, help="Verified ballots/s per core (measured)."
)
@click.option("--utilisation", type=float, default=0.5, show_default=True)
@click.option("--cores-per-pod", type=int, default=2, show_default=True)
@click.option("--body-bytes", type=int, default=None, help="Stored ballot body size.")
@click.option(
    "--bench-dir",
    type=click.Path(path_type=Path),
    default=Path("bench/results"),
    show_default=True,
    help="Where measured per-core figures are read from.",
)
@click.option("--defaults", is_flag=True, help="Ignore bench results: DESIGN.md figures only.")
@click.option("--markdown", is_flag=True, help="Print a Markdown table.")
@click.option("--json", "as_json", is_flag=True, help="Print the plans as JSON.")
def size(
    voters: int,
    turnout: float | None,
    window_hours: float | None,
    peak_hour_share: float | None,
    peak_factor: float | None,
    revote_ratio: float,
    reads_per_ballot: float,
    scenarios: tuple[str, ...],
    per_core_rate: float | None,
    utilisation: float,
    cores_per_pod: int,
    body_bytes: int | None,
    bench_dir: Path,
    defaults: bool,
    markdown: bool,
    as_json: bool,
) -> None:
    """Size a deployment: server cores and pods, batcher, PostgreSQL, connections."""
    from dataclasses import replace

    from loadtest.capacity import (
        DEFAULT_RATES,
        Demand,
        Deployment,
        format_table,
        measured_rates,
        plan,
        province_scenarios,
    )

    if defaults:
        rates, notes = DEFAULT_RATES, ["every rate: default (DESIGN.md), bench results ignored"]
    else:
        rates, notes = measured_rates(bench_dir)
    if per_core_rate is not None:
        rates = replace(
            rates,
            verified_ballots_per_core_s=per_core_rate,
            sources={**rates.sources, "verified_ballots_per_core_s": "command line"},
        )
        notes.append(f"verified_ballots_per_core_s = {per_core_rate:,.0f} from the command line")
    deployment = Deployment(utilisation=utilisation, cores_per_pod=cores_per_pod)
    if body_bytes is not None:
        deployment = replace(deployment, body_bytes=body_bytes)
    common = {"revote_ratio": revote_ratio, "reads_per_ballot": reads_per_ballot}
    presets = province_scenarios(voters, **common)
    custom: dict[str, Any] = {
        k: v
        for k, v in {
            "turnout": turnout,
            "window_hours": window_hours,
            "peak_hour_share": peak_hour_share,
            "peak_factor": peak_factor,
        }.items()
        if v is not None
    }
    chosen = list(scenarios) or ["day", "rush", "flash", *(["custom"] if custom else [])]
    demands: dict[str, Demand] = {}
    try:
        for name in chosen:
            if name == "custom":
                demands[name] = Demand(voters=voters, **common, **custom)
            else:
                demands[name] = presets[name]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    plans = {name: plan(d, rates, deployment) for name, d in demands.items()}
    if as_json:
        payload = {name: p.as_dict() for name, p in plans.items()}
        click.echo(orjson.dumps({"plans": payload, "notes": notes}, option=orjson.OPT_INDENT_2))
        return
    click.echo(format_table(plans, markdown=markdown))
    click.echo("")
    for note in notes:
        click.echo(f"note: {note}")


@loadtest.command()
@click.option(
    "--locust-csv",
    "csv_prefix",
    type=str,
    required=True,
    help="Prefix given to locust --csv (PREFIX_stats.csv, PREFIX_stats_history.csv).",
)
@click.option(
    "--samples",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="Server/database samples (JSON lines) written by the runner.",
)
@click.option(
    "--scaling",
    "scaling_runs",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    help="summary.json of earlier runs with other server counts (repeatable).",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/load"))
@click.option("--title", default="Load test", show_default=True)
def report(
    csv_prefix: str, samples: Path | None, scaling_runs: tuple[Path, ...], out: Path, title: str
) -> None:
    """Build report.html and report.md (with plots) from a Locust run's CSV files."""
    from loadtest.report import build_report, load_samples

    sample_rows = load_samples(samples) if samples is not None else []
    result = build_report(
        csv_prefix,
        out,
        samples=sample_rows,
        scaling=[orjson.loads(p.read_bytes()) for p in scaling_runs],
        title=title,
    )
    click.echo(f"report written to {result.html_path} and {result.markdown_path}")


@loadtest.command()
@click.option("--voters", type=int, required=True, help="Voters in the generated roll.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Pool folder.")
@click.option("--referendum", "referendum_id", default="loadtest", show_default=True)
@click.option("--options", default="yes,no", show_default=True, help="Comma-separated.")
@click.option("--min-selections", type=int, default=1, show_default=True)
@click.option("--max-selections", type=int, default=1, show_default=True)
@click.option("--revote-ratio", type=float, default=0.02, show_default=True)
@click.option("--processes", type=int, default=None, help="Worker processes (default: cores).")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--ballots",
    type=int,
    default=None,
    help="Only the first BALLOTS voters get ballots (default: every voter).",
)
def pool(
    ballots: int | None,
    voters: int,
    out: Path,
    referendum_id: str,
    options: str,
    min_selections: int,
    max_selections: int,
    revote_ratio: float,
    processes: int | None,
    seed: int,
) -> None:
    """Pre-generate real signed, encrypted ballots for a generated roll, on every core."""
    from loadtest.pool import generate_pool

    meta = generate_pool(
        out,
        voters,
        referendum_id=referendum_id,
        options=[o.strip() for o in options.split(",") if o.strip()],
        min_selections=min_selections,
        max_selections=max_selections,
        revote_ratio=revote_ratio,
        processes=processes,
        seed=seed,
        ballots=ballots,
    )
    click.echo(
        f"{meta.voters:,} voters, {meta.ballots:,} ballots + {meta.revotes:,} re-votes in "
        f"{meta.seconds:,.1f} s: "
        f"{meta.ballots_per_s:,.0f} ballots/s on {meta.processes} processes; "
        f"{meta.canonical_bytes_mean:,.0f} B canonical, {meta.json_bytes_mean:,.0f} B JSON "
        f"per ballot; expected tally {meta.expected_tally}"
    )


def _run_options(function: Any) -> Any:
    """Options shared by ``run`` and ``rehearsal``."""
    options = [
        click.option(
            "--voters",
            type=int,
            default=10_000,
            show_default=True,
            help="Pool size when no --pool is given (cached under data/loadtest).",
        ),
        click.option(
            "--pool",
            "pool_dir",
            type=click.Path(path_type=Path),
            default=None,
            help="A pool made by `referendum loadtest pool` (else one is cached).",
        ),
        click.option(
            "--servers",
            type=int,
            default=1,
            show_default=True,
            help="Server processes (REFERENDUM_WORKERS).",
        ),
        click.option(
            "--locust-workers",
            type=int,
            default=1,
            show_default=True,
            help="Locust worker processes under one headless master.",
        ),
        click.option(
            "--users",
            type=int,
            default=50,
            show_default=True,
            help="Concurrent users (the shape's peak with --shape).",
        ),
        click.option(
            "--spawn-rate",
            type=float,
            default=50.0,
            show_default=True,
            help="Users started per second.",
        ),
        click.option(
            "--verify-share",
            type=float,
            default=0.1,
            show_default=True,
            help="Share of voters who wait for and verify their inclusion proof.",
        ),
        click.option(
            "--target-rate", type=float, default=None, help="Objective: ballots/s at least."
        ),
        click.option("--max-p99-ms", type=float, default=None, help="Objective: p99 at most."),
        click.option(
            "--max-error-ratio",
            type=float,
            default=0.0,
            show_default=True,
            help="Objective: failed requests / requests at most.",
        ),
        click.option(
            "--max-merge-delay-s", type=float, default=None, help="Objective: largest merge delay."
        ),
        click.option("--keep-database", is_flag=True, help="Do not drop the run's database."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _config(report_dir: Path, **kw: Any) -> Any:
    from loadtest.report import Objectives
    from loadtest.runner import LoadConfig

    objectives = Objectives(
        target_rate=kw.pop("target_rate"),
        max_p99_ms=kw.pop("max_p99_ms"),
        max_error_ratio=kw.pop("max_error_ratio"),
        max_merge_delay_s=kw.pop("max_merge_delay_s"),
    )
    return LoadConfig(report_dir=report_dir, objectives=objectives, **kw)


@loadtest.command()
@_run_options
@click.option(
    "--duration",
    "duration_s",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds of load (the shape's length when --shape is given).",
)
@click.option(
    "--shape",
    type=click.Choice(["steady", "steps", "opening", "lull", "closing", "retry"]),
    default=None,
)
@click.option(
    "--retry-share",
    type=float,
    default=None,
    help="Share of ballots resent (default 0.5 with --shape retry, else 0).",
)
@click.option("--user-classes", default="Voter,ReVoter,Auditor,Operator", show_default=True)
@click.option(
    "--scaling",
    "scaling_runs",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    help="summary.json of runs with other --servers (repeatable).",
)
@click.option(
    "--report-dir", type=click.Path(path_type=Path), default=Path("reports/load"), show_default=True
)
def run(
    report_dir: Path,
    shape: str | None,
    retry_share: float | None,
    user_classes: str,
    scaling_runs: tuple[Path, ...],
    **kw: Any,
) -> None:
    """Run servers, batcher and distributed Locust; exit 1 when an objective is missed."""
    import asyncio

    from loadtest.runner import run_load

    config = _config(
        report_dir,
        shape=shape,
        retry_share=retry_share if retry_share is not None else (0.5 if shape == "retry" else 0.0),
        user_classes=tuple(c.strip() for c in user_classes.split(",") if c.strip()),
        scaling=[orjson.loads(p.read_bytes()) for p in scaling_runs],
        title=f"Load test: {kw['servers']} server process(es), {kw['users']} users",
        **kw,
    )
    summary = asyncio.run(run_load(config))
    _verdict(summary)


def _verdict(summary: Any) -> None:
    for check in summary.checks:
        mark = "ok  " if check["ok"] else "MISS"
        click.echo(f"{mark} {check['objective']}: {check['measured']} (limit {check['limit']})")
    click.echo(
        f"throughput {summary.throughput_rps:,.1f} req/s, ballots {summary.ballots_per_s:,.1f}/s,"
        f" p99 {summary.p99_ms:,.0f} ms, error ratio {summary.error_ratio:.4%}"
    )
    if not summary.ok:
        click.echo("objective missed", err=True)
        sys.exit(1)


@loadtest.command()
@click.option(
    "--voters",
    type=int,
    default=1_000_000,
    show_default=True,
    help="Voters on the roll (10000000 works the same way).",
)
@click.option(
    "--ballots",
    type=int,
    default=None,
    help="Voters who cast a ballot (default: all; fewer fits a small machine, and "
    "the ballot phases are then extrapolated).",
)
@click.option("--pool", "pool_dir", type=click.Path(path_type=Path), default=None)
@click.option("--servers", type=int, default=2, show_default=True)
@click.option("--locust-workers", type=int, default=1, show_default=True)
@click.option("--users", type=int, default=50, show_default=True)
@click.option(
    "--max-duration",
    "max_duration_s",
    type=float,
    default=3600.0,
    show_default=True,
    help="Longest the ballot phase may run.",
)
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path),
    default=Path("reports/rehearsal"),
    show_default=True,
)
def rehearsal(
    voters: int,
    ballots: int | None,
    pool_dir: Path | None,
    servers: int,
    locust_workers: int,
    users: int,
    max_duration_s: float,
    report_dir: Path,
) -> None:
    """A whole referendum end to end at scale, printing every phase's time."""
    import asyncio

    from loadtest.rehearsal import rehearse

    result = asyncio.run(
        rehearse(
            voters,
            report_dir,
            ballots=ballots,
            pool_dir=pool_dir,
            servers=servers,
            locust_workers=locust_workers,
            users=users,
            max_duration_s=max_duration_s,
        )
    )
    click.echo("")
    click.echo(result.table())
    click.echo("")
    click.echo(f"voters {result.voters:,}; ballots stored {result.ballots_stored:,}")
    click.echo(f"expected tally  {result.expected_tally}")
    click.echo(f"decrypted tally {result.decrypted_tally}")
    verdict = {True: "yes", False: "NO", None: "not checked (not every pooled ballot was cast)"}
    click.echo(f"tally matches the pool's prediction: {verdict[result.tally_matches]}")
    for note in result.skipped:
        click.echo(f"skipped: {note}")
    (report_dir / "rehearsal.txt").write_text(
        result.table() + f"\n\nexpected tally {result.expected_tally}\ndecrypted tally "
        f"{result.decrypted_tally}\n" + "".join(f"skipped: {n}\n" for n in result.skipped)
    )
    if result.tally_matches is False or not result.summary.get("ok", False):
        click.echo("rehearsal FAILED", err=True)
        sys.exit(1)
