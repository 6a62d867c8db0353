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
the JSON Canonicalization Scheme). The receipt is served as the same canonical encoding with
``signature`` added, and stored byte for byte, so resubmitting a ballot returns a receipt
identical to the first one.

>>> from server.keys import _from_seed
>>> key = _from_seed(bytes(32))
>>> raw = issue_receipt(key, "demo", bytes(32), parse_time("2026-01-01T00:00:00.000000Z"), 2000)
>>> verify_receipt(raw, key.public_key).referendum
'demo'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from server.keys import ServiceKey

__all__ = [
    "RECEIPT_TYPE",
    "InvalidReceipt",
    "Receipt",
    "format_time",
    "issue_receipt",
    "parse_time",
    "receipt_key_document",
    "signed_message",
    "verify_receipt",
]

RECEIPT_TYPE = "referendum-receipt/v1"
_MEMBERS = frozenset(
    {"accepted_at", "ballot_hash", "key_id", "merge_delay_ms", "referendum", "signature", "type"}
)


class InvalidReceipt(ValueError):
    """A receipt that does not parse, or whose signature does not verify."""


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


def signed_message(fields: dict[str, Any]) -> bytes:
    """The bytes the signature covers: ``fields`` minus ``signature``, canonical JSON."""
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    return orjson.dumps(unsigned, option=orjson.OPT_SORT_KEYS)


def issue_receipt(
    key: ServiceKey,
    referendum_id: str,
    ballot_hash: bytes,
    accepted_at: datetime,
    merge_delay_ms: int,
) -> bytes:
    """The served (and stored) bytes of a receipt for ``ballot_hash``.

    Requires ``len(ballot_hash) == 32`` and an ASCII ``referendum_id``.
    """
    fields: dict[str, Any] = {
        "accepted_at": format_time(accepted_at),
        "ballot_hash": ballot_hash.hex(),
        "key_id": key.key_id,
        "merge_delay_ms": merge_delay_ms,
        "referendum": referendum_id,
        "type": RECEIPT_TYPE,
    }
    fields["signature"] = base64.b64encode(key.sign(signed_message(fields))).decode("ascii")
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def verify_receipt(raw: bytes, public_key: bytes) -> Receipt:
    """Parse ``raw`` and check its signature under ``public_key``; raises InvalidReceipt."""
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidReceipt("receipt is not JSON") from exc
    if not isinstance(fields, dict) or set(fields) != _MEMBERS:
        raise InvalidReceipt(f"receipt must have exactly the members {sorted(_MEMBERS)}")
    if fields["type"] != RECEIPT_TYPE:
        raise InvalidReceipt(f"unknown receipt type {fields['type']!r}")
    if fields["key_id"] != hashlib.sha256(public_key).hexdigest()[:16]:
        raise InvalidReceipt("receipt was signed by another key")
    try:
        signature = base64.b64decode(fields["signature"], validate=True)
        VerifyKey(public_key).verify(signed_message(fields), signature)
        receipt = Receipt(
            referendum=str(fields["referendum"]),
            ballot_hash=bytes.fromhex(fields["ballot_hash"]),
            accepted_at=parse_time(fields["accepted_at"]),
            merge_delay_ms=int(fields["merge_delay_ms"]),
            key_id=str(fields["key_id"]),
            signature=signature,
        )
    except (BadSignatureError, binascii.Error, TypeError, ValueError) as exc:
        raise InvalidReceipt(f"receipt does not verify: {exc}") from exc
    if len(receipt.ballot_hash) != 32:
        raise InvalidReceipt("ballot_hash must be 32 bytes")
    return receipt


def receipt_key_document(key: ServiceKey) -> dict[str, str]:
    """The public description served at ``GET /v1/keys/receipts``."""
    return {
        "algorithm": "Ed25519",
        "key_id": key.key_id,
        "public_key": base64.b64encode(key.public_key).decode("ascii"),
        "receipt_type": RECEIPT_TYPE,
    }
