"""The verdict of a chaos run: what was acknowledged against what the log holds, per fault kind.

A ballot is *lost* when it was acknowledged (201/200 with a receipt) and is not in the log;
*duplicated* when it is in the log more than once; *phantom* when the log holds it and it was
never submitted by the run. A ballot submitted, never acknowledged (its request timed out or
the run ended first) and yet logged is *unacknowledged-logged*: a client timeout, counted
apart, never a failure.

Each acknowledgement, answer and logged ballot belongs to the fault window it falls in: from
one fault's injection to the next one's (the steady start before the first fault is window
"steady"). Recovery of a fault is measured from its injection to the first acknowledgement
and the first sealed block after it was cleared; ``after_clear`` is the same from the moment it
was cleared (the database back), which must stay within ``bound_s``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["FaultRecord", "KindRow", "LoggedBallot", "Verdict", "judge", "render_table"]


@dataclass
class FaultRecord:
    """One injected fault and how the system came back."""

    kind: str
    injected_at: float
    cleared_at: float
    first_commit_at: float | None = None
    first_block_at: float | None = None

    @property
    def commit_recovery_s(self) -> float | None:
        """Injection → first acknowledgement after clearing."""
        return None if self.first_commit_at is None else self.first_commit_at - self.injected_at

    @property
    def block_recovery_s(self) -> float | None:
        """Injection → first block sealed after clearing."""
        return None if self.first_block_at is None else self.first_block_at - self.injected_at

    @property
    def after_clear_s(self) -> float | None:
        """Cleared → the later of first acknowledgement and first block (None: never)."""
        if self.first_commit_at is None or self.first_block_at is None:
            return None
        return max(self.first_commit_at, self.first_block_at) - self.cleared_at


@dataclass(frozen=True)
class LoggedBallot:
    """One log entry: the ballot's hash, when it was accepted and its merge delay (seconds)."""

    ballot_hash: str
    accepted_at: float
    merge_delay_s: float


@dataclass
class KindRow:
    """The table row of one fault kind."""

    kind: str
    injected: int = 0
    acknowledged: int = 0
    lost: int = 0
    duplicated: int = 0
    phantom: int = 0
    unacknowledged_logged: int = 0
    http_5xx: int = 0
    http_500: int = 0
    client_timeouts: int = 0
    recovery_commit_s: list[float] = field(default_factory=list)
    recovery_block_s: list[float] = field(default_factory=list)
    after_clear_s: list[float] = field(default_factory=list)
    unrecovered: int = 0
    max_merge_delay_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The row as JSON: lists become p99 and max."""
        out = {k: v for k, v in asdict(self).items() if not isinstance(v, list)}
        for name in ("recovery_commit_s", "recovery_block_s", "after_clear_s"):
            values: list[float] = getattr(self, name)
            out[name] = {"p99": _p99(values), "max": max(values) if values else None}
        return out


@dataclass
class Verdict:
    """The whole verdict; ``ok`` is what the exit code says."""

    rows: list[KindRow]
    acknowledged: int
    logged: int
    lost: list[str]
    duplicated: list[str]
    phantom: list[str]
    unacknowledged_logged: int
    uncertain_unlogged: int
    bound_s: float
    slow_recoveries: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """Everything but the long lists (their first ten hashes only)."""
        return {
            "ok": self.ok,
            "problems": self.problems,
            "acknowledged": self.acknowledged,
            "logged": self.logged,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "phantom": len(self.phantom),
            "lost_sample": self.lost[:10],
            "duplicated_sample": self.duplicated[:10],
            "phantom_sample": self.phantom[:10],
            "unacknowledged_logged": self.unacknowledged_logged,
            "uncertain_unlogged": self.uncertain_unlogged,
            "recovery_bound_s": self.bound_s,
            "slow_recoveries": self.slow_recoveries,
            "kinds": [row.summary() for row in self.rows],
        }


def _p99(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def judge(
    faults: Sequence[FaultRecord],
    acked_at: dict[str, float],
    submitted: set[str],
    answers: Sequence[tuple[float, int]],
    logged: Sequence[LoggedBallot],
    *,
    bound_s: float,
    extra_problems: Sequence[str] = (),
) -> Verdict:
    """Compare acknowledgements with the log; fill one row per fault kind (plus "steady").

    ``answers`` are (time, status) pairs: status -1 is a client timeout. Requires ``faults``
    in injection order.
    """
    starts = [f.injected_at for f in faults]
    kinds = ["steady", *(f.kind for f in faults)]
    rows: dict[str, KindRow] = {k: KindRow(k) for k in dict.fromkeys(kinds)}

    def row_at(at: float) -> KindRow:
        return rows[kinds[bisect.bisect_right(starts, at)]]

    counts: dict[str, int] = {}
    for entry in logged:
        counts[entry.ballot_hash] = counts.get(entry.ballot_hash, 0) + 1
    lost = sorted(h for h in acked_at if h not in counts)
    duplicated = sorted(h for h, n in counts.items() if n > 1)
    phantom = sorted(h for h in counts if h not in submitted)
    unacked_logged = sum(1 for h in counts if h in submitted and h not in acked_at)
    for h, at in acked_at.items():
        row = row_at(at)
        row.acknowledged += 1
        if h not in counts:
            row.lost += 1
    seen: set[str] = set()
    for entry in logged:
        row = row_at(entry.accepted_at)
        row.max_merge_delay_s = max(row.max_merge_delay_s, entry.merge_delay_s)
        if entry.ballot_hash in seen:
            row.duplicated += 1
        seen.add(entry.ballot_hash)
        if entry.ballot_hash not in submitted:
            row.phantom += 1
        elif entry.ballot_hash not in acked_at:
            row.unacknowledged_logged += 1
    for at, status in answers:
        row = row_at(at)
        if status >= 500:
            row.http_5xx += 1
        if status == 500:
            row.http_500 += 1
        if status == -1:
            row.client_timeouts += 1
    slow = 0
    for fault in faults:
        row = rows[fault.kind]
        row.injected += 1
        for value, values in (
            (fault.commit_recovery_s, row.recovery_commit_s),
            (fault.block_recovery_s, row.recovery_block_s),
        ):
            if value is not None:
                values.append(value)
        after = fault.after_clear_s
        if after is None:
            row.unrecovered += 1
            slow += 1
        else:
            row.after_clear_s.append(after)
            if after > bound_s:
                slow += 1
    problems = list(extra_problems)
    if lost:
        problems.append(f"{len(lost)} acknowledged ballot(s) lost")
    if duplicated:
        problems.append(f"{len(duplicated)} ballot(s) logged more than once")
    if phantom:
        problems.append(f"{len(phantom)} phantom ballot(s) in the log")
    if slow:
        problems.append(f"{slow} recovery(ies) slower than {bound_s:g} s after clearing, or none")
    http_500 = sum(r.http_500 for r in rows.values())
    if http_500:
        problems.append(f"{http_500} answer(s) 500 (a server bug)")
    return Verdict(
        rows=[rows[k] for k in rows if k == "steady" or rows[k].injected],
        acknowledged=len(acked_at),
        logged=len(logged),
        lost=lost,
        duplicated=duplicated,
        phantom=phantom,
        unacknowledged_logged=unacked_logged,
        uncertain_unlogged=sum(1 for h in submitted if h not in acked_at and h not in counts),
        bound_s=bound_s,
        slow_recoveries=slow,
        problems=problems,
    )


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_table(verdict: Verdict) -> str:
    """The Markdown table of the verdict, one row per fault kind."""
    lines = [
        "| fault kind | injected | acknowledged | lost | duplicated | phantom | 5xx "
        "| p99/max recovery, commit (s) | p99/max recovery, block (s) "
        "| max after clearing (s) | max merge delay (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in verdict.rows:
        after = max(row.after_clear_s) if row.after_clear_s else None
        lines.append(
            f"| {row.kind} | {row.injected} | {row.acknowledged:,} | {row.lost} "
            f"| {row.duplicated} | {row.phantom} | {row.http_5xx:,} "
            f"| {_s(_p99(row.recovery_commit_s))} / "
            f"{_s(max(row.recovery_commit_s) if row.recovery_commit_s else None)} "
            f"| {_s(_p99(row.recovery_block_s))} / "
            f"{_s(max(row.recovery_block_s) if row.recovery_block_s else None)} "
            f"| {_s(after)}{' (+' + str(row.unrecovered) + ' never)' if row.unrecovered else ''} "
            f"| {row.max_merge_delay_s:.2f} |"
        )
    return "\n".join(lines)
