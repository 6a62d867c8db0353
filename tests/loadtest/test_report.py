"""The capacity report built from a canned Locust run (tests/loadtest/fixtures/canned_*)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from loadtest.report import (
    Objectives,
    Step,
    build_report,
    find_knee,
    load_samples,
    offered_load_steps,
    read_locust_csv,
)

FIXTURES = Path(__file__).parent / "fixtures"
CANNED = FIXTURES / "canned"


def _aggregated_row() -> dict[str, str]:
    with (FIXTURES / "canned_stats.csv").open(newline="") as handle:
        return next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")


def test_report_from_canned_csv_has_headline_figures(tmp_path: Path) -> None:
    """report.md/html/summary.json and the plots exist and carry the CSV's headline figures."""
    result = build_report(CANNED, tmp_path, title="canned run")
    agg = _aggregated_row()
    requests = int(agg["Request Count"])
    for path in (result.html_path, result.markdown_path, result.summary_path):
        assert path.exists() and path.stat().st_size > 0
    assert {p.name for p in result.plots} >= {"timeline.png", "latency_vs_load.png"}
    for plot in result.plots:
        assert plot.read_bytes().startswith(b"\x89PNG")
    markdown = result.markdown_path.read_text()
    html = result.html_path.read_text()
    # figures taken from Locust's own Aggregated row, formatted as the report prints them
    for text in (
        f"{requests:,}",
        f"{float(agg['Requests/s']):,.1f} req/s",
        f"{float(agg['99%']):,.0f} ms",
    ):
        assert text in markdown
        assert text in html
    summary = orjson.loads(result.summary_path.read_bytes())
    assert summary["requests"] == requests
    assert summary["failures"] == int(agg["Failure Count"]) == 0
    assert summary["p99_ms"] == float(agg["99%"])
    assert "data:image/png;base64," in html


def test_knee_of_canned_run() -> None:
    """The canned step run's knee is at 12 users: its p99 doubles there, then jumps past 3x."""
    steps = offered_load_steps(read_locust_csv(CANNED).history)
    # the canned shape offers 3, 6, 12, 24, 48 users, 12 s each
    assert [s.users for s in steps] == [3, 6, 12, 24, 48]
    # each user makes 20 requests/s (constant_throughput(20)) while the server keeps up
    for step in steps[:3]:
        assert step.rps == pytest.approx(20 * step.users, rel=0.1)
    knee = find_knee(steps)
    assert knee is not None
    baseline = steps[0].p99_ms
    assert baseline is not None
    # p99 at 24 users (the step after the knee) is more than 3 × the 3-user p99
    assert knee.users == 12
    assert knee.next_p99_ms is not None and knee.next_p99_ms > 3 * baseline


def test_knee_not_passed_and_too_few_steps() -> None:
    """Latency that never runs away reports the last step as an unpassed knee; one step, none."""
    flat = [Step(1, 10, 100.0, 10.0), Step(2, 10, 200.0, 11.0), Step(4, 10, 400.0, 25.0)]
    knee = find_knee(flat)
    assert knee is not None and knee.users == 4 and knee.next_p99_ms is None
    assert find_knee([Step(1, 10, 100.0, 10.0)]) is None


def test_samples_give_merge_delay_rows_and_scaling(tmp_path: Path) -> None:
    """Database samples add merge-delay and rows/s figures; other runs add a scaling plot."""
    samples_path = tmp_path / "samples.jsonl"
    # 100 rows inserted per second, 90 sequenced; the oldest unsequenced ballot peaks at 1.5 s
    lines = [
        {
            "t": 1000.0 + i,
            "ballots": 100 * i,
            "sequenced": 90 * i,
            "oldest_unsequenced_s": [0.2, 1.5, 0.7][i % 3],
        }
        for i in range(10)
    ]
    samples_path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    samples = load_samples(samples_path)
    other = {"servers": 1, "ballots_per_s": 50.0}
    result = build_report(
        CANNED,
        tmp_path / "out",
        samples=samples,
        scaling=[other],
        servers=2,
        objectives=Objectives(max_merge_delay_s=1.0, max_error_ratio=0.0),
    )
    s = result.summary
    assert s.db_rows_per_s_mean == pytest.approx(100.0)
    assert s.db_rows_per_s_peak == pytest.approx(100.0)
    assert s.max_merge_delay_s == pytest.approx(1.5)
    assert {p.name for p in result.plots} >= {"merge_delay.png", "db_rows.png", "scaling.png"}
    # merge delay 1.5 s misses the 1.0 s objective; the error ratio 0 meets its limit
    verdicts = {c["objective"]: c["ok"] for c in s.checks}
    assert verdicts == {"merge delay (s)": False, "error ratio": True}
    assert not s.ok
    assert "FAIL" in result.markdown_path.read_text()


def test_objectives_met(tmp_path: Path) -> None:
    """Generous objectives on the canned run pass, and the verdict says so."""
    agg = _aggregated_row()
    result = build_report(
        CANNED,
        tmp_path,
        objectives=Objectives(
            target_rate=float(agg["Requests/s"]) * 0.9, max_p99_ms=float(agg["99%"]) + 1
        ),
    )
    assert result.summary.ok
    assert "Verdict: **PASS**" in result.markdown_path.read_text()


def test_missing_csv_is_reported(tmp_path: Path) -> None:
    """A prefix without Locust files raises FileNotFoundError naming the expected file."""
    with pytest.raises(FileNotFoundError, match=r"_stats\.csv"):
        read_locust_csv(tmp_path / "nothing")


def test_report_command(tmp_path: Path) -> None:
    """`referendum loadtest report --locust-csv PREFIX` writes the report files."""
    from loadtest.commands import loadtest

    for name in ("stats", "stats_history", "failures"):
        shutil.copy(FIXTURES / f"canned_{name}.csv", tmp_path / f"run_{name}.csv")
    out = tmp_path / "report"
    result = CliRunner().invoke(
        loadtest, ["report", "--locust-csv", str(tmp_path / "run"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and (out / "report.md").exists()


def test_steady_run_has_no_knee() -> None:
    """A user count that only wobbles (10 then 9 users) is not a stepped load: no knee."""
    assert find_knee([Step(10, 4, 100.0, 50.0), Step(9, 4, 90.0, 300.0)]) is None


def test_missed_objective_exits_non_zero(tmp_path: Path) -> None:
    """The run command's verdict exits 1 when an objective is missed and returns when met."""
    from loadtest.commands import _verdict

    agg = _aggregated_row()
    missed = build_report(CANNED, tmp_path / "a", objectives=Objectives(max_p99_ms=1.0))
    with pytest.raises(SystemExit) as exited:
        _verdict(missed.summary)
    assert exited.value.code == 1
    met = build_report(
        CANNED, tmp_path / "b", objectives=Objectives(max_p99_ms=float(agg["99%"]) + 1)
    )
    _verdict(met.summary)  # returns normally


def test_extra_checks_join_the_verdict(tmp_path: Path) -> None:
    """A runner check (every ballot sequenced) that failed turns a passing run into a FAIL."""
    check = {"objective": "every ballot sequenced", "limit": "yes", "measured": False, "ok": False}
    result = build_report(
        CANNED, tmp_path, objectives=Objectives(max_error_ratio=0.0), extra_checks=[check]
    )
    assert [c["ok"] for c in result.summary.checks] == [True, False]
    assert not result.summary.ok
    text = result.markdown_path.read_text()
    assert "every ballot sequenced" in text and "Verdict: **FAIL**" in text
