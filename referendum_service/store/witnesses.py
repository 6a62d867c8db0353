"""A referendum's witness policy and the cosignatures its checkpoints collected (migration 004).

Shared by the server (the policy's routes, checkpoints served with their cosignatures) and the
batcher's publisher (which reads the policy and stores what the witnesses answered).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from referendum_core.witness import WitnessPolicy
from referendum_service.db import translated

__all__ = [
    "CosignedCheckpoint",
    "cosignature_lines",
    "latest_witnessed",
    "load_policy",
    "store_cosignatures",
]


async def load_policy(conn: Any, rid: str) -> WitnessPolicy | None:
    """The referendum's witness policy, or None when it has none."""
    with translated():
        raw = await conn.fetchval(
            "SELECT policy FROM witness_policies WHERE referendum_id = $1", rid
        )
    return None if raw is None else WitnessPolicy.from_json(orjson.loads(raw))


async def store_cosignatures(conn: Any, rid: str, tree_size: int, lines: dict[str, str]) -> None:
    """Keep the cosignature line of each witness (name -> line) for a checkpoint size."""
    if not lines:
        return
    with translated():
        await conn.executemany(
            "INSERT INTO checkpoint_cosignatures (referendum_id, tree_size, witness, line)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            [(rid, tree_size, name, line) for name, line in sorted(lines.items())],
        )


async def cosignature_lines(conn: Any, rid: str, tree_size: int) -> list[str]:
    """The stored cosignature lines of a checkpoint size, in witness name order."""
    with translated():
        rows = await conn.fetch(
            "SELECT line FROM checkpoint_cosignatures WHERE referendum_id = $1 AND tree_size = $2"
            " ORDER BY witness",
            rid,
            tree_size,
        )
    return [r["line"] for r in rows]


class CosignedCheckpoint(NamedTuple):
    """A checkpoint with the cosignature lines it collected."""

    tree_size: int
    root: bytes
    note: str
    height: int
    lines: list[str]


_LATEST_WITNESSED = """
SELECT b.tree_size, b.root, b.checkpoint, b.height
FROM (SELECT c.tree_size FROM checkpoint_cosignatures AS c
      WHERE c.referendum_id = $1
      GROUP BY c.tree_size HAVING count(*) >= $2
      ORDER BY c.tree_size DESC LIMIT 1) AS w
JOIN LATERAL (SELECT tree_size, root, checkpoint, height FROM blocks
              WHERE referendum_id = $1 AND tree_size = w.tree_size
              ORDER BY height LIMIT 1) AS b ON true
"""


async def latest_witnessed(conn: Any, rid: str, threshold: int) -> CosignedCheckpoint | None:
    """The largest checkpoint with at least ``threshold`` stored cosignatures, with them."""
    with translated():
        row = await conn.fetchrow(_LATEST_WITNESSED, rid, threshold)
    if row is None:
        return None
    size = int(row["tree_size"])
    lines = await cosignature_lines(conn, rid, size)
    return CosignedCheckpoint(
        size, bytes(row["root"]), row["checkpoint"], int(row["height"]), lines
    )
