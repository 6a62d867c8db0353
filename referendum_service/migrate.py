"""Plain SQL migrations, applied in order and recorded in ``schema_migrations``.

Safe to run twice (applied files are skipped) and from two processes at once: every step,
creating ``schema_migrations`` included, runs under one transaction-level advisory lock, so
the processes take turns and the later one sees the earlier one's rows. Each file runs in its
own transaction, so a failing file leaves nothing half-applied.

Files are numbered by time and never edited once committed (``migrations/README.md``): the
runner refuses a file whose checksum changed after it was applied, and a pending file numbered
below the highest applied one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

__all__ = ["Migration", "MigrationError", "apply_migrations", "load_migrations"]

_LOCK_KEY = 0x5245_4645_5245_4E44  # "REFEREND": one key for every migrating process

# Created under the lock: two concurrent `CREATE TABLE IF NOT EXISTS` can both miss the
# other's table and one then fails on the table's row type (DuplicateObject, 'type
# "schema_migrations" already exists'), so no process runs it unlocked.
_CREATE_RECORD = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


class MigrationError(RuntimeError):
    """The shipped migrations cannot be applied to this database as they are."""


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``NNN_name.sql``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text, recorded when it is applied."""
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def label(self) -> str:
        """``NNN_name``, as the file is called without ``.sql``."""
        return f"{self.version:03d}_{self.name}"


def load_migrations() -> list[Migration]:
    """Every migration shipped in ``referendum_service/migrations``, in version order.

    Raises:
        MigrationError: two files share a version.
    """
    found: list[Migration] = []
    for entry in resources.files("referendum_service.migrations").iterdir():
        if not entry.name.endswith(".sql"):
            continue
        stem = entry.name[:-4]
        version_text, _, name = stem.partition("_")
        found.append(Migration(int(version_text), name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version: {versions}")
    return found


async def apply_migrations(dsn: str) -> list[str]:
    """Apply pending migrations to the database at ``dsn``; return the names applied.

    Raises:
        MigrationError: an applied file changed since, or a pending file is numbered below
            the highest applied one; nothing from that file on is applied.
    """
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(_CREATE_RECORD)
        for migration in load_migrations():
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                row = await conn.fetchrow(
                    "SELECT checksum, (SELECT max(version) FROM schema_migrations) AS highest"
                    " FROM (SELECT 1) AS one"
                    " LEFT JOIN schema_migrations ON version = $1",
                    migration.version,
                )
                assert row is not None  # the join always yields one row
                if row["checksum"] is not None:
                    if row["checksum"] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.label} changed after it was applied;"
                            " add a new migration instead"
                        )
                    continue
                if row["highest"] is not None and row["highest"] > migration.version:
                    raise MigrationError(
                        f"migration {migration.label} is numbered below {row['highest']:03d},"
                        " already applied; number it after the last migration"
                    )
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
                applied.append(migration.label)
    finally:
        await conn.close()
    return applied
