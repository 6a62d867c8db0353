"""PostgreSQL access: where the database is, the connection pool, and driver-error translation.

This is the only module that catches asyncpg exceptions. :func:`translated` turns them into
:mod:`server.errors` types so handlers never see driver types:

* unique violation                       -> :class:`~server.errors.Conflict`
* too many connections, connection lost,
  database starting up or shutting down  -> :class:`~server.errors.ServiceUnavailable`
* serialization failure / deadlock       -> :class:`SerializationRetry` (retry the transaction)
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

from server.errors import Conflict, ServiceUnavailable
from server.settings import Settings

__all__ = [
    "SerializationRetry",
    "acquire",
    "create_pool",
    "embedded_database_url",
    "ping",
    "resolve_database_url",
    "translated",
]

log = logging.getLogger(__name__)

_embedded: Any = None  # the pgserver handle, kept alive for the life of the process


class SerializationRetry(Exception):
    """The transaction lost a serialization race and may simply be run again."""


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
    """A connection pool sized from settings; raises ServiceUnavailable when unreachable.

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
    try:
        with translated():
            pool = await asyncpg.create_pool(
                dsn,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                init=_init_connection,
                **kwargs,
            )
    except OSError as exc:
        raise ServiceUnavailable("database unreachable", retry_after=1) from exc
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
)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Translate asyncpg errors raised inside the block into domain errors."""
    try:
        yield
    except asyncpg.exceptions.UniqueViolationError as exc:
        raise Conflict(f"already exists ({exc.constraint_name})", slug="duplicate") from exc
    except (
        asyncpg.exceptions.SerializationError,
        asyncpg.exceptions.DeadlockDetectedError,
    ) as exc:
        raise SerializationRetry(str(exc)) from exc
    except _UNAVAILABLE as exc:
        raise ServiceUnavailable("database unavailable, try again", retry_after=1) from exc
    except (ConnectionError, TimeoutError) as exc:
        raise ServiceUnavailable("database unavailable, try again", retry_after=1) from exc
    except asyncpg.exceptions.PostgresConnectionError as exc:
        raise ServiceUnavailable("database unavailable, try again", retry_after=1) from exc


@contextlib.asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[Any]]:
    """A pooled connection, with driver errors translated."""
    with translated():
        async with pool.acquire() as conn:
            yield conn


async def ping(pool: asyncpg.Pool, timeout: float) -> None:
    """Run ``SELECT 1`` within ``timeout`` seconds; ServiceUnavailable when it cannot."""
    try:
        async with asyncio.timeout(timeout):
            with translated():
                async with pool.acquire() as conn:
                    await conn.fetchval("SELECT 1")
    except TimeoutError as exc:
        raise ServiceUnavailable("database not answering", retry_after=1) from exc
    except (asyncpg.PostgresError, OSError) as exc:
        raise ServiceUnavailable("database not answering", retry_after=1) from exc
