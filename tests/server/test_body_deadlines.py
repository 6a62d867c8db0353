"""Request bodies under attack: deadlines on slow bodies, disconnects, repeated JSON members."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import structlog
from prometheus_client import REGISTRY

from server.state import BALLOT_BOX_KEY
from tests.helpers import running_app
from tests.ingest import count_ballots, create_referendum, ingest_settings, wait_until
from tests.server.raw_http import RawResponse, raw_request, read_response, served_app

ROUTE = "/v1/referendums/{rid}/ballots"
PARTIAL = b'{"voter": "v0", "ciphertexts": ['
"""The start of a ballot body, as a slow client would send it."""


def requests_answered(status: int) -> float:
    """How many ballot submissions this process has answered with ``status`` so far."""
    labels = {"method": "POST", "route": ROUTE, "status": str(status)}
    return REGISTRY.get_sample_value("referendum_http_requests_total", labels) or 0.0


@contextlib.asynccontextmanager
async def partial_body(
    host: str, port: int, path: str
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection that sent a ballot's headers and the first bytes of its body only."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 2000\r\n\r\n".encode()
        + PARTIAL
    )
    await writer.drain()
    try:
        yield reader, writer
    finally:
        writer.close()


async def trickle(writer: asyncio.StreamWriter) -> None:
    """Send one more byte of the body every 50 ms (20 bytes a second) until cut off."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.05)  # the attacker's pace, not a synchronisation


@pytest.mark.parametrize(
    ("deadlines", "slug"),
    [
        ({"body_timeout_ms": 60_000, "body_min_bytes_per_s": 100}, "body-too-slow"),
        ({"body_timeout_ms": 2_000, "body_min_bytes_per_s": 0}, "body-timeout"),
    ],
)
async def test_slow_bodies_get_408_and_free_their_admission_place(
    database_url: str, tmp_path: Path, deadlines: dict[str, int], slug: str
) -> None:
    """Slow bodies get 408 at their deadline without holding an admission place: with every
    place's worth of slow senders connected, an honest ballot is stored at once."""
    electorate = await create_referendum(database_url, "ref-slow")
    settings = ingest_settings(tmp_path, admission_limit=2, **deadlines)
    answered_408 = requests_answered(408)
    async with running_app(settings, database_url) as client:
        assert client.app is not None
        box = client.app[BALLOT_BOX_KEY]
        host, port = str(client.server.host), int(client.server.port or 0)
        async with (
            partial_body(host, port, electorate.path) as stalled,
            partial_body(host, port, electorate.path) as trickling,
        ):
            sender = asyncio.create_task(trickle(trickling[1]))
            await wait_until(lambda: box.receiving_bodies == 2, 20, "both slow bodies to arrive")
            assert box.in_flight == 0
            honest_during = await client.post(electorate.path, json=electorate.ballot("v2"))
            assert honest_during.status == 201, await honest_during.text()
            answers: list[RawResponse] = [
                await read_response(stalled[0]),
                await read_response(trickling[0]),
            ]
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        for answer in answers:
            assert answer.status == 408
            assert answer.problem()["type"].endswith("/" + slug)
            assert answer.closes
        assert box.in_flight == 0
        honest = await client.post(electorate.path, json=electorate.ballot("v1"))
        assert honest.status == 201, await honest.text()
    assert requests_answered(408) == answered_408 + 2
    assert await count_ballots(database_url) == 2


@pytest.mark.parametrize("handler_cancellation", [False, True])
async def test_disconnect_mid_body_is_a_client_event(
    database_url: str, tmp_path: Path, handler_cancellation: bool
) -> None:
    """A client leaving mid-body is counted as 499 and logged at info, never as a 500, whether
    the handler meets the lost body (as served) or is cancelled (aiohttp's option)."""
    electorate = await create_referendum(database_url, "ref-gone")
    before = {status: requests_answered(status) for status in (499, 500)}
    settings = ingest_settings(tmp_path)
    with structlog.testing.capture_logs() as logs:
        async with served_app(
            settings, database_url, handler_cancellation=handler_cancellation
        ) as server:
            box = server.app[BALLOT_BOX_KEY]
            async with partial_body(server.host, server.port, electorate.path):
                await wait_until(lambda: box.receiving_bodies == 1, 20, "the body to arrive")
            await wait_until(
                lambda: requests_answered(499) > before[499], 20, "the 499 to be counted"
            )
            assert box.in_flight == 0
    assert requests_answered(500) == before[500]
    events = [(entry["event"], entry["log_level"]) for entry in logs]
    assert ("client_closed_request", "info") in events
    assert not [entry for entry in logs if entry["log_level"] in ("error", "critical")]
    assert await count_ballots(database_url) == 0


def _with_member_first(body: dict[str, Any], name: str, value: Any) -> bytes:
    """The JSON of ``body`` with ``name`` written once more, before the real members."""
    raw = orjson.dumps(body)
    return b"{" + orjson.dumps(name) + b":" + orjson.dumps(value) + b"," + raw[1:]


async def test_ballot_with_repeated_member_is_refused(database_url: str, tmp_path: Path) -> None:
    """A valid ballot whose JSON repeats a member (orjson would keep the last) is a 400
    ``duplicate-member``; nothing is stored."""
    electorate = await create_referendum(database_url, "ref-dup")
    body = electorate.ballot("v0")
    headers = {"Content-Type": "application/json"}
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        for raw in (
            _with_member_first(body, "credential", electorate.credentials["v1"].hex()),
            _with_member_first(body, "signature", "00" * 64),
            orjson.dumps(body)[:-1]
            + b',"credential":"'
            + body["credential"].encode()
            + b'"}',  # the same value twice
        ):
            response = await client.post(electorate.path, data=raw, headers=headers)
            assert response.status == 400, await response.text()
            assert response.content_type == "application/problem+json"
            problem = await response.json(content_type=None)
            assert problem["type"].endswith("/duplicate-member")
        assert await count_ballots(database_url) == 0
        accepted = await client.post(electorate.path, data=orjson.dumps(body), headers=headers)
        assert accepted.status == 201


async def test_slow_request_head_is_closed(database_url: str, tmp_path: Path) -> None:
    """A connection sending its request head slowly, or nothing, is closed at the idle
    deadline."""
    settings = ingest_settings(tmp_path, connection_idle_timeout_ms=500)
    async with running_app(settings, database_url) as client:
        host, port = str(client.server.host), int(client.server.port or 0)
        silent = await asyncio.open_connection(host, port)
        slow = await asyncio.open_connection(host, port)
        slow[1].write(b"POST /v1/referendums/ref-x/ballots HTTP/1.1\r\nHost: x\r\n")
        try:
            for reader, _ in (silent, slow):
                # EOF (b"") once the server closes; today's aiohttp default waits an hour
                assert await asyncio.wait_for(reader.read(), 30) == b""
        finally:
            for _, writer in (silent, slow):
                writer.close()
        assert (await client.get("/livez")).status == 200


async def test_broken_body_encoding_is_a_400(database_url: str, tmp_path: Path) -> None:
    """A ballot body that is not the gzip its Content-Encoding says is a 400 problem, not a
    500."""
    electorate = await create_referendum(database_url, "ref-gzip")
    before = requests_answered(500)
    async with served_app(ingest_settings(tmp_path), database_url) as server:
        answer = await raw_request(
            server.host,
            server.port,
            f"POST {electorate.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Encoding: gzip\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
            "notgzip!!!".encode(),
        )
    assert answer.status == 400, answer
    assert answer.problem()["type"].endswith("/malformed-body")
    assert requests_answered(500) == before
    assert await count_ballots(database_url) == 0


async def test_broken_chunked_framing_frees_the_place(database_url: str, tmp_path: Path) -> None:
    """Chunked framing that breaks while the handler reads the body (aiohttp does not tell the
    handler) ends in a 4xx problem at the body deadline, having held no admission place."""
    electorate = await create_referendum(database_url, "ref-chunks")
    settings = ingest_settings(tmp_path, body_timeout_ms=60_000, body_min_bytes_per_s=100)
    async with served_app(settings, database_url) as server:
        box = server.app[BALLOT_BOX_KEY]
        reader, writer = await asyncio.open_connection(server.host, server.port)
        try:
            writer.write(
                f"POST {electorate.path} HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                '5\r\n{"vot\r\n'.encode()
            )
            await wait_until(lambda: box.receiving_bodies == 1, 20, "the body to be read")
            writer.write(b"zz\r\nmore\r\n")
            answer = await read_response(reader)
        finally:
            writer.close()
        assert 400 <= answer.status < 500, answer
        answer.problem()
        assert box.in_flight == 0 and box.receiving_bodies == 0
    assert await count_ballots(database_url) == 0
