"""Shared output of every benchmark: a table for people and the same figures as JSON."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "RESULTS_DIR",
    "create_bench_database",
    "drop_bench_database",
    "machine_info",
    "median",
    "write_results",
]

RESULTS_DIR = Path(os.environ.get("REFERENDUM_BENCH_DIR", "bench/results"))


def median(values: Sequence[float]) -> float:
    """Median of several runs (benchmarks quote medians; machines here are noisy)."""
    return float(statistics.median(values))


def machine_info() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _fmt(value: Any) -> str:
    if isinstance(value, bool):  # a verdict against a target
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value >= 100:
            return f"{value:,.0f}"
        return f"{value:,.3g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_results(
    name: str, rows: list[dict[str, Any]], *, meta: dict[str, Any] | None = None
) -> Path:
    """Print ``rows`` as a table and write them with ``meta`` to ``bench/results/NAME.json``.

    Each row is one measured figure, e.g. ``{"metric": "verify yes/no", "value": 3400.0,
    "unit": "ballots/s", "target": ">= 3000", "ok": True}``; keys may vary by benchmark but
    every row of one benchmark should share them.
    """
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    cells = [[_fmt(row.get(c, "")) for c in columns] for row in rows]
    widths = [
        max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)
    ]
    print(f"\n== bench {name} ==")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine_info(), "meta": meta or {}, "rows": rows}
    path.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    print(f"figures written to {path}")
    return path


async def create_bench_database(admin_dsn: str, label: str) -> str:
    """A fresh, migrated database named ``referendum_bench_LABEL_…``; its DSN."""
    from referendum_service.scratch import create_database

    return await create_database(admin_dsn, prefix=f"referendum_bench_{label}")


async def drop_bench_database(admin_dsn: str, dsn: str) -> None:
    """Drop the database of ``dsn`` (made by :func:`create_bench_database`)."""
    from referendum_service.scratch import drop_database

    await drop_database(admin_dsn, dsn)
