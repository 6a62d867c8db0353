"""Per-process caches of what a ballot is checked against: referendum specs and voters' keys.

:class:`ReferendumDirectory` re-reads a referendum's state at most every ``spec_cache_ms``;
:class:`VoterRoll` is an LRU of voters' public keys (the roll is frozen once a referendum
opens, and keys are only looked up for open referendums). Misses are fetched in batches, one
round trip for all concurrent misses.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

import asyncpg

from referendum_core.ballot import BallotSpec
from referendum_service.db import RETRY_AFTER_S, StorageError, translated
from server.errors import ApiError, ServiceUnavailable

__all__ = ["ReferendumDirectory", "ReferendumInfo", "VoterRoll"]


@dataclass(frozen=True)
class ReferendumInfo:
    """What a ballot is checked against; ``spec`` is None while the referendum has no key."""

    referendum_id: str
    state: str
    revote_policy: str
    spec: BallotSpec | None


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
                              election_public_key
                       FROM referendums WHERE id = $1""",
                    referendum_id,
                )
        if row is None:
            return None
        spec = None
        if row["election_public_key"] is not None:
            spec = BallotSpec.from_row(referendum_id, row)
        return ReferendumInfo(referendum_id, row["state"], row["revote_policy"], spec)


class VoterRoll:
    """Voters' public keys, an LRU per process; concurrent misses share one query.

    Only ask for voters of an open referendum: its roll is frozen, so a cached key never goes
    stale. Voters not on the roll are not cached.
    """

    def __init__(self, pool: asyncpg.Pool, *, max_entries: int) -> None:
        self._pool = pool
        self._max = max(1, max_entries)
        self._keys: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._pending: dict[tuple[str, str], asyncio.Future[bytes | None]] = {}
        self._loader: asyncio.Task[None] | None = None

    async def public_key(self, referendum_id: str, voter_id: str) -> bytes | None:
        """The voter's Ed25519 public key, or None when the voter is not on the roll."""
        key = (referendum_id, voter_id)
        cached = self._keys.get(key)
        if cached is not None:
            self._keys.move_to_end(key)
            return cached
        future = self._pending.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[key] = future
            if self._loader is None:
                self._loader = asyncio.get_running_loop().create_task(self._load_pending())
        return await asyncio.shield(future)

    async def _load_pending(self) -> None:
        # one query at a time; misses arriving meanwhile form the next query's batch
        try:
            while self._pending:
                batch = self._pending
                self._pending = {}
                try:
                    found = await self._fetch(list(batch))
                except Exception as exc:
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(
                                exc
                                if isinstance(exc, ApiError | StorageError)
                                else ServiceUnavailable(
                                    "voter lookup failed", retry_after=RETRY_AFTER_S
                                )
                            )
                            future.exception()
                    continue
                for wanted, future in batch.items():
                    value = found.get(wanted)
                    if value is not None:
                        self._keys[wanted] = value
                    if not future.done():
                        future.set_result(value)
                while len(self._keys) > self._max:
                    self._keys.popitem(last=False)
        finally:
            self._loader = None

    async def _fetch(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        with translated(unreachable="database unreachable"):
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    """SELECT v.referendum_id, v.voter_id, v.public_key
                       FROM unnest($1::text[], $2::text[]) AS q(referendum_id, voter_id)
                       JOIN voters v ON v.referendum_id = q.referendum_id
                                    AND v.voter_id = q.voter_id COLLATE "C" """,
                    [w[0] for w in wanted],
                    [w[1] for w in wanted],
                )
        return {(r["referendum_id"], r["voter_id"]): bytes(r["public_key"]) for r in rows}
