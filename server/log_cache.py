"""The per-process cache of the public log's stored nodes, from which its proofs are served.

The batcher stores every completed perfect subtree of level ≥ :data:`STORED_MIN_LEVEL`
in ``log_nodes`` (``docs/log.md`` §7); nodes below are recomputed from the ≤ 16 leaves of
their tile. A sealed node never changes (the table refuses UPDATE and DELETE), so a
process keeps them in memory and never has to invalidate anything:

* :class:`LogNodes` holds one referendum's stored nodes for the tree of its ``size`` leaves:
  one ``bytearray`` per level (32 bytes a node, in position order, positions
  ``0 .. (size >> level) - 1``). It is filled on first use and extended incrementally: a
  request that sees a checkpoint newer than the cache reads only the nodes after the ones
  held, level by level, as position ranges. For each recent checkpoint size it also keeps the
  hashes of that tree's right edge (the ranges ``[b, size)`` a proof may need, folded from the
  stored nodes and the leaves of the partial tile). A size is only taken in once the
  root folded from the cache equals the block's signed root, so a missing or wrong node fails
  loudly (a logged 500) and never yields a proof that does not verify.
* :class:`LogProofs` keeps them for every referendum the process serves, least recently used
  first out, within ``settings.proof_cache_mb``: about 4 bytes a sealed ballot (n/8 nodes of
  32 bytes: 40 MB for 10,000,000 ballots) plus ≤ 1 KB per cached checkpoint size. A log too
  large for the whole budget is not cached: its proofs read their nodes from ``log_nodes``.
* An inclusion proof costs a share of one query
  (:data:`~referendum_service.store.log.INCLUSION_LATEST`, ``INCLUSION_AT``): the checkpoint,
  the ballot's log index and body, and the leaf hashes of its tile. Requests that arrive
  together share a query (:class:`_InclusionReader`).

The proofs themselves are assembled by the core (:mod:`referendum_core.merkle.stored`, one
planner and one fold); this module only fetches and keeps hashes. Its SQL is in
:mod:`referendum_service.store.log`.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import asyncpg

from referendum_core.merkle import (
    STORED_MIN_LEVEL,
    TILE_WIDTH,
    NodeId,
    StoredNodeError,
    TileNodes,
    consistency_proof_nodes,
    inclusion_from_levels,
    inclusion_proof_nodes,
    proof_from_nodes,
    right_edge,
    stored_node,
    tile_lookup,
    tile_nodes,
)
from referendum_service.db import translated
from referendum_service.settings import Settings
from referendum_service.store.log import (
    INCLUSION_AT,
    INCLUSION_LATEST,
    NODE_RANGE,
    NODES_BY_ID,
    tiles_query,
)

__all__ = ["InclusionRow", "LogNodes", "LogProofs"]

_HASH = 32
_SIZE_BYTES = 1024  # what one kept size costs, at most (≤ 25 hashes in a dict)
_sha256 = hashlib.sha256


# ---------------------------------------------------------------------------------------------
# The cache


class LogNodes:
    """The stored nodes of one referendum's log for the tree of :attr:`size` leaves."""

    __slots__ = ("levels", "lock", "size", "sizes")

    def __init__(self) -> None:
        self.size = 0
        """Every stored node of the tree of this many leaves is held."""
        self.levels: list[bytearray] = []
        """``levels[k]``: the hashes of level ``4 + k``, 32 bytes each, in position order."""
        self.sizes: OrderedDict[int, dict[int, bytes]] = OrderedDict()
        """Checkpoint size -> its :func:`right_edge`, checked against that size's signed root;
        least recently used first."""
        self.lock = asyncio.Lock()

    @property
    def nbytes(self) -> int:
        """Memory held, roughly."""
        return sum(len(level) for level in self.levels) + _SIZE_BYTES * len(self.sizes)

    def node(self, level: int, position: int) -> bytes:
        """A stored node (level ≥ 4) of the tree of :attr:`size` leaves."""
        return stored_node(self.levels, level, position)

    def holds(self, size: int) -> bool:
        """Whether every node a proof in the tree of ``size`` leaves needs is held."""
        return size in self.sizes and size <= self.size

    def inclusion(self, index: int, size: int, tile_leaves: Sequence[bytes]) -> list[bytes]:
        """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        Requires ``holds(size)`` and the leaf hashes of the leaf's tile clipped to ``size``
        (:func:`~referendum_core.merkle.inclusion_from_levels`).
        """
        edge = self.sizes.get(size)
        if edge is None or size > self.size:
            raise StoredNodeError(f"tree size {size} is not cached")
        return inclusion_from_levels(index, size, tile_leaves, self.levels, edge)


class InclusionRow(NamedTuple):
    """What the database holds for one inclusion proof (one row of ``INCLUSION_LATEST``)."""

    tree_size: int | None
    """The checkpoint's size; None when the log is empty or no block has the asked size."""
    root: bytes | None
    checkpoint: str | None
    log_index: int | None
    """None for a ballot the referendum does not hold or has not sequenced yet."""
    body: bytes | None
    leaves: list[bytes] | None
    """Leaf hashes of the ballot's tile up to ``tree_size``; None unless the index is below."""


class _Batch:
    __slots__ = ("hashes", "key", "waiters")

    def __init__(self, key: tuple[str, int | None]) -> None:
        self.key = key
        self.hashes: list[bytes] = []
        self.waiters: list[asyncio.Future[InclusionRow | None]] = []


class _InclusionReader:
    """Reads inclusion rows, many requests to one query.

    Requests for the same referendum and checkpoint that arrive while the event loop is busy
    (in the same loop iteration, or while every query slot is taken) share one
    ``INCLUSION_LATEST`` / ``INCLUSION_AT`` query: a round trip and a pooled
    connection cost a request more than its share of a shared query, on the server and in
    PostgreSQL. An idle server adds no wait: a lone request's query starts on the next loop
    iteration.
    """

    def __init__(self, pool: asyncpg.Pool, *, slots: int, batch_max: int) -> None:
        self._pool = pool
        self._free = slots
        self._batch_max = batch_max
        self._open: dict[tuple[str, int | None], _Batch] = {}
        self._queue: deque[_Batch] = deque()
        self._scheduled = False
        self._running: set[asyncio.Task[None]] = set()

    async def read(self, rid: str, ballot_hash: bytes, size: int | None) -> InclusionRow | None:
        """The row of ``ballot_hash`` against the latest checkpoint or the one of ``size``.

        ``None`` when the referendum is unknown.
        """
        key = (rid, size)
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch(key)
            self._queue.append(batch)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[InclusionRow | None] = loop.create_future()
        batch.hashes.append(ballot_hash)
        batch.waiters.append(waiter)
        if len(batch.hashes) >= self._batch_max:
            del self._open[key]
        if self._free and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start)
        return await waiter

    async def close(self) -> None:
        """Wait for the queries in flight (their requests get their answers)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _start(self) -> None:
        self._scheduled = False
        loop = asyncio.get_running_loop()
        while self._free and self._queue:
            batch = self._queue.popleft()
            if self._open.get(batch.key) is batch:
                del self._open[batch.key]
            self._free -= 1
            task = loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: _Batch) -> None:
        rid, size = batch.key
        try:
            with translated():
                if size is None:
                    rows = await self._pool.fetch(INCLUSION_LATEST, rid, batch.hashes)
                else:
                    rows = await self._pool.fetch(INCLUSION_AT, rid, batch.hashes, size)
        except asyncio.CancelledError:
            for waiter in batch.waiters:
                waiter.cancel()
            raise
        except Exception as exc:
            _settle(batch.waiters, error=exc)
            return
        finally:
            self._free += 1
            if self._queue:
                self._start()
        if not rows:  # an unknown referendum
            _settle(batch.waiters, [None] * len(batch.waiters))
        elif len(rows) != len(batch.waiters):
            count = f"{len(rows)} rows for {len(batch.waiters)} ballot hashes"
            _settle(batch.waiters, error=StoredNodeError(count))
        else:
            _, _, _, _, size, root, note = rows[0]
            _settle(
                batch.waiters,
                [InclusionRow(size, root, note, r[1], r[2], r[3]) for r in rows],
            )


def _settle(
    waiters: Sequence[asyncio.Future[InclusionRow | None]],
    results: Sequence[InclusionRow | None] = (),
    *,
    error: BaseException | None = None,
) -> None:
    for n, waiter in enumerate(waiters):
        if waiter.done():  # its request went away
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(results[n])


class LogProofs:
    """Inclusion and consistency proofs for every referendum one process serves.

    ``budget_bytes`` bounds the cached nodes of all referendums together (least recently used
    referendum out first); a log whose nodes alone exceed it is served from the database.
    The keywords are the ``proof_*`` settings: ``page_nodes``, the most nodes one query reads
    when the cache is filled or extended; ``sizes_per_log``, the checkpoint sizes whose right
    edge is kept per referendum; ``query_slots``, the inclusion queries in flight at once;
    ``batch_max``, the most ballots one inclusion query reads.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        budget_bytes: int,
        *,
        page_nodes: int = Settings.proof_page_nodes,
        sizes_per_log: int = Settings.proof_sizes_per_log,
        query_slots: int = Settings.proof_query_slots,
        batch_max: int = Settings.proof_batch_max,
    ) -> None:
        self._pool = pool
        self._budget = budget_bytes
        self._page = page_nodes
        self.sizes_per_log = sizes_per_log
        """Checkpoint sizes whose right edge is kept, per referendum."""
        self._logs: OrderedDict[str, LogNodes] = OrderedDict()
        self._reader = _InclusionReader(pool, slots=query_slots, batch_max=batch_max)

    async def close(self) -> None:
        """Wait for the inclusion queries in flight; call before closing the pool."""
        await self._reader.close()

    async def read_inclusion(
        self, rid: str, ballot_hash: bytes, size: int | None
    ) -> InclusionRow | None:
        """What an inclusion proof of ``ballot_hash`` needs, against the latest checkpoint
        (``size`` None) or the one of ``size``; None for an unknown referendum."""
        return await self._reader.read(rid, ballot_hash, size)

    # -- the cache ------------------------------------------------------------------------

    @staticmethod
    def _cost(size: int) -> int:
        """Bytes of the stored nodes of a tree of ``size`` leaves."""
        return _HASH * sum(size >> level for level in range(STORED_MIN_LEVEL, 64))

    def cached(self, rid: str) -> LogNodes | None:
        """The cache of ``rid``, if this process holds one."""
        return self._logs.get(rid)

    def nbytes(self) -> int:
        """Memory the cache holds, roughly."""
        return sum(log.nbytes for log in self._logs.values())

    async def _nodes(self, rid: str, size: int, root: bytes) -> LogNodes | None:
        """The cache of ``rid`` holding the tree of ``size`` (whose root is ``root``).

        ``None`` when that log is too large for the budget.
        """
        log = self._logs.get(rid)
        if log is not None:
            self._logs.move_to_end(rid)
            if log.holds(size):
                log.sizes.move_to_end(size)
                return log
        if self._cost(size) + _SIZE_BYTES > self._budget:
            self._logs.pop(rid, None)
            return None
        if log is None:
            log = self._logs[rid] = LogNodes()
        async with log.lock:
            if not log.holds(size):
                await self._take_in(rid, log, size, root)
        self._evict(keep=rid)
        return log

    async def _take_in(self, rid: str, log: LogNodes, size: int, root: bytes) -> None:
        """Read the nodes up to ``size`` and the leaves of its partial tile; keep them
        if they give ``root``."""
        grown: list[bytes] = []
        tiles: dict[int, TileNodes] = {}
        with translated():
            async with self._pool.acquire() as conn:
                for level in range(STORED_MIN_LEVEL, size.bit_length()):
                    k = level - STORED_MIN_LEVEL
                    have = len(log.levels[k]) // _HASH if k < len(log.levels) else 0
                    grown.append(
                        await _node_range(conn, rid, level, have, size >> level, self._page)
                    )
                if size % TILE_WIDTH:
                    last = size >> STORED_MIN_LEVEL
                    rows = await conn.fetch(tiles_query(1), rid, last * TILE_WIDTH, size)
                    tiles[last] = _tile_of(rid, last, size, rows)
        # Requests only read nodes of sizes already taken in, below what is appended here.
        while len(log.levels) < len(grown):
            log.levels.append(bytearray())
        before = [len(level) // _HASH for level in log.levels]
        for k, data in enumerate(grown):
            log.levels[k] += data
        try:
            await _check_parents(log.levels, before)
            edge = right_edge(size, tile_lookup(log.node, tiles))
            if edge[0] != root:
                raise StoredNodeError(f"the stored nodes do not give the root of size {size}")
        except StoredNodeError as exc:
            for k, count in enumerate(before):
                del log.levels[k][count * _HASH :]
            raise StoredNodeError(f"{rid!r}: {exc}") from exc
        log.size = max(size, log.size)
        log.sizes[size] = edge
        while len(log.sizes) > self.sizes_per_log:
            log.sizes.popitem(last=False)

    def _evict(self, *, keep: str) -> None:
        total = self.nbytes()
        for rid in list(self._logs):
            if total <= self._budget:
                break
            if rid != keep:
                total -= self._logs.pop(rid).nbytes

    # -- proofs ---------------------------------------------------------------------------

    async def inclusion(
        self, rid: str, index: int, size: int, root: bytes, tile_leaves: Sequence[bytes]
    ) -> list[bytes]:
        """The inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        ``tile_leaves`` are the leaf hashes of the leaf's tile, clipped to ``size``,
        in log order (:attr:`InclusionRow.leaves`); ``root`` is the signed root of that size.
        """
        log = await self._nodes(rid, size, root)
        if log is not None:
            return log.inclusion(index, size, tile_leaves)
        start = index & -TILE_WIDTH
        if len(tile_leaves) != min(TILE_WIDTH, size - start):
            raise StoredNodeError(f"{len(tile_leaves)} leaves in the tile at {start}")
        tiles = {index >> STORED_MIN_LEVEL: tile_nodes(tile_leaves)}
        return await self._uncached(rid, inclusion_proof_nodes(index, size), size, tiles)

    async def consistency(
        self, rid: str, first: int, second: int, latest: int, root: bytes
    ) -> list[bytes]:
        """The consistency proof from ``first`` to ``second`` leaves (``<= latest``).

        ``root`` is the signed root of the ``latest`` size, which the cache is brought to.
        """
        plan = consistency_proof_nodes(first, second)
        log = await self._nodes(rid, latest, root)
        if log is None:
            return await self._uncached(rid, plan, second, {})
        tiles = await self._tiles(rid, plan, second, {})
        return proof_from_nodes(plan, tile_lookup(log.node, tiles))

    async def _tiles(
        self, rid: str, plan: Sequence[Sequence[NodeId]], size: int, have: dict[int, TileNodes]
    ) -> dict[int, TileNodes]:
        """``have`` and levels 0..3 of every other tile below the stored levels in ``plan``."""
        wanted = sorted(
            {
                position >> (STORED_MIN_LEVEL - level)
                for element in plan
                for level, position in element
                if level < STORED_MIN_LEVEL
            }
            - have.keys()
        )
        if not wanted:
            return have
        bounds = [b for c in wanted for b in (c * TILE_WIDTH, min((c + 1) * TILE_WIDTH, size))]
        with translated():
            rows = await self._pool.fetch(tiles_query(len(wanted)), rid, *bounds)
        tiles = dict(have)
        for c in wanted:
            mine = [r for r in rows if r[0] >> STORED_MIN_LEVEL == c]
            tiles[c] = _tile_of(rid, c, size, mine)
        return tiles

    async def _uncached(
        self,
        rid: str,
        plan: Sequence[Sequence[NodeId]],
        size: int,
        tiles: dict[int, TileNodes],
    ) -> list[bytes]:
        """A proof in a log too large for the cache: every node read from the database."""
        tiles = await self._tiles(rid, plan, size, tiles)
        needed = sorted(
            {node for element in plan for node in element if node.level >= STORED_MIN_LEVEL}
        )
        with translated():
            rows = await self._pool.fetch(
                NODES_BY_ID, rid, [n.level for n in needed], [n.position for n in needed]
            )
        stored = {(level, position): bytes(h) for level, position, h in rows}

        def node(level: int, position: int) -> bytes:
            h = stored.get((level, position))
            if h is None:
                raise StoredNodeError(f"node {(level, position)} of {rid!r} is not stored")
            return h

        return proof_from_nodes(plan, tile_lookup(node, tiles))


async def _check_parents(levels: list[bytearray], before: Sequence[int]) -> None:
    """Check every node appended above the lowest level (``levels[k]`` held ``before[k]``
    nodes) against its two children; yield to the event loop now and then.

    With the root check of :func:`right_edge` this ties every cached node to the signed root:
    a node is either checked against its parent or, lacking one, is part of the compact range
    that gives the root.
    """
    sha = _sha256  # node hash inline, children sliced as one 64-byte run: ~n/16 nodes a fill
    checked = 0
    for k in range(1, len(levels)):
        parents, children = levels[k], levels[k - 1]
        for p in range(before[k], len(parents) // _HASH):
            c = p << 6  # two children of 32 bytes each
            if sha(b"\x01" + children[c : c + 64]).digest() != parents[p << 5 : (p + 1) << 5]:
                level = STORED_MIN_LEVEL + k
                raise StoredNodeError(f"node {(level, p)} is not the hash of its children")
            checked += 1
            if checked % 4096 == 0:
                await asyncio.sleep(0)  # a first fill checks ~n/16 nodes: let requests run


def _tile_of(rid: str, tile: int, size: int, rows: Iterable[Any]) -> TileNodes:
    """Levels 0..3 of ``tile`` from its ``(log_index, leaf_hash)`` rows, clipped to ``size``."""
    leaves = [bytes(leaf) for _, leaf in sorted((r[0], r[1]) for r in rows)]
    if len(leaves) != min(TILE_WIDTH, size - tile * TILE_WIDTH):
        raise StoredNodeError(f"{len(leaves)} sequenced ballots in tile {tile} of {rid!r}")
    return tile_nodes(leaves)


async def _node_range(
    conn: asyncpg.pool.PoolConnectionProxy[Any],
    rid: str,
    level: int,
    begin: int,
    end: int,
    page: int,
) -> bytes:
    """Stored nodes of ``level`` at positions ``[begin, end)``, concatenated, ``page`` at a
    time."""
    parts = []
    for lo in range(begin, end, page):
        hi = min(lo + page, end)
        row = await conn.fetchrow(NODE_RANGE, rid, level, lo, hi)
        found = None if row is None else row["n"]
        if row is None or found != hi - lo:
            raise StoredNodeError(f"{found} of nodes {level}:[{lo}, {hi}) of {rid!r} stored")
        parts.append(bytes(row["hashes"]))
    return b"".join(parts)
