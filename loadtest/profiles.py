"""The load profiles of a voting day, as pure stage tables (no Locust import).

A profile is a tuple of stages ``(end fraction of the run, fraction of the peak users)``;
:mod:`loadtest.shapes` turns each into a Locust ``LoadTestShape``. Kept apart so the
arithmetic is testable without importing Locust, whose gevent monkey-patching would change
the standard library under the rest of the test suite.

========== ===========================================================================
steady     ramp to the peak and hold it (the capacity measurement)
steps      1/8, 1/4, 1/2, 3/4 and all of the peak in equal steps (finds the knee)
opening    polls open: a spike to the peak within seconds, then a long decay
lull       midday: from 60% down to 15% and back
closing    the closing rush: a climb to the peak in the last third
retry      a retry storm: steady at half, an outage-like surge to the peak at once
           (run it with ``REFERENDUM_LOADTEST_RETRY_SHARE`` > 0: clients resend)
========== ===========================================================================

>>> users_at(PROFILES["steps"], 13.0, duration_s=60.0, peak_users=80)
20
>>> users_at(PROFILES["steps"], 60.0, duration_s=60.0, peak_users=80) is None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PROFILES", "Profile", "users_at"]


@dataclass(frozen=True)
class Profile:
    """Stages and how fast users arrive relative to the configured spawn rate."""

    stages: tuple[tuple[float, float], ...]
    spawn_factor: float = 1.0

    def __post_init__(self) -> None:
        ends = [end for end, _ in self.stages]
        if not ends or ends != sorted(ends) or ends[-1] != 1.0 or ends[0] <= 0:
            raise ValueError("stage ends must increase to 1.0")
        if any(not 0 < share <= 1 for _, share in self.stages):
            raise ValueError("stage shares must be within (0, 1]")


PROFILES: dict[str, Profile] = {
    "steady": Profile(((1.0, 1.0),)),
    "steps": Profile(((0.2, 0.125), (0.4, 0.25), (0.6, 0.5), (0.8, 0.75), (1.0, 1.0)), 10.0),
    "opening": Profile(((0.1, 0.1), (0.4, 1.0), (0.6, 0.7), (0.8, 0.5), (1.0, 0.4)), 5.0),
    "lull": Profile(((0.25, 0.6), (0.5, 0.3), (0.75, 0.15), (1.0, 0.6))),
    "closing": Profile(((0.3, 0.3), (0.5, 0.5), (0.67, 0.7), (0.9, 1.0), (1.0, 0.2))),
    "retry": Profile(((0.4, 0.5), (0.6, 1.0), (1.0, 0.5)), 20.0),
}


def users_at(profile: Profile, t: float, *, duration_s: float, peak_users: int) -> int | None:
    """Users wanted ``t`` seconds into a run of ``duration_s``; None once it is over.

    At least one user while the run lasts (a share of a small peak rounds up).
    """
    if t >= duration_s or t < 0:
        return None
    fraction = t / duration_s
    for end, share in profile.stages:
        if fraction < end:
            return max(1, math.ceil(peak_users * share))
    return None
