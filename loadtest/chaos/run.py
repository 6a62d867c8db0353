"""One chaos run end to end: set up, load, inject the seeded faults, drain, close, judge.

1. a trustee ceremony and a ballot pool under the trustees' key (real ballots, made first);
2. :class:`~loadtest.chaos.stack.Stack`: a private PostgreSQL, the proxy, N servers; the
   referendum created, its roll imported, opened; a leader and a standby batcher;
3. steady load (:class:`~loadtest.chaos.client.VoterLoad`); each fault of the schedule is
   injected and cleared, then the run waits (bounded) for the first acknowledgement and the
   first sealed block after it, and lets the load run a moment before the next fault;
4. the load stops; every stored ballot is sealed; the referendum is closed, tallied,
   decrypted by two trustees and published; the record is exported and ``verify-election``
   re-verifies it; ``follow`` checks every checkpoint from the first to the last;
5. the verdict (:mod:`loadtest.chaos.verdict`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from loadtest.chaos.client import VoterLoad
from loadtest.chaos.faults import FAULT_KINDS, FaultTuning, inject, schedule
from loadtest.chaos.stack import Stack
from loadtest.chaos.verdict import FaultRecord, LoggedBallot, Verdict, judge
from loadtest.demo import register_trustees, tally_and_record
from loadtest.pool import BallotPool, generate_pool
from loadtest.runner import LoadConfig, PhaseTimer, create_operator_key, setup_referendum

__all__ = ["ChaosConfig", "ChaosOutcome", "run_chaos"]

RECOVERY_WAIT_S = 30.0
"""Longest the run waits for a commit and a block after a fault (then: unrecovered)."""
DRAIN_TIMEOUT_S = 120.0


@dataclass
class ChaosConfig:
    """What ``referendum chaos`` takes."""

    faults: int = 20
    seed: int = 1
    servers: int = 2
    concurrency: int = 8
    rate_per_s: float = 40.0
    settle_s: tuple[float, float] = (0.3, 1.0)
    """Steady load between recovery and the next fault: uniform in this range."""
    bound_s: float = 10.0
    kinds: tuple[str, ...] = FAULT_KINDS
    tuning: FaultTuning = field(default_factory=FaultTuning)
    ballots: int | None = None
    """Ballots in the pool (default: enough for the faults at the rate, with margin)."""
    work_dir: Path | None = None
    keep: bool = False
    server_argv: list[str] | None = None
    server_env: dict[str, str] = field(default_factory=dict)
    echo: Any = print


@dataclass
class ChaosOutcome:
    """The verdict and the facts around it."""

    verdict: Verdict
    faults: list[FaultRecord]
    facts: dict[str, Any]


def _pool_size(config: ChaosConfig) -> int:
    if config.ballots is not None:
        return config.ballots
    per_fault_s = 3.0 + sum(config.settle_s) / 2
    burst = config.tuning.burst_ballots * config.faults / max(1, len(config.kinds))
    return int(600 + config.faults * per_fault_s * config.rate_per_s * 1.5 + burst)


class _Watch:
    """The run's direct connection, for the last sealed block (reconnects after faults)."""

    def __init__(self, dsn: str, referendum_id: str) -> None:
        self.dsn = dsn
        self.referendum_id = referendum_id
        self.conn: asyncpg.Connection | None = None

    async def last_sealed_at(self) -> float | None:
        """Wall-clock seconds of the last block's ``sealed_at``; ``None`` when unreachable."""
        try:
            if self.conn is None or self.conn.is_closed():
                self.conn = await asyncpg.connect(self.dsn, timeout=2)
            value = await self.conn.fetchval(
                "SELECT max(sealed_at) FROM blocks WHERE referendum_id = $1",
                self.referendum_id,
                timeout=2,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self.close()
            return None
        return None if value is None else value / 1000.0

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.close(), timeout=2)
            self.conn = None


async def _recover(fault: FaultRecord, load: VoterLoad, watch: _Watch) -> None:
    """Wait (bounded) for the first acknowledgement and the first block after clearing."""
    deadline = time.monotonic() + RECOVERY_WAIT_S
    while time.monotonic() < deadline:
        if fault.first_commit_at is None:
            times = load.ack_times
            i = _first_after(times, fault.cleared_at)
            if i < len(times):
                fault.first_commit_at = times[i]
        if fault.first_block_at is None:
            sealed = await watch.last_sealed_at()
            if sealed is not None and sealed > fault.cleared_at:
                fault.first_block_at = sealed
        if fault.first_commit_at is not None and fault.first_block_at is not None:
            return
        await asyncio.sleep(0.05)  # polling for recovery, with a deadline


def _first_after(times: list[float], at: float) -> int:
    import bisect

    return bisect.bisect_right(times, at)


async def _logged(dsn: str, referendum_id: str) -> list[LoggedBallot]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT encode(b.ballot_hash, 'hex') AS h,"
            " extract(epoch FROM b.accepted_at)::float8 AS accepted,"
            " bl.sealed_at / 1000.0 - extract(epoch FROM b.accepted_at)::float8 AS delay"
            " FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id"
            " JOIN blocks AS bl ON bl.referendum_id = e.referendum_id"
            " AND bl.height = e.block_height WHERE e.referendum_id = $1",
            referendum_id,
        )
    finally:
        await conn.close()
    return [LoggedBallot(r["h"], float(r["accepted"]), float(r["delay"])) for r in rows]


async def _drain(dsn: str, referendum_id: str) -> bool:
    """Wait until no stored ballot of the referendum waits for sealing."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    conn = await asyncpg.connect(dsn)
    try:
        while time.monotonic() < deadline:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM log_pending WHERE referendum_id = $1", referendum_id
            )
            if waiting == 0:
                return True
            await asyncio.sleep(0.2)  # waiting for the batcher, with a deadline
    finally:
        await conn.close()
    return False


async def _wait_leader(stack: Stack) -> None:
    deadline = time.monotonic() + 60.0
    while await stack.leader() is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no batcher took the leader lock within 60 s")
        await asyncio.sleep(0.1)  # waiting for a leader, with a deadline


async def _close(stack: Stack, api_key: str) -> None:
    import aiohttp

    rid = stack.referendum_id
    headers = {"Authorization": f"Bearer {api_key}"}
    early = {"early": True, "reason": "the chaos run ended"}
    async with (
        aiohttp.ClientSession(stack.base_url, headers=headers) as session,
        session.post(f"/v1/referendums/{rid}/close", json=early) as response,
    ):
        if response.status != 200:
            raise RuntimeError(f"close: HTTP {response.status}: {await response.text()}")
    conn = await asyncpg.connect(stack.direct_dsn)
    try:
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while not await conn.fetchval(
            "SELECT coalesce(bool_or(final), false) FROM log_heads WHERE referendum_id = $1", rid
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the final block was not sealed in time")
            await asyncio.sleep(0.2)  # waiting for the batcher, with a deadline
    finally:
        await conn.close()


async def _follow(stack: Stack, log_key: str, state_dir: Path) -> dict[str, Any]:
    from auditor.client import PublicLogClient
    from auditor.follow import AuditFailure, SkipBallotChecks, follow

    try:
        async with PublicLogClient(stack.base_url, stack.referendum_id) as client:
            result = await follow(
                client,
                log_key=log_key,
                state_dir=state_dir,
                verifier=SkipBallotChecks(),
                max_polls=3,
                poll_interval_s=0.5,
                echo=lambda _line: None,
            )
    except AuditFailure as exc:
        return {"ok": False, "failure": f"{exc.check}: {exc}"}
    return {
        "ok": True,
        "blocks": result.blocks_verified,
        "height": result.height,
        "tree_size": result.tree_size,
    }


async def run_chaos(config: ChaosConfig) -> ChaosOutcome:
    """Run the whole chaos run; everything it started is stopped before it returns."""
    from trustee.ceremony import Ceremony

    echo = config.echo or (lambda _line: None)
    folder = config.work_dir or Path(tempfile.mkdtemp(prefix="referendum-chaos-"))
    folder.mkdir(parents=True, exist_ok=True)
    timer = PhaseTimer(echo=config.echo)
    rid = f"chaos-{config.seed}-{int(time.time())}"
    with timer.phase("trustee key ceremony"):
        trustees = Ceremony.run(rid)
    size = _pool_size(config)
    with timer.phase(f"ballot pool ({size:,} ballots)"):
        generate_pool(
            folder / "pool",
            size,
            referendum_id=rid,
            election_public_key=trustees.election_key,
            trustees=(trustees.params.threshold, trustees.params.trustees),
            progress=False,
        )
    pool = BallotPool(folder / "pool")
    stack = Stack(folder, config.servers, config.server_env, config.server_argv)
    stack.referendum_id = rid
    facts: dict[str, Any] = {"referendum": rid, "seed": config.seed, "pool_ballots": size}
    records: list[FaultRecord] = []
    problems: list[str] = []
    rng = random.Random(config.seed)
    try:
        with timer.phase("database, servers, referendum, batchers"):
            await stack.start_database()
            api_key = await create_operator_key(stack.direct_dsn)
            await stack.start_servers()
            await setup_referendum(
                stack.base_url,
                api_key,
                pool,
                before_open=functools.partial(register_trustees, trustees=trustees),
            )
            stack.start_batcher()
            stack.start_batcher()
            await _wait_leader(stack)
        load = VoterLoad(
            stack.base_url,
            rid,
            pool.ballots(),
            concurrency=config.concurrency,
            rate_per_s=config.rate_per_s,
        )
        running = asyncio.create_task(load.run(deadline_s=24 * 3600))
        watch = _Watch(stack.direct_dsn, rid)
        kinds = config.kinds
        if stack.cluster.wal_disk is None and "wal_full" in kinds:
            kinds = tuple(k for k in kinds if k != "wal_full")
            facts["wal_full"] = "skipped: no tmpfs could be mounted for the WAL (needs root)"
        order = schedule(config.faults, config.seed, kinds)
        with timer.phase(f"{len(order)} faults under load"):
            first = FaultRecord("steady", time.time(), time.time())
            await _recover(first, load, watch)  # the system works before anything breaks
            if first.after_clear_s is None:
                raise RuntimeError("no acknowledgement and block before the first fault")
            for n, kind in enumerate(order, 1):
                if load.exhausted or running.done():
                    problems.append(f"the ballot pool ran out after {n - 1} faults")
                    break
                fault = FaultRecord(kind, time.time(), 0.0)
                fault.cleared_at = await inject(kind, stack, load, config.tuning, rng)
                await _recover(fault, load, watch)
                records.append(fault)
                after = fault.after_clear_s
                echo(
                    f"fault {n}/{len(order)} {kind}: back "
                    f"{'NEVER' if after is None else f'{after:.2f} s'} after clearing"
                )
                await asyncio.sleep(rng.uniform(*config.settle_s))  # steady load between faults
        load.stop()
        await running
        await watch.close()
        with timer.phase("drain, close, final block"):
            if not await _drain(stack.direct_dsn, rid):
                problems.append("stored ballots left unsealed after the drain")
            await _close(stack, api_key)
        logged = await _logged(stack.direct_dsn, rid)
        run_config = LoadConfig(report_dir=folder, active_dsn=stack.direct_dsn)
        record_dir = folder / "record"
        await tally_and_record(
            run_config, trustees, pool, record_dir, facts, stack.base_url, api_key, timer
        )
        if not facts.get("verify_ok"):
            problems.append(f"verify-election failed: {facts.get('verify_failures')}")
        log_key = (record_dir / "log_key.txt").read_text().strip()
        with timer.phase("follow (every checkpoint, first to last)"):
            facts["follow"] = await _follow(stack, log_key, folder / "follow")
        if not facts["follow"]["ok"]:
            problems.append(f"follow failed: {facts['follow']['failure']}")
        if load.receipt_mismatches:
            problems.append(f"{load.receipt_mismatches} resubmission(s) got another receipt")
        if load.refused:
            problems.append(f"ballots refused for good: {load.refused}")
    finally:
        await stack.stop()
        if not config.keep and config.work_dir is None:
            shutil.rmtree(folder, ignore_errors=True)
    facts["phases"] = dict(timer.phases)
    facts["requests"] = len(load.answers)
    verdict = judge(
        records,
        load.acked_at,
        load.submitted,
        [(a.at, a.status) for a in load.answers],
        logged,
        bound_s=config.bound_s,
        extra_problems=problems,
    )
    return ChaosOutcome(verdict, records, facts)
