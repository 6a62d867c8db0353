"""Sealed blocks as the public read API and the record export read them.

The batcher writes ``blocks``; these are read-side queries, one round trip each, that tell an
unknown referendum apart from a known one without the block asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from referendum_core.block import Block
from referendum_core.merkle import EMPTY_ROOT
from referendum_service.db import translated
from referendum_service.store.log import block_from_row

__all__ = ["EMPTY_HEAD", "LogHead", "block_at", "log_head"]


@dataclass(frozen=True)
class LogHead:
    """The latest sealed block's checkpoint: tree size, root, signed note and height."""

    tree_size: int
    root: bytes
    checkpoint: str | None
    height: int


EMPTY_HEAD = LogHead(0, EMPTY_ROOT, None, 0)
"""The head of a log before its first block: size 0, the empty root, no note, height 0."""

_LATEST_BLOCK = """
SELECT r.id AS known, k.tree_size, k.root, k.checkpoint, k.height
FROM referendums AS r
LEFT JOIN LATERAL (SELECT tree_size, root, checkpoint, height FROM blocks
                   WHERE referendum_id = r.id ORDER BY height DESC LIMIT 1) AS k ON true
WHERE r.id = $1
"""

_BLOCK = """
SELECT r.id AS known, b.height, b.first_index, b.end_index, b.tree_size, b.root, b.prev_hash,
       b.block_hash, b.sealed_at, b.checkpoint
FROM referendums AS r
LEFT JOIN blocks AS b ON b.referendum_id = r.id AND b.height = $2
WHERE r.id = $1
"""


async def log_head(conn: Any, referendum_id: str) -> LogHead | None:
    """The head of the referendum's log (:data:`EMPTY_HEAD` before the first block).

    Returns:
        ``None`` when there is no such referendum.
    """
    with translated():
        row = await conn.fetchrow(_LATEST_BLOCK, referendum_id)
    if row is None:
        return None
    if row["height"] is None:
        return EMPTY_HEAD
    return LogHead(int(row["tree_size"]), bytes(row["root"]), row["checkpoint"], int(row["height"]))


async def block_at(conn: Any, referendum_id: str, height: int) -> tuple[bool, Block | None]:
    """Whether the referendum exists, and its block of ``height`` (``None`` when not sealed)."""
    with translated():
        row = await conn.fetchrow(_BLOCK, referendum_id, height)
    if row is None:
        return False, None
    if row["height"] is None:
        return True, None
    return True, block_from_row(referendum_id, row)
