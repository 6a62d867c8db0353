"""Load shapes of a voting day as Locust ``LoadTestShape`` classes (see :mod:`loadtest.profiles`).

Each shape runs ``REFERENDUM_LOADTEST_DURATION_S`` seconds (default 60) and reaches at most
``REFERENDUM_LOADTEST_PEAK_USERS`` users (default 100), arriving at
``REFERENDUM_LOADTEST_SPAWN_RATE`` users/s (default: the peak per second) times the
profile's spawn factor (a storm arrives at once).

Every class here is abstract, so loading this file as a locustfile picks none of them;
``REFERENDUM_LOADTEST_SHAPE=<name>`` makes the matching one concrete as ``SelectedShape``
(``referendum loadtest run --shape NAME`` passes ``-f loadtest/locustfile.py,loadtest/shapes.py``).
"""

from __future__ import annotations

import locust  # first: gevent monkey-patches the standard library

# isort: split

import os
from typing import ClassVar

from locust import LoadTestShape

from loadtest.profiles import PROFILES, Profile, users_at

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
    """A :class:`~loadtest.profiles.Profile` played over the configured duration."""

    abstract = True
    profile: ClassVar[Profile] = PROFILES["steady"]

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.peak_users = int(_env("REFERENDUM_LOADTEST_PEAK_USERS", 100))
        self.duration_s = _env("REFERENDUM_LOADTEST_DURATION_S", 60.0)
        self.spawn_rate = _env("REFERENDUM_LOADTEST_SPAWN_RATE", float(self.peak_users))

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()  # type: ignore[no-untyped-call]
        users = users_at(self.profile, t, duration_s=self.duration_s, peak_users=self.peak_users)
        if users is None:
            return None
        return users, self.spawn_rate * self.profile.spawn_factor


class Steady(StagedShape):
    abstract = True
    profile = PROFILES["steady"]


class Steps(StagedShape):
    abstract = True
    profile = PROFILES["steps"]


class OpeningSpike(StagedShape):
    abstract = True
    profile = PROFILES["opening"]


class MiddayLull(StagedShape):
    abstract = True
    profile = PROFILES["lull"]


class ClosingSpike(StagedShape):
    abstract = True
    profile = PROFILES["closing"]


class RetryStorm(StagedShape):
    abstract = True
    profile = PROFILES["retry"]


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
