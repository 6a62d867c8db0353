"""Raw HTTP/1.1 over a socket, for requests no well-behaved client sends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from referendum_service.settings import Settings
from server.app import make_app
from server.serving import ProblemAppRunner

__all__ = ["RawResponse", "Served", "parse_response", "raw_request", "read_response", "served_app"]

READ_TIMEOUT_S = 30.0
"""Longest a test waits for the server's answer before failing."""


@dataclass
class RawResponse:
    """A parsed HTTP/1.x response: status, lower-cased headers, body bytes, version."""

    status: int
    headers: dict[str, str]
    body: bytes
    version: str = "HTTP/1.1"

    @property
    def closes(self) -> bool:
        """The server says it will close the connection after this answer."""
        return self.version == "HTTP/1.0" or self.headers.get("connection") == "close"

    def problem(self) -> dict[str, Any]:
        """The body as an RFC 9457 problem (asserting the content type and the members)."""
        assert self.headers.get("content-type", "").startswith("application/problem+json"), self
        problem: dict[str, Any] = orjson.loads(self.body)
        assert problem["status"] == self.status
        assert problem["type"].startswith("https://referendum.example/problems/")
        assert isinstance(problem["title"], str) and problem["title"]
        assert isinstance(problem["detail"], str) and problem["detail"]
        return problem


def parse_response(raw: bytes) -> RawResponse:
    """Parse one response (its head, and the body after it if any)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status_text = lines[0].split(" ")[:2]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return RawResponse(int(status_text), headers, rest[:length], version)


async def read_response(reader: asyncio.StreamReader) -> RawResponse:
    """Read one answer: its head, then as many body bytes as its Content-Length says (the
    server may go on reading what is left of a refused body before it closes)."""

    async def read() -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = parse_response(head).headers.get("content-length", "0")
        return head + await reader.readexactly(int(length))

    return parse_response(await asyncio.wait_for(read(), READ_TIMEOUT_S))


async def raw_request(host: str, port: int, data: bytes) -> RawResponse:
    """Send ``data`` as is on a new connection and read the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


@dataclass
class Served:
    """An application listening on 127.0.0.1."""

    app: web.Application
    host: str
    port: int


@contextlib.asynccontextmanager
async def served_app(
    settings: Settings, database_url: str, *, handler_cancellation: bool = False
) -> AsyncIterator[Served]:
    """``make_app(settings)`` served as ``referendum serve`` serves it (its runner, handler
    cancellation off unless asked) on a free local port. aiohttp's test server differs: it
    cancels the handler of a client that leaves."""
    app = make_app(settings, database_url=database_url)
    runner = ProblemAppRunner(app, handler_cancellation=handler_cancellation, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        yield Served(app, "127.0.0.1", int(sock.getsockname()[1]))
    finally:
        await runner.cleanup()
        sock.close()
