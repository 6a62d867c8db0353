"""The HTTP layer every API module shares: JSON and problem responses, bodies, parameters, and
the middleware rendering every error as RFC 9457 ``application/problem+json``.

The middleware maps:

* :class:`server.errors.ApiError` -> its status, ``type``, ``title``, ``detail`` and extras;
* :class:`referendum_core.errors.CoreError` -> 400 naming the failed ``check``;
* :class:`referendum_service.db.StorageError` -> :func:`server.errors.from_storage`;
* aiohttp's own 404 / 405 / 413 -> the same statuses as problems;
* a client gone mid-request -> 499 ``client-closed-request``, logged at info: a client event
  for the metrics, not a failure (no one reads the answer);
* anything else -> a logged 500 problem (a bug).

Errors aiohttp answers before any handler runs (a malformed request line or header) are
rendered by :mod:`server.serving`'s request handler instead, as problems too.

Integer and ballot-hash parameters of paths and queries are parsed here only, so that every
route rejects malformed input with a 400 problem, never a 500: ``str.isdigit()`` holds for
``'²'``, which ``int()`` then refuses. Referendum and voter ids are looked up as sent (an id
outside :mod:`referendum_core.ids`'s grammar is simply unknown: 404).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import Counter

from referendum_core.errors import CoreError
from referendum_service.db import Duplicate, StorageError
from server.errors import (
    ApiError,
    BadRequest,
    ClientClosedRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    from_storage,
)
from server.state import SETTINGS_KEY

__all__ = [
    "BODY_DEADLINES_MISSED",
    "IMMUTABLE",
    "MAX_INT",
    "PROBLEM_CONTENT_TYPE",
    "ballot_hash",
    "cached_json_response",
    "integer",
    "json_response",
    "problem_middleware",
    "problem_response",
    "read_json_object",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
IMMUTABLE = "public, max-age=31536000, immutable"
"""``Cache-Control`` of what never changes once answered (a sealed block, a result)."""

MAX_INT = 2**63 - 1
"""The largest integer parameter: PostgreSQL's ``bigint``."""

_DECIMAL = re.compile(r"-?[0-9]{1,19}")
_HEX_ANY_CASE = re.compile(r"[0-9a-fA-F]{64}")
_HEX_LOWER = re.compile(r"[0-9a-f]{64}")

log = structlog.get_logger("server.http")

BODY_DEADLINES_MISSED = Counter(
    "referendum_http_body_deadlines_missed_total",
    "Request bodies answered 408: too slow (rate) or not complete in time (timeout).",
    ["reason"],
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---------------------------------------------------------------------------------------------
# Responses


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response serialised with orjson."""
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def cached_json_response(request: web.Request, body: Any, cache_control: str) -> web.Response:
    """JSON with an ETag (hash of the bytes); 304 when ``If-None-Match`` names it."""
    raw = orjson.dumps(body)
    etag = '"' + hashlib.sha256(raw).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": cache_control}
    wanted = request.headers.get("If-None-Match")
    if wanted is not None and (
        wanted.strip() == "*" or etag in (t.strip().removeprefix("W/") for t in wanted.split(","))
    ):
        return web.Response(status=304, headers=headers)
    return web.Response(body=raw, content_type="application/json", headers=headers)


def problem_response(
    body: dict[str, Any], *, status: int, headers: dict[str, str] | None = None
) -> web.Response:
    """An RFC 9457 ``application/problem+json`` response."""
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers={"Content-Type": PROBLEM_CONTENT_TYPE, **(headers or {})},
    )


# ---------------------------------------------------------------------------------------------
# Bodies and parameters


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, read under the body deadlines.

    The body must arrive within ``settings.body_timeout_ms`` and at ``body_min_bytes_per_s``
    (see :func:`_read_body`); an object must not repeat a member name anywhere
    (:func:`_refuse_duplicate_members`).

    Raises:
        UnsupportedMediaType: the Content-Type is not JSON.
        PayloadTooLarge: the body is over the app's limit.
        RequestTimeout: the body did not arrive in time (``body-timeout``, ``body-too-slow``).
        ClientClosedRequest: the client closed the connection before the body's end.
        BadRequest: malformed JSON (or transfer framing), not an object, a repeated member.
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type!r}"
        )
    settings = request.app[SETTINGS_KEY]
    limit = settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body over the limit of {limit} bytes", limit=limit)
    raw = await _read_body(
        request.content,
        limit,
        timeout_s=settings.body_timeout_ms / 1000.0,
        min_bytes_per_s=settings.body_min_bytes_per_s,
    )
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson's message names a position and a reason, never more than the client sent
        raise BadRequest(f"malformed JSON: {exc}", slug="malformed-json") from exc
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", slug="malformed-json")
    _refuse_duplicate_members(raw, value)
    return value


async def _read_body(
    stream: StreamReader, limit: int, *, timeout_s: float, min_bytes_per_s: int
) -> bytes:
    """The whole body of ``stream``, at most ``limit`` bytes, arrived in time.

    Deadlines, both counted from the call: the whole body by ``timeout_s``, and, when
    ``min_bytes_per_s`` is positive, each next byte by one second plus one second per
    ``min_bytes_per_s`` bytes already received (a sender at that rate never waits on it; one
    that stalls or trickles is cut off within a second of falling behind). What is already
    buffered is taken without a timer, so a body that came with its headers, as a ballot
    does, costs no timer at all.

    Raises:
        PayloadTooLarge, RequestTimeout, ClientClosedRequest, BadRequest (broken framing).
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    hard_deadline = start + timeout_s
    body = bytearray()
    try:
        while True:
            chunk = stream.read_nowait()
            if not chunk:
                if stream.at_eof():
                    break
                deadline, reason = hard_deadline, "timeout"
                if min_bytes_per_s > 0:
                    paced = start + (len(body) + min_bytes_per_s) / min_bytes_per_s
                    if paced < hard_deadline:
                        deadline, reason = paced, "rate"
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await stream.readany()
                except TimeoutError:
                    BODY_DEADLINES_MISSED.labels(reason).inc()
                    if reason == "rate":
                        raise RequestTimeout(
                            f"the body arrived slower than {min_bytes_per_s} bytes a second",
                            slug="body-too-slow",
                        ) from None
                    raise RequestTimeout(
                        f"the body did not arrive within {round(timeout_s * 1000)} ms"
                    ) from None
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"body over the limit of {limit} bytes", limit=limit)
    except ConnectionError as exc:
        # aiohttp sets ConnectionResetError on the body when the connection is lost before
        # its end
        raise ClientClosedRequest("the client closed the connection mid-body") from exc
    except RequestPayloadError as exc:
        # broken chunked framing or content encoding; aiohttp's text may quote the bytes
        raise BadRequest("the body's transfer framing is malformed", slug="malformed-body") from exc
    return bytes(body)


# Strings of a JSON text already accepted by orjson: no backtracking (the two branches never
# match the same character), so its cost is linear in the body.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _refuse_duplicate_members(raw: bytes, value: dict[str, Any]) -> None:
    """Raise BadRequest ``duplicate-member`` if an object of ``raw`` repeats a member name.

    orjson keeps the last of repeated members, so two readers of the same bytes could see two
    different ballots. Requires ``value == orjson.loads(raw)``. Every member written in ``raw``
    has exactly one colon outside strings, so the document repeats a name exactly when the
    parsed objects hold fewer members than there are such colons. The honest path costs a
    ``bytes.count`` and a walk over the parsed value, since a ballot's strings hold no colon:
    measured about 1.4 µs for a yes/no ballot (0.7 KB; orjson parses it in 0.6 µs) and 23 µs
    for a 40-option one (21 KB), beside milliseconds of proof checks. Only a body with colons
    inside strings (a date, say) pays one linear regular-expression pass more; no second
    JSON parse.

    >>> _refuse_duplicate_members(b'{"a": 1, "b": {"a": "x:y"}}', {"a": 1, "b": {"a": "x:y"}})
    >>> _refuse_duplicate_members(b'{"a": 1, "a": 2}', {"a": 2})
    Traceback (most recent call last):
    ...
    server.errors.BadRequest: a JSON object of the body repeats a member name
    """
    members = 0
    stack: list[Any] = [value]
    while stack:  # not recursive: orjson accepts nesting deeper than Python's recursion limit
        item = stack.pop()
        if isinstance(item, dict):
            members += len(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    if raw.count(b":") == members:
        return
    if _JSON_STRING.sub(b"", raw).count(b":") == members:
        return
    raise BadRequest("a JSON object of the body repeats a member name", slug="duplicate-member")


def integer(
    text: str | None,
    name: str,
    *,
    minimum: int,
    maximum: int = MAX_INT,
    default: int | None = None,
) -> int:
    """A decimal parameter (ASCII digits, an optional ``-``) in ``[minimum, maximum]``.

    Args:
        text: the parameter as sent; ``None`` when absent.
        name: the parameter's name, given as the problem's ``field``.
        minimum: the smallest value accepted.
        maximum: the largest value accepted (at most :data:`MAX_INT`).
        default: the value when absent; absent is an error when ``None``.

    Raises:
        BadRequest: ``bad-parameter`` naming ``name``.

    >>> integer("12", "limit", minimum=1), integer(None, "limit", minimum=1, default=5)
    (12, 5)
    >>> integer("²", "limit", minimum=1)
    Traceback (most recent call last):
    ...
    server.errors.BadRequest: limit must be a decimal integer
    """
    if text is None:
        if default is None:
            raise BadRequest(f"parameter {name} is required", slug="bad-parameter", field=name)
        return default
    if not _DECIMAL.fullmatch(text):
        raise BadRequest(f"{name} must be a decimal integer", slug="bad-parameter", field=name)
    value = int(text)
    if not minimum <= value <= maximum:
        raise BadRequest(
            f"{name} must be between {minimum} and {maximum}", slug="bad-parameter", field=name
        )
    return value


def ballot_hash(text: str, *, any_case: bool = False, slug: str = "bad-parameter") -> bytes:
    """A ballot hash of a path: 64 hexadecimal digits, lower-case unless ``any_case``.

    The voter API takes only the canonical spelling
    (:data:`referendum_core.ids.BALLOT_HASH_PATTERN`); the public log API has always taken
    either case, and keeps doing so.

    Raises:
        BadRequest: ``slug``, with ``field`` ``ballot_hash``.

    >>> ballot_hash("AB" * 32, any_case=True) == bytes([0xAB] * 32)
    True
    """
    if any_case:
        if _HEX_ANY_CASE.fullmatch(text):
            return bytes.fromhex(text)
        detail = "the ballot hash is 64 hexadecimal digits"
    else:
        if _HEX_LOWER.fullmatch(text):
            return bytes.fromhex(text)
        detail = "a ballot hash is 64 lowercase hex digits"
    raise BadRequest(detail, slug=slug, field="ballot_hash")


# ---------------------------------------------------------------------------------------------
# The problem middleware


def _render(error: ApiError, request: web.Request) -> web.Response:
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="referendum-operator"'
    response = problem_response(
        error.to_problem(instance=request.path), status=error.status, headers=headers
    )
    if error.status == 408:
        # the rest of the body may still come, slowly: close rather than wait to read it
        response.force_close()
    return response


def _http_exception(exc: web.HTTPException, request: web.Request) -> web.Response:
    """aiohttp's own errors (unknown route, wrong method, body too large) as problems."""
    headers: dict[str, str] = {}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        slug, title = "method-not-allowed", "Method not allowed"
        detail = f"{request.method} is not allowed here"
    elif isinstance(exc, web.HTTPNotFound):
        slug, title, detail = NotFound.default_slug, NotFound.title, "no such resource"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        slug, title = PayloadTooLarge.default_slug, PayloadTooLarge.title
        detail = "body over the configured limit"
    else:
        # the reason phrase only: aiohttp's text can quote what the client sent
        slug, title, detail = "http-error", exc.reason, exc.reason
    body = {
        "type": "https://referendum.example/problems/" + slug,
        "title": title,
        "status": exc.status,
        "detail": detail,
        "instance": request.path,
    }
    return problem_response(body, status=exc.status, headers=headers)


def _client_left(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _log_client_closed(request: web.Request) -> None:
    # a client event, not a failure: info, and the 499 in the request metrics says the same
    log.info("client_closed_request", path=request.path, method=request.method)


def _log_storage_error(exc: StorageError, request: web.Request) -> None:
    # the driver's own words stay here: the client gets from_storage's fixed text; a
    # duplicate is an ordinary refusal, the others say something about the data or database
    emit = log.info if isinstance(exc, Duplicate) else log.warning
    emit(
        "storage_error",
        kind=type(exc).__name__,
        error=str(exc.__cause__ or exc),
        path=request.path,
        method=request.method,
    )


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error raised by a handler as application/problem+json."""
    try:
        if any("\x00" in value for value in request.match_info.values()):
            # PostgreSQL text cannot hold NUL, so no stored resource has it in its name.
            if "\x00" in request.match_info.get("rid", ""):
                raise NotFound("no such referendum", slug="unknown-referendum")
            raise NotFound("no such resource (the path holds a NUL character)", slug="not-found")
        return await handler(request)
    except ClientClosedRequest as exc:
        _log_client_closed(request)
        return _render(exc, request)
    except ApiError as exc:
        if isinstance(exc.__cause__, StorageError):
            _log_storage_error(exc.__cause__, request)
        return _render(exc, request)
    except CoreError as exc:
        error = BadRequest(str(exc), slug="failed-check", check=exc.check)
        return _render(error, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_exception(exc, request)
    except StorageError as exc:
        _log_storage_error(exc, request)
        return _render(from_storage(exc), request)
    except ConnectionError:
        if not _client_left(request):
            return _internal_error(request)
        # a handler streaming the body itself (a roll upload) met the disconnect
        _log_client_closed(request)
        return _render(ClientClosedRequest("the client closed the connection"), request)
    except Exception:
        return _internal_error(request)


def _internal_error(request: web.Request) -> web.Response:
    log.exception("unhandled_error", path=request.path, method=request.method)
    body = {
        "type": "https://referendum.example/problems/internal",
        "title": "Internal error",
        "status": 500,
        "detail": "internal error",
        "instance": request.path,
    }
    return problem_response(body, status=500)
