"""The server's side of receipts: issuing them with its receipt key, and publishing that key.

The format, signing and verification are the core's (:mod:`referendum_core.receipt`), so
voters and auditors check receipts without the server. A receipt is stored byte for byte, so
resubmitting a ballot returns a receipt identical to the first one.

>>> from referendum_core.receipt import parse_time, verify_receipt
>>> from referendum_service.keys import _from_seed
>>> key = _from_seed(bytes(32))
>>> raw = issue_receipt(key, "demo", bytes(32), parse_time("2026-01-01T00:00:00.000000Z"), 2000)
>>> verify_receipt(raw, key.public_key).referendum
'demo'
"""

from __future__ import annotations

import base64
from datetime import datetime

from referendum_core.receipt import RECEIPT_TYPE, issue
from referendum_service.keys import ServiceKey

__all__ = ["issue_receipt", "receipt_key_document"]


def issue_receipt(
    key: ServiceKey,
    referendum_id: str,
    ballot_hash: bytes,
    accepted_at: datetime,
    merge_delay_ms: int,
) -> bytes:
    """The served (and stored) bytes of a receipt for ``ballot_hash``, signed with ``key``.

    Requires ``len(ballot_hash) == 32`` and an ASCII ``referendum_id``.
    """
    return issue(
        referendum_id, ballot_hash, accepted_at, merge_delay_ms, key_id=key.key_id, sign=key.sign
    )


def receipt_key_document(key: ServiceKey) -> dict[str, str]:
    """The public description served at ``GET /v1/keys/receipts``."""
    return {
        "algorithm": "Ed25519",
        "key_id": key.key_id,
        "public_key": base64.b64encode(key.public_key).decode("ascii"),
        "receipt_type": RECEIPT_TYPE,
    }
