"""The scale rehearsal: tally decoding, extrapolation, and a small end-to-end referendum."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest.rehearsal import _active_window, decode_count, extrapolate, rehearse
from referendum_core.group import IDENTITY, Point


@pytest.mark.parametrize("m", [1, 2, 99, 100, 101, 9_999, 10_000])
def test_decode_count_finds_every_count_up_to_the_bound(m: int) -> None:
    """Baby-step giant-step recovers m from m·G across step boundaries (step = isqrt+1 = 101)."""
    assert decode_count(Point.base_mul(m), 10_000) == m


def test_decode_count_identity_and_out_of_range() -> None:
    """The identity decodes to 0; a count above the bound is refused."""
    assert decode_count(IDENTITY, 10) == 0
    with pytest.raises(ValueError):
        decode_count(Point.base_mul(11), 10)


def test_extrapolation_and_active_window() -> None:
    """Linear extrapolation by hand, and the sustained window leaves out idle start and tail."""
    e = extrapolate("roll import", 1_000_000, 100.0)
    # 10,000 rows/s: 100 s for 1M, 1,000 s for 10M
    assert (e.per_second, e.at_1m_s, e.at_10m_s) == (10_000.0, 100.0, 1_000.0)
    samples = [
        {"t": 0.0, "ballots": 0},
        {"t": 1.0, "ballots": 0},
        {"t": 2.0, "ballots": 100},  # load starts
        {"t": 6.0, "ballots": 900},  # every ballot stored
        {"t": 9.0, "ballots": 900},  # idle tail
    ]
    # 800 ballots between t=2 and t=6
    assert _active_window(samples) == (800, 4.0)
    assert _active_window([{"t": 0.0, "ballots": 0}]) is None


@pytest.mark.slow
async def test_small_rehearsal_tally_matches(pg_admin_dsn: str, tmp_path: Path) -> None:
    """A whole small referendum: roll, load, sealing, close, trustee tally as predicted,
    record verified."""
    result = await rehearse(
        300,
        tmp_path / "report",
        ballots=120,
        pool_dir=tmp_path / "pool",
        servers=1,
        users=4,
        max_duration_s=60,
        database_url=pg_admin_dsn,
    )
    assert result.summary["failures"] == 0
    assert result.ballots_stored == 120 + round(120 * 0.01)
    assert result.decrypted_tally == result.expected_tally
    assert result.tally_matches is True
    for phase in (
        "roll import",
        "open (roll commitment)",
        "ballots under load",
        "close + final block",
        "encrypted tally ready",
        "trustee decryption + publish",
        "export election record",
        "verify-election",
    ):
        assert phase in result.phases
    assert not result.skipped
