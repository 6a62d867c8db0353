"""A short seeded chaos run passes; the same run against a broken build reports the loss."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from loadtest.chaos.cluster import postgres_binaries
from loadtest.chaos.faults import FAULT_KINDS
from loadtest.chaos.run import ChaosConfig, run_chaos

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(postgres_binaries() is None, reason="no PostgreSQL binaries"),
]

BROKEN = Path(__file__).with_name("broken_serve.py")


async def test_short_seeded_run_keeps_every_acknowledged_ballot(tmp_path: Path) -> None:
    """27 faults (every kind 3 times) under load: none lost, duplicated or phantom; all recover."""
    outcome = await run_chaos(
        ChaosConfig(faults=27, seed=17, work_dir=tmp_path / "run", rate_per_s=30.0, echo=None)
    )
    verdict = outcome.verdict
    assert verdict.ok, verdict.problems
    assert len(outcome.faults) == 27
    skipped = {"wal_full"} if "wal_full" in outcome.facts else set()  # no tmpfs (not root)
    assert {f.kind for f in outcome.faults} == set(FAULT_KINDS) - skipped
    assert verdict.acknowledged > 500
    assert not verdict.lost and not verdict.duplicated and not verdict.phantom
    assert all(f.after_clear_s is not None and f.after_clear_s <= 10.0 for f in outcome.faults)
    assert outcome.facts["verify_ok"] and outcome.facts["follow"]["ok"]
    database_rows = [r for r in verdict.rows if r.kind in ("pg_kill", "pg_immediate", "net_drop")]
    assert sum(r.http_5xx for r in database_rows) > 0, "the database faults were not felt"


async def test_broken_build_that_acknowledges_before_commit_fails_the_verdict(
    tmp_path: Path,
) -> None:
    """A server that answers 201 for batches it never committed: the verdict counts them lost."""
    outcome = await run_chaos(
        ChaosConfig(
            faults=3,
            seed=3,
            kinds=("server_kill", "batcher_kill"),
            work_dir=tmp_path / "run",
            rate_per_s=30.0,
            server_argv=[sys.executable, str(BROKEN), "serve", "--no-migrate"],
            echo=None,
        )
    )
    verdict = outcome.verdict
    assert not verdict.ok
    assert len(verdict.lost) > 0
    assert any("lost" in problem for problem in verdict.problems)
    assert sum(row.lost for row in verdict.rows) == len(verdict.lost)
