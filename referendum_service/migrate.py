"""Plain SQL migrations, applied in order and recorded in ``schema_migrations``.

Safe to run twice (applied files are skipped) and from two processes at once (a
transaction-level advisory lock serialises them; the loser sees the winner's rows).
Each file runs in its own transaction, so a failing file leaves nothing half-applied.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from importlib import resources

import asyncpg

__all__ = ["Migration", "apply_migrations", "load_migrations"]

_LOCK_KEY = 0x5245_4645_5245_4E44  # "REFEREND": one key for every migrating process


@dataclass(frozen=True)
class Migration:
    """One SQL file: ``NNN_name.sql``."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Every migration shipped in ``referendum_service/migrations``, in version order."""
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
        raise RuntimeError(f"two migrations share a version: {versions}")
    return found


async def apply_migrations(dsn: str) -> list[str]:
    """Apply pending migrations to the database at ``dsn``; return the names applied."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    # another process may create it at the same instant
    with contextlib.suppress(asyncpg.exceptions.UniqueViolationError):
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
    try:
        for migration in load_migrations():
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                row = await conn.fetchrow(
                    "SELECT checksum FROM schema_migrations WHERE version = $1",
                    migration.version,
                )
                if row is not None:
                    if row["checksum"] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version}_{migration.name} changed after it "
                            "was applied; add a new migration instead"
                        )
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
                applied.append(f"{migration.version:03d}_{migration.name}")
    finally:
        await conn.close()
    return applied
