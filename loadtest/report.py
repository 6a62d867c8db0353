"""The capacity report: Locust's CSV output (plus server samples) to HTML, Markdown and plots.

Inputs:

* Locust's ``--csv PREFIX`` files: ``PREFIX_stats.csv`` (one row per request name plus
  ``Aggregated``), ``PREFIX_stats_history.csv`` (one ``Aggregated`` row a second; per-name rows
  too with ``--csv-full-history``) and ``PREFIX_failures.csv``;
* optional samples taken by the runner while the load ran, one JSON object a line:
  ``{"t": epoch_s, "ballots": rows, "sequenced": rows, "oldest_unsequenced_s": s,
  "merge_delay_max_s": s}`` (every key but ``t`` optional);
* optional summaries of other runs (``summary.json``) with a different number of server
  processes, for the scaling plot.

Derived figures:

* throughput over time is the difference of Locust's cumulative request count between history
  rows (Locust's own ``Requests/s`` column is a lagging rolling mean);
* offered-load steps are runs of history rows with the same user count; each step's throughput
  and p99 come from its second half, after Locust's 10-second percentile window has caught up;
* the **knee** is the last step before the first whose p99 exceeds ``knee_factor`` (3) times the
  p99 of the lowest step: beyond it latency grows faster than the load.
"""

from __future__ import annotations

import base64
import csv
import html
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "Endpoint",
    "Knee",
    "LocustRun",
    "Objectives",
    "ReportResult",
    "Step",
    "Summary",
    "build_report",
    "check_objectives",
    "find_knee",
    "load_samples",
    "offered_load_steps",
    "read_locust_csv",
    "summarize",
]

BALLOT_REQUEST = "submit ballot"
"""The Locust request name of a ballot submission (see ``loadtest/locustfile.py``)."""


@dataclass(frozen=True)
class HistoryRow:
    """One ``Aggregated`` row of the stats history (one a second)."""

    t: float
    users: int
    total_requests: int
    total_failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Endpoint:
    """One row of ``PREFIX_stats.csv``."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    median_ms: float
    average_ms: float
    max_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class LocustRun:
    """The parsed CSV output of one Locust run."""

    endpoints: list[Endpoint]
    aggregated: Endpoint
    history: list[HistoryRow]
    failures: list[dict[str, str]]


def _float(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "N/A"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _endpoint(row: dict[str, str]) -> Endpoint:
    return Endpoint(
        method=row.get("Type", ""),
        name=row.get("Name", ""),
        requests=int(row.get("Request Count") or 0),
        failures=int(row.get("Failure Count") or 0),
        rps=_float(row.get("Requests/s")) or 0.0,
        median_ms=_float(row.get("Median Response Time")) or 0.0,
        average_ms=_float(row.get("Average Response Time")) or 0.0,
        max_ms=_float(row.get("Max Response Time")) or 0.0,
        p95_ms=_float(row.get("95%")) or 0.0,
        p99_ms=_float(row.get("99%")) or 0.0,
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_locust_csv(prefix: str | Path) -> LocustRun:
    """Parse ``PREFIX_stats.csv``, ``PREFIX_stats_history.csv`` and ``PREFIX_failures.csv``.

    Raises FileNotFoundError when the stats file is missing and ValueError when it has no
    ``Aggregated`` row.
    """
    prefix = str(prefix)
    stats_path = Path(prefix + "_stats.csv")
    if not stats_path.exists():
        raise FileNotFoundError(f"{stats_path} not found (was locust run with --csv {prefix}?)")
    endpoints: list[Endpoint] = []
    aggregated: Endpoint | None = None
    for row in _read_csv(stats_path):
        endpoint = _endpoint(row)
        if endpoint.name == "Aggregated":
            aggregated = endpoint
        else:
            endpoints.append(endpoint)
    if aggregated is None:
        raise ValueError(f"{stats_path} has no Aggregated row")
    history: list[HistoryRow] = []
    for row in _read_csv(Path(prefix + "_stats_history.csv")):
        if row.get("Name") != "Aggregated":
            continue
        t = _float(row.get("Timestamp"))
        if t is None:
            continue
        history.append(
            HistoryRow(
                t=t,
                users=int(row.get("User Count") or 0),
                total_requests=int(row.get("Total Request Count") or 0),
                total_failures=int(row.get("Total Failure Count") or 0),
                p50_ms=_float(row.get("50%")),
                p95_ms=_float(row.get("95%")),
                p99_ms=_float(row.get("99%")),
            )
        )
    history.sort(key=lambda h: h.t)
    failures = _read_csv(Path(prefix + "_failures.csv"))
    return LocustRun(endpoints, aggregated, history, failures)


def load_samples(path: Path) -> list[dict[str, Any]]:
    """Server/database samples, one JSON object a line (blank lines ignored)."""
    rows: list[dict[str, Any]] = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            value = orjson.loads(line)
            if isinstance(value, dict) and isinstance(value.get("t"), int | float):
                rows.append(value)
    rows.sort(key=lambda r: float(r["t"]))
    return rows


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


def _rate_series(samples: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
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
    rows = _rate_series(samples, "ballots")
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


@dataclass(frozen=True)
class ReportResult:
    html_path: Path
    markdown_path: Path
    summary_path: Path
    plots: list[Path]
    summary: Summary


def _plots(
    run: LocustRun,
    samples: Sequence[dict[str, Any]],
    scaling: Sequence[dict[str, Any]],
    knee: Knee | None,
    out: Path,
) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, Path]] = []
    history = run.history
    series = throughput_series(history)
    if series:
        t0 = history[0].t
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
        ax1.plot([t for t, _ in series], [v for _, v in series], label="requests/s")
        ax1.set_ylabel("requests/s")
        users_ax = ax1.twinx()
        users_ax.plot([h.t - t0 for h in history], [h.users for h in history], "k:", label="users")
        users_ax.set_ylabel("users")
        ax1.legend(loc="upper left")
        for label, attr in (("p50", "p50_ms"), ("p95", "p95_ms"), ("p99", "p99_ms")):
            pts = [(h.t - t0, getattr(h, attr)) for h in history if getattr(h, attr)]
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
        ax2.set_ylabel("latency (ms, 10 s window)")
        ax2.set_xlabel("seconds since start")
        ax2.legend(loc="upper left")
        fig.suptitle("Throughput and latency over time")
        made.append(("Throughput and p50/p95/p99 over time", _save(fig, out / "timeline.png")))
    steps = offered_load_steps(history)
    if steps:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        xs = [s.users for s in steps]
        ax.plot(xs, [s.p99_ms or math.nan for s in steps], "o-", label="p99 (ms)")
        ax.set_xlabel("offered load (concurrent users)")
        ax.set_ylabel("p99 (ms)")
        rps_ax = ax.twinx()
        rps_ax.plot(xs, [s.rps for s in steps], "s--", color="tab:green", label="requests/s")
        rps_ax.set_ylabel("requests/s achieved")
        if knee is not None:
            ax.axvline(knee.users, color="tab:red", linestyle=":")
            ax.annotate(
                f"knee: {knee.users} users, {knee.rps:,.0f} req/s, p99 {knee.p99_ms:,.0f} ms",
                (knee.users, knee.p99_ms),
                textcoords="offset points",
                xytext=(8, 12),
                color="tab:red",
            )
        ax.legend(loc="upper left")
        rps_ax.legend(loc="lower right")
        fig.suptitle("Latency against offered load")
        made.append(("Latency against offered load", _save(fig, out / "latency_vs_load.png")))
    points = sorted(
        (int(s["servers"]), float(s.get("ballots_per_s") or s.get("throughput_rps") or 0.0))
        for s in scaling
        if isinstance(s.get("servers"), int)
    )
    if points:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label="measured")
        base_p, base_v = points[0]
        ax.plot(
            [p[0] for p in points],
            [base_v * p[0] / base_p for p in points],
            ":",
            label="linear from the smallest",
        )
        ax.set_xticks([p[0] for p in points])
        ax.set_xlabel("server processes")
        ax.set_ylabel("ballots/s")
        ax.legend()
        fig.suptitle("Scaling with the number of server processes")
        made.append(("Scaling with server processes", _save(fig, out / "scaling.png")))
    if samples:
        t0 = float(samples[0]["t"])
        delay = [
            (float(s["t"]) - t0, float(s["oldest_unsequenced_s"]))
            for s in samples
            if isinstance(s.get("oldest_unsequenced_s"), int | float)
        ]
        rows = _rate_series(samples, "ballots")
        sequenced = _rate_series(samples, "sequenced")
        if delay:
            fig, ax = plt.subplots(figsize=(9, 3.5))
            ax.plot([d[0] for d in delay], [d[1] for d in delay])
            ax.set_xlabel("seconds since start")
            ax.set_ylabel("oldest unsequenced ballot (s)")
            fig.suptitle("Merge delay (age of the oldest ballot not yet in the log)")
            made.append(("Merge delay", _save(fig, out / "merge_delay.png")))
        if rows or sequenced:
            fig, ax = plt.subplots(figsize=(9, 3.5))
            if rows:
                ax.plot([r[0] for r in rows], [r[1] for r in rows], label="ballots inserted/s")
            if sequenced:
                ax.plot(
                    [r[0] for r in sequenced],
                    [r[1] for r in sequenced],
                    label="ballots sequenced/s",
                )
            ax.set_xlabel("seconds since start")
            ax.set_ylabel("rows/s")
            ax.legend()
            fig.suptitle("Database rows per second")
            made.append(("Database rows/s", _save(fig, out / "db_rows.png")))
    plt.close("all")
    return made


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != 0 and abs(value) < 0.01:
            return f"{value:.2e}"
        return f"{value:,.{digits}f}"
    return str(value)


def _headline_rows(s: Summary) -> list[tuple[str, str]]:
    knee = s.knee
    knee_text = (
        f"{knee['users']} users, {knee['rps']:,.1f} req/s, p99 {knee['p99_ms']:,.0f} ms"
        + ("" if knee["next_p99_ms"] is not None else " (not passed)")
        if knee
        else "n/a (needs a stepped load)"
    )
    return [
        ("duration", f"{_fmt(s.duration_s)} s"),
        ("requests", _fmt(s.requests)),
        ("failures", f"{_fmt(s.failures)} (error ratio {s.error_ratio:.4%})"),
        ("throughput (mean)", f"{_fmt(s.throughput_rps)} req/s"),
        (f"throughput (peak {PEAK_WINDOW} s)", f"{_fmt(s.peak_rps)} req/s"),
        ("ballots accepted", f"{_fmt(s.ballots)} ({_fmt(s.ballots_per_s)} ballots/s)"),
        (
            "latency p50 / p95 / p99",
            f"{_fmt(s.p50_ms, 0)} / {_fmt(s.p95_ms, 0)} / {_fmt(s.p99_ms, 0)} ms",
        ),
        ("knee", knee_text),
        ("max merge delay", _fmt(s.max_merge_delay_s, 2) + (" s" if s.max_merge_delay_s else "")),
        (
            "database rows/s (mean / peak)",
            f"{_fmt(s.db_rows_per_s_mean)} / {_fmt(s.db_rows_per_s_peak)}",
        ),
        ("server processes", _fmt(s.servers)),
    ]


def _markdown(s: Summary, plots: Sequence[tuple[str, Path]], extra: str) -> str:
    lines = [f"# {s.title}", "", "Generated by `referendum loadtest report`; do not edit.", ""]
    lines += ["| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _headline_rows(s)]
    if s.checks:
        lines += [
            "",
            "## Objectives",
            "",
            "| objective | limit | measured | met |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {c['objective']} | {c['limit']} | {_fmt(c['measured'], 3)} | "
            f"{'yes' if c['ok'] else '**NO**'} |"
            for c in s.checks
        ]
        lines += ["", f"Verdict: **{'PASS' if s.ok else 'FAIL'}**"]
    lines += [
        "",
        "## Requests",
        "",
        "| request | count | failures | req/s | p50 | p95 | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {e['method']} {e['name']} | {e['requests']:,} | {e['failures']:,} | "
        f"{e['rps']:,.1f} | {e['median_ms']:,.0f} | {e['p95_ms']:,.0f} | {e['p99_ms']:,.0f} |"
        for e in s.endpoints
    ]
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({path.name})" for title, path in plots]
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def _html(s: Summary, plots: Sequence[tuple[str, Path]], extra: str) -> str:
    esc = html.escape
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in _headline_rows(s))
    checks = ""
    if s.checks:
        checks = (
            "<h2>Objectives</h2><table><tr><th>objective</th><th>limit</th><th>measured</th>"
            "<th>met</th></tr>"
            + "".join(
                f"<tr><td>{esc(c['objective'])}</td><td>{esc(c['limit'])}</td>"
                f"<td>{esc(_fmt(c['measured'], 3))}</td>"
                f"<td class={'ok' if c['ok'] else 'bad'}>{'yes' if c['ok'] else 'NO'}</td></tr>"
                for c in s.checks
            )
            + f"</table><p>Verdict: <b>{'PASS' if s.ok else 'FAIL'}</b></p>"
        )
    endpoints = "".join(
        f"<tr><td>{esc(e['method'])} {esc(e['name'])}</td><td>{e['requests']:,}</td>"
        f"<td>{e['failures']:,}</td><td>{e['rps']:,.1f}</td><td>{e['median_ms']:,.0f}</td>"
        f"<td>{e['p95_ms']:,.0f}</td><td>{e['p99_ms']:,.0f}</td></tr>"
        for e in s.endpoints
    )
    images = "".join(
        f"<h3>{esc(title)}</h3><img alt='{esc(title)}' "
        f"src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}'>"
        for title, path in plots
    )
    extra_html = f"<pre>{esc(extra)}</pre>" if extra else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{esc(s.title)}</title><style>body{{font-family:sans-serif;max-width:60em;"
        "margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:left}.bad{color:#b00;font-weight:bold}.ok{color:#070}"
        "</style></head><body><!-- generated by referendum loadtest report, do not edit -->"
        f"<h1>{esc(s.title)}</h1><table>{rows}</table>{checks}"
        "<h2>Requests</h2><table><tr><th>request</th><th>count</th><th>failures</th>"
        f"<th>req/s</th><th>p50</th><th>p95</th><th>p99</th></tr>{endpoints}</table>"
        f"<h2>Plots</h2>{images}{extra_html}</body></html>\n"
    )


def build_report(
    csv_prefix: str | Path,
    out_dir: Path,
    *,
    samples: Sequence[dict[str, Any]] = (),
    scaling: Sequence[dict[str, Any]] = (),
    title: str = "Load test",
    servers: int | None = None,
    objectives: Objectives | None = None,
    knee_factor: float = 3.0,
    extra_markdown: str = "",
    extra_checks: Sequence[dict[str, Any]] = (),
) -> ReportResult:
    """Write ``report.html``, ``report.md``, ``summary.json`` and PNG plots into ``out_dir``.

    ``scaling`` holds other runs' summaries (each with ``servers``); this run's summary joins
    them in the scaling plot when ``servers`` is given. ``extra_checks`` (``{"objective",
    "limit", "measured", "ok"}``) join the objectives' verdicts.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    run = read_locust_csv(csv_prefix)
    summary = summarize(run, samples, title=title, servers=servers, knee_factor=knee_factor)
    if objectives is not None:
        check_objectives(summary, objectives)
    if extra_checks:
        summary.checks = [*summary.checks, *extra_checks]
        summary.ok = all(c["ok"] for c in summary.checks)
    knee = Knee(**summary.knee) if summary.knee else None
    scaling_points = list(scaling)
    if servers is not None:
        scaling_points.append(summary.as_dict())
    plots = _plots(run, samples, scaling_points, knee, out_dir)
    md_path = out_dir / "report.md"
    html_path = out_dir / "report.html"
    summary_path = out_dir / "summary.json"
    md_path.write_text(_markdown(summary, plots, extra_markdown))
    html_path.write_text(_html(summary, plots, extra_markdown))
    summary_path.write_bytes(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2))
    return ReportResult(html_path, md_path, summary_path, [p for _, p in plots], summary)
