"""Verify that a ballot is in the public log: ``referendum-audit verify-receipt``.

Fetches the ballot's inclusion proof bundle (``docs/log.md`` §5) and the latest checkpoint,
then checks offline: the bundle's checkpoint is signed by the log key, ``SHA-256(body)`` is
the ballot hash, the inclusion proof leads from ``leaf_hash(body)`` to the checkpoint's root,
and the latest signed checkpoint is consistent with the bundle's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditor.client import NotFoundError, PublicLogClient
from auditor.follow import AuditFailure, parse_hex
from referendum_core import merkle
from referendum_core.checkpoint import Checkpoint, parse_verifier_key, verify_checkpoint
from referendum_core.errors import CoreError
from referendum_core.receipt import verify_receipt as verify_receipt_signature

__all__ = [
    "ReceiptCheck",
    "ballot_hash_from_receipt",
    "check_receipt_signature",
    "parse_receipt_key",
    "verify_receipt",
]


@dataclass(frozen=True)
class ReceiptCheck:
    """A verified inclusion: the leaf index and the checkpoints it was checked against."""

    ballot_hash: bytes
    leaf_index: int
    checkpoint: Checkpoint
    latest: Checkpoint


def ballot_hash_from_receipt(path: Path) -> bytes:
    """The ballot hash of a receipt file: a JSON object with ``ballot_hash`` (hex), at the
    top level or under ``receipt``."""
    try:
        obj: Any = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AuditFailure("receipt.format", f"cannot read receipt {path}: {exc}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("receipt"), dict):
        obj = obj["receipt"] if "ballot_hash" not in obj else obj
    if not isinstance(obj, dict) or "ballot_hash" not in obj:
        raise AuditFailure("receipt.format", f"{path} has no ballot_hash")
    return parse_hex(obj["ballot_hash"], "receipt ballot_hash")


def parse_receipt_key(text: str) -> bytes:
    """The server's receipt public key, given as 64 hex digits or base64 (as served at
    ``/v1/keys/receipts``)."""
    import base64
    import binascii

    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise AuditFailure("receipt.key", "receipt key is neither hex nor base64") from exc
    if len(key) != 32:
        raise AuditFailure("receipt.key", "a receipt key is 32 bytes")
    return key


def check_receipt_signature(path: Path, public_key: bytes, referendum_id: str) -> bytes:
    """Check the server's signature on the receipt file at ``path`` (the exact bytes the
    server answered) and that it is for ``referendum_id``; return its ballot hash."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AuditFailure("receipt.format", f"cannot read receipt {path}: {exc}") from exc
    try:
        receipt = verify_receipt_signature(raw.strip(), public_key)
    except CoreError as exc:
        raise AuditFailure(exc.check, f"receipt {path}: {exc}") from exc
    if receipt.referendum != referendum_id:
        raise AuditFailure(
            "receipt.referendum", f"receipt is for referendum {receipt.referendum!r}"
        )
    return receipt.ballot_hash


async def verify_receipt(
    client: PublicLogClient,
    ballot_hash: bytes,
    log_key: str | tuple[str, bytes],
    *,
    origin: str | None = None,
) -> ReceiptCheck:
    """Check that ``ballot_hash`` is in the log; raise :class:`AuditFailure` otherwise."""
    key = parse_verifier_key(log_key) if isinstance(log_key, str) else log_key
    latest_obj = await client.checkpoint()
    if not isinstance(latest_obj.get("note"), str):
        raise AuditFailure("log.empty", "the log has no signed checkpoint yet")
    try:
        latest = verify_checkpoint(latest_obj["note"], key, origin=origin)
    except CoreError as exc:
        raise AuditFailure(exc.check, f"latest checkpoint: {exc}") from exc
    try:
        bundle = await client.inclusion_proof(ballot_hash, latest.size)
    except NotFoundError as exc:
        raise AuditFailure(
            "inclusion.not_found",
            f"the log at tree size {latest.size} has no ballot {ballot_hash.hex()}",
        ) from exc
    note = bundle.get("checkpoint")
    if not isinstance(note, str):
        raise AuditFailure("response.format", "the proof bundle has no checkpoint note")
    try:
        cp = verify_checkpoint(note, key, origin=origin)
    except CoreError as exc:
        raise AuditFailure(exc.check, f"proof checkpoint: {exc}") from exc
    index = bundle.get("leaf_index")
    items = bundle.get("proof")
    if type(index) is not int or bundle.get("tree_size") != cp.size or not isinstance(items, list):
        raise AuditFailure("response.format", "malformed proof bundle")
    body = parse_hex(bundle.get("body"), "ballot body", None)
    if hashlib.sha256(body).digest() != ballot_hash:
        raise AuditFailure("ballot.hash", "the logged body does not hash to the ballot hash")
    proof = [parse_hex(p, "inclusion proof element") for p in items]
    try:
        merkle.verify_inclusion(merkle.leaf_hash(body), index, cp.size, proof, cp.root)
    except CoreError as exc:
        raise AuditFailure(
            f"inclusion.{exc.check}", f"ballot is not proven in the log at size {cp.size}: {exc}"
        ) from exc
    if cp.size != latest.size or cp.root != latest.root:
        if cp.size > latest.size:
            raise AuditFailure(
                "checkpoint.consistency", "proof checkpoint is newer than the latest checkpoint"
            )
        obj = await client.consistency_proof(cp.size, latest.size)
        cons = obj.get("proof")
        if not isinstance(cons, list):
            raise AuditFailure("response.format", "malformed consistency proof")
        try:
            merkle.verify_consistency(
                cp.size,
                latest.size,
                [parse_hex(p, "consistency element") for p in cons],
                cp.root,
                latest.root,
            )
        except CoreError as exc:
            raise AuditFailure(
                "checkpoint.consistency", f"latest checkpoint does not extend the proof's: {exc}"
            ) from exc
    return ReceiptCheck(ballot_hash, index, cp, latest)
