"""Raw HTTP requests no client library sends: bytes that are not UTF-8, NULs, broken framing.

Schemathesis and ``requests`` only send well-formed HTTP, so these probes go over a socket.
Each must be answered with a 4xx ``application/problem+json`` problem, never a 5xx. The
probes marked ``xfail`` are findings of issue 16 §4 still open on this branch; each names
its finding, and is strict (it fails as XPASS once the fix is merged: then remove the mark)
unless the fix is known to be merged already.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from referendum_service.settings import Settings
from tests.fuzz.run_schemathesis import problem_errors
from tests.server.raw_http import served_app

PROBES = [
    pytest.param(
        b"POST /v1/referendums HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        id="non-UTF-8 bearer token, create",
    ),
    pytest.param(
        b"GET /v1/referendums/r1/status HTTP/1.1\r\nAuthorization: Bearer \xc3\x28\r\n\r\n",
        id="non-UTF-8 bearer token, status",
    ),
    pytest.param(
        b"POST /v1/referendums/r1/open HTTP/1.1\r\nAuthorization: \xe2\x82\r\n\r\n",
        id="non-UTF-8 scheme",
    ),
    pytest.param(
        b"GET /v1/referendums/r1/supersessions?cursor=%C2%B2 HTTP/1.1\r\n\r\n",
        id="Unicode digit in a query integer",
    ),
    pytest.param(
        b"GET /v1/referendums/r1/supersessions?limit=%FF HTTP/1.1\r\n\r\n",
        id="invalid UTF-8 in a query integer",
    ),
    pytest.param(b"GET /v1/referendums/%FF HTTP/1.1\r\n\r\n", id="invalid UTF-8 in the path"),
    pytest.param(
        b"GET /v1/referendums/a%00b/log/checkpoint HTTP/1.1\r\n\r\n", id="NUL in the path"
    ),
    pytest.param(
        b"POST /v1/referendums/r1/ballots HTTP/1.1\r\nContent-Type: application/\xffjson\r\n"
        b"Content-Length: 2\r\n\r\n{}",
        id="non-UTF-8 content type",
    ),
    pytest.param(
        b"POST /v1/referendums/r1/ballots HTTP/1.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 4\r\n\r\n"\xff"}',
        id="non-UTF-8 body",
    ),
    pytest.param(
        b"GET /livez HTTP/1.1\r\nX-Probe: a\x00b\r\n\r\n",
        id="NUL in a header",
    ),
    pytest.param(
        b"POST /v1/referendums/r1/ballots HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        id="non-numeric Content-Length",
    ),
    pytest.param(
        b"POST /v1/referendums/r1/ballots HTTP/1.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        id="broken chunk size",
    ),
    pytest.param(
        b"GET /v1/referendums/\xff HTTP/1.1\r\n\r\n",
        id="raw non-UTF-8 byte in the request line",
    ),
]


async def _exchange(host: str, port: int, raw: bytes) -> tuple[int, str, bytes]:
    """Send ``raw`` (with Host and Connection: close added) and read the whole answer."""
    request_line, _, rest = raw.partition(b"\r\n")
    raw = request_line + b"\r\nHost: probe\r\nConnection: close\r\n" + rest
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    content_type = next(
        (
            line.split(":", 1)[1].strip()
            for line in lines[1:]
            if line.lower().startswith("content-type:")
        ),
        "",
    )
    return status, content_type, body


@pytest.mark.parametrize("raw", PROBES)
async def test_raw_request_gets_a_problem(raw: bytes, database_url: str, tmp_path: Path) -> None:
    """A malformed raw request, served as ``referendum serve`` serves, gets a 4xx RFC 9457
    problem (never a 5xx, never text/plain)."""
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    async with served_app(settings, database_url) as server:
        status, content_type, body = await _exchange(server.host, server.port, raw)
    assert 400 <= status < 500, (status, body[:200])
    assert problem_errors(status, content_type, body) == [], (status, content_type, body[:200])
