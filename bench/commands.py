"""``referendum bench NAME``: each benchmark lives in its own module of this package."""

from __future__ import annotations

import click

from referendum_cli import LazyGroup

BENCHMARKS: dict[str, str] = {
    "roll-import": "bench.roll_import:roll_import",
    "crypto": "bench.crypto:crypto",
    "ingest": "bench.ingest:ingest",
    "log": "bench.log:log",
    "tally": "bench.tally:tally",
    "nodes": "bench.nodes:nodes",
}


@click.group(cls=LazyGroup, lazy=BENCHMARKS)
def bench() -> None:
    """Run a benchmark: prints a table and writes bench/results/NAME.json."""
