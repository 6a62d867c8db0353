"""One bounded load run end to end (``referendum loadtest run``), and the demo's small runs."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from loadtest.pool import BallotPool, generate_pool
from loadtest.report import Objectives, Summary, build_report, load_samples
from loadtest.runner.database import admin_dsn, create_operator_key
from loadtest.runner.locust import DEFAULT_USER_CLASSES, run_locust
from loadtest.runner.processes import (
    ChildProcesses,
    PhaseTimer,
    free_port,
    referendum_argv,
    wait_ready,
)
from loadtest.runner.sampler import DatabaseSampler, scrape_metrics, wait_final, wait_sequenced
from referendum_service.scratch import scratch_database

__all__ = [
    "LoadConfig",
    "demo_load",
    "ensure_pool",
    "run_load",
    "run_small_load",
    "setup_referendum",
]


async def _check(response: aiohttp.ClientResponse, what: str) -> Any:
    body = await response.read()
    if response.status >= 300:
        raise RuntimeError(f"{what}: HTTP {response.status}: {body[:500]!r}")
    return orjson.loads(body) if body else None


async def setup_referendum(
    base_url: str,
    api_key: str,
    pool: BallotPool,
    *,
    timer: PhaseTimer | None = None,
    open_voting: bool = True,
    before_open: Callable[[aiohttp.ClientSession, str], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Create the pool's referendum, upload its roll and open it, over the operator API.

    ``before_open(session, rid)`` runs while the referendum is still a draft (the demo
    registers its trustees' commitments there).
    """
    timer = timer or PhaseTimer(echo=None)
    headers = {"Authorization": f"Bearer {api_key}"}
    now = datetime.now(UTC)
    definition = pool.meta.definition(
        (now - timedelta(minutes=1)).isoformat(), (now + timedelta(days=1)).isoformat()
    )
    rid = pool.meta.referendum_id
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(base_url, headers=headers, timeout=timeout) as session:
        with timer.phase("create referendum"):
            async with session.post("/v1/referendums", json=definition) as response:
                await _check(response, "create referendum")
        with timer.phase("roll import"), pool.roll_path.open("rb") as roll:
            async with session.put(
                f"/v1/referendums/{rid}/roll",
                data=roll,
                headers={"Content-Type": "text/csv"},
            ) as response:
                imported = await _check(response, "roll import")
        opened = None
        if before_open is not None:
            await before_open(session, rid)
        if open_voting:
            with timer.phase("open (roll commitment)"):
                async with session.post(f"/v1/referendums/{rid}/open") as response:
                    opened = await _check(response, "open")
            if timer.echo is not None and opened is not None:
                timer.echo(
                    f"roll: {imported['imported']:,} voters imported; referendum {rid} open; "
                    f"roll commitment {opened.get('roll_root')}"
                )
    return {"roll": imported, "referendum": opened}


@dataclass
class LoadConfig:
    """Everything ``referendum loadtest run`` takes."""

    report_dir: Path
    voters: int = 10_000
    pool_dir: Path | None = None
    duration_s: float = 30.0
    servers: int = 1
    locust_workers: int = 1
    users: int = 50
    spawn_rate: float = 50.0
    shape: str | None = None
    user_classes: tuple[str, ...] = DEFAULT_USER_CLASSES
    objectives: Objectives = field(default_factory=Objectives)
    database_url: str | None = None
    keep_database: bool = False
    verify_share: float = 0.1
    retry_share: float = 0.0
    drain_timeout_s: float = 60.0
    scaling: list[dict[str, Any]] = field(default_factory=list)
    server_env: dict[str, str] = field(default_factory=dict)
    title: str = "Load test"
    stop_when_pool_used: bool = False
    """End the Locust run as soon as every pooled ballot is stored (the rehearsal)."""
    close_after: bool = False
    """Close the referendum after the run (the rehearsal), timing the final block."""
    after_close: Callable[[str, str, PhaseTimer], Any] | None = None
    """Awaited with (base URL, API key, timer) after closing: tally and audit phases."""
    before_open: Callable[[aiohttp.ClientSession, str], Awaitable[None]] | None = None
    """Awaited with (operator session, referendum id) while the referendum is a draft."""
    active_dsn: str | None = None
    """Set by :func:`run_load` to the database it runs on, for ``after_close`` hooks."""
    tally_follow: bool = False
    """Also run ``referendum tally-follow`` (folds sealed blocks into the encrypted tally)."""
    timer: PhaseTimer | None = None


def ensure_pool(config: LoadConfig, timer: PhaseTimer) -> BallotPool:
    """The configured pool, or a pool of ``config.voters`` cached under data/loadtest."""
    folder = config.pool_dir or Path("data/loadtest") / f"pool-{config.voters}"
    if (folder / "meta.json").exists() and config.pool_dir is None:
        try:
            BallotPool(folder)
        except (ValueError, TypeError):  # a cached pool of an older format: make it again
            (folder / "meta.json").unlink()
    if not (folder / "meta.json").exists():
        with timer.phase(f"ballot pool ({config.voters:,} voters)"):
            meta = generate_pool(folder, config.voters, revote_ratio=0.02)
        print(
            f"pool: {meta.voters:,} voters, {meta.ballots:,} ballots + {meta.revotes:,} re-votes"
            f" in {meta.seconds:,.1f} s"
            f" ({meta.ballots_per_s:,.0f} ballots/s on {meta.processes} processes)"
        )
    return BallotPool(folder)


async def run_load(config: LoadConfig) -> Summary:
    """Run one bounded load test end to end; the summary says whether objectives were met."""
    timer = config.timer or PhaseTimer()
    report_dir = config.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    pool = ensure_pool(config, timer)
    rid = pool.meta.referendum_id
    with timer.phase("database"):
        admin = admin_dsn(config.database_url)
    samples_path = report_dir / "samples.jsonl"
    samples_path.unlink(missing_ok=True)
    async with scratch_database(admin, prefix="referendum_load", keep=config.keep_database) as dsn:
        api_key = await create_operator_key(dsn)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "REFERENDUM_HOST": "127.0.0.1",
            "REFERENDUM_PORT": str(port),
            "REFERENDUM_WORKERS": str(config.servers),
            "REFERENDUM_DATA_DIR": str(report_dir / "data"),
            "REFERENDUM_LOG_LEVEL": "warning",
            # the roll import needs a voter-id key: this run's own unless one is configured
            "REFERENDUM_VOTER_ID_KEY": os.environ.get("REFERENDUM_VOTER_ID_KEY")
            or secrets.token_hex(32),
            **config.server_env,
        }
        with ChildProcesses(report_dir / "logs") as children:
            with timer.phase(f"start {config.servers} server process(es)"):
                server = children.start("servers", referendum_argv("serve"), env)
                await wait_ready(base_url, [server])
            config.active_dsn = dsn
            await setup_referendum(
                base_url, api_key, pool, timer=timer, before_open=config.before_open
            )
            batcher = children.start(
                "batcher", referendum_argv("batcher", "--referendum", rid), env
            )
            if config.tally_follow:
                children.start("tally-follow", referendum_argv("tally-follow"), env)
            sampler = DatabaseSampler(dsn, rid, samples_path)
            expected = pool.meta.ballots + pool.meta.revotes

            async def pool_used() -> bool:
                row = await sampler.sample()
                return bool(row["ballots"] >= expected)

            sampler.start()
            try:
                with timer.phase("ballots under load"):
                    outcome = await run_locust(
                        base_url,
                        pool.folder,
                        report_dir,
                        children,
                        duration_s=config.duration_s,
                        users=config.users,
                        spawn_rate=config.spawn_rate,
                        workers=config.locust_workers,
                        shape=config.shape,
                        user_classes=config.user_classes,
                        api_key=api_key,
                        extra_env={
                            "REFERENDUM_LOADTEST_VERIFY_SHARE": str(config.verify_share),
                            "REFERENDUM_LOADTEST_RETRY_SHARE": str(config.retry_share),
                        },
                        stop_when=pool_used if config.stop_when_pool_used else None,
                    )
                with timer.phase("sealing (drain the batcher)"):
                    drained = await wait_sequenced(sampler, config.drain_timeout_s, batcher)
            finally:
                await sampler.stop()
            delays = await sampler.merge_delays()
            with samples_path.open("ab") as out:
                out.write(orjson.dumps(delays) + b"\n")
            await scrape_metrics(base_url, report_dir, times=max(2, config.servers * 2))
            if config.close_after:
                await _close_and_after(config, base_url, api_key, rid, sampler, timer, batcher)
        samples = load_samples(samples_path)
        stored = await sampler.sample()
        await sampler.stop()
    extra = (
        "## Phases\n\n```\n" + timer.table() + "\n```\n\n"
        f"Pool: {pool.meta.voters:,} voters, {pool.meta.ballots:,} ballots, "
        f"{pool.meta.revotes:,} re-votes; "
        f"ballots stored: {stored['ballots']:,}; all sequenced after the run: "
        f"{'yes' if drained else 'NO'}; merge delay p50 / p99 / max: "
        f"{_s(delays['merge_delay_p50_s'])} / {_s(delays['merge_delay_p99_s'])} / "
        f"{_s(delays['merge_delay_max_s'])}; Locust exit code {outcome.returncode}"
        + (" (stopped at its time limit)" if outcome.timed_out else "")
    )
    sequenced_check = {
        "objective": "every ballot sequenced",
        "limit": "yes",
        "measured": drained,
        "ok": drained,
    }
    result = build_report(
        outcome.csv_prefix,
        report_dir,
        samples=samples,
        scaling=config.scaling,
        title=config.title,
        servers=config.servers,
        objectives=config.objectives,
        extra_markdown=extra,
        extra_checks=[sequenced_check],
    )
    summary = result.summary
    summary.ballots_stored = int(stored["ballots"])
    summary.phases = dict(timer.phases)
    payload = {**summary.as_dict(), "merge_delays": delays}
    result.summary_path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    print(timer.table())
    print(f"report: {result.html_path} and {result.markdown_path}")
    return summary


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


async def _close_and_after(
    config: LoadConfig,
    base_url: str,
    api_key: str,
    rid: str,
    sampler: DatabaseSampler,
    timer: PhaseTimer,
    batcher: subprocess.Popen[bytes],
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(base_url, headers=headers) as session:
        with timer.phase("close + final block"):
            # the pool's referendum closes a day after it opens: this close is early
            early = {"early": True, "reason": "the load run ended"}
            async with session.post(f"/v1/referendums/{rid}/close", json=early) as response:
                await _check(response, "close")
            if not await wait_final(sampler, config.drain_timeout_s, batcher):
                raise RuntimeError("the batcher did not seal the final block in time")
    if config.after_close is not None:
        await config.after_close(base_url, api_key, timer)


async def run_small_load(
    base_url: str,
    pool: Path | BallotPool,
    duration_s: float,
    users: int,
    *,
    api_key: str = "",
    out_dir: Path = Path("reports/demo-load"),
    workers: int = 1,
    user_classes: Sequence[str] = ("Voter",),
    objectives: Objectives | None = None,
    verify_share: float = 0.1,
) -> Summary:
    """A short distributed Locust run against running servers; the report's summary.

    For ``referendum demo``: the pool's referendum must already be open on ``base_url``
    (see :func:`setup_referendum`) and a batcher running when ``verify_share`` > 0 (those
    voters wait for their ballot to be sealed). Writes the report into ``out_dir``.
    """
    pool_dir = pool.folder if isinstance(pool, BallotPool) else Path(pool)
    with ChildProcesses(out_dir / "logs") as children:
        outcome = await run_locust(
            base_url,
            pool_dir,
            out_dir,
            children,
            duration_s=duration_s,
            users=users,
            spawn_rate=float(users),
            workers=workers,
            user_classes=user_classes,
            api_key=api_key,
            extra_env={"REFERENDUM_LOADTEST_VERIFY_SHARE": str(verify_share)},
        )
    result = build_report(outcome.csv_prefix, out_dir, title="Demo load", objectives=objectives)
    return result.summary


async def demo_load(
    base_url: str,
    api_key: str,
    *,
    voters: int = 10_000,
    duration_s: float = 30.0,
    users: int = 20,
    out_dir: Path = Path("reports/demo-load"),
    verify_share: float = 0.1,
) -> Summary:
    """For ``referendum demo``: a fresh pool under a new referendum id, set up, loaded, reported.

    Needs servers (and a batcher) already running on ``base_url`` and an operator key. The
    pool's referendum id is new each time, so the demo can run again on the same database.
    """
    rid = f"load-{secrets.token_hex(4)}"
    timer = PhaseTimer()
    with timer.phase(f"ballot pool ({voters:,} voters)"):
        meta = generate_pool(out_dir / "pool", voters, referendum_id=rid, revote_ratio=0.0)
    print(f"pool: {meta.ballots_per_s:,.0f} ballots/s on {meta.processes} processes")
    pool = BallotPool(out_dir / "pool")
    await setup_referendum(base_url, api_key, pool, timer=timer)
    with timer.phase("ballots under load"):
        summary = await run_small_load(
            base_url,
            pool,
            duration_s,
            users,
            api_key=api_key,
            out_dir=out_dir,
            user_classes=("Voter", "Auditor", "Operator"),
            verify_share=verify_share,
        )
    print(timer.table())
    print(f"report: {out_dir / 'report.html'}")
    return summary
