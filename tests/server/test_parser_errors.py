"""Requests aiohttp's parser refuses: answered as problem+json, the request never logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import structlog

from referendum_service.settings import Settings
from tests.server.raw_http import raw_request, served_app

MARKER = b"leakedmarker"
"""Bytes sent in each malformed request, which no answer or log line may repeat."""

MALFORMED = {
    "control byte in the target": b"GET /" + MARKER + b"\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "control byte in a header name": b"GET / HTTP/1.1\r\nHost: x\r\nX-"
    + MARKER
    + b"\x01: v\r\n\r\n",
    "request line too long": b"GET /" + MARKER * 1000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header too long": b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + MARKER * 1000 + b"\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01\x02\x00" + MARKER + b"\r\n\r\n",
    "bad protocol version": b"GET / HTTP/" + MARKER + b"\r\nHost: x\r\n\r\n",
    "two content lengths": (
        b"POST /" + MARKER + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\nab"
    ),
}


@pytest.fixture
async def served(database_url: str) -> AsyncIterator[tuple[str, int]]:
    """The application served as ``referendum serve`` serves it, on a free local port."""
    settings = Settings(database_url=database_url, db_pool_min=1, db_pool_max=2)
    async with served_app(settings, database_url) as server:
        yield server.host, server.port


def _logged_text(records: list[logging.LogRecord]) -> str:
    formatter = logging.Formatter()
    return "\n".join(formatter.format(record) for record in records)


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_parser_errors_are_problems_that_echo_nothing(
    served: tuple[str, int], name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A request aiohttp cannot parse gets a 4xx problem+json; neither the answer nor any log
    line repeats its bytes, and nothing is logged as an error."""
    caplog.set_level(logging.DEBUG)
    with structlog.testing.capture_logs() as logs:
        answer = await raw_request(*served, MALFORMED[name])
    assert 400 <= answer.status < 500, answer
    problem = answer.problem()
    assert MARKER not in answer.body and MARKER.decode() not in str(answer.headers)
    assert problem["type"].rsplit("/", 1)[1] in ("malformed-request", "line-too-long")
    assert answer.closes
    assert MARKER.decode() not in _logged_text(caplog.records)
    assert MARKER.decode() not in str(logs)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [entry["event"] for entry in logs] == ["http_request_refused"]


async def test_served_app_still_answers(served: tuple[str, int]) -> None:
    """The runner's handler serves ordinary requests as before."""
    answer = await raw_request(
        *served, b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert answer.status == 200 and b'"ok"' in answer.body
