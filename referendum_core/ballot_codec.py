"""The one canonical encoding of a ballot, its JSON form, and fast field accessors.

Canonical bytes (``docs/crypto.md`` §5), what the public log's leaf hash covers::

    body      = "RBAL" ‖ u8 version=2
              ‖ u8 len(referendum) ‖ referendum (UTF-8) ‖ credential (32)
              ‖ u8 count ‖ count × ciphertext (130) ‖ count × 0/1 proof (388)
              ‖ u8 L ‖ sum proof (194·L bytes; L = 0: none)
    canonical = body ‖ signature (64)
    signature = Ed25519(credential, "referendum/v1/ballot-signature" ‖ 0x00 ‖ body)
    ballot_hash = SHA-256(canonical)

The signer is named by its credential, the voter's Ed25519 public key, never by a voter id:
the public log and everything built on it identify ballots by credential only (``docs/crypto.md``
§8, "Privacy").

The JSON body the server accepts holds the same fields as lowercase hex strings::

    {"referendum": str, "credential": hex32, "ciphertexts": [hex130, …],
     "proofs": [hex388, …], "sum_proof": hex or null, "signature": hex64}
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from referendum_core.elgamal import CIPHERTEXT_BYTES
from referendum_core.errors import BallotError, EncodingError
from referendum_core.proofs import BRANCH_BYTES

__all__ = [
    "CREDENTIAL_BYTES",
    "MAGIC",
    "MAX_ID_BYTES",
    "MAX_OPTIONS",
    "PROOF01_BYTES",
    "SIGNATURE_BYTES",
    "BallotRecord",
    "ballot_from_json",
    "ballot_to_json",
    "ciphertext_bytes",
    "credential_of",
    "decode_canonical",
    "encode_body",
    "hex_field",
    "id_bytes",
    "record_to_json",
]

MAGIC = b"RBAL\x02"
MAX_ID_BYTES = 255
MAX_OPTIONS = 64
PROOF01_BYTES = 2 * BRANCH_BYTES
SIGNATURE_BYTES = 64
CREDENTIAL_BYTES = 32
_FIELDS = frozenset({"referendum", "credential", "ciphertexts", "proofs", "sum_proof", "signature"})


@dataclass(frozen=True)
class BallotRecord:
    """A ballot's fields, decoded from canonical bytes or JSON; nothing checked beyond shape."""

    referendum_id: str
    credential: bytes  # the signer's Ed25519 public key, 32 bytes
    ciphertexts: tuple[bytes, ...]
    proofs: tuple[bytes, ...]
    sum_proof: bytes | None
    signature: bytes


# --- canonical bytes ---------------------------------------------------------------------


def id_bytes(value: str, field: str) -> bytes:
    try:
        raw = value.encode("utf-8", "strict") if value.isprintable() else b""
    except UnicodeEncodeError:  # lone surrogates
        raw = b""
    if not 1 <= len(raw) <= MAX_ID_BYTES:
        raise EncodingError(f"{field} must be 1..255 printable UTF-8 bytes", check=field)
    return raw


def encode_body(record: BallotRecord) -> bytes:
    """The signed part of the canonical bytes (everything but the signature).

    Requires a record whose fields have the right lengths (as from :func:`ballot_from_json`).
    """
    rid = id_bytes(record.referendum_id, "referendum")
    if len(record.credential) != CREDENTIAL_BYTES:
        raise EncodingError("credential must be 32 bytes", check="credential")
    sum_proof = record.sum_proof or b""
    return b"".join(
        (
            MAGIC,
            struct.pack(">B", len(rid)),
            rid,
            record.credential,
            struct.pack(">B", len(record.ciphertexts)),
            *record.ciphertexts,
            *record.proofs,
            struct.pack(">B", len(sum_proof) // BRANCH_BYTES),
            sum_proof,
        )
    )


def decode_canonical(canonical: bytes) -> BallotRecord:
    """Parse canonical signed-ballot bytes into their fields (no cryptographic checks).

    Raises:
        EncodingError: anything but exactly one well-formed canonical ballot.
    """
    if not isinstance(canonical, bytes | bytearray | memoryview):
        raise EncodingError("canonical ballot must be bytes", check="body")
    data = bytes(canonical)
    try:
        if data[:5] != MAGIC:
            raise EncodingError("not a version-2 ballot", check="magic")
        n = data[5]
        raw = data[6 : 6 + n]
        if len(raw) != n:
            raise EncodingError("truncated", check="referendum")
        try:
            rid = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EncodingError("referendum is not UTF-8", check="referendum") from exc
        id_bytes(rid, "referendum")
        pos = 6 + n
        credential = data[pos : pos + CREDENTIAL_BYTES]
        if len(credential) != CREDENTIAL_BYTES:
            raise EncodingError("truncated", check="credential")
        pos += CREDENTIAL_BYTES
        count = data[pos]
        pos += 1
        if count == 0:
            raise EncodingError("a ballot has at least one ciphertext", check="ciphertexts")
        cts = tuple(
            data[pos + i * CIPHERTEXT_BYTES : pos + (i + 1) * CIPHERTEXT_BYTES]
            for i in range(count)
        )
        pos += count * CIPHERTEXT_BYTES
        proofs = tuple(
            data[pos + i * PROOF01_BYTES : pos + (i + 1) * PROOF01_BYTES] for i in range(count)
        )
        pos += count * PROOF01_BYTES
        branches = data[pos]
        pos += 1
        sum_proof = data[pos : pos + BRANCH_BYTES * branches] if branches else None
        pos += BRANCH_BYTES * branches
        signature = data[pos : pos + SIGNATURE_BYTES]
        pos += SIGNATURE_BYTES
    except IndexError as exc:
        raise EncodingError("truncated ballot", check="length") from exc
    if pos != len(data):
        raise EncodingError("ballot length does not match its contents", check="length")
    return BallotRecord(rid, credential, cts, proofs, sum_proof, signature)


Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap
"""What the field accessors read: stored bytes or a mapped file of many ballots."""

# The tally and the auditor's scan read one field of millions of stored ballots; these skip
# the full parse of decode_canonical (and the copy of everything but the field).


def _credential_field(data: Buffer, offset: int) -> int:
    return offset + 6 + data[offset + 5]


def credential_of(canonical: Buffer, offset: int = 0) -> bytes:
    """The credential (signer's key) of the canonical ballot starting at ``offset``.

    Checks nothing but the field itself: for bytes :func:`decode_canonical` accepts it
    returns that record's ``credential``.

    >>> record = BallotRecord("r1", bytes(range(32)), (bytes(130),), (bytes(388),), None,
    ...     bytes(64))
    >>> credential_of(encode_body(record) + record.signature) == bytes(range(32))
    True

    Raises:
        EncodingError: the bytes end inside the field.
    """
    try:
        start = _credential_field(canonical, offset)
    except IndexError as exc:
        raise EncodingError("truncated ballot", check="length") from exc
    raw = bytes(canonical[start : start + CREDENTIAL_BYTES])
    if len(raw) != CREDENTIAL_BYTES:
        raise EncodingError("truncated", check="credential")
    return raw


def ciphertext_bytes(canonical: Buffer) -> bytes:
    """The ballot's ciphertexts as one ``count × 130``-byte string, in option order.

    Checks nothing but the field itself: for bytes :func:`decode_canonical` accepts it is
    ``b"".join(record.ciphertexts)``.

    >>> record = BallotRecord("r1", bytes(32), (bytes(130),), (bytes(388),), None, bytes(64))
    >>> ciphertext_bytes(encode_body(record) + record.signature) == bytes(130)
    True

    Raises:
        EncodingError: the bytes end inside the field.
    """
    try:
        pos = _credential_field(canonical, 0) + CREDENTIAL_BYTES
        end = pos + 1 + canonical[pos] * CIPHERTEXT_BYTES
    except IndexError as exc:
        raise EncodingError("truncated ballot", check="length") from exc
    if end > len(canonical):
        raise EncodingError("truncated ballot", check="length")
    return bytes(canonical[pos + 1 : end])


def hex_field(value: Any, field: str, size: int | None) -> bytes:
    """The bytes of a JSON hex member, which must be spelled canonically (lowercase, no spaces).

    >>> hex_field("00ff", "x", 2)
    b'\\x00\\xff'
    """
    if not isinstance(value, str):
        raise EncodingError(f"{field} must be a hex string", check=field)
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise EncodingError(f"{field} is not hex", check=field) from exc
    if raw.hex() != value:
        raise EncodingError(f"{field} must be lowercase hex without spaces", check=field)
    if size is not None and len(raw) != size:
        raise EncodingError(f"{field} must be {size} bytes", check=field)
    return raw


def _hex_list(value: Any, field: str, size: int) -> tuple[bytes, ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_OPTIONS:
        raise EncodingError(f"{field} must be a list of 1..{MAX_OPTIONS} items", check=field)
    try:
        return tuple([hex_field(item, field, size) for item in value])
    except EncodingError:
        # name the first bad item; its name is built only on this path (a 64-option ballot
        # carries 128 items, and a name for each cost a third of the parse)
        for i, item in enumerate(value):
            hex_field(item, f"{field}[{i}]", size)
        raise


def ballot_from_json(body: Mapping[str, Any]) -> BallotRecord:
    """Parse the JSON ballot body (already decoded) into a record, strictly.

    Raises:
        EncodingError: not an object, unknown or missing fields, wrong types or lengths.
    """
    if not isinstance(body, Mapping):
        raise EncodingError("ballot must be a JSON object", check="body")
    keys = set(body.keys())
    if keys != _FIELDS:
        missing, unknown = sorted(_FIELDS - keys), sorted(map(str, keys - _FIELDS))
        raise EncodingError(
            f"missing fields {missing}, unknown fields {unknown}", check="body.fields"
        )
    if not isinstance(body["referendum"], str):
        raise EncodingError("referendum must be a string", check="referendum")
    id_bytes(body["referendum"], "referendum")
    credential = hex_field(body["credential"], "credential", CREDENTIAL_BYTES)
    cts = _hex_list(body["ciphertexts"], "ciphertexts", CIPHERTEXT_BYTES)
    proofs = _hex_list(body["proofs"], "proofs", PROOF01_BYTES)
    raw_sum = body["sum_proof"]
    sum_proof = None if raw_sum is None else hex_field(raw_sum, "sum_proof", None)
    if sum_proof is not None and not (
        sum_proof and len(sum_proof) % BRANCH_BYTES == 0 and len(sum_proof) <= BRANCH_BYTES * 255
    ):
        raise EncodingError("sum_proof must be 194·L bytes, 1 <= L <= 255", check="sum_proof")
    if len(proofs) != len(cts):
        raise BallotError("one proof per ciphertext", check="proofs.count")
    signature = hex_field(body["signature"], "signature", SIGNATURE_BYTES)
    return BallotRecord(body["referendum"], credential, cts, proofs, sum_proof, signature)


def ballot_to_json(canonical: bytes) -> dict[str, Any]:
    """The JSON form of stored canonical bytes (inverse of the server's parsing).

    Raises:
        EncodingError: ``canonical`` is not a well-formed ballot.
    """
    return record_to_json(decode_canonical(canonical))


def record_to_json(record: BallotRecord) -> dict[str, Any]:
    """The JSON body for a record."""
    return {
        "referendum": record.referendum_id,
        "credential": record.credential.hex(),
        "ciphertexts": [c.hex() for c in record.ciphertexts],
        "proofs": [p.hex() for p in record.proofs],
        "sum_proof": None if record.sum_proof is None else record.sum_proof.hex(),
        "signature": record.signature.hex(),
    }
