"""The scale rehearsal: one whole referendum end to end, every phase timed.

``referendum loadtest rehearsal --voters 1000000`` runs, against real servers, batcher and
tally follower on this machine:

1. the ballot pool (keys for every voter; ballots for ``--ballots`` of them, default all);
2. database, migrations, ``--servers`` server processes;
3. referendum creation, the roll import over the operator API, opening (roll commitment);
4. every pooled ballot under load from distributed Locust (voters, re-voters, an auditor,
   an operator), then sealing until every ballot is in the log;
5. close and the final block; the encrypted tally, folded block by block by the batcher;
6. two of the three trustees (whose 2-of-3 ceremony made the election key the pool's ballots
   are encrypted to) decrypt with proofs; the result is published and, when every pooled
   ballot was cast, compared with the counts the pool predicted;
7. the election record is exported and ``verify-election`` recomputes everything from it.

The phases that scale with the number of voters or ballots are extrapolated linearly to
1,000,000 and 10,000,000 from their measured rates, and the report says which figures were
measured and which extrapolated.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtest.demo import register_trustees, tally_and_record
from loadtest.pool import BallotPool, generate_pool
from loadtest.report import Objectives, load_samples
from loadtest.runner import LoadConfig, PhaseTimer, run_load
from referendum_core.group import Point
from trustee.ceremony import Ceremony

__all__ = ["RehearsalResult", "decode_count", "extrapolate", "rehearse"]


def decode_count(point: Point, bound: int) -> int:
    """The ``m`` in ``[0, bound]`` with ``m·G == point`` (baby-step giant-step).

    Raises ValueError when there is none.

    >>> decode_count(Point.base_mul(12345), 100_000)
    12345
    """
    if point.is_identity:
        return 0
    step = max(1, math.isqrt(bound) + 1)
    baby: dict[bytes, int] = {}
    current = Point.base_mul(1)
    generator = current
    for j in range(1, step + 1):
        baby.setdefault(current.to_compressed(), j)
        current = current + generator
    giant = Point.base_mul(step)
    target = point
    for i in range(step + 1):
        if target.is_identity:
            return i * step
        found = baby.get(target.to_compressed())
        if found is not None and i * step + found <= bound:
            return i * step + found
        target = target - giant
    raise ValueError(f"no count within [0, {bound}] decrypts to this point")


@dataclass(frozen=True)
class Extrapolation:
    phase: str
    measured_items: int
    seconds: float
    per_second: float
    at_1m_s: float
    at_10m_s: float


def extrapolate(phase: str, items: int, seconds: float) -> Extrapolation:
    """Linear extrapolation of a phase that handled ``items`` in ``seconds``.

    >>> extrapolate("roll import", 100_000, 10.0).at_10m_s
    1000.0
    """
    rate = items / seconds if seconds > 0 else 0.0
    scale = (lambda n: n / rate) if rate > 0 else (lambda n: math.inf)
    return Extrapolation(phase, items, seconds, rate, scale(1_000_000), scale(10_000_000))


@dataclass
class RehearsalResult:
    phases: dict[str, float]
    voters: int
    ballots_stored: int
    expected_tally: list[int]
    decrypted_tally: list[int] | None
    tally_matches: bool | None
    skipped: list[str] = field(default_factory=list)
    extrapolations: list[Extrapolation] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        width = max([len("phase"), *(len(n) for n in self.phases)])
        lines = [f"{'phase'.ljust(width)}  measured (s)", f"{'-' * width}  ------------"]
        lines += [
            f"{name.ljust(width)}  {seconds:>12,.2f}" for name, seconds in self.phases.items()
        ]
        if self.extrapolations:
            w = max(len(e.phase) for e in self.extrapolations)
            lines += [
                "",
                f"{'linear extrapolation'.ljust(w)}  items measured    rate/s"
                "     1M (s)    10M (s)",
                f"{'-' * w}  --------------  --------  ---------  ---------",
            ]
            lines += [
                f"{e.phase.ljust(w)}  {e.measured_items:>14,}  {e.per_second:>8,.0f}  "
                f"{e.at_1m_s:>9,.0f}  {e.at_10m_s:>9,.0f}"
                for e in self.extrapolations
            ]
        return "\n".join(lines)


async def rehearse(
    voters: int,
    report_dir: Path,
    *,
    ballots: int | None = None,
    pool_dir: Path | None = None,
    servers: int = 1,
    locust_workers: int = 1,
    users: int = 50,
    max_duration_s: float = 3600.0,
    database_url: str | None = None,
) -> RehearsalResult:
    """Run the whole referendum; see the module docstring. Bounded by ``max_duration_s``."""
    timer = PhaseTimer()
    folder = pool_dir or Path("data/loadtest") / f"rehearsal-{voters}-{ballots or voters}"
    ceremony = folder / "trustees.json"
    if not (folder / "meta.json").exists() or not ceremony.exists():
        with timer.phase("trustee key ceremony (2 of 3)"):
            trustees = Ceremony.run("loadtest")
        with timer.phase(f"ballot pool ({voters:,} voters, {ballots or voters:,} ballots)"):
            generate_pool(
                folder,
                voters,
                ballots=ballots,
                revote_ratio=0.01,
                election_public_key=trustees.election_key,
                trustees=(trustees.params.threshold, trustees.params.trustees),
            )
        trustees.save(ceremony)
    trustees = Ceremony.load(ceremony)
    pool = BallotPool(folder)
    print(
        f"pool: {pool.meta.voters:,} voter keys and {pool.meta.ballots + pool.meta.revotes:,} "
        f"ballots made in {pool.meta.seconds:,.1f} s on {pool.meta.processes} processes"
    )
    result = RehearsalResult(
        phases=timer.phases,
        voters=pool.meta.voters,
        ballots_stored=0,
        expected_tally=pool.meta.expected_tally,
        decrypted_tally=None,
        tally_matches=None,
    )

    facts: dict[str, Any] = {}

    async def after_close(base_url: str, api_key: str, t: PhaseTimer) -> None:
        await tally_and_record(
            config, trustees, pool, report_dir / "record", facts, base_url, api_key, t
        )
        counts = facts.get("result") or {}
        result.decrypted_tally = [int(counts.get(option, 0)) for option in pool.meta.options]
        if not facts.get("verify_ok"):
            result.skipped.append(
                "verify-election FAILED: " + "; ".join(facts.get("verify_failures", []))
            )

    config = LoadConfig(
        report_dir=report_dir,
        pool_dir=folder,
        duration_s=max_duration_s,
        servers=servers,
        locust_workers=locust_workers,
        users=users,
        spawn_rate=float(users),
        database_url=database_url,
        verify_share=0.02,
        objectives=Objectives(max_error_ratio=0.0),
        drain_timeout_s=600.0,
        title=f"Scale rehearsal: {pool.meta.voters:,} voters",
        stop_when_pool_used=True,
        close_after=True,
        before_open=functools.partial(register_trustees, trustees=trustees),
        after_close=after_close,
        timer=timer,
    )
    summary = await run_load(config)
    result.summary = summary.as_dict()
    result.ballots_stored = int(summary.ballots_stored or 0)
    everything = pool.meta.ballots + pool.meta.revotes
    if result.decrypted_tally is not None:
        all_cast = result.ballots_stored >= everything
        result.tally_matches = (
            (result.decrypted_tally == pool.meta.expected_tally) if all_cast else None
        )
    phases = timer.phases
    for name, seconds in phases.items():
        if name == "roll import" or name.startswith("open"):
            result.extrapolations.append(extrapolate(name, pool.meta.voters, seconds))
    window = _active_window(load_samples(report_dir / "samples.jsonl"))
    if window is not None:
        stored, seconds = window
        result.extrapolations.append(extrapolate("ballots (sustained, database)", stored, seconds))
    return result


def _active_window(samples: list[dict[str, Any]]) -> tuple[int, float] | None:
    """(ballots, seconds) from the first sample with ballots to the first with them all.

    Leaves out Locust's start-up and the idle tail, so the rate is what the servers sustained.
    """
    rows = [s for s in samples if isinstance(s.get("ballots"), int)]
    if not rows:
        return None
    final = rows[-1]["ballots"]
    started = next((s for s in rows if s["ballots"] > 0), None)
    done = next((s for s in rows if s["ballots"] >= final), None)
    if started is None or done is None or done["t"] <= started["t"]:
        return None
    return final - started["ballots"], float(done["t"] - started["t"])
