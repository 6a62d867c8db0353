"""A roll's own partition: its first part loaded with no index, then indexed in one pass.

``voters`` is partitioned by referendum (migration 003). Both of its unique keys are random
(a credential is a public key, a voter hash an HMAC), so maintaining their indexes row by row
costs two index descents a row; loading the rows into an unindexed table and building both
indexes afterwards (a sort each) is measured at four times the rate. So the first part of a
referendum's roll goes into a fresh table of its own (:func:`new_partition`), which, once
every line is in, gets its indexes built (:func:`build_indexes`) and is attached as the
referendum's partition (:func:`attach_partition`), all inside the import's transaction: a
refused part leaves no table behind. A duplicate in the part fails the index build, which the
import reports by line (:mod:`server.roll.store`). Later parts of the same roll
are inserted into the attached partition with the indexes maintained as they go.
"""

from __future__ import annotations

import hashlib
from typing import Any

import asyncpg

from referendum_core.ids import is_referendum_id
from server.errors import Conflict

__all__ = ["attach_partition", "build_indexes", "new_partition", "partition_name"]

_BUILD_MEMORY = "256MB"  # maintenance_work_mem for the two index builds of one part


def partition_name(referendum_id: str) -> str:
    """The table of one referendum's roll: ``voters_`` and 24 hex digits of its id's hash
    (ids may be longer than a PostgreSQL name allows).

    >>> partition_name("city-2026")
    'voters_9a1b08d5ef4aa1693349e87c'
    """
    return "voters_" + hashlib.sha256(referendum_id.encode()).hexdigest()[:24]


def _literal(referendum_id: str) -> str:
    if not is_referendum_id(referendum_id):  # the grammar has no quote; checked all the same
        raise ValueError(f"not a referendum id: {referendum_id!r}")
    return f"'{referendum_id}'"


async def new_partition(conn: Any, referendum_id: str) -> str | None:
    """Create the unindexed table the first part of ``referendum_id``'s roll is loaded into;
    None when the roll has its partition already (a later part), whose rows then go into
    ``voters`` as they are.

    Requires the import's transaction, holding the referendum row's lock (so two imports of
    one roll take turns). Reads only the catalog: a read of ``voters`` would hold a lock on its
    default partition until the end, which another import's attach waits for (a deadlock).
    """
    name = partition_name(referendum_id)
    if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name):
        return None
    await conn.execute(
        f"""CREATE TABLE {name} (LIKE voters INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
            ALTER TABLE {name} ADD CONSTRAINT {name}_referendum
                CHECK (referendum_id = {_literal(referendum_id)})"""
    )
    return name


async def build_indexes(conn: Any, name: str) -> None:
    """Build the two unique indexes of the loaded table ``name`` (one sort each), on the
    credential and the voter hash alone: the referendum is the partition's.

    Raises asyncpg's UniqueViolationError (a credential or voter hash twice in the part).
    """
    await conn.execute(
        f"""SET LOCAL maintenance_work_mem = '{_BUILD_MEMORY}';
            ALTER TABLE {name} ADD PRIMARY KEY (credential);
            ALTER TABLE {name} ADD UNIQUE (voter_hash)"""
    )


async def attach_partition(conn: Any, referendum_id: str, name: str) -> None:
    """Attach the indexed table ``name`` as the partition of ``referendum_id`` (its CHECK
    constraint spares the attach a scan).

    Raises Conflict when the default partition holds rows of this referendum (written around
    the import, as only tests do).
    """
    try:
        await conn.execute(
            f"""ALTER TABLE voters ATTACH PARTITION {name}
                FOR VALUES IN ({_literal(referendum_id)})"""
        )
    except asyncpg.CheckViolationError as exc:
        raise Conflict(
            f"voters of {referendum_id!r} were stored outside a roll import",
            slug="roll-outside-import",
        ) from exc
