"""demo_load: the small load `referendum demo` runs against servers it already started."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from loadtest.runner import (
    ChildProcesses,
    create_operator_key,
    demo_load,
    free_port,
    referendum_argv,
    wait_ready,
)
from referendum_service.scratch import scratch_database

pytestmark = pytest.mark.slow


async def test_demo_load_against_running_servers(pg_admin_dsn: str, tmp_path: Path) -> None:
    """A fresh pool's referendum is set up on running servers and loaded without failures."""
    async with scratch_database(pg_admin_dsn, prefix="referendum_load") as dsn:
        api_key = await create_operator_key(dsn)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": dsn,
            "REFERENDUM_PORT": str(port),
            "REFERENDUM_DATA_DIR": str(tmp_path / "data"),
            "REFERENDUM_VOTER_ID_KEY": secrets.token_hex(32),
        }
        with ChildProcesses(tmp_path / "logs") as children:
            server = children.start("servers", referendum_argv("serve"), env)
            await wait_ready(base_url, [server])
            children.start("batcher", referendum_argv("batcher"), env)
            summary = await demo_load(
                base_url, api_key, voters=200, duration_s=4, users=3, out_dir=tmp_path / "demo"
            )
    assert summary.requests > 0 and summary.throughput_rps > 0
    assert summary.failures == 0
    assert summary.ballots > 0
    assert {"submit ballot", "checkpoint", "operator status"} <= {
        e["name"] for e in summary.endpoints
    }
    assert (tmp_path / "demo" / "report.html").exists()
