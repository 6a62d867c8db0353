"""Domain errors of the services, each rendered as an RFC 9457 problem+json response.

Handlers and the domain layer raise these; one middleware (``server.app``) renders them.
Nothing else in the services builds error responses. The tree::

    ApiError                      (abstract; status, type slug, title)
    ├── BadRequest            400 malformed JSON, wrong types, unknown fields
    │   └── InvalidBallot     400 a ballot failing a core check (names the check)
    ├── Unauthorized          401 missing or wrong operator API key
    ├── Forbidden             403 the key may not do this
    ├── NotFound              404 unknown referendum, ballot, block, voter
    ├── RequestTimeout        408 a body that did not arrive in time (the connection closes)
    ├── Conflict              409 wrong state (illegal transition, closed referendum,
    │                             already voted under ``forbid``)
    ├── PayloadTooLarge       413 body over the configured limit
    ├── UnsupportedMediaType  415 wrong Content-Type
    ├── UnprocessableContent  422 well-formed but invalid (bad roll file, bad key)
    ├── TooManyRequests       429 per-voter rate limit (carries Retry-After)
    ├── ClientClosedRequest   499 the client left before its body arrived: counted as a
    │                             client event, never answered (there is no one to answer)
    └── ServiceUnavailable    503 database down, queue saturated (carries Retry-After)

Driver errors (asyncpg) are translated into these in ``referendum_service.db`` only, and
:func:`from_storage` answers them with fixed texts: what the database said is logged, never sent.
"""

from __future__ import annotations

from typing import Any, ClassVar

from referendum_service.db import (
    RETRY_AFTER_S,
    BadValue,
    Duplicate,
    SerializationRetry,
    StorageError,
)

__all__ = [
    "PROBLEM_BASE",
    "ApiError",
    "BadRequest",
    "ClientClosedRequest",
    "Conflict",
    "Forbidden",
    "InvalidBallot",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "UnprocessableContent",
    "UnsupportedMediaType",
    "from_storage",
]

PROBLEM_BASE = "https://referendum.example/problems/"


class ApiError(Exception):
    """An error answered to the client as ``application/problem+json``.

    ``slug`` names the problem type (the ``type`` member is ``PROBLEM_BASE + slug``);
    ``extra`` members are added to the body (e.g. ``errors`` listing bad roll lines).
    """

    status: ClassVar[int] = 500
    default_slug: ClassVar[str] = "internal"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        slug: str | None = None,
        retry_after: int | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.slug = slug or self.default_slug
        self.retry_after = retry_after
        self.extra = extra

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """The RFC 9457 body."""
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(ApiError):
    status = 400
    default_slug = "bad-request"
    title = "Bad request"


class InvalidBallot(BadRequest):
    default_slug = "invalid-ballot"
    title = "Invalid ballot"


class Unauthorized(ApiError):
    status = 401
    default_slug = "unauthorized"
    title = "Unauthorized"


class Forbidden(ApiError):
    status = 403
    default_slug = "forbidden"
    title = "Forbidden"


class NotFound(ApiError):
    status = 404
    default_slug = "not-found"
    title = "Not found"


class RequestTimeout(ApiError):
    status = 408
    default_slug = "body-timeout"
    title = "Request timeout"


class Conflict(ApiError):
    status = 409
    default_slug = "conflict"
    title = "Conflict with the current state"


class PayloadTooLarge(ApiError):
    status = 413
    default_slug = "payload-too-large"
    title = "Payload too large"


class UnsupportedMediaType(ApiError):
    status = 415
    default_slug = "unsupported-media-type"
    title = "Unsupported media type"


class UnprocessableContent(ApiError):
    status = 422
    default_slug = "unprocessable"
    title = "Unprocessable content"


class TooManyRequests(ApiError):
    status = 429
    default_slug = "too-many-requests"
    title = "Too many requests"

    delay_s: float = 0.0
    """How long the answer is held before it is sent (see ``server.ingest.rate_limit``)."""


class ClientClosedRequest(ApiError):
    """The client closed its connection mid-request; 499 is nginx's status for it, kept so
    that metrics tell a client leaving from a server failing (nothing reaches the client)."""

    status = 499
    default_slug = "client-closed-request"
    title = "Client closed the request"


class ServiceUnavailable(ApiError):
    status = 503
    default_slug = "unavailable"
    title = "Service unavailable"


def from_storage(exc: StorageError) -> ApiError:
    """The problem answered for a storage error (see ``referendum_service.db``).

    A unique-constraint refusal is a 409, a value the database refused a 400 (the statement
    failed, nothing was stored), and an unreachable or contended database a 503 with
    ``Retry-After``. Each detail is a fixed text: the driver's message (which can name tables,
    constraints, encodings and the refused value) is for the server's log
    (:func:`server.http.problem_middleware` writes it), never for the client.

    >>> from_storage(Duplicate("already exists (x)", "x")).detail
    'already exists'
    >>> from_storage(BadValue("invalid input syntax for type uuid: ...")).detail
    'a value was refused by the database (for example a NUL character in text)'
    """
    if isinstance(exc, Duplicate):
        return Conflict("already exists", slug="duplicate")
    if isinstance(exc, BadValue):
        return BadRequest(
            "a value was refused by the database (for example a NUL character in text)",
            slug="bad-value",
        )
    if isinstance(exc, SerializationRetry):
        return ServiceUnavailable("storage contended, try again", retry_after=RETRY_AFTER_S)
    return ServiceUnavailable("database unavailable, try again", retry_after=RETRY_AFTER_S)
