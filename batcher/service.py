"""The sealing service: one leader per referendum turns accepted ballots into log blocks.

A batcher holds, per referendum, one dedicated connection with a session-level advisory lock
(:func:`leader_lock_key`). The same connection runs every sealing round, so a leader whose
connection dies loses its lock and its open transaction together: it can never commit a block
after a standby took over. A standby polls ``pg_try_advisory_lock`` every
``STANDBY_POLL_S`` seconds and leads as soon as the lock is free.

One round (:func:`seal_block`) is one transaction:

1. lock the referendum's ``log_heads`` row (``FOR UPDATE``; created on first use) and read the
   last height, block hash, tree size and compact range;
2. take up to N unsequenced ballots in id order through the partial index
   (``log_index IS NULL``: a ballot committed late with a lower id is still picked), number
   them from the tree size on, and set their ``log_index``/``block_height`` in one statement;
3. extend the compact range with their leaf hashes (never rehashing the tree) and store the
   perfect subtrees it completes at levels ≥ :data:`NODE_MIN_LEVEL` in ``log_nodes``;
4. sign the checkpoint, insert the block (a trigger checks it extends the chain) and move the
   head.

A crash anywhere rolls the whole round back. A block closes at ``block_max_ballots`` ballots or
once the oldest waiting ballot has waited ``block_max_ms``. When the referendum is no longer
open the leader seals what is left and marks the last block final (an empty block when nothing
was left), then stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from dataclasses import dataclass

import asyncpg
import structlog

from referendum_core.block import Block
from referendum_core.checkpoint import Checkpoint, sign_checkpoint, verifier_key_string
from referendum_core.merkle import CompactRange
from server.db import translated
from server.keys import ServiceKey
from server.settings import Settings

__all__ = [
    "CLOSED_STATES",
    "NODE_MIN_LEVEL",
    "STANDBY_POLL_S",
    "LogSigner",
    "ReferendumBatcher",
    "SealedBlock",
    "leader_lock_key",
    "run_batcher",
    "seal_block",
]

log = structlog.get_logger("batcher")

NODE_MIN_LEVEL = 4
"""Lowest level of the Merkle nodes stored in ``log_nodes`` (fixed by migration 020)."""

STANDBY_POLL_S = 0.5
"""How often a standby tries to take the leader lock."""

CLOSED_STATES = frozenset({"closed", "tallied", "published"})
"""Referendum states in which no ballot is accepted any more: the log is finalised."""

_DISCOVERY_POLL_S = 2.0
_ERROR_BACKOFF_S = 1.0

# No FOR UPDATE on the ballots: the log_heads row lock already serialises sealing rounds, and
# locking 10,000 rows first would write each of them twice. Two planner guards keep a round's
# cost independent of the log's length:
# * ``referendum_id = ANY(ARRAY[$1])`` with ``ORDER BY referendum_id, id``: only the partial
#   index ballots_unsequenced yields that order, so the planner cannot walk the primary key
#   from the first ballot, filtering out every sequenced one (it did, with stale statistics);
# * hash and merge joins are off for the round (SET LOCAL): a hash join scans the whole table.
_TAKE_BALLOTS = """
UPDATE ballots AS b SET log_index = n.log_index, block_height = $4
FROM (SELECT id, $3::bigint + row_number() OVER (ORDER BY id) - 1 AS log_index
      FROM (SELECT id FROM ballots
            WHERE referendum_id = ANY(ARRAY[$1::text]) AND log_index IS NULL
            ORDER BY referendum_id, id
            LIMIT $2) AS picked) AS n
WHERE b.id = n.id AND b.log_index IS NULL
RETURNING b.log_index, b.body
"""

_WAITING = """
SELECT r.state,
       coalesce(h.final, false) AS final,
       (SELECT count(*) FROM (SELECT 1 FROM ballots
                              WHERE referendum_id = ANY(ARRAY[$1::text]) AND log_index IS NULL
                              LIMIT $2) AS w) AS waiting,
       (SELECT (extract(epoch FROM clock_timestamp() - accepted_at) * 1000)::bigint
          FROM ballots WHERE referendum_id = ANY(ARRAY[$1::text]) AND log_index IS NULL
          ORDER BY referendum_id, id LIMIT 1) AS waited_ms
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
        await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
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
        rows = await conn.fetch(_TAKE_BALLOTS, referendum_id, max_ballots, tree.size, height)
        if not rows and not close:
            return None
        rows.sort(key=lambda r: r["log_index"])
        sha = hashlib.sha256
        completed = tree.extend(
            (sha(b"\x00" + r["body"]).digest() for r in rows), min_level=NODE_MIN_LEVEL
        )
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


class ReferendumBatcher:
    """Leads (or stands by for) the log of one referendum until it is final or stopped."""

    def __init__(
        self,
        dsn: str,
        referendum_id: str,
        signer: LogSigner,
        settings: Settings,
        stop: asyncio.Event,
    ) -> None:
        self.dsn = dsn
        self.referendum_id = referendum_id
        self.signer = signer
        self.max_ballots = max(1, settings.block_max_ballots)
        self.max_ms = max(0, settings.block_max_ms)
        # checks for waiting ballots this often, so a block closes within ~poll of its deadline
        self.poll_s = min(0.1, max(0.01, self.max_ms / 5000))
        self.stop = stop
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
            await self._pause(STANDBY_POLL_S)
        else:
            return
        self.is_leader = True
        log.info("leader", referendum_id=self.referendum_id)
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
        return 0.0


async def run_batcher(
    dsn: str,
    settings: Settings,
    signer: LogSigner,
    stop: asyncio.Event,
    referendum_id: str | None = None,
) -> None:
    """Run the batcher until ``stop`` is set.

    With ``referendum_id``: lead (or stand by for) that referendum's log and return once it is
    final. Without: every few seconds find the referendums past draft whose log is not final
    and run one :class:`ReferendumBatcher` for each.
    """
    if referendum_id is not None:
        await ReferendumBatcher(dsn, referendum_id, signer, settings, stop).run()
        return
    tasks: dict[str, asyncio.Task[None]] = {}
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
                    batcher = ReferendumBatcher(dsn, rid, signer, settings, stop)
                    tasks[rid] = asyncio.create_task(batcher.run(), name=f"batcher-{rid}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=_DISCOVERY_POLL_S)
    finally:
        stop.set()
        if tasks:
            await asyncio.gather(*tasks.values(), return_exceptions=True)
