"""Load profiles and the Locust shapes built on them."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadtest.profiles import PROFILES, Profile, users_at


def test_steps_profile_by_hand() -> None:
    """Steps of 60 s runs: 0-12 s 1/8 of 80 users = 10, 12-24 s 20, 24-36 s 40, then 60, 80."""
    p = PROFILES["steps"]
    seen = [users_at(p, t, duration_s=60, peak_users=80) for t in (0, 12, 24, 36, 48, 59.9)]
    assert seen == [10, 20, 40, 60, 80, 80]
    assert users_at(p, 60, duration_s=60, peak_users=80) is None


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_stays_within_peak_and_ends(name: str) -> None:
    """Every profile wants 1 to peak users, reaches its busiest stage, and stops at the end."""
    p = PROFILES[name]
    wanted = [users_at(p, t / 10, duration_s=30, peak_users=50) for t in range(300)]
    assert all(w is not None and 1 <= w <= 50 for w in wanted)
    # the busiest stage is reached (the lull's is 60% of the peak: 30 users)
    top = max(share for _, share in p.stages)
    assert max(w for w in wanted if w is not None) == round(50 * top)
    assert users_at(p, 30, duration_s=30, peak_users=50) is None


def test_spikes_have_the_documented_form() -> None:
    """Opening peaks early, closing peaks late, the lull dips mid-run, the storm jumps at once."""

    def curve(name: str) -> list[int]:
        return [
            users_at(PROFILES[name], t, duration_s=100, peak_users=100) or 0 for t in range(100)
        ]

    opening, closing, lull = curve("opening"), curve("closing"), curve("lull")
    assert opening.index(100) < 50 < closing.index(100)
    assert min(lull[25:75]) < lull[0] and lull[-1] == lull[0]
    assert PROFILES["retry"].spawn_factor > PROFILES["steady"].spawn_factor


def test_bad_profiles_are_refused() -> None:
    """Stage ends must rise to 1.0 and shares lie within (0, 1]."""
    with pytest.raises(ValueError):
        Profile(((0.5, 1.0),))
    with pytest.raises(ValueError):
        Profile(((0.5, 0.2), (0.4, 0.5), (1.0, 1.0)))
    with pytest.raises(ValueError):
        Profile(((1.0, 1.5),))


def test_locust_picks_only_the_selected_shape() -> None:
    """Locust finds no shape in shapes.py unless REFERENDUM_LOADTEST_SHAPE names one.

    Run in a subprocess: importing locust monkey-patches the standard library.
    """
    code = (
        "import locust\n"
        "from locust.util.load_locustfile import load_locustfile\n"
        "import loadtest.shapes as s\n"
        "_, shapes = load_locustfile(s.__file__)\n"
        "print(len(shapes), type(shapes[0]).__mro__[1].__name__ if shapes else '-')\n"
        "if shapes:\n"
        "    shape = shapes[0]\n"
        "    print(shape.tick())\n"
    )
    env = {
        **os.environ,
        "REFERENDUM_LOADTEST_PEAK_USERS": "80",
        "REFERENDUM_LOADTEST_DURATION_S": "60",
        "REFERENDUM_LOADTEST_SPAWN_RATE": "4",
    }
    env.pop("REFERENDUM_LOADTEST_SHAPE", None)
    none = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert none.stdout.split()[:2] == ["0", "-"]
    env["REFERENDUM_LOADTEST_SHAPE"] = "steps"
    steps = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = steps.stdout.splitlines()
    assert lines[0] == "1 Steps"
    # at t≈0 the steps shape wants 1/8 of 80 users, arriving at 4 × its spawn factor 10
    assert lines[1] == "(10, 40.0)"
