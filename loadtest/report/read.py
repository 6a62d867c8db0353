"""Reading a run: Locust's ``--csv`` files and the runner's samples."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = [
    "BALLOT_REQUEST",
    "Endpoint",
    "HistoryRow",
    "LocustRun",
    "load_samples",
    "read_locust_csv",
]

BALLOT_REQUEST = "submit ballot"
"""The Locust request name of a ballot submission (see ``loadtest/locustfile.py``)."""


@dataclass(frozen=True)
class HistoryRow:
    """One ``Aggregated`` row of the stats history (one a second)."""

    t: float
    users: int
    total_requests: int
    total_failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Endpoint:
    """One row of ``PREFIX_stats.csv``."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    median_ms: float
    average_ms: float
    max_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class LocustRun:
    """The parsed CSV output of one Locust run."""

    endpoints: list[Endpoint]
    aggregated: Endpoint
    history: list[HistoryRow]
    failures: list[dict[str, str]]


def _float(text: str | None) -> float | None:
    if text is None or text.strip() in ("", "N/A"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _endpoint(row: dict[str, str]) -> Endpoint:
    return Endpoint(
        method=row.get("Type", ""),
        name=row.get("Name", ""),
        requests=int(row.get("Request Count") or 0),
        failures=int(row.get("Failure Count") or 0),
        rps=_float(row.get("Requests/s")) or 0.0,
        median_ms=_float(row.get("Median Response Time")) or 0.0,
        average_ms=_float(row.get("Average Response Time")) or 0.0,
        max_ms=_float(row.get("Max Response Time")) or 0.0,
        p95_ms=_float(row.get("95%")) or 0.0,
        p99_ms=_float(row.get("99%")) or 0.0,
    )


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_locust_csv(prefix: str | Path) -> LocustRun:
    """Parse ``PREFIX_stats.csv``, ``PREFIX_stats_history.csv`` and ``PREFIX_failures.csv``.

    Raises FileNotFoundError when the stats file is missing and ValueError when it has no
    ``Aggregated`` row.
    """
    prefix = str(prefix)
    stats_path = Path(prefix + "_stats.csv")
    if not stats_path.exists():
        raise FileNotFoundError(f"{stats_path} not found (was locust run with --csv {prefix}?)")
    endpoints: list[Endpoint] = []
    aggregated: Endpoint | None = None
    for row in _read_csv(stats_path):
        endpoint = _endpoint(row)
        if endpoint.name == "Aggregated":
            aggregated = endpoint
        else:
            endpoints.append(endpoint)
    if aggregated is None:
        raise ValueError(f"{stats_path} has no Aggregated row")
    history: list[HistoryRow] = []
    for row in _read_csv(Path(prefix + "_stats_history.csv")):
        if row.get("Name") != "Aggregated":
            continue
        t = _float(row.get("Timestamp"))
        if t is None:
            continue
        history.append(
            HistoryRow(
                t=t,
                users=int(row.get("User Count") or 0),
                total_requests=int(row.get("Total Request Count") or 0),
                total_failures=int(row.get("Total Failure Count") or 0),
                p50_ms=_float(row.get("50%")),
                p95_ms=_float(row.get("95%")),
                p99_ms=_float(row.get("99%")),
            )
        )
    history.sort(key=lambda h: h.t)
    failures = _read_csv(Path(prefix + "_failures.csv"))
    return LocustRun(endpoints, aggregated, history, failures)


def load_samples(path: Path) -> list[dict[str, Any]]:
    """Server/database samples, one JSON object a line (blank lines ignored)."""
    rows: list[dict[str, Any]] = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            value = orjson.loads(line)
            if isinstance(value, dict) and isinstance(value.get("t"), int | float):
                rows.append(value)
    rows.sort(key=lambda r: float(r["t"]))
    return rows
