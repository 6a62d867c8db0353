"""The HTTP layer every API module shares: JSON and problem responses, bodies, parameters, and
the middleware rendering every error as RFC 9457 ``application/problem+json``.

The middleware maps:

* :class:`server.errors.ApiError` -> its status, ``type``, ``title``, ``detail`` and extras;
* :class:`referendum_core.errors.CoreError` -> 400 naming the failed ``check``;
* :class:`referendum_service.db.StorageError` -> :func:`server.errors.from_storage`;
* aiohttp's own 404 / 405 / 413 -> the same statuses as problems;
* anything else -> a logged 500 problem (a bug).

Integer and ballot-hash parameters of paths and queries are parsed here only, so that every
route rejects malformed input with a 400 problem, never a 500: ``str.isdigit()`` holds for
``'²'``, which ``int()`` then refuses. Referendum and voter ids are looked up as sent (an id
outside :mod:`referendum_core.ids`'s grammar is simply unknown: 404).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from referendum_core.errors import CoreError
from referendum_service.db import StorageError
from server.errors import (
    ApiError,
    BadRequest,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    from_storage,
)
from server.state import SETTINGS_KEY

__all__ = [
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
    """The request body as a JSON object.

    Raises:
        UnsupportedMediaType: the Content-Type is not JSON.
        PayloadTooLarge: the body is over the app's limit.
        BadRequest: malformed JSON or not an object.
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"expected Content-Type application/json, got {request.content_type!r}"
        )
    limit = request.app[SETTINGS_KEY].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body over the limit of {limit} bytes", limit=limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"body over the limit of {limit} bytes", limit=limit) from exc
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", slug="malformed-json") from exc
    if not isinstance(value, dict):
        raise BadRequest("the body must be a JSON object", slug="malformed-json")
    return value


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
    return problem_response(
        error.to_problem(instance=request.path), status=error.status, headers=headers
    )


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
        slug, title, detail = "http-error", exc.reason, exc.text or exc.reason
    body = {
        "type": "https://referendum.example/problems/" + slug,
        "title": title,
        "status": exc.status,
        "detail": detail,
        "instance": request.path,
    }
    return problem_response(body, status=exc.status, headers=headers)


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
    except ApiError as exc:
        return _render(exc, request)
    except CoreError as exc:
        error = BadRequest(str(exc), slug="failed-check", check=exc.check)
        return _render(error, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_exception(exc, request)
    except StorageError as exc:
        return _render(from_storage(exc), request)
    except Exception:
        log.exception("unhandled_error", path=request.path, method=request.method)
        body = {
            "type": "https://referendum.example/problems/internal",
            "title": "Internal error",
            "status": 500,
            "detail": "internal error",
            "instance": request.path,
        }
        return problem_response(body, status=500)
