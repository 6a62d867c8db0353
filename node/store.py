"""The node's tables (migration 004): ``witness_latest`` and ``witness_evidence``.

The latest cosigned checkpoint of an origin moves only by :func:`advance_latest`, a
conditional write naming the row as it was read: a first checkpoint is an ``INSERT ... ON
CONFLICT DO NOTHING``, a later one an ``UPDATE ... WHERE tree_size = <read> AND root =
<read>``. When another request moved the row in between, nothing is written and the caller
decides again on the new row, so two requests can never roll the latest back (the race of
C2SP tlog-witness). No lock is held while a request is decided.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from referendum_core.witness import StoredCheckpoint
from referendum_service.db import translated

__all__ = ["Evidence", "advance_latest", "evidence", "read_latest", "store_evidence"]


async def read_latest(conn: Any, origin: str) -> StoredCheckpoint | None:
    """The latest cosigned checkpoint of ``origin``, or None before the first."""
    with translated():
        row = await conn.fetchrow(
            "SELECT tree_size, root, note FROM witness_latest WHERE origin = $1", origin
        )
    if row is None:
        return None
    return StoredCheckpoint(int(row["tree_size"]), bytes(row["root"]), row["note"])


async def advance_latest(
    conn: Any,
    origin: str,
    was: StoredCheckpoint | None,
    size: int,
    root: bytes,
    note: str,
) -> bool:
    """Make ``(size, root, note)`` the latest of ``origin`` if the latest is still ``was``.

    True when written; False when another request moved the latest since it was read.
    """
    with translated():
        if was is None:
            row = await conn.fetchrow(
                "INSERT INTO witness_latest (origin, tree_size, root, note) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (origin) DO NOTHING RETURNING origin",
                origin,
                size,
                root,
                note,
            )
        else:
            row = await conn.fetchrow(
                "UPDATE witness_latest SET tree_size = $2, root = $3, note = $4,"
                " updated_at = now()"
                " WHERE origin = $1 AND tree_size = $5 AND root = $6 RETURNING origin",
                origin,
                size,
                root,
                note,
                was.size,
                was.root,
            )
    return row is not None


@dataclass(frozen=True)
class Evidence:
    """A stored refusal that shows (``fork``) or suggests (``bad_proof``) a split view."""

    id: int
    origin: str
    kind: str
    tree_size: int
    note: str
    latest_note: str
    old_size: int
    proof: tuple[bytes, ...]
    received_at: datetime

    def to_json(self) -> dict[str, Any]:
        """The public form: both signed notes, so anyone can check the log signed both."""
        return {
            "id": self.id,
            "origin": self.origin,
            "kind": self.kind,
            "conclusive": self.kind == "fork",
            "tree_size": self.tree_size,
            "note": self.note,
            "latest_note": self.latest_note,
            "old_size": self.old_size,
            "proof": [h.hex() for h in self.proof],
            "received_at": self.received_at.isoformat(),
        }


async def store_evidence(
    conn: Any,
    origin: str,
    kind: str,
    tree_size: int,
    note: str,
    latest_note: str,
    old_size: int,
    proof: tuple[bytes, ...],
) -> bool:
    """Keep a refused log-signed checkpoint with the latest one it contradicts.

    The same pair of notes is kept once (a resent fork, or one checkpoint sent with many bad
    proofs, adds nothing). True when it was new.
    """
    digest = hashlib.sha256(
        b"\x00".join([kind.encode(), note.encode(), latest_note.encode()])
    ).digest()
    with translated():
        row = await conn.fetchrow(
            "INSERT INTO witness_evidence"
            " (origin, kind, digest, tree_size, note, latest_note, old_size, proof)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (origin, digest) DO NOTHING RETURNING id",
            origin,
            kind,
            digest,
            tree_size,
            note,
            latest_note,
            old_size,
            list(proof),
        )
    return row is not None


async def evidence(conn: Any, origin: str | None = None, limit: int = 1000) -> list[Evidence]:
    """Stored evidence, oldest first (of one origin when given)."""
    with translated():
        rows = await conn.fetch(
            "SELECT id, origin, kind, tree_size, note, latest_note, old_size, proof, received_at"
            " FROM witness_evidence WHERE ($1::text IS NULL OR origin = $1)"
            " ORDER BY id LIMIT $2",
            origin,
            limit,
        )
    return [
        Evidence(
            int(r["id"]),
            r["origin"],
            r["kind"],
            int(r["tree_size"]),
            r["note"],
            r["latest_note"],
            int(r["old_size"]),
            tuple(bytes(h) for h in r["proof"]),
            r["received_at"],
        )
        for r in rows
    ]
