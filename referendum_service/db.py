"""PostgreSQL access: where the database is, the connection pool, and driver-error translation.

This is the only module that catches asyncpg exceptions. :func:`translated` turns them into
storage errors, so callers (the HTTP layer, the batcher, the tools) never see driver types.
The tree::

    StorageError                  (abstract)
    ├── Duplicate             a unique constraint refused the row (``constraint`` names it)
    ├── BadValue              SQLSTATE class 22: the database refused a value (a NUL in text)
    ├── SerializationRetry    serialization failure or deadlock: run the transaction again
    └── Unavailable           too many connections, connection lost or refused, database
                              starting up or shutting down, a timeout, an OS-level error,
                              a pooled connection still busy with its own (re)connection

The server renders them in its problem middleware (``Duplicate`` -> 409, ``BadValue`` -> 400,
``Unavailable`` -> 503 with ``Retry-After``); the batcher retries or waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg

from referendum_service.settings import Settings

__all__ = [
    "BadValue",
    "Duplicate",
    "SerializationRetry",
    "StorageError",
    "Unavailable",
    "acquire",
    "create_pool",
    "embedded_database_url",
    "ping",
    "resolve_database_url",
    "translated",
    "vacuum",
]

log = logging.getLogger(__name__)

_embedded: Any = None  # the pgserver handle, kept alive for the life of the process


RETRY_AFTER_S = 1
"""Seconds a client is asked to wait after the database was unavailable."""


class StorageError(Exception):
    """A failure of the database, translated from the driver (see the module's tree)."""


class Duplicate(StorageError):
    """A unique constraint refused the row; ``constraint`` names it (or is ``None``)."""

    def __init__(self, detail: str, constraint: str | None = None) -> None:
        super().__init__(detail)
        self.constraint = constraint


class BadValue(StorageError):
    """The database refused a value of the statement (SQLSTATE class 22); nothing was stored."""


class SerializationRetry(StorageError):
    """The transaction lost a serialization race and may simply be run again."""


class Unavailable(StorageError):
    """The database cannot be reached or cannot take the work now; try again later."""


def embedded_database_url(data_dir: Path) -> str:
    """Start (or reuse) the embedded throwaway PostgreSQL under ``data_dir/pg`` and return its DSN.

    Uses the ``pgserver`` package, which ships PostgreSQL binaries. Run as root it creates a
    system user ``pgserver`` to own the cluster (PostgreSQL refuses to run as root). The
    server stops when the process that started it exits.
    """
    global _embedded
    import pgserver  # imported lazily: only needed when no DATABASE_URL is given

    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if os.name == "posix" and os.geteuid() == 0:
        # the 'pgserver' system user must be able to reach the data folder
        for folder in [pgdata.parent, *pgdata.parent.parents]:
            with contextlib.suppress(OSError):
                folder.chmod(folder.stat().st_mode | 0o011)
    if _embedded is None:
        _embedded = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
    return str(_embedded.get_uri())


def resolve_database_url(settings: Settings) -> str:
    """``DATABASE_URL`` when set, else the embedded server's DSN."""
    if settings.database_url:
        return settings.database_url
    return embedded_database_url(settings.data_dir)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query: pooled connections hold no session state."""


async def create_pool(dsn: str, settings: Settings, **kwargs: Any) -> asyncpg.Pool:
    """A connection pool sized from settings; raises Unavailable when unreachable.

    A released connection is not reset beyond what asyncpg always does (an open transaction
    is rolled back, listeners dropped): its default reset is one more round trip of four
    statements (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``) on every
    release, which cost a read request as much database time as its own query, and whose
    ``RESET ALL`` undid the time zone set when the connection opened. So code using a pooled
    connection must leave no session state behind: settings only with ``SET LOCAL`` inside a
    transaction, advisory locks only transaction-level, cursors only inside transactions,
    no ``LISTEN``.
    """
    kwargs.setdefault("reset", _keep_session)
    with translated(unreachable="database unreachable"):
        pool = await asyncpg.create_pool(
            dsn,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            init=_init_connection,
            **kwargs,
        )
    assert pool is not None
    return pool


_UNAVAILABLE = (
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
    asyncpg.exceptions.InterfaceError,
    # "cannot switch to state N; another operation is in progress": a pooled connection handed
    # out while an operation of its own (re)connection was still running. Seen under the
    # chaos suite's network cuts and database restarts (asyncpg 0.32); the statement was never
    # sent, so it is a retry-later, not a server bug (it was answered 500)
    asyncpg.exceptions.InternalClientError,
)


@contextlib.contextmanager
def translated(unreachable: str = "database unavailable, try again") -> Iterator[None]:
    """Translate asyncpg (and socket) errors raised inside the block into storage errors.

    ``unreachable`` is the detail of the :class:`Unavailable` raised for an OS-level error
    (connection refused, no route), where the database was never reached.
    """
    try:
        yield
    except asyncpg.exceptions.UniqueViolationError as exc:
        raise Duplicate(f"already exists ({exc.constraint_name})", exc.constraint_name) from exc
    except (
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
    ) as exc:
        raise SerializationRetry(str(exc)) from exc
    except asyncpg.exceptions.DataError as exc:
        raise BadValue(f"value refused by the database: {exc}") from exc
    except _UNAVAILABLE as exc:
        raise Unavailable("database unavailable, try again") from exc
    except (ConnectionError, TimeoutError) as exc:
        raise Unavailable("database unavailable, try again") from exc
    except asyncpg.exceptions.PostgresConnectionError as exc:
        raise Unavailable("database unavailable, try again") from exc
    except OSError as exc:
        raise Unavailable(unreachable) from exc


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[Any]]:
    """A pooled connection, with driver errors translated."""
    with translated():
        async with pool.acquire() as conn:
            yield conn


async def ping(pool: asyncpg.Pool, timeout: float) -> None:
    """Run ``SELECT 1`` within ``timeout`` seconds; Unavailable when it cannot."""
    try:
        async with asyncio.timeout(timeout):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except (
        TimeoutError,
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.InternalClientError,
        OSError,
    ) as exc:
        raise Unavailable("database not answering") from exc


async def vacuum(conn: Any, table: str) -> bool:
    """``VACUUM (INDEX_CLEANUP ON) table`` on a connection outside a transaction.

    Returns False (and logs) when the database refused it: a skipped vacuum only delays
    cleanup. ``table`` is a name of this schema, never input.
    """
    try:
        await conn.execute(f"VACUUM (INDEX_CLEANUP ON) {table}")
    except (asyncpg.PostgresError, OSError) as exc:
        log.warning("vacuum_failed table=%s error=%s", table, exc)
        return False
    return True
