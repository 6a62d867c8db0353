"""Stored log rows read by more than one part: the server's read API, the record export, the
batcher.

The tables are made by the migrations (``blocks``, ``log_entries``, ``log_nodes``,
``log_heads``); the batcher is their only writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from referendum_core.block import Block

__all__ = ["block_from_row"]


def block_from_row(referendum_id: str, row: Mapping[str, Any]) -> Block:
    """The :class:`Block` of a ``blocks`` row (any row holding its columns)."""
    return Block(
        referendum_id,
        int(row["height"]),
        int(row["first_index"]),
        int(row["end_index"]),
        int(row["tree_size"]),
        bytes(row["root"]),
        bytes(row["prev_hash"]),
        int(row["sealed_at"]),
        str(row["checkpoint"]),
    )
