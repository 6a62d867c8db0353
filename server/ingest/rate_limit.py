"""The per-voter rate limit of ballot submissions: a token bucket per voter and process."""

from __future__ import annotations

import math
import time

from server.errors import TooManyRequests

__all__ = ["VoterRateLimit"]


class VoterRateLimit:
    """A token bucket per voter: ``per_minute`` submissions a minute, bursts up to that many.

    A token is taken before the (costly) proof check and given back if the ballot turns out
    invalid, so forged ballots under someone else's voter id cannot use up their budget.
    """

    def __init__(self, per_minute: int, *, max_entries: int = 200_000) -> None:
        self._capacity = float(max(1, per_minute))
        self._rate = self._capacity / 60.0
        self._max = max_entries
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def take(self, referendum_id: str, voter_id: str) -> None:
        """Take one token; raises TooManyRequests (with Retry-After) when none is left."""
        key = (referendum_id, voter_id)
        now = time.monotonic()
        tokens, then = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - then) * self._rate)
        if tokens < 1.0:
            retry = max(1, math.ceil((1.0 - tokens) / self._rate))
            raise TooManyRequests(
                f"at most {int(self._capacity)} ballots a minute per voter",
                slug="voter-rate-limit",
                retry_after=retry,
            )
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self._max:
            self._prune(now)

    def give_back(self, referendum_id: str, voter_id: str) -> None:
        """Return the token of a submission that was refused for being invalid."""
        key = (referendum_id, voter_id)
        entry = self._buckets.get(key)
        if entry is not None:
            self._buckets[key] = (min(self._capacity, entry[0] + 1.0), entry[1])

    def _prune(self, now: float) -> None:
        # forget voters whose bucket has refilled: they are back at the default
        full_after = self._capacity / self._rate
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after}
