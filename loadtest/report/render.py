"""Writing the report: PNG plots, ``report.md``, ``report.html`` (from ``report.html.in``)."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import orjson

from loadtest.report.analyse import (
    PEAK_WINDOW,
    Knee,
    Objectives,
    Summary,
    check_objectives,
    offered_load_steps,
    rate_series,
    summarize,
    throughput_series,
)
from loadtest.report.read import LocustRun, read_locust_csv

__all__ = ["ReportResult", "build_report"]


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
        rows = rate_series(samples, "ballots")
        sequenced = rate_series(samples, "sequenced")
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
    return _PAGE.substitute(
        title=esc(s.title),
        rows=rows,
        checks=checks,
        endpoints=endpoints,
        images=images,
        extra=f"<pre>{esc(extra)}</pre>" if extra else "",
    )


_PAGE = Template(resources.files(__package__).joinpath("report.html.in").read_text())
"""The page around the tables and plots; every ``$field`` is filled in, already escaped."""


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
