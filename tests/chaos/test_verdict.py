"""The verdict counts lost, duplicated and phantom ballots, and puts each in its fault window."""

from __future__ import annotations

import pytest

from loadtest.chaos.faults import FAULT_KINDS, schedule
from loadtest.chaos.verdict import FaultRecord, LoggedBallot, judge, render_table


def _logged(h: str, at: float, delay: float = 0.5) -> LoggedBallot:
    return LoggedBallot(h, at, delay)


def test_clean_run_passes_and_rows_follow_the_faults() -> None:
    """Every acknowledged ballot logged once: ok; acks and 5xx land in their fault's window."""
    faults = [
        FaultRecord("pg_kill", 10.0, 11.0, 11.5, 11.6),
        FaultRecord("burst", 20.0, 21.0, 21.1, 21.2),
    ]
    acked = {"a": 5.0, "b": 12.0, "c": 22.0}
    verdict = judge(
        faults,
        acked,
        {"a", "b", "c"},
        [(10.5, 503), (10.6, 503), (20.5, 429), (5.0, 201)],
        [_logged("a", 4.9), _logged("b", 11.9, 2.5), _logged("c", 21.9)],
        bound_s=10.0,
    )
    assert verdict.ok, verdict.problems
    rows = {r.kind: r for r in verdict.rows}
    assert rows["steady"].acknowledged == 1
    assert rows["pg_kill"].acknowledged == 1 and rows["pg_kill"].http_5xx == 2
    assert rows["pg_kill"].max_merge_delay_s == 2.5
    assert rows["burst"].http_5xx == 0
    assert rows["pg_kill"].after_clear_s == [pytest.approx(0.6)]
    assert "| pg_kill | 1 | 1 |" in render_table(verdict)


def test_lost_duplicated_and_phantom_fail_the_verdict() -> None:
    """An acknowledged ballot missing, one logged twice, one never submitted: three failures."""
    verdict = judge(
        [FaultRecord("server_kill", 10.0, 10.0, 10.2, 10.3)],
        {"a": 11.0, "b": 11.0},
        {"a", "b", "t"},
        [],
        [_logged("b", 10.9), _logged("b", 10.9), _logged("x", 10.9), _logged("t", 10.9)],
        bound_s=10.0,
    )
    assert not verdict.ok
    assert verdict.lost == ["a"] and verdict.duplicated == ["b"] and verdict.phantom == ["x"]
    assert verdict.unacknowledged_logged == 1  # "t": timed out on the client, then logged
    row = next(r for r in verdict.rows if r.kind == "server_kill")
    assert (row.lost, row.duplicated, row.phantom) == (1, 1, 1)
    assert len(verdict.problems) == 3


def test_slow_or_missing_recovery_and_500_fail_the_verdict() -> None:
    """A recovery past the bound, one that never came, and a 500 answer are each reported."""
    verdict = judge(
        [
            FaultRecord("pg_immediate", 10.0, 11.0, 25.0, 25.0),
            FaultRecord("net_drop", 30.0, 31.0, None, None),
        ],
        {},
        set(),
        [(30.5, 500)],
        [],
        bound_s=10.0,
    )
    assert not verdict.ok
    assert verdict.slow_recoveries == 2
    assert any("500" in p for p in verdict.problems)


def test_schedule_is_seeded_and_balanced() -> None:
    """The same seed gives the same order; every kind appears as often as the others (±1)."""
    order = schedule(50, seed=9)
    assert order == schedule(50, seed=9) != schedule(50, seed=10)
    counts = [order.count(k) for k in FAULT_KINDS]
    assert max(counts) - min(counts) <= 1 and sum(counts) == 50
