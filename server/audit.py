"""The append-only audit log of operator actions (who, when, what).

Rows are only ever inserted; a trigger in the database refuses UPDATE, DELETE and TRUNCATE.
Details name referendums, counts and states, never a voter next to ballot contents.
"""

from __future__ import annotations

from typing import Any

import orjson

from referendum_service.db import translated

__all__ = ["record_action"]


async def record_action(
    conn: Any,
    actor: str,
    action: str,
    referendum_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one action; call it inside the transaction that makes the change."""
    with translated():
        await conn.execute(
            """INSERT INTO audit_log (actor, action, referendum_id, details)
               VALUES ($1, $2, $3, $4::jsonb)""",
            actor,
            action,
            referendum_id,
            orjson.dumps(details or {}).decode(),
        )
