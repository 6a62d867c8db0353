"""Ingest receipts: the server's signed promise that a ballot is committed and will be logged.

A receipt is a JSON object with exactly these members (all ASCII)::

    accepted_at     "2026-11-20T23:07:00.123456Z"  UTC, microseconds, when the server accepted it
    ballot_hash     64 hex digits                   SHA-256 of the canonical ballot bytes
    key_id          16 hex digits                   first 8 bytes of SHA-256(receipt public key)
    merge_delay_ms  integer                         the ballot enters the log within this bound
    referendum      the referendum id
    signature       base64 (standard, padded)       Ed25519 over the signed message below
    type            "referendum-receipt/v1"

**Signed message**: the receipt without ``signature``, encoded as JSON with keys sorted by
code point and no whitespace (for these ASCII strings and integers this is exactly RFC 8785,
the JSON Canonicalization Scheme). A server issues receipts with :func:`issue` and its
receipt key; voters and auditors check them with :func:`verify_receipt` and the server's
published receipt key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.signing import VerifyKey

from referendum_core.errors import EncodingError, SignatureError

__all__ = [
    "RECEIPT_MEMBERS",
    "RECEIPT_TYPE",
    "Receipt",
    "format_time",
    "issue",
    "parse_time",
    "receipt_key_id",
    "signed_message",
    "verify_receipt",
]

RECEIPT_TYPE = "referendum-receipt/v1"
RECEIPT_MEMBERS = frozenset(
    {"accepted_at", "ballot_hash", "key_id", "merge_delay_ms", "referendum", "signature", "type"}
)


@dataclass(frozen=True)
class Receipt:
    """A parsed, verified receipt."""

    referendum: str
    ballot_hash: bytes
    accepted_at: datetime
    merge_delay_ms: int
    key_id: str
    signature: bytes


def format_time(moment: datetime) -> str:
    """``moment`` in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always microseconds)."""
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z"


def parse_time(text: str) -> datetime:
    """The inverse of :func:`format_time`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def receipt_key_id(public_key: bytes) -> str:
    """The ``key_id`` of a receipt key: hex of the first 8 bytes of SHA-256(public key)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def signed_message(fields: dict[str, Any]) -> bytes:
    """The bytes the signature covers: ``fields`` minus ``signature``, canonical JSON."""
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def issue(
    referendum_id: str,
    ballot_hash: bytes,
    accepted_at: datetime,
    merge_delay_ms: int,
    *,
    key_id: str,
    sign: Callable[[bytes], bytes],
) -> bytes:
    """The served (and stored) bytes of a receipt: canonical JSON with ``signature`` added.

    ``sign`` returns the 64-byte Ed25519 signature of a message under the receipt key whose
    :func:`receipt_key_id` is ``key_id``. Requires ``len(ballot_hash) == 32`` and an ASCII
    ``referendum_id``. The same arguments give the same bytes, so a resubmitted ballot's
    receipt is identical to the first one.

    >>> from nacl.signing import SigningKey
    >>> key = SigningKey(bytes(32))
    >>> public = bytes(key.verify_key)
    >>> raw = issue("demo", bytes(32), parse_time("2026-01-01T00:00:00.000000Z"), 2000,
    ...             key_id=receipt_key_id(public), sign=lambda m: key.sign(m).signature)
    >>> verify_receipt(raw, public).referendum
    'demo'
    """
    fields: dict[str, Any] = {
        "accepted_at": format_time(accepted_at),
        "ballot_hash": ballot_hash.hex(),
        "key_id": key_id,
        "merge_delay_ms": merge_delay_ms,
        "referendum": referendum_id,
        "type": RECEIPT_TYPE,
    }
    fields["signature"] = base64.b64encode(sign(signed_message(fields))).decode("ascii")
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def verify_receipt(raw: bytes, public_key: bytes) -> Receipt:
    """Parse the receipt bytes ``raw`` and check its signature under ``public_key``.

    Raises :class:`~referendum_core.errors.EncodingError` (``check="receipt.format"``) or
    :class:`~referendum_core.errors.SignatureError` (``check="receipt.signature"``); nothing
    else on any input.
    """
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EncodingError("receipt is not JSON", check="receipt.format") from exc
    if not isinstance(fields, dict) or set(fields) != RECEIPT_MEMBERS:
        raise EncodingError(
            f"receipt must have exactly the members {sorted(RECEIPT_MEMBERS)}",
            check="receipt.format",
        )
    if fields["type"] != RECEIPT_TYPE:
        raise EncodingError(f"unknown receipt type {fields['type']!r}", check="receipt.format")
    if len(public_key) != 32 or fields["key_id"] != receipt_key_id(public_key):
        raise SignatureError("receipt was signed by another key", check="receipt.key")
    try:
        signature = base64.b64decode(fields["signature"], validate=True)
        ballot_hash = bytes.fromhex(fields["ballot_hash"])
        receipt = Receipt(
            referendum=str(fields["referendum"]),
            ballot_hash=ballot_hash,
            accepted_at=parse_time(fields["accepted_at"]),
            merge_delay_ms=int(fields["merge_delay_ms"]),
            key_id=str(fields["key_id"]),
            signature=signature,
        )
    except (binascii.Error, TypeError, ValueError) as exc:
        raise EncodingError(f"receipt member malformed: {exc}", check="receipt.format") from exc
    if len(receipt.ballot_hash) != 32:
        raise EncodingError("ballot_hash must be 32 bytes", check="receipt.format")
    try:
        VerifyKey(public_key).verify(signed_message(fields), signature)
    except (BadSignatureError, CryptoError, ValueError, TypeError) as exc:
        raise SignatureError(
            "receipt signature does not verify", check="receipt.signature"
        ) from exc
    return receipt
