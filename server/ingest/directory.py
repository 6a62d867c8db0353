"""A per-process cache of what a ballot is checked against: the referendum, its spec, window.

:class:`ReferendumDirectory` re-reads a referendum's row at most every ``spec_cache_ms``;
concurrent misses for one referendum share one query. (Voters' keys come with the admission
statement of :mod:`server.ingest.rate_limit`, one query for a group of submissions.)
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from referendum_core.ballot import BallotSpec
from referendum_core.errors import CoreError
from referendum_service.db import translated
from server.ingest.verifier import verification_cost

__all__ = ["ReferendumDirectory", "ReferendumInfo"]


@dataclass(frozen=True)
class ReferendumInfo:
    """What a ballot is checked against; ``spec`` is None while the referendum has no key.

    ``cost``: what checking one of its ballots costs, in yes/no ballots
    (:func:`server.ingest.verifier.verification_cost`; 1 without a spec).
    """

    referendum_id: str
    state: str
    revote_policy: str
    spec: BallotSpec | None
    opens_at: datetime
    closes_at: datetime
    cost: int = 1

    def in_window(self, now: datetime) -> bool:
        """Whether ``now`` is inside the voting window ``[opens_at, closes_at]``."""
        return self.opens_at <= now <= self.closes_at


class ReferendumDirectory:
    """Referendum specs, cached per process; each entry's state is re-read after ``ttl_s``.

    A close therefore reaches every process within ``ttl_s``; the insert's own state check
    covers the gap. Concurrent misses for one referendum share one query.
    """

    def __init__(self, pool: asyncpg.Pool, *, ttl_s: float, max_entries: int = 1024) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._max = max_entries
        self._entries: collections.OrderedDict[str, tuple[float, ReferendumInfo | None]] = (
            collections.OrderedDict()
        )
        self._loading: dict[str, asyncio.Task[ReferendumInfo | None]] = {}

    async def get(self, referendum_id: str) -> ReferendumInfo | None:
        """The referendum, or None when there is no such referendum."""
        entry = self._entries.get(referendum_id)
        if entry is not None and time.monotonic() - entry[0] < self._ttl_s:
            return entry[1]
        loading = self._loading.get(referendum_id)
        if loading is None:
            # its own task: a caller that goes away does not cancel the others' answer
            loading = asyncio.get_running_loop().create_task(self._load(referendum_id))
            self._loading[referendum_id] = loading
            loading.add_done_callback(self._loaded)
        return await asyncio.shield(loading)

    def _loaded(self, task: asyncio.Task[ReferendumInfo | None]) -> None:
        for rid, running in list(self._loading.items()):
            if running is task:
                del self._loading[rid]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter re-raises it anyway

    def _remember(self, referendum_id: str, info: ReferendumInfo | None) -> None:
        self._entries[referendum_id] = (time.monotonic(), info)
        self._entries.move_to_end(referendum_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def _load(self, referendum_id: str) -> ReferendumInfo | None:
        info = await self._read(referendum_id)
        self._remember(referendum_id, info)
        return info

    async def _read(self, referendum_id: str) -> ReferendumInfo | None:
        with translated():
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    """SELECT state, revote_policy, options, min_selections, max_selections,
                              election_public_key, opens_at, closes_at
                       FROM referendums WHERE id = $1""",
                    referendum_id,
                )
        if row is None:
            return None
        spec = None
        if row["election_public_key"] is not None:
            spec = BallotSpec.from_row(referendum_id, row)
        return ReferendumInfo(
            referendum_id,
            row["state"],
            row["revote_policy"],
            spec,
            row["opens_at"],
            row["closes_at"],
            _cost(spec),
        )


def _cost(spec: BallotSpec | None) -> int:
    try:
        return 1 if spec is None else verification_cost(spec)
    except CoreError:  # a spec no ballot can fit: every ballot fails its first check
        return 1
