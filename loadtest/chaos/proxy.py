"""A TCP proxy between the services and PostgreSQL that can cut the network on demand.

Servers and batchers reach the database only through it (their ``DATABASE_URL`` names its
port), so the chaos run can cut that link without touching either side:

* ``drop``: every open connection is reset and new ones are refused (accepted and closed at
  once) until :meth:`NetworkProxy.heal`: a switch or a firewall rule that resets;
* ``stall``: no byte moves in either direction and new connections hang unanswered until
  :meth:`NetworkProxy.heal`, when the bytes held back flow again: a partition that heals
  (TCP retransmits what was in flight, nothing is lost or reset);
* ``blackhole``: like ``stall``, but the links open at the cut never carry a byte again and
  are never closed (new ones work after :meth:`NetworkProxy.heal`): a partition after which
  the old connections are dead without either end being told (a rebooted host, a flushed NAT
  table), until TCP keepalives or the application's own deadlines notice.

Only 127.0.0.1 is listened on and connected to.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

__all__ = ["NetworkProxy"]

_CHUNK = 1 << 16


class NetworkProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:upstream_port`` (start with :meth:`start`)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.mode = "pass"
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._dead: set[asyncio.StreamWriter] = set()
        """Writers of links cut by :meth:`blackhole`: they never carry a byte again."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    async def start(self) -> None:
        """Listen on a free port of 127.0.0.1 (``self.port``)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and close every link."""
        self.heal()
        if self._server is not None:
            self._server.close()
        for client, upstream in list(self._links):
            _abort(client)
            _abort(upstream)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    def drop(self) -> None:
        """Reset every open link and refuse new ones until :meth:`heal`."""
        self.mode = "drop"
        self._flowing.set()
        for client, upstream in list(self._links):
            _abort(client)
            _abort(upstream)

    def stall(self) -> None:
        """Hold every byte (and every new connection) until :meth:`heal`."""
        self.mode = "stall"
        self._flowing.clear()

    def blackhole(self) -> None:
        """Hold every byte; the links open now stay dead (open, silent) after :meth:`heal`."""
        self.mode = "stall"
        self._flowing.clear()
        for client, upstream in self._links:
            self._dead.add(client)
            self._dead.add(upstream)

    def heal(self) -> None:
        """Forward again."""
        self.mode = "pass"
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._link(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "drop":
            _abort(writer)
            return
        await self._flowing.wait()
        if self.mode == "drop":
            _abort(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            _abort(writer)  # the database is down: the client sees its connection reset
            return
        self.connections += 1
        link = (writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._links.discard(link)
            self._dead.discard(writer)
            self._dead.discard(up_writer)
            _abort(writer)
            _abort(up_writer)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                await self._flowing.wait()
                if self.mode == "drop":
                    break
                if writer in self._dead:
                    await asyncio.Event().wait()  # a dead link: silent until closed
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # one side ended: end the other (a half-open link would hang its peer)
            _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once with a reset (SO_LINGER 0), as a cut link looks to both ends."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    transport.abort()
