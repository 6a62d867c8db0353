"""The network proxy forwards, resets every link on drop, and holds then releases on stall."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from loadtest.chaos.proxy import NetworkProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1024):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[NetworkProxy]:
    """A proxy in front of an echo server on 127.0.0.1."""
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    proxy = NetworkProxy(int(server.sockets[0].getsockname()[1]))
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
        server.close()


async def _roundtrip(port: int, data: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(data)), timeout)
    finally:
        writer.close()


async def test_forwards_both_ways(proxy: NetworkProxy) -> None:
    """Bytes sent through the proxy come back from the echo server."""
    assert await _roundtrip(proxy.port, b"ballot") == b"ballot"


async def test_drop_resets_open_links_and_refuses_new_ones(proxy: NetworkProxy) -> None:
    """After drop an open link is reset and a new one gets nothing; heal restores service."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x")
    assert await reader.readexactly(1) == b"x"
    proxy.drop()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        writer.write(b"y")
        await writer.drain()
        await asyncio.wait_for(reader.readexactly(1), 2)
    writer.close()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        await _roundtrip(proxy.port, b"z")
    proxy.heal()
    assert await _roundtrip(proxy.port, b"back") == b"back"


async def test_stall_holds_bytes_until_heal(proxy: NetworkProxy) -> None:
    """While stalled nothing comes back; after heal the held bytes arrive, the link intact."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    proxy.stall()
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    proxy.heal()
    assert await asyncio.wait_for(reader.readexactly(4), 2) == b"held"
    writer.close()
