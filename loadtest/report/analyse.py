"""The figures of a run: throughput, offered-load steps, the knee, objectives and verdict."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from loadtest.report.read import BALLOT_REQUEST, HistoryRow, LocustRun

__all__ = [
    "PEAK_WINDOW",
    "Knee",
    "Objectives",
    "Step",
    "Summary",
    "check_objectives",
    "find_knee",
    "offered_load_steps",
    "rate_series",
    "summarize",
    "throughput_series",
]


def _change_points(history: Sequence[HistoryRow]) -> list[HistoryRow]:
    """The first row and every row whose cumulative count moved.

    Distributed Locust workers report every few seconds, so the master's once-a-second history
    repeats counts; rates between change points are the true rates, not spikes and zeros.
    """
    points: list[HistoryRow] = []
    for row in history:
        if not points or row.total_requests != points[-1].total_requests:
            points.append(row)
    return points


def throughput_series(history: Sequence[HistoryRow]) -> list[tuple[float, float]]:
    """(seconds since start, requests/s) between successive changes of the cumulative count."""
    points = _change_points(history)
    if len(points) < 2:
        return []
    t0 = history[0].t
    series = []
    for prev, cur in itertools.pairwise(points):
        dt = cur.t - prev.t
        if dt > 0:
            series.append((cur.t - t0, (cur.total_requests - prev.total_requests) / dt))
    return series


@dataclass(frozen=True)
class Step:
    """A stretch of the run at one user count: the offered load and what it got."""

    users: int
    seconds: float
    rps: float
    p99_ms: float | None


def offered_load_steps(history: Sequence[HistoryRow]) -> list[Step]:
    """Group history rows by user count; measure each step on its settled second half.

    A step's rate is the time-weighted mean of the rates between count changes that end
    inside its second half (or anywhere in it, when the reports were too sparse).
    """
    points = _change_points(history)
    intervals = [
        (prev.t, cur.t, (cur.total_requests - prev.total_requests) / (cur.t - prev.t))
        for prev, cur in itertools.pairwise(points)
        if cur.t > prev.t
    ]
    groups: list[list[HistoryRow]] = []
    for row in history:
        if row.users <= 0:
            continue
        if groups and groups[-1][0].users == row.users:
            groups[-1].append(row)
        else:
            groups.append([row])
    steps = []
    for group in groups:
        if len(group) < 3:
            continue
        settled = group[len(group) // 2 :]
        inside = [i for i in intervals if settled[0].t < i[1] <= group[-1].t]
        if not inside:
            inside = [i for i in intervals if group[0].t < i[1] <= group[-1].t]
        if not inside:
            continue
        weight = sum(end - start for start, end, _ in inside)
        rps = sum((end - start) * rate for start, end, rate in inside) / weight
        p99s = [r.p99_ms for r in settled if r.p99_ms]
        steps.append(
            Step(
                users=group[0].users,
                seconds=group[-1].t - group[0].t,
                rps=rps,
                p99_ms=statistics.median(p99s) if p99s else None,
            )
        )
    return steps


@dataclass(frozen=True)
class Knee:
    """The highest offered load before latency ran away."""

    users: int
    rps: float
    p99_ms: float
    baseline_p99_ms: float
    next_p99_ms: float | None
    """p99 at the step after the knee; None when the knee was never passed."""


def find_knee(steps: Sequence[Step], knee_factor: float = 3.0) -> Knee | None:
    """The last step whose p99 stays within ``knee_factor`` × the lowest step's p99.

    Steps are ordered by user count; the baseline is the lowest load's p99 (at least 1 ms, so
    a sub-millisecond baseline does not make noise look like a knee). Returns None with fewer
    than two measured steps, or when the load never grew by half (a steady run whose user
    count merely wobbled has no knee to find).

    >>> s = [Step(1, 10, 100, 10), Step(2, 10, 200, 12), Step(4, 10, 300, 80)]
    >>> find_knee(s).users
    2
    """
    measured = sorted((s for s in steps if s.p99_ms is not None), key=lambda s: s.users)
    if len(measured) < 2 or max(s.users for s in measured) < 1.5 * measured[0].users:
        return None
    first_p99 = measured[0].p99_ms
    assert first_p99 is not None
    baseline = max(first_p99, 1.0)
    knee = measured[0]
    for step in measured[1:]:
        assert step.p99_ms is not None
        if step.p99_ms > knee_factor * baseline:
            assert knee.p99_ms is not None
            return Knee(knee.users, knee.rps, knee.p99_ms, baseline, step.p99_ms)
        knee = step
    assert knee.p99_ms is not None
    return Knee(knee.users, knee.rps, knee.p99_ms, baseline, None)


@dataclass(frozen=True)
class Objectives:
    """What a run must achieve; None means not checked."""

    target_rate: float | None = None
    """Ballots/s accepted (the submit request's rate, else all requests)."""
    max_p99_ms: float | None = None
    max_error_ratio: float | None = None
    max_merge_delay_s: float | None = None


@dataclass
class Summary:
    """The headline figures of one run (written as ``summary.json``)."""

    title: str
    duration_s: float
    requests: int
    failures: int
    error_ratio: float
    throughput_rps: float
    peak_rps: float
    ballots: int
    ballots_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    knee: dict[str, Any] | None
    max_merge_delay_s: float | None
    db_rows_per_s_mean: float | None
    db_rows_per_s_peak: float | None
    servers: int | None = None
    ballots_stored: int | None = None
    """Ballots in the database after the run (set by the runner)."""
    phases: dict[str, float] = field(default_factory=dict)
    """Seconds per phase (set by the runner)."""
    endpoints: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    ok: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PEAK_WINDOW = 5
"""Seconds over which the peak throughput is averaged (one second alone is noisy)."""


def _peak(series: Sequence[tuple[float, float]], window: int) -> float:
    """Highest mean of ``window`` consecutive per-second rates (all of them when fewer)."""
    values = [v for _, v in series]
    if not values:
        return 0.0
    if len(values) <= window:
        return statistics.fmean(values)
    return max(statistics.fmean(values[i : i + window]) for i in range(len(values) - window + 1))


def rate_series(samples: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    points = [(float(s["t"]), s[key]) for s in samples if isinstance(s.get(key), int | float)]
    if len(points) < 2:
        return []
    t0 = float(samples[0]["t"])
    out = []
    for (ta, a), (tb, b) in itertools.pairwise(points):
        if tb > ta:
            out.append((tb - t0, (b - a) / (tb - ta)))
    return out


def _merge_delay_max(samples: Sequence[dict[str, Any]]) -> float | None:
    values = [
        float(s[k])
        for s in samples
        for k in ("merge_delay_max_s", "oldest_unsequenced_s")
        if isinstance(s.get(k), int | float)
    ]
    return max(values) if values else None


def summarize(
    run: LocustRun,
    samples: Sequence[dict[str, Any]] = (),
    *,
    title: str = "Load test",
    servers: int | None = None,
    knee_factor: float = 3.0,
) -> Summary:
    """The headline figures of a run."""
    agg = run.aggregated
    history = run.history
    duration = history[-1].t - history[0].t if len(history) >= 2 else 0.0
    series = throughput_series(history)
    knee = find_knee(offered_load_steps(history), knee_factor)
    ballot = next((e for e in run.endpoints if e.name == BALLOT_REQUEST), None)
    rows = rate_series(samples, "ballots")
    return Summary(
        title=title,
        duration_s=duration,
        requests=agg.requests,
        failures=agg.failures,
        error_ratio=agg.failures / agg.requests if agg.requests else 0.0,
        throughput_rps=agg.rps,
        peak_rps=_peak(series, PEAK_WINDOW),
        ballots=ballot.requests - ballot.failures if ballot else 0,
        ballots_per_s=ballot.rps if ballot else 0.0,
        p50_ms=agg.median_ms,
        p95_ms=agg.p95_ms,
        p99_ms=agg.p99_ms,
        knee=asdict(knee) if knee else None,
        max_merge_delay_s=_merge_delay_max(samples),
        db_rows_per_s_mean=statistics.fmean(v for _, v in rows) if rows else None,
        db_rows_per_s_peak=max(v for _, v in rows) if rows else None,
        servers=servers,
        endpoints=[asdict(e) for e in run.endpoints],
    )


def check_objectives(summary: Summary, objectives: Objectives) -> Summary:
    """Record each objective's verdict in ``summary.checks`` and set ``summary.ok``."""
    checks: list[dict[str, Any]] = []
    rate = summary.ballots_per_s if summary.ballots else summary.throughput_rps

    def check(name: str, measured: float | None, limit: float | None, higher_ok: bool) -> None:
        if limit is None:
            return
        ok = measured is not None and (measured >= limit if higher_ok else measured <= limit)
        checks.append(
            {
                "objective": name,
                "limit": (">= " if higher_ok else "<= ") + f"{limit:g}",
                "measured": measured,
                "ok": ok,
            }
        )

    check("rate (ballots/s)", rate, objectives.target_rate, True)
    check("p99 (ms)", summary.p99_ms, objectives.max_p99_ms, False)
    check("error ratio", summary.error_ratio, objectives.max_error_ratio, False)
    check("merge delay (s)", summary.max_merge_delay_s, objectives.max_merge_delay_s, False)
    summary.checks = checks
    summary.ok = all(c["ok"] for c in checks)
    return summary
