"""The per-core rates of the sizing model, read from the benchmarks' ``bench/results/*.json``."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from loadtest.capacity.model import DEFAULT_RATES, Rates

__all__ = ["measured_rates"]


# Lenient matching of bench rows, most specific first; the first match of a field wins:
# (field, file name pattern, metric pattern, unit pattern).
_BENCH_PATTERNS: list[tuple[str, str, str, str]] = [
    # the whole write path per server core (signature, proofs, group commit, HTTP)
    ("verified_ballots_per_core_s", r"ingest|pipeline", r".", r"ballots?/s/core"),
    (
        "verified_ballots_per_core_s",
        r"ingest|pipeline",
        r"per.?(server.)?core|one core",
        r"ballots?/s",
    ),
    # else the bare verification of the protocol's default yes/no ballot
    ("verified_ballots_per_core_s", r"crypto", r"verif.*yes/no|verif.*ballot", r"ballots?/s"),
    ("reads_per_core_s", r".", r"(read|status|proof|checkpoint)", r"req(uest)?s?/s"),
    (
        "batcher_ballots_s",
        r"log|batcher|seal",
        r"(seal|sequenc|batcher|block)",
        r"(ballots?|leaves|rows)/s",
    ),
    ("db_rows_per_core_s", r".", r"(insert|copy|unnest|group.?commit)", r"rows/s"),
    ("roll_import_rows_s", r"roll", r"import", r"rows/s"),
]


def _bench_rows(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, dict):
        rows = payload.get("rows")
        if isinstance(rows, list):
            return [r for r in rows if isinstance(r, dict)]
    if isinstance(payload, list):
        return [r for r in payload if isinstance(r, dict)]
    return []


def _row_value(row: dict[str, Any]) -> float | None:
    for key in ("value", "rate", "median", "throughput"):
        value = row.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _row_text(row: dict[str, Any], *keys: str) -> str:
    return " ".join(str(row.get(k, "")) for k in keys).lower()


def measured_rates(results_dir: Path, base: Rates = DEFAULT_RATES) -> tuple[Rates, list[str]]:
    """``base`` with every figure found in ``results_dir/*.json`` replaced by the measured one.

    Bench files are ``{"benchmark", "machine", "meta", "rows": [{"metric", "value",
    "unit", ...}]}`` (see :func:`bench.common.write_results`); rows are matched by file name,
    metric name and unit, leniently. Returns the rates and notes saying what was used and
    what fell back to defaults.
    """
    found: dict[str, float] = {}
    sources: dict[str, str] = {}
    notes: list[str] = []
    files = sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []
    for name, file_pat, metric_pat, unit_pat in _BENCH_PATTERNS:
        if name in found:
            continue
        for path in files:
            if not re.search(file_pat, path.stem, re.IGNORECASE):
                continue
            try:
                payload = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                notes.append(f"{path}: unreadable, ignored")
                continue
            for row in _bench_rows(payload):
                value = _row_value(row)
                metric = _row_text(row, "metric", "name", "case", "operation")
                unit = _row_text(row, "unit", "units")
                if value is None or not metric.strip():
                    continue
                if re.search(metric_pat, metric) and re.search(unit_pat, unit or metric):
                    found[name] = value
                    sources[name] = f"{path.name}: {row.get('metric') or row.get('name')}"
                    break
            if name in found:
                break
    for name in (
        "verified_ballots_per_core_s",
        "reads_per_core_s",
        "batcher_ballots_s",
        "db_rows_per_core_s",
        "locust_requests_per_process_s",
        "roll_import_rows_s",
    ):
        if name in found:
            notes.append(f"{name} = {found[name]:,.0f} from {sources[name]}")
        else:
            notes.append(f"{name} = {getattr(base, name):,.0f}: default (DESIGN.md), not measured")
    merged_sources = {**base.sources, **sources}
    return replace(base, **found, sources=merged_sources), notes
