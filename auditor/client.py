"""A small HTTP client for the public read API (``docs/log.md`` §5), for auditors.

Only reads, only JSON. Responses are size-limited and parsed with the standard library;
nothing here trusts what it returns — :mod:`auditor.follow` and :mod:`auditor.receipt`
verify every value with the pure core. Transient failures (connection errors, 502/503/504)
are retried a bounded number of times.

Errors::

    ApiError             the server could not be read (network, non-JSON, unexpected status)
    └── NotFoundError    404: no such block, ballot or referendum (yet)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = ["ApiError", "NotFoundError", "PublicLogClient"]

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_RETRY_STATUSES = frozenset({502, 503, 504})


class ApiError(Exception):
    """The read API could not be read, or answered something other than the contract."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(ApiError):
    """The server answered 404."""


class PublicLogClient:
    """Reads one referendum's public data from ``base_url`` (e.g. ``http://host:8080``).

    Use as an async context manager, or pass an existing ``session`` (then it is not closed).
    """

    def __init__(
        self,
        base_url: str,
        referendum_id: str,
        *,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 30.0,
        attempts: int = 3,
        page_limit: int = 1000,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.referendum_id = referendum_id
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._attempts = max(1, attempts)
        self.page_limit = page_limit

    async def __aenter__(self) -> PublicLogClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def _prefix(self) -> str:
        return f"{self.base_url}/v1/referendums/{quote(self.referendum_id, safe='')}"

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> Any:
        """GET ``path`` under the referendum and return the parsed JSON body."""
        if self._session is None:
            raise ApiError("client used outside 'async with'")
        url = self._prefix + path
        last: Exception | None = None
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(0.5 * attempt)  # back-off between retries, not a sync
            try:
                async with self._session.get(url, params=params, timeout=self._timeout) as resp:
                    body = await _read_limited(resp, MAX_RESPONSE_BYTES)
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = exc
                continue
            if status in _RETRY_STATUSES:
                last = ApiError(f"GET {url}: HTTP {status}", status=status)
                continue
            if len(body) > MAX_RESPONSE_BYTES:
                raise ApiError(f"GET {url}: response larger than {MAX_RESPONSE_BYTES} bytes")
            if status == 404:
                raise NotFoundError(f"GET {url}: not found ({_detail(body)})", status=404)
            if status != 200:
                raise ApiError(f"GET {url}: HTTP {status} ({_detail(body)})", status=status)
            try:
                return json.loads(body)
            except ValueError as exc:
                raise ApiError(f"GET {url}: response is not JSON") from exc
        raise ApiError(f"GET {url}: {last}")

    async def referendum(self) -> dict[str, Any]:
        """``GET /v1/referendums/{rid}``: the public definition."""
        return _object(await self.get_json(""), "referendum")

    async def checkpoint(self) -> dict[str, Any]:
        """``GET .../log/checkpoint``: the latest checkpoint."""
        return _object(await self.get_json("/log/checkpoint"), "checkpoint")

    async def block(self, height: int) -> dict[str, Any] | None:
        """``GET .../log/blocks/{height}``; ``None`` when there is no such block yet."""
        try:
            return _object(await self.get_json(f"/log/blocks/{height}"), "block")
        except NotFoundError:
            return None

    async def block_ballots(self, height: int, *, max_pages: int) -> AsyncIterator[list[Any]]:
        """Pages of ``GET .../log/blocks/{height}/ballots``, at most ``max_pages`` of them.

        Raises :class:`ApiError` when the server still has pages after ``max_pages``.
        """
        cursor: str | None = None
        for _ in range(max_pages):
            params = {"limit": str(self.page_limit)}
            if cursor is not None:
                params["cursor"] = cursor
            page = _object(await self.get_json(f"/log/blocks/{height}/ballots", params), "page")
            ballots = page.get("ballots")
            if not isinstance(ballots, list):
                raise ApiError(f"block {height}: ballots page without a ballot list")
            yield ballots
            nxt = page.get("next_cursor")
            if nxt is None:
                return
            if not isinstance(nxt, str | int) or str(nxt) == cursor or not ballots:
                raise ApiError(f"block {height}: the ballot cursor does not advance")
            cursor = str(nxt)
        raise ApiError(f"block {height}: more ballot pages than the block can hold")

    async def inclusion_proof(self, ballot_hash: bytes, tree_size: int | None = None) -> Any:
        """``GET .../log/proof/inclusion/{hash}[?tree_size=]``."""
        params = None if tree_size is None else {"tree_size": str(tree_size)}
        return _object(
            await self.get_json(f"/log/proof/inclusion/{ballot_hash.hex()}", params), "proof"
        )

    async def consistency_proof(self, size1: int, size2: int) -> dict[str, Any]:
        """``GET .../log/proof/consistency?from=&to=``."""
        params = {"from": str(size1), "to": str(size2)}
        return _object(await self.get_json("/log/proof/consistency", params), "proof")

    async def roll_proof(self, credential: str) -> dict[str, Any]:
        """``GET .../roll/proof/{credential}`` (hex or did:key): the credential's roll
        inclusion proof."""
        return _object(await self.get_json(f"/roll/proof/{quote(credential, safe='')}"), "roll")


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or ``limit + 1`` bytes when it is larger than ``limit``."""
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(parts)


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(f"the {what} response is not a JSON object")
    return value


def _detail(body: bytes) -> str:
    try:
        problem = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(problem, dict):
        return str(problem.get("detail") or problem.get("title") or "")[:200]
    return ""
