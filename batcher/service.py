"""The sealing service: one leader per referendum turns accepted ballots into log blocks.

A batcher holds, per referendum, one dedicated connection with a session-level advisory lock
(:func:`leader_lock_key`). The same connection runs every sealing round, so a leader whose
connection dies loses its lock and its open transaction together: it can never commit a block
after a standby took over. A standby polls ``pg_try_advisory_lock`` every
``settings.standby_poll_ms`` and leads as soon as the lock is free.

One round (:func:`seal_block`) is one transaction:

1. lock the referendum's ``log_heads`` row (``FOR UPDATE``; created on first use) and read the
   last height, block hash, tree size and compact range;
2. take up to N waiting ballots in id order out of the queue ``log_pending`` (filled by a
   trigger in the statement that inserts each ballot, with its leaf hash; a ballot committed
   late with a lower id is still there for the next round), number them from the tree size
   on and COPY them into ``log_entries`` with the block's height. The ballots themselves are
   neither read nor written (migration 022);
3. extend the compact range with their leaf hashes (never rehashing the tree) and store the
   perfect subtrees it completes at levels ≥
   :data:`~referendum_core.merkle.STORED_MIN_LEVEL` in ``log_nodes``;
4. sign the checkpoint, insert the block (a trigger checks it extends the chain) and move the
   head.

A crash anywhere rolls the whole round back. A block closes at ``block_max_ballots`` ballots or
once the oldest waiting ballot has waited ``block_max_ms``. When the referendum is no longer
open the leader seals what is left and marks the last block final (an empty block when nothing
was left), then stops. Every ``settings.pending_vacuum_every`` ballots it seals, the leader VACUUMs
the queue (:class:`PendingVacuum`), whose dead rows would otherwise slow every later round.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import operator
from dataclasses import dataclass

import asyncpg
import structlog

from batcher.witnessing import CheckpointPublisher
from referendum_core.block import Block
from referendum_core.checkpoint import Checkpoint, sign_checkpoint, verifier_key_string
from referendum_core.merkle import STORED_MIN_LEVEL, CompactRange
from referendum_service.db import translated, vacuum
from referendum_service.keys import ServiceKey
from referendum_service.settings import Settings
from referendum_service.store.blocks import log_head

__all__ = [
    "CLOSED_STATES",
    "LogSigner",
    "PendingVacuum",
    "ReferendumBatcher",
    "SealedBlock",
    "leader_lock_key",
    "run_batcher",
    "seal_block",
]

log = structlog.get_logger("batcher")

CLOSED_STATES = frozenset({"closed", "tallied", "published"})
"""Referendum states in which no ballot is accepted any more: the log is finalised."""

_BALLOT_ID = operator.itemgetter(1)
_ERROR_BACKOFF_S = 1.0

# The round takes the oldest waiting ballots (lowest ids) out of log_pending with their leaf
# hashes: an ordered scan of the queue's primary key finds their row addresses, a TID scan
# deletes them. A queue's statistics are always stale (an empty table at the last VACUUM, a
# million rows now), so the plan must not depend on them:
# * sequential and bitmap scans are off for the round (SET LOCAL): the planner cannot read the
#   whole queue and sort it (it did, estimating an empty table);
# * the DELETE has no condition but the addresses, so no index scan can serve it: with
#   `referendum_id = $1` added, it chose the primary key and tested every waiting row against
#   the 10,000 addresses (10 s a round). The addresses come from the same snapshot and only
#   the round holding the log head deletes from the queue, so they are exactly the rows found.
_TAKE_BALLOTS = """
DELETE FROM log_pending
WHERE ctid = ANY(ARRAY(SELECT ctid FROM log_pending WHERE referendum_id = $1
                       ORDER BY referendum_id, ballot_id LIMIT $2))
RETURNING referendum_id, ballot_id, leaf_hash
"""

_WAITING = """
SELECT r.state,
       coalesce(h.final, false) AS final,
       (SELECT count(*) FROM (SELECT 1 FROM log_pending WHERE referendum_id = $1
                              LIMIT $2) AS w) AS waiting,
       (SELECT (extract(epoch FROM clock_timestamp() - b.accepted_at) * 1000)::bigint
          FROM ballots AS b
         WHERE b.id = (SELECT min(ballot_id) FROM log_pending WHERE referendum_id = $1))
         AS waited_ms
FROM referendums AS r LEFT JOIN log_heads AS h ON h.referendum_id = r.id
WHERE r.id = $1
"""


def leader_lock_key(referendum_id: str) -> int:
    """The advisory lock key of a referendum's batcher leader (a signed 64-bit integer).

    >>> leader_lock_key("r1") == leader_lock_key("r1") != leader_lock_key("r2")
    True
    """
    digest = hashlib.sha256(b"referendum-batcher-leader\x00" + referendum_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class LogSigner:
    """Signs checkpoints: key name ``log_origin``, origin ``log_origin/referendum_id``."""

    key: ServiceKey
    log_origin: str

    def origin(self, referendum_id: str) -> str:
        """The checkpoint origin line of a referendum's log."""
        return f"{self.log_origin}/{referendum_id}"

    def verifier_key(self) -> str:
        """The C2SP verifier key string that checks these checkpoints."""
        return verifier_key_string(self.log_origin, self.key.public_key)

    def sign(self, referendum_id: str, tree_size: int, root: bytes) -> str:
        """The signed checkpoint note for a tree size and root."""
        checkpoint = Checkpoint(self.origin(referendum_id), tree_size, root)
        return sign_checkpoint(checkpoint, self.log_origin, self.key.seed)


@dataclass(frozen=True)
class SealedBlock:
    """What one sealing round wrote."""

    block: Block
    final: bool

    @property
    def ballots(self) -> int:
        """Number of ballots sequenced in the block."""
        return self.block.end_index - self.block.first_index


async def seal_block(
    conn: asyncpg.Connection,
    referendum_id: str,
    signer: LogSigner,
    *,
    max_ballots: int,
    close: bool = False,
) -> SealedBlock | None:
    """Seal one block of at most ``max_ballots`` waiting ballots, in one transaction.

    Returns ``None`` (writing nothing) when no ballot waits and ``close`` is false, or when the
    log is already final. With ``close`` the block is final when it takes every waiting ballot
    (fewer than ``max_ballots``); with nothing waiting it is an empty final block. Requires
    ``max_ballots >= 1`` and no transaction open on ``conn``.
    """
    async with conn.transaction():
        await conn.execute(
            "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;"
            " SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off"
        )
        await conn.execute(
            "INSERT INTO log_heads (referendum_id, compact_range) VALUES ($1, $2) "
            "ON CONFLICT (referendum_id) DO NOTHING",
            referendum_id,
            CompactRange().to_bytes(),
        )
        head = await conn.fetchrow(
            "SELECT height, tree_size, block_hash, compact_range, final FROM log_heads "
            "WHERE referendum_id = $1 FOR UPDATE",
            referendum_id,
        )
        assert head is not None
        if head["final"]:
            return None
        height = head["height"] + 1
        tree = CompactRange.from_bytes(head["compact_range"])
        if tree.size != head["tree_size"]:
            raise RuntimeError(f"log head of {referendum_id} is inconsistent")
        rows = await conn.fetch(_TAKE_BALLOTS, referendum_id, max_ballots)
        if not rows and not close:
            return None
        if any(r[0] != referendum_id for r in rows):
            raise RuntimeError(f"the queue of {referendum_id} returned another referendum's row")
        rows.sort(key=_BALLOT_ID)  # log order is ballot id order within a round
        first = tree.size
        if rows:
            await conn.copy_records_to_table(
                "log_entries",
                records=[
                    (referendum_id, first + n, r[1], height, r[2]) for n, r in enumerate(rows)
                ],
                columns=["referendum_id", "log_index", "ballot_id", "block_height", "leaf_hash"],
            )
        completed = tree.extend([r[2] for r in rows], min_level=STORED_MIN_LEVEL)
        if completed:
            await conn.copy_records_to_table(
                "log_nodes",
                records=[(referendum_id, s.level, s.position, s.hash) for s in completed],
                columns=["referendum_id", "level", "position", "hash"],
            )
        final = close and len(rows) < max_ballots
        root = tree.root()
        sealed_at = await conn.fetchval(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
        )
        block = Block(
            referendum_id,
            height,
            tree.size - len(rows),
            tree.size,
            tree.size,
            root,
            bytes(head["block_hash"]),
            sealed_at,
            signer.sign(referendum_id, tree.size, root),
        )
        block_hash = block.block_hash()
        await conn.execute(
            "INSERT INTO blocks (referendum_id, height, first_index, end_index, tree_size, root,"
            " prev_hash, block_hash, sealed_at, checkpoint, final)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            referendum_id,
            block.height,
            block.first_index,
            block.end_index,
            block.tree_size,
            block.root,
            block.prev_hash,
            block_hash,
            block.sealed_at,
            block.checkpoint,
            final,
        )
        await conn.execute(
            "UPDATE log_heads SET height = $2, tree_size = $3, block_hash = $4,"
            " compact_range = $5, final = $6 WHERE referendum_id = $1",
            referendum_id,
            height,
            tree.size,
            block_hash,
            tree.to_bytes(),
            final,
        )
    return SealedBlock(block, final)


class PendingVacuum:
    """``VACUUM log_pending`` once every ``every`` ballots sealed through :meth:`sealed`.

    Every sealed ballot leaves one dead row in the queue and one dead entry in its primary
    key, and a round's ordered scan steps over every dead entry before the first waiting
    ballot: left alone, a round's cost would grow with the log (about 2 µs a ballot per
    million sealed). VACUUM removes them (and the emptied index pages) at a cost bounded by
    the queue's live rows plus the dead ones, so once every 100,000 it stays small per
    ballot. It runs outside any transaction; a failure is logged, never fatal.
    """

    def __init__(self, every: int = Settings.pending_vacuum_every) -> None:
        self.every = every
        self.since = 0

    async def sealed(self, conn: asyncpg.Connection, ballots: int) -> bool:
        """Count ``ballots`` just sealed; VACUUM when due. True when it vacuumed."""
        self.since += ballots
        if self.since < self.every:
            return False
        self.since = 0
        return await vacuum(conn, "log_pending")


class ReferendumBatcher:
    """Leads (or stands by for) the log of one referendum until it is final or stopped."""

    def __init__(
        self,
        dsn: str,
        referendum_id: str,
        signer: LogSigner,
        settings: Settings,
        stop: asyncio.Event,
        publisher: CheckpointPublisher | None = None,
    ) -> None:
        self.dsn = dsn
        self.publisher = publisher
        self.referendum_id = referendum_id
        self.signer = signer
        self.max_ballots = max(1, settings.block_max_ballots)
        self.max_ms = max(0, settings.block_max_ms)
        # checks for waiting ballots this often, so a block closes within ~poll of its deadline
        self.poll_s = min(0.1, max(0.01, self.max_ms / 5000))
        self.standby_poll_s = settings.standby_poll_ms / 1000
        self.stop = stop
        self.vacuum = PendingVacuum(settings.pending_vacuum_every)
        self.is_leader = False
        self.final = False

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` or until stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def run(self) -> None:
        """Take the leader lock when free, seal until final or stopped; retry after errors."""
        bound = log.bind(referendum_id=self.referendum_id)
        while not self.stop.is_set() and not self.final:
            try:
                with translated():
                    conn = await asyncpg.connect(self.dsn)
            except Exception as exc:  # database down: try again shortly
                bound.warning("connect_failed", error=str(exc))
                await self._pause(_ERROR_BACKOFF_S)
                continue
            try:
                await self._lead_or_wait(conn)
            except Exception as exc:  # a lost connection or a refused block: start over
                bound.warning("round_failed", error=repr(exc))
                await self._pause(_ERROR_BACKOFF_S)
            finally:
                self.is_leader = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), timeout=5)

    async def _lead_or_wait(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SET TIME ZONE 'UTC'")
        key = leader_lock_key(self.referendum_id)
        while not self.stop.is_set():
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                break
            await self._pause(self.standby_poll_s)
        else:
            return
        self.is_leader = True
        log.info("leader", referendum_id=self.referendum_id)
        if self.publisher is not None:
            # a new leader catches the witnesses up with the checkpoint sealed before it
            head = await log_head(conn, self.referendum_id)
            if head is not None and head.checkpoint is not None:
                await self.publisher.offer(self.referendum_id, head.tree_size, head.checkpoint)
        while not self.stop.is_set():
            delay = await self._round(conn)
            if self.final:
                log.info("final", referendum_id=self.referendum_id)
                return
            if delay > 0:
                await self._pause(delay)

    async def _round(self, conn: asyncpg.Connection) -> float:
        """Seal one block if one is due; return how long to wait before the next look."""
        row = await conn.fetchrow(_WAITING, self.referendum_id, self.max_ballots)
        if row is None:
            log.error("unknown_referendum", referendum_id=self.referendum_id)
            self.final = True
            return 0.0
        if row["final"]:
            if row["waiting"]:
                # ingest committed after the referendum left 'open': a defect to report
                log.error(
                    "ballots_after_final",
                    referendum_id=self.referendum_id,
                    unsequenced=row["waiting"],
                )
            self.final = True
            return 0.0
        closing = row["state"] in CLOSED_STATES
        waiting: int = row["waiting"]
        waited_ms: int | None = row["waited_ms"]
        due = closing or waiting >= self.max_ballots
        if waiting and waited_ms is not None and waited_ms >= self.max_ms:
            due = True
        if not due:
            if waiting and waited_ms is not None:
                return min(self.poll_s, max(0.0, (self.max_ms - waited_ms) / 1000))
            return self.poll_s
        sealed = await seal_block(
            conn, self.referendum_id, self.signer, max_ballots=self.max_ballots, close=closing
        )
        if sealed is not None:
            log.info(
                "sealed",
                referendum_id=self.referendum_id,
                height=sealed.block.height,
                ballots=sealed.ballots,
                tree_size=sealed.block.tree_size,
                final=sealed.final,
            )
            self.final = sealed.final
            if self.publisher is not None:
                block = sealed.block
                await self.publisher.offer(self.referendum_id, block.tree_size, block.checkpoint)
            await self.vacuum.sealed(conn, sealed.ballots)
        return 0.0


async def run_batcher(
    dsn: str,
    settings: Settings,
    signer: LogSigner,
    stop: asyncio.Event,
    referendum_id: str | None = None,
    publisher: CheckpointPublisher | None = None,
) -> None:
    """Run the batcher until ``stop`` is set; each new checkpoint goes to ``publisher``.

    With ``referendum_id``: lead (or stand by for) that referendum's log and return once it is
    final. Without: every few seconds find the referendums past draft whose log is not final
    and run one :class:`ReferendumBatcher` for each.
    """
    if referendum_id is not None:
        await ReferendumBatcher(dsn, referendum_id, signer, settings, stop, publisher).run()
        return
    tasks: dict[str, asyncio.Task[None]] = {}
    discovery_poll_s = settings.discovery_poll_ms / 1000
    try:
        while not stop.is_set():
            try:
                with translated():
                    conn = await asyncpg.connect(dsn)
                    try:
                        rows = await conn.fetch(
                            "SELECT r.id FROM referendums AS r"
                            " LEFT JOIN log_heads AS h ON h.referendum_id = r.id"
                            " WHERE r.state <> 'draft' AND NOT coalesce(h.final, false)"
                        )
                    finally:
                        await conn.close()
            except Exception as exc:  # database down: look again later
                log.warning("discovery_failed", error=str(exc))
                rows = []
            for row in rows:
                rid = row["id"]
                task = tasks.get(rid)
                if task is None or task.done():
                    batcher = ReferendumBatcher(dsn, rid, signer, settings, stop, publisher)
                    tasks[rid] = asyncio.create_task(batcher.run(), name=f"batcher-{rid}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=discovery_poll_s)
    finally:
        stop.set()
        if tasks:
            await asyncio.gather(*tasks.values(), return_exceptions=True)
