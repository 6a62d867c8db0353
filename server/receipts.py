"""Issuing receipts: the server's signed promise that a ballot is committed and will be logged.

The format and its verification live in the pure core (:mod:`referendum_core.receipt`), so
voters and auditors check receipts without the server. A receipt is served as canonical JSON
with ``signature`` added and stored byte for byte, so resubmitting a ballot returns a receipt
identical to the first one.

>>> from referendum_service.keys import _from_seed
>>> key = _from_seed(bytes(32))
>>> raw = issue_receipt(key, "demo", bytes(32), parse_time("2026-01-01T00:00:00.000000Z"), 2000)
>>> verify_receipt(raw, key.public_key).referendum
'demo'
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from referendum_core.errors import CoreError
from referendum_core.receipt import (
    RECEIPT_TYPE,
    Receipt,
    format_time,
    parse_time,
    signed_message,
)
from referendum_core.receipt import verify_receipt as _verify_receipt
from referendum_service.keys import ServiceKey

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


class InvalidReceipt(ValueError):
    """A receipt that does not parse, or whose signature does not verify."""


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
        return _verify_receipt(raw, public_key)
    except CoreError as exc:
        raise InvalidReceipt(str(exc)) from exc


def receipt_key_document(key: ServiceKey) -> dict[str, str]:
    """The public description served at ``GET /v1/keys/receipts``."""
    return {
        "algorithm": "Ed25519",
        "key_id": key.key_id,
        "public_key": base64.b64encode(key.public_key).decode("ascii"),
        "receipt_type": RECEIPT_TYPE,
    }
