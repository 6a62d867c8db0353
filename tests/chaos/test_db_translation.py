"""What the chaos suite found in the storage layer: a busy pooled connection is a 503, not a 500."""

from __future__ import annotations

import asyncpg
import pytest

from referendum_service.db import Unavailable, ping, translated

BUSY = "cannot switch to state 11; another operation (2) is in progress"


def test_busy_pooled_connection_is_unavailable() -> None:
    """asyncpg's InternalClientError (a connection handed out mid-reconnect) becomes Unavailable,
    which the server answers 503 with Retry-After; it escaped as a 500 before."""
    with pytest.raises(Unavailable), translated():
        raise asyncpg.exceptions.InternalClientError(BUSY)


class _BusyPool:
    """A pool whose connection fails as the chaos run saw it."""

    def acquire(self) -> _BusyPool:
        return self

    async def __aenter__(self) -> _BusyPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def fetchval(self, query: str) -> int:
        raise asyncpg.exceptions.InternalClientError(BUSY)


async def test_readiness_ping_reports_a_busy_connection_as_unavailable() -> None:
    """``/readyz``'s ping says "not ready" (503) rather than failing with a 500."""
    with pytest.raises(Unavailable):
        await ping(_BusyPool(), 1.0)  # type: ignore[arg-type]
