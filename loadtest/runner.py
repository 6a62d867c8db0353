"""The load runner: PostgreSQL, N server processes, the batcher and distributed Locust.

:func:`run_load` (``referendum loadtest run``) does, in order and with every phase timed:

1. open the ballot pool (or make one: ``referendum loadtest pool``);
2. reuse PostgreSQL at ``DATABASE_URL`` or start the embedded one, create a fresh database
   (the pool's referendum id must be new), migrate it and create an operator API key;
3. start ``referendum serve`` with P workers and ``referendum batcher`` as child processes on
   127.0.0.1, each in its own process group, and wait for ``/readyz``;
4. create the pool's referendum, upload its roll and open it, over the operator API;
5. run Locust: one ``--master --headless`` and M ``--worker`` processes, bounded by
   ``--run-time`` (or a load shape), writing ``--csv``, ``--json-file`` and ``--html``; while
   it runs, sample the database each second (ballots, sequenced, oldest unsequenced ballot);
6. wait (bounded) for the batcher to sequence every ballot, measure each ballot's merge delay
   (block ``sealed_at`` minus ``accepted_at``), scrape the servers' ``/metrics``;
7. write the capacity report and return its summary, whose ``ok`` says whether the stated
   objectives (rate, p99, error ratio, merge delay) were met.

Every child is stopped in a ``finally`` block: SIGTERM to its process group, then SIGKILL
after a grace period; no run outlives its bounds. Nothing is sent anywhere but 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
import orjson

from loadtest.pool import BallotPool, generate_pool
from loadtest.report import Objectives, Summary, build_report, load_samples
from referendum_service.scratch import scratch_database
from referendum_service.store.progress import ingest_progress, merge_delays

__all__ = [
    "ChildProcesses",
    "LoadConfig",
    "LocustOutcome",
    "PhaseTimer",
    "demo_load",
    "free_port",
    "run_load",
    "run_locust",
    "run_small_load",
    "setup_referendum",
]

LOADTEST_DIR = Path(__file__).resolve().parent
LOCUSTFILE = LOADTEST_DIR / "locustfile.py"
SHAPESFILE = LOADTEST_DIR / "shapes.py"
DEFAULT_USER_CLASSES = ("Voter", "ReVoter", "Auditor", "Operator")
READY_TIMEOUT_S = 60.0
GRACE_S = 10.0
"""How long a child gets between SIGTERM and SIGKILL."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PhaseTimer:
    """Wall-clock time of each named phase, printed as it ends."""

    def __init__(self, echo: Callable[[str], None] | None = print) -> None:
        self.phases: dict[str, float] = {}
        self.echo = echo

    @contextlib.contextmanager
    def phase(self, name: str) -> Any:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self.phases[name] = elapsed
            if self.echo is not None:
                self.echo(f"[phase] {name}: {elapsed:,.2f} s")

    def table(self) -> str:
        width = max((len(n) for n in self.phases), default=5)
        lines = [f"{'phase'.ljust(width)}  seconds", f"{'-' * width}  -------"]
        lines += [f"{n.ljust(width)}  {s:>9,.2f}" for n, s in self.phases.items()]
        return "\n".join(lines)


class ChildProcesses:
    """Child processes, each in its own session (process group), all stopped on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[tuple[str, subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(argv),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append((name, process, log))
        return process

    def stop(self, process: subprocess.Popen[bytes], grace_s: float = GRACE_S) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``grace_s``; the exit code."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(grace_s)
        # children of the group that outlived their parent
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode

    def stop_all(self) -> None:
        """Stop every child, newest first."""
        for _name, process, log in reversed(self.children):
            self.stop(process)
            log.close()
        self.children.clear()

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def _referendum_argv(*args: str) -> list[str]:
    """Run a ``referendum`` subcommand with this interpreter."""
    return [sys.executable, "-c", "from referendum_cli import main; main()", *args]


async def create_operator_key(dsn: str) -> str:
    from server.auth import create_api_key

    conn = await asyncpg.connect(dsn)
    try:
        return await create_api_key(conn, f"loadtest-{secrets.token_hex(4)}")
    finally:
        await conn.close()


async def wait_ready(base_url: str, processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """Poll ``/readyz`` until it answers 200; raise if a child died or after a minute."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as session:
        while True:
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a server process exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(
                    base_url + "/readyz", timeout=aiohttp.ClientTimeout(total=2)
                ) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base_url} not ready within {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.2)


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


@dataclass(frozen=True)
class LocustOutcome:
    csv_prefix: Path
    returncode: int | None
    timed_out: bool
    seconds: float


async def run_locust(
    base_url: str,
    pool_dir: Path,
    out_dir: Path,
    children: ChildProcesses,
    *,
    duration_s: float,
    users: int,
    spawn_rate: float,
    workers: int = 1,
    shape: str | None = None,
    user_classes: Sequence[str] = DEFAULT_USER_CLASSES,
    api_key: str = "",
    extra_env: dict[str, str] | None = None,
    stop_when: Callable[[], Any] | None = None,
) -> LocustOutcome:
    """One headless Locust master and ``workers`` workers against ``base_url``, bounded.

    The master runs ``duration_s`` (``--run-time``, or the shape's length); it is stopped
    (SIGTERM, so it still writes its files) 60 s after that at the latest, or earlier when the
    awaitable ``stop_when()`` returns true (checked every second).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    master_port = free_port()
    env = {
        **os.environ,
        "REFERENDUM_LOADTEST_POOL": str(pool_dir),
        "REFERENDUM_LOADTEST_SHARDS": str(max(1, workers)),
        "REFERENDUM_LOADTEST_API_KEY": api_key,
        "REFERENDUM_LOADTEST_PEAK_USERS": str(users),
        "REFERENDUM_LOADTEST_DURATION_S": str(duration_s),
        "REFERENDUM_LOADTEST_SPAWN_RATE": str(spawn_rate),
        **(extra_env or {}),
    }
    files = str(LOCUSTFILE)
    if shape:
        env["REFERENDUM_LOADTEST_SHAPE"] = shape
        files += "," + str(SHAPESFILE)
    prefix = out_dir / "locust"
    common = [sys.executable, "-m", "locust", "-f", files, "--loglevel", "WARNING"]
    master_argv = [
        *common,
        "--master",
        "--headless",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(master_port),
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        "60",
        "-H",
        base_url,
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "--run-time",
        f"{max(1, round(duration_s))}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--json-file",
        str(out_dir / "locust"),
        "--html",
        str(out_dir / "locust.html"),
        "--only-summary",
        "--exit-code-on-error",
        "0",  # failures are judged by the report's objectives, not by Locust
        *user_classes,
    ]
    worker_argv = [
        *common,
        "--worker",
        "--master-host",
        "127.0.0.1",
        "--master-port",
        str(master_port),
        *user_classes,
    ]
    started = time.monotonic()
    master = children.start("locust-master", master_argv, env)
    worker_processes = [
        children.start(f"locust-worker-{i}", worker_argv, env) for i in range(max(1, workers))
    ]
    deadline = started + duration_s + 60.0
    timed_out = False
    while master.poll() is None:
        if time.monotonic() > deadline:
            timed_out = True
            break
        if stop_when is not None and await stop_when():
            break
        await asyncio.sleep(1.0)
    returncode = master.poll()
    if returncode is None:
        returncode = children.stop(master, grace_s=30.0)
    for worker in worker_processes:
        children.stop(worker)
    return LocustOutcome(prefix, returncode, timed_out, time.monotonic() - started)


class DatabaseSampler:
    """Samples the ballots table each ``interval_s`` into ``samples.jsonl``."""

    def __init__(self, dsn: str, referendum_id: str, path: Path, interval_s: float = 1.0):
        self.dsn, self.rid, self.path, self.interval_s = dsn, referendum_id, path, interval_s
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one query at a time on the shared connection

    async def sample(self) -> dict[str, Any]:
        async with self._lock:
            return await self._sample()

    async def _sample(self) -> dict[str, Any]:
        if self._conn is None:
            self._conn = await asyncpg.connect(self.dsn)
        progress = await ingest_progress(self._conn, self.rid)
        return {
            "t": time.time(),
            "ballots": progress.ballots,
            "sequenced": progress.sequenced,
            "oldest_unsequenced_s": progress.oldest_unsequenced_s,
        }

    async def _loop(self) -> None:
        with self.path.open("ab") as out:
            while True:
                row = await self.sample()
                out.write(orjson.dumps(row) + b"\n")
                out.flush()
                await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def merge_delays(self) -> dict[str, Any]:
        """Per sequenced ballot, block ``sealed_at`` minus ``accepted_at``: p50, p99, max."""
        conn = await asyncpg.connect(self.dsn)
        try:
            delays = await merge_delays(conn, self.rid)
        finally:
            await conn.close()
        return {
            "t": time.time(),
            "sequenced_ballots": delays.count,
            "merge_delay_p50_s": delays.p50,
            "merge_delay_p99_s": delays.p99,
            "merge_delay_max_s": delays.max,
        }


async def wait_sequenced(
    sampler: DatabaseSampler, timeout_s: float, batcher: subprocess.Popen[bytes] | None
) -> bool:
    """Wait until every stored ballot is in the log; False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = await sampler.sample()
        if row["ballots"] == row["sequenced"]:
            return True
        if batcher is not None and batcher.poll() is not None:
            return False
        await asyncio.sleep(0.5)
    return False


async def scrape_metrics(base_url: str, out_dir: Path, times: int) -> None:
    """Save ``/metrics`` a few times (each answer comes from whichever worker got it)."""
    async with aiohttp.ClientSession() as session:
        for i in range(times):
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with session.get(
                    base_url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)
                ) as response:
                    (out_dir / f"metrics-{i}.txt").write_bytes(await response.read())


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


def _admin_dsn(config: LoadConfig) -> str:
    from referendum_service.db import resolve_database_url
    from referendum_service.settings import Settings

    settings = Settings.from_env()
    if config.database_url:
        return config.database_url
    return resolve_database_url(settings)


async def run_load(config: LoadConfig) -> Summary:
    """Run one bounded load test end to end; the summary says whether objectives were met."""
    timer = config.timer or PhaseTimer()
    report_dir = config.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    pool = ensure_pool(config, timer)
    rid = pool.meta.referendum_id
    with timer.phase("database"):
        admin_dsn = _admin_dsn(config)
    samples_path = report_dir / "samples.jsonl"
    samples_path.unlink(missing_ok=True)
    async with scratch_database(
        admin_dsn, prefix="referendum_load", keep=config.keep_database
    ) as dsn:
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
            **config.server_env,
        }
        with ChildProcesses(report_dir / "logs") as children:
            with timer.phase(f"start {config.servers} server process(es)"):
                server = children.start("servers", _referendum_argv("serve"), env)
                await wait_ready(base_url, [server])
            config.active_dsn = dsn
            await setup_referendum(
                base_url, api_key, pool, timer=timer, before_open=config.before_open
            )
            batcher = children.start(
                "batcher", _referendum_argv("batcher", "--referendum", rid), env
            )
            if config.tally_follow:
                children.start("tally-follow", _referendum_argv("tally-follow"), env)
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
            async with session.post(f"/v1/referendums/{rid}/close") as response:
                await _check(response, "close")
            deadline = time.monotonic() + config.drain_timeout_s
            conn = await asyncpg.connect(sampler.dsn)
            try:
                while not await conn.fetchval(
                    "SELECT final FROM log_heads WHERE referendum_id = $1", rid
                ):
                    if time.monotonic() > deadline or batcher.poll() not in (None, 0):
                        raise RuntimeError("the batcher did not seal the final block in time")
                    await asyncio.sleep(0.2)
            finally:
                await conn.close()
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
