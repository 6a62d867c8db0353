"""The report of ``verify-election`` and the small readers every check uses."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from referendum_core.record import digest_chunks, member_problems, parse_json

__all__ = [
    "MAX_DETAILS",
    "ElectionReport",
    "Failure",
    "Stop",
    "check_members",
    "is_count",
    "parse_hex",
    "read_json",
    "read_jsonl",
    "sha256_file",
]

MAX_DETAILS = 20
"""Failures of one check listed in full; the rest are counted."""


@dataclass(frozen=True)
class Failure:
    """One failed check: its name and what was found."""

    check: str
    detail: str


@dataclass
class ElectionReport:
    """Outcome of :func:`verify_election`."""

    failures: list[Failure] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ballots: int = 0
    ballots_counted: int = 0
    seconds: float = 0.0
    jobs: int = 1
    result: list[int] | None = None
    witnessed_by: list[str] | None = None
    """Cosigners of the final checkpoint, when a witness policy was checked and met."""

    @property
    def ok(self) -> bool:
        """Whether every check held."""
        return not self.counts

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that failed, in the order first seen."""
        return list(self.counts)

    def fail(self, check: str, detail: str) -> None:
        """Record one failure (only the first :data:`MAX_DETAILS` per check keep details)."""
        self.counts[check] += 1
        if self.counts[check] <= MAX_DETAILS:
            self.failures.append(Failure(check, detail))


class Stop(Exception):
    """A check whose failure leaves nothing for the checks after it to work on."""


# --- small readers ------------------------------------------------------------------------


def sha256_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as handle:
        return digest_chunks(iter(lambda: handle.read(1 << 20), b""))


def read_json(report: ElectionReport, root: Path, name: str, check: str) -> Any:
    """The JSON document ``name`` of the record; a failure of ``check`` and :class:`Stop`
    when it is unreadable, not JSON or repeats a member of an object."""
    try:
        return parse_json((root / name).read_bytes())
    except (OSError, ValueError) as exc:
        report.fail(check, f"{name}: {exc}")
        raise Stop from exc


def read_jsonl(report: ElectionReport, root: Path, name: str, check: str) -> list[Any]:
    """The JSON lines of ``name`` (blank lines skipped), as :func:`read_json` reads each."""
    try:
        text = (root / name).read_bytes()
        return [parse_json(line) for line in text.splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        report.fail(check, f"{name}: {exc}")
        raise Stop from exc


def check_members(
    report: ElectionReport, check: str, where: str, obj: Any, members: Sequence[str]
) -> bool:
    """Report (as ``check``) every member of ``members`` that ``obj`` lacks and every member
    it has besides them; return whether ``obj`` is an object holding them all."""
    problems = member_problems(obj, members)
    for problem in problems:
        report.fail(check, f"{where} {problem}")
    return isinstance(obj, dict) and all(m in obj for m in members)


def is_count(value: Any) -> bool:
    """Whether ``value`` is a JSON integer ``>= 0`` (``true`` and ``1.0`` are not)."""
    return type(value) is int and value >= 0


def parse_hex(value: Any, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise ValueError("not a hex string")
    raw = bytes.fromhex(value)
    if raw.hex() != value or (size is not None and len(raw) != size):
        raise ValueError("not canonical hex of the right size")
    return raw
