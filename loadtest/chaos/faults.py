"""The faults, their seeded schedule, and how each is injected and cleared.

Each injector breaks one thing, then clears the fault (restarts, resumes, heals) and returns
the wall-clock time the fault was cleared: for the database faults, the moment it accepts
connections again. Recovery is measured from there by the run (:mod:`loadtest.chaos.run`).

=================  ==========================================================================
kind               what is done
=================  ==========================================================================
server_kill        SIGKILL one server worker (its supervisor starts a new one)
batcher_kill       SIGKILL the batcher leader (the standby takes over); a new standby starts
batcher_stop       SIGSTOP the leader for longer than the merge delay, then SIGCONT
pg_immediate       ``pg_ctl stop -m immediate`` (a crash: recovery at start), then start
pg_kill            SIGKILL the postmaster alone (its backends are orphaned), then start
net_drop           the proxy resets every database connection and refuses new ones a while
net_stall          the proxy holds every byte a while, then lets them flow
wal_full           the WAL's own small disk (a tmpfs in the cluster's folder) is filled and
                   WAL segments forced until PostgreSQL fails on it; freed, restarted if gone
net_blackhole      (not in the default schedule) the links open at the cut stay open and
                   silent for ever; new ones work after it: the services do not recover
burst              ``burst_factor`` times the steady concurrency, unpaced, for a moment
=================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from loadtest.chaos.client import VoterLoad
from loadtest.chaos.stack import Stack

__all__ = ["DATABASE_FAULTS", "FAULT_KINDS", "FaultTuning", "inject", "schedule"]

FAULT_KINDS = (
    "server_kill",
    "batcher_kill",
    "batcher_stop",
    "pg_immediate",
    "pg_kill",
    "net_drop",
    "net_stall",
    "wal_full",
    "burst",
)
DATABASE_FAULTS = frozenset({"pg_immediate", "pg_kill", "net_drop", "net_stall", "wal_full"})
"""Faults after which the database is "back" only once the fault is cleared."""


@dataclass(frozen=True)
class FaultTuning:
    """How long each fault lasts."""

    merge_delay_s: float = 2.0
    net_cut_s: float = 1.5
    pg_down_s: float = 0.5
    burst_factor: int = 20
    burst_ballots: int = 200
    wal_full_s: float = 10.0
    """Longest the WAL's disk stays full while segments are forced (PostgreSQL fails sooner)."""


def schedule(count: int, seed: int, kinds: tuple[str, ...] = FAULT_KINDS) -> list[str]:
    """``count`` faults in a seeded random order, every kind as often as the others (±1).

    >>> schedule(4, seed=1, kinds=("a", "b")) == schedule(4, seed=1, kinds=("a", "b"))
    True
    >>> sorted(schedule(4, seed=1, kinds=("a", "b")))
    ['a', 'a', 'b', 'b']
    """
    rng = random.Random(seed)
    order: list[str] = []
    while len(order) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        order.extend(round_)
    return order[:count]


Injector = Callable[[Stack, VoterLoad, FaultTuning, random.Random], Awaitable[float]]


async def _server_kill(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    workers = stack.server_workers()
    if not workers:
        raise RuntimeError("no server worker to kill")
    os.kill(rng.choice(workers), signal.SIGKILL)
    return time.time()


async def _leader_process(stack: Stack) -> tuple[str, int]:
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        name = await stack.leader()
        live = stack.live_batchers()
        if name is not None and name in live:
            return name, live[name].pid
        await asyncio.sleep(0.05)  # polling the lock table for a leader, with a deadline
    raise RuntimeError("no batcher leader within 30 s")


async def _batcher_kill(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    _, pid = await _leader_process(stack)
    os.killpg(pid, signal.SIGKILL)
    cleared = time.time()
    stack.live_batchers()
    stack.start_batcher()  # the next standby
    return cleared


async def _batcher_stop(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    _, pid = await _leader_process(stack)
    os.killpg(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(t.merge_delay_s + 0.5)  # the fault's length, not a synchronisation
    finally:
        os.killpg(pid, signal.SIGCONT)
    return time.time()


async def _pg_immediate(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    await asyncio.to_thread(stack.cluster.stop, "immediate")
    await asyncio.sleep(t.pg_down_s)  # how long the database stays down
    await asyncio.to_thread(stack.cluster.start)
    return time.time()


async def _pg_kill(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    await asyncio.to_thread(stack.cluster.kill_postmaster)
    # the restart retries while the dead postmaster (not yet reaped) or an orphaned backend
    # still holds the data folder's lock or shared memory: see PrivateCluster.start
    await asyncio.to_thread(stack.cluster.start)
    return time.time()


async def _net_drop(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    assert stack.proxy is not None
    stack.proxy.drop()
    try:
        await asyncio.sleep(t.net_cut_s)  # the cut's length
    finally:
        stack.proxy.heal()
    return time.time()


async def _net_stall(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    assert stack.proxy is not None
    stack.proxy.stall()
    try:
        await asyncio.sleep(t.net_cut_s)  # the stall's length
    finally:
        stack.proxy.heal()
    return time.time()


_FORCE_SEGMENT = (
    "SELECT pg_logical_emit_message(false, 'chaos', repeat('x', 2000)), pg_switch_wal()"
)


async def _wal_full(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    cluster = stack.cluster
    await asyncio.to_thread(cluster.fill_wal_disk)
    try:
        # each switch needs a WAL segment; once the recycled ones are used, a new file cannot be
        # made on the full disk and PostgreSQL fails (a PANIC, then its own crash restart)
        deadline = time.monotonic() + t.wal_full_s
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(stack.direct_dsn, timeout=2)
                try:
                    for _ in range(4):
                        await conn.execute(_FORCE_SEGMENT, timeout=2)
                finally:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), timeout=2)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                break  # the database failed on its full disk
    finally:
        await asyncio.to_thread(cluster.free_wal_disk)
    await asyncio.to_thread(cluster.ensure_running)
    return time.time()


async def _net_blackhole(
    stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random
) -> float:
    assert stack.proxy is not None
    stack.proxy.blackhole()
    try:
        await asyncio.sleep(t.net_cut_s)  # the cut's length; the old links stay dead
    finally:
        stack.proxy.heal()
    return time.time()


async def _burst(stack: Stack, load: VoterLoad, t: FaultTuning, rng: random.Random) -> float:
    await load.burst(t.burst_ballots, load.concurrency * t.burst_factor, deadline_s=30.0)
    return time.time()


INJECTORS: dict[str, Injector] = {
    "server_kill": _server_kill,
    "batcher_kill": _batcher_kill,
    "batcher_stop": _batcher_stop,
    "pg_immediate": _pg_immediate,
    "pg_kill": _pg_kill,
    "net_drop": _net_drop,
    "net_stall": _net_stall,
    "net_blackhole": _net_blackhole,
    "wal_full": _wal_full,
    "burst": _burst,
}


async def inject(
    kind: str, stack: Stack, load: VoterLoad, tuning: FaultTuning, rng: random.Random
) -> float:
    """Inject fault ``kind`` and clear it; the wall-clock time it was cleared."""
    return await INJECTORS[kind](stack, load, tuning, rng)
