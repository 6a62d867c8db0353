"""Load shapes of a voting day, as Locust ``LoadTestShape`` classes.

Each shape is a list of stages over a run of ``REFERENDUM_LOADTEST_DURATION_S`` seconds
(default 60) reaching at most ``REFERENDUM_LOADTEST_PEAK_USERS`` users (default 100): a stage
ends at a fraction of the run and holds a fraction of the peak users, reached at
``REFERENDUM_LOADTEST_SPAWN_RATE`` users/s (default: peak users per second).

========== ===========================================================================
steady     ramp to the peak and hold it (the capacity measurement)
steps      1/8, 1/4, 1/2, 3/4 and all of the peak in equal steps (finds the knee)
opening    polls open: a spike to the peak within seconds, then a long decay
lull       midday: from 60% down to 15% and back
closing    the closing rush: a climb to the peak in the last third
retry      a retry storm: steady at half, an outage-like surge to the peak at once
           (run it with ``REFERENDUM_LOADTEST_RETRY_SHARE`` > 0: clients resend)
========== ===========================================================================

Every class here is abstract, so loading this file as a locustfile picks none of them;
``REFERENDUM_LOADTEST_SHAPE=<name>`` makes the matching one concrete as ``SelectedShape``
(``referendum loadtest run --shape NAME`` passes ``-f loadtest/locustfile.py,loadtest/shapes.py``).
"""

from __future__ import annotations

import locust  # first: gevent monkey-patches the standard library

# isort: split

import math
import os
from typing import ClassVar

from locust import LoadTestShape

__all__ = [
    "SHAPES",
    "ClosingSpike",
    "MiddayLull",
    "OpeningSpike",
    "RetryStorm",
    "StagedShape",
    "Steady",
    "Steps",
]

_ = locust


def _env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


class StagedShape(LoadTestShape):
    """Stages ``(end fraction of the run, fraction of peak users)``; stops after the last."""

    abstract = True
    stages: ClassVar[tuple[tuple[float, float], ...]] = ((1.0, 1.0),)
    spawn_factor: ClassVar[float] = 1.0
    """Spawn rate as a multiple of the configured one (a storm arrives at once)."""

    def __init__(
        self,
        peak_users: int | None = None,
        duration_s: float | None = None,
        spawn_rate: float | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.peak_users = peak_users or int(_env("REFERENDUM_LOADTEST_PEAK_USERS", 100))
        self.duration_s = duration_s or _env("REFERENDUM_LOADTEST_DURATION_S", 60.0)
        self.spawn_rate = spawn_rate or _env(
            "REFERENDUM_LOADTEST_SPAWN_RATE", float(self.peak_users)
        )

    def users_at(self, t: float) -> int | None:
        """Users wanted ``t`` seconds into the run; None once the run is over."""
        if t >= self.duration_s:
            return None
        fraction = t / self.duration_s
        for end, share in self.stages:
            if fraction < end:
                return max(1, math.ceil(self.peak_users * share))
        return None

    def tick(self) -> tuple[int, float] | None:
        users = self.users_at(self.get_run_time())  # type: ignore[no-untyped-call]
        if users is None:
            return None
        return users, self.spawn_rate * self.spawn_factor


class Steady(StagedShape):
    abstract = True
    stages = ((1.0, 1.0),)


class Steps(StagedShape):
    abstract = True
    stages = ((0.2, 0.125), (0.4, 0.25), (0.6, 0.5), (0.8, 0.75), (1.0, 1.0))
    spawn_factor = 10.0


class OpeningSpike(StagedShape):
    abstract = True
    stages = ((0.1, 0.1), (0.4, 1.0), (0.6, 0.7), (0.8, 0.5), (1.0, 0.4))
    spawn_factor = 5.0


class MiddayLull(StagedShape):
    abstract = True
    stages = ((0.25, 0.6), (0.5, 0.3), (0.75, 0.15), (1.0, 0.6))


class ClosingSpike(StagedShape):
    abstract = True
    stages = ((0.3, 0.3), (0.5, 0.5), (0.67, 0.7), (0.9, 1.0), (1.0, 0.2))


class RetryStorm(StagedShape):
    abstract = True
    stages = ((0.4, 0.5), (0.6, 1.0), (1.0, 0.5))
    spawn_factor = 20.0


SHAPES: dict[str, type[StagedShape]] = {
    "steady": Steady,
    "steps": Steps,
    "opening": OpeningSpike,
    "lull": MiddayLull,
    "closing": ClosingSpike,
    "retry": RetryStorm,
}

_selected = os.environ.get("REFERENDUM_LOADTEST_SHAPE")
if _selected:
    if _selected not in SHAPES:
        raise SystemExit(f"unknown shape {_selected!r}; choose one of {sorted(SHAPES)}")
    SelectedShape = type("SelectedShape", (SHAPES[_selected],), {"abstract": False})
