"""The sizing model's arithmetic: hand-computed cases and monotonicity properties."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from loadtest.capacity import (
    Demand,
    Deployment,
    Rates,
    format_table,
    measured_rates,
    plan,
    province_scenarios,
)


def test_province_day_by_hand() -> None:
    """10M voters, 80% over 12 h, 25% in the peak hour at 2x bursts: figures derived by hand."""
    p = plan(Demand(voters=10_000_000))
    # 10,000,000 × 0.8 = 8,000,000 ballots
    assert p.ballots == pytest.approx(8_000_000)
    # 8,000,000 / (12 × 3600 = 43,200 s) = 185.185... ballots/s
    assert p.average_ballots_per_s == pytest.approx(185.185185, rel=1e-6)
    # 8,000,000 × 0.25 × 2 / 3600 = 1,111.11 ballots/s, i.e. 0.25 × 2 × 12 = 6× the average
    assert p.peak_ballots_per_s == pytest.approx(1111.111, rel=1e-6)
    assert p.peak_to_average == pytest.approx(6.0)
    # write: 1111.11 / (3400 × 0.5) = 0.6536; read: 1111.11 × 3 / (5000 × 0.5) = 1.3333
    assert p.write_cores == pytest.approx(0.65359, rel=1e-4)
    assert p.read_cores == pytest.approx(1.33333, rel=1e-4)
    # ceil(1.987) = 2 cores; ceil(2 / 2) + 1 spare = 2 pods; 2 × 2 = 4 processes
    assert (p.server_cores, p.pods, p.server_processes) == (2, 2, 4)
    # connections: 4 × 10 + 2 × 4 + 10 = 58; backend pool 4 × 4 + 4 + 10 = 30
    assert (p.direct_connections, p.backend_pool) == (58, 30)
    assert not p.pgbouncer_needed


def test_flash_scenario_by_hand() -> None:
    """The whole roll in one hour is 10,000,000 / 3600 = 2,777.8 ballots/s, as DESIGN.md says."""
    p = plan(province_scenarios()["flash"])
    assert p.peak_ballots_per_s == pytest.approx(10_000_000 / 3600)
    assert p.peak_ballots_per_s == pytest.approx(p.average_ballots_per_s)
    # write 2777.8 / 1700 = 1.634, read 8333.3 / 2500 = 3.333 -> 5 cores -> 3 + 1 pods
    assert (p.server_cores, p.pods) == (5, 4)


def test_storage_and_wal_by_hand() -> None:
    """Row bytes, database size and WAL follow the documented sums."""
    d = Deployment(
        body_bytes=600,
        receipt_bytes=300,
        row_overhead_bytes=100,
        index_bytes=200,
        queue_bytes=50,
        log_entry_bytes=100,
        log_bytes_per_ballot=100,
        voter_row_bytes=100,
        wal_factor=1.0,
    )
    p = plan(
        Demand(voters=1000, turnout=1.0, window_hours=1.0, peak_hour_share=1.0, peak_factor=1.0),
        deployment=d,
    )
    # row = 600 + 300 + 100 = 1000 B; stored per ballot = 1000 + 200 + 100 + 100 = 1400 B
    assert p.ballot_row_bytes == 1000
    assert p.db_ballot_bytes == pytest.approx(1000 * 1400)
    assert p.db_roll_bytes == pytest.approx(1000 * 100)
    # WAL per ballot = 1.0 × (1000 + 200 + 50 + 100 + 100) = 1450 B; peak 1000 / 3600 ballots/s
    assert p.wal_bytes_per_ballot == pytest.approx(1450)
    assert p.wal_bytes_per_s == pytest.approx(1450 * 1000 / 3600)
    assert p.wal_bytes_total == pytest.approx(1450 * 1000)
    # rows written: the ballot and its queue row, then its log entry
    assert p.db_rows_per_s == pytest.approx(3 * 1000 / 3600)


def test_merge_delay_by_hand() -> None:
    """A block closes on size before time at high rates: 10,000 ballots at 36,000/s."""
    demand = Demand(
        voters=36_000 * 3600, turnout=1.0, window_hours=1.0, peak_hour_share=1.0, peak_factor=1.0
    )
    p = plan(demand, Rates(batcher_ballots_s=50_000.0))
    # 10,000 / 36,000 = 0.2778 s < 0.5 s, then 10,000 / 50,000 = 0.2 s to seal
    assert p.block_interval_s == pytest.approx(10_000 / 36_000)
    assert p.block_ballots == pytest.approx(10_000)
    assert p.merge_delay_s == pytest.approx(10_000 / 36_000 + 0.2)
    assert p.batcher_utilisation == pytest.approx(36_000 / 50_000)


def test_pgbouncer_needed_when_direct_connections_exceed_limit() -> None:
    """Many processes × a pool of 10 exceed max_connections and call for PgBouncer."""
    demand = Demand(
        voters=100_000_000, turnout=1.0, window_hours=1.0, peak_hour_share=1.0, peak_factor=1.0
    )
    p = plan(demand, deployment=Deployment(max_connections=100))
    assert p.direct_connections == p.server_processes * 10 + 2 * 4 + 10
    assert p.pgbouncer_needed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"turnout": 1.5},
        {"peak_hour_share": 0.0},
        {"peak_hour_share": 0.05},  # below 1/12, the mean hour's share of a 12 h day
        {"peak_factor": 0.5},
        {"window_hours": 0.0},
    ],
)
def test_impossible_demand_is_refused(kwargs: dict[str, float]) -> None:
    """Demands that cannot happen raise ValueError instead of producing a plan."""
    with pytest.raises(ValueError):
        Demand(voters=1000, **kwargs)


@st.composite
def demands(draw: st.DrawFn) -> Demand:
    """Possible demands: the busiest hour carries between the mean and all the ballots."""
    window = draw(st.floats(min_value=1.0, max_value=24.0))
    return Demand(
        voters=draw(st.integers(min_value=1, max_value=50_000_000)),
        turnout=draw(st.floats(min_value=0.01, max_value=1.0)),
        window_hours=window,
        peak_hour_share=draw(st.floats(min_value=1.0 / window, max_value=1.0)),
        peak_factor=draw(st.floats(min_value=1.0, max_value=10.0)),
        revote_ratio=draw(st.floats(min_value=0.0, max_value=0.5)),
    )


@given(demands(), st.floats(min_value=1.01, max_value=5.0))
def test_more_voters_never_need_fewer_resources(d: Demand, growth: float) -> None:
    """Scaling the electorate up never lowers cores, pods, bytes, WAL or connections."""
    small = plan(d)
    big = plan(Demand(**{**d.__dict__, "voters": math.ceil(d.voters * growth)}))
    assert big.peak_ballots_per_s >= small.peak_ballots_per_s
    assert big.server_cores >= small.server_cores
    assert big.pods >= small.pods
    assert big.db_total_bytes >= small.db_total_bytes
    assert big.wal_bytes_per_s >= small.wal_bytes_per_s
    assert big.direct_connections >= small.direct_connections


@given(demands(), st.floats(min_value=1.01, max_value=4.0))
def test_faster_cores_never_need_more_cores(d: Demand, speedup: float) -> None:
    """A higher measured per-core rate never increases the server core count."""
    slow = plan(d, Rates(verified_ballots_per_core_s=3400.0))
    fast = plan(d, Rates(verified_ballots_per_core_s=3400.0 * speedup))
    assert fast.write_cores < slow.write_cores
    assert fast.server_cores <= slow.server_cores


@given(demands())
def test_cores_cover_peak_at_target_utilisation(d: Demand) -> None:
    """The provisioned cores carry the peak writes and reads within the utilisation target."""
    p = plan(d)
    r, u = p.rates, p.deployment.utilisation
    capacity_needed = (
        p.peak_ballots_per_s / r.verified_ballots_per_core_s
        + p.read_requests_per_s / r.reads_per_core_s
    )
    assert p.server_cores * u >= capacity_needed * (1 - 1e-9)
    assert p.server_processes >= p.server_cores


def test_measured_rates_read_bench_results(tmp_path: Path) -> None:
    """Bench rows replace defaults, the per-core pipeline row beats the bare verifier's."""
    (tmp_path / "ingest.json").write_bytes(
        orjson.dumps(
            {
                "benchmark": "ingest",
                "rows": [
                    {"metric": "bare verifier, one core", "value": 2200.0, "unit": "ballots/s"},
                    {
                        "metric": "1 process, per server core",
                        "value": 1800.0,
                        "unit": "ballots/s/core",
                    },
                ],
            }
        )
    )
    (tmp_path / "roll_import.json").write_bytes(
        orjson.dumps(
            {"rows": [{"metric": "import 50,000 voters", "value": 9700.0, "unit": "rows/s"}]}
        )
    )
    (tmp_path / "broken.json").write_text("{not json")
    rates, notes = measured_rates(tmp_path)
    assert rates.verified_ballots_per_core_s == 1800.0
    assert "ingest.json" in rates.source("verified_ballots_per_core_s")
    # the roll import's rows/s is not the database's batched insert rate
    assert rates.roll_import_rows_s == 9700.0
    assert rates.db_rows_per_core_s == Rates().db_rows_per_core_s
    assert rates.batcher_ballots_s == Rates().batcher_ballots_s
    assert any("batcher_ballots_s" in n and "default" in n for n in notes)
    # 10M voters at 9,700 rows/s: 1,030.9 s of roll import
    assert plan(Demand(voters=10_000_000), rates).roll_import_s == pytest.approx(1e7 / 9700)


def test_measured_rates_fall_back_without_results(tmp_path: Path) -> None:
    """With no bench results every figure is the default and the notes say so."""
    rates, notes = measured_rates(tmp_path / "missing")
    assert rates.verified_ballots_per_core_s == 3400.0
    assert all("default" in n for n in notes)


def test_size_command_prints_the_worked_example() -> None:
    """`referendum loadtest size --voters 10000000` prints the day, rush and flash columns."""
    from loadtest.commands import loadtest

    result = CliRunner().invoke(
        loadtest, ["size", "--voters", "10000000", "--bench-dir", "/nonexistent"]
    )
    assert result.exit_code == 0, result.output
    assert "1,111 ballots/s" in result.output  # day peak
    assert "2,778 ballots/s" in result.output  # flash
    assert "day" in result.output and "flash" in result.output
    table = format_table({"day": plan(Demand(voters=10_000_000))})
    assert table.splitlines()[0].split()[:3] == ["group", "quantity", "day"]


def test_size_command_json_custom() -> None:
    """A custom demand given on the command line is sized and returned as JSON."""
    from loadtest.commands import loadtest

    result = CliRunner().invoke(
        loadtest,
        [
            "size",
            "--voters",
            "3600",
            "--turnout",
            "1",
            "--window-hours",
            "1",
            "--peak-hour-share",
            "1",
            "--peak-factor",
            "1",
            "--scenario",
            "custom",
            "--json",
            "--bench-dir",
            "/nonexistent",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = orjson.loads(result.output)
    assert payload["plans"]["custom"]["peak_ballots_per_s"] == pytest.approx(1.0)
