"""A short real distributed Locust run (master + 2 workers) against real servers and batcher."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from loadtest.pool import generate_pool
from loadtest.report import Objectives
from loadtest.runner import LoadConfig, run_load

pytestmark = pytest.mark.slow


async def test_distributed_run_against_real_servers(pg_admin_dsn: str, tmp_path: Path) -> None:
    """Voters, re-voters, an auditor and an operator get answers: throughput > 0, no failures."""
    pool_dir = tmp_path / "pool"
    generate_pool(pool_dir, 400, revote_ratio=0.05, processes=1, progress=False)
    report_dir = tmp_path / "report"
    config = LoadConfig(
        report_dir=report_dir,
        pool_dir=pool_dir,
        duration_s=5,
        servers=2,
        locust_workers=2,
        users=6,
        spawn_rate=6,
        database_url=pg_admin_dsn,
        verify_share=0.5,
        objectives=Objectives(max_error_ratio=0.0),
        drain_timeout_s=30,
    )
    summary = await run_load(config)
    assert summary.requests > 0 and summary.throughput_rps > 0
    assert summary.failures == 0, (report_dir / "locust_failures.csv").read_text()
    assert summary.ballots > 0
    names = {e["name"] for e in summary.endpoints}
    # every scenario ran: voters verified inclusion proofs, the auditor and operator polled
    assert {"submit ballot", "inclusion proof", "checkpoint", "operator status"} <= names
    assert summary.ok
    stored = orjson.loads((report_dir / "summary.json").read_bytes())
    # the database holds exactly the ballots Locust saw accepted (first ballots + re-votes):
    # had two workers replayed the same ballot, the second 200 would count here but not there
    accepted = sum(
        e["requests"] - e["failures"]
        for e in summary.endpoints
        if e["name"] in ("submit ballot", "submit revote")
    )
    assert stored["ballots_stored"] == accepted
    assert stored["merge_delays"]["sequenced_ballots"] == accepted
    assert (report_dir / "report.html").exists()
