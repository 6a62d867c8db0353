"""Receipt verification in the pure core: what voters and auditors run on a server's receipt."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from auditor.follow import AuditFailure
from auditor.receipt import check_receipt_signature, parse_receipt_key
from referendum_core.errors import CoreError, EncodingError, SignatureError
from referendum_core.receipt import issue, parse_time, receipt_key_id, verify_receipt


@dataclass(frozen=True)
class _Key:
    signing_key: SigningKey

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self.signing_key.sign(message).signature)


KEY = _Key(SigningKey(bytes(range(32))))
OTHER = _Key(SigningKey(bytes(32)))
RAW = issue(
    "city-2026",
    b"\x11" * 32,
    parse_time("2026-11-20T10:00:00.000001Z"),
    2000,
    key_id=receipt_key_id(KEY.public_key),
    sign=KEY.sign,
)


def _with(**changes: object) -> bytes:
    fields = orjson.loads(RAW)
    fields.update(changes)
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def test_honest_receipt_verifies() -> None:
    """A receipt the server issued verifies and parses back to what was promised."""
    receipt = verify_receipt(RAW, KEY.public_key)
    assert receipt.referendum == "city-2026"
    assert receipt.ballot_hash == b"\x11" * 32
    assert receipt.merge_delay_ms == 2000


@pytest.mark.parametrize(
    "changes",
    [
        {"ballot_hash": "22" * 32},
        {"referendum": "other"},
        {"merge_delay_ms": 200000},
        {"accepted_at": "2026-11-20T10:00:00.000002Z"},
    ],
)
def test_any_changed_member_breaks_the_signature(changes: dict[str, object]) -> None:
    """Changing any signed member after issue is caught by the signature."""
    with pytest.raises(SignatureError) as caught:
        verify_receipt(_with(**changes), KEY.public_key)
    assert caught.value.check == "receipt.signature"


def test_flipped_signature_bit_is_caught() -> None:
    """A signature with one bit flipped does not verify."""
    signature = bytearray(base64.b64decode(orjson.loads(RAW)["signature"]))
    signature[5] ^= 0x01
    with pytest.raises(SignatureError):
        verify_receipt(_with(signature=base64.b64encode(signature).decode()), KEY.public_key)


def test_another_servers_key_is_refused() -> None:
    """A receipt checked against another key fails on its key id."""
    with pytest.raises(SignatureError) as caught:
        verify_receipt(RAW, OTHER.public_key)
    assert caught.value.check == "receipt.key"


def test_missing_or_extra_members_are_format_errors() -> None:
    """A receipt with a member removed or added is not a receipt."""
    fields = orjson.loads(RAW)
    del fields["merge_delay_ms"]
    with pytest.raises(EncodingError):
        verify_receipt(orjson.dumps(fields), KEY.public_key)
    with pytest.raises(EncodingError):
        verify_receipt(_with(extra=1), KEY.public_key)


@settings(max_examples=60)
@given(st.binary(max_size=400))
def test_garbage_raises_only_core_errors(raw: bytes) -> None:
    """Any bytes at all give a typed core error, never another exception."""
    with pytest.raises(CoreError):
        verify_receipt(raw, KEY.public_key)


def test_auditor_checks_receipt_file_and_referendum(tmp_path: Path) -> None:
    """The auditor verifies a receipt file and refuses one for another referendum."""
    path = tmp_path / "receipt.json"
    path.write_bytes(RAW)
    key = parse_receipt_key(base64.b64encode(KEY.public_key).decode())
    assert check_receipt_signature(path, key, "city-2026") == b"\x11" * 32
    with pytest.raises(AuditFailure) as caught:
        check_receipt_signature(path, key, "another-city")
    assert caught.value.check == "receipt.referendum"
    path.write_bytes(_with(merge_delay_ms=1))
    with pytest.raises(AuditFailure) as caught:
        check_receipt_signature(path, key, "city-2026")
    assert caught.value.check == "receipt.signature"


def test_issue_is_deterministic_and_names_the_key() -> None:
    """The same receipt arguments give the same bytes, under the key's SHA-256-prefix id."""
    again = issue(
        "city-2026",
        b"\x11" * 32,
        parse_time("2026-11-20T10:00:00.000001Z"),
        2000,
        key_id=receipt_key_id(KEY.public_key),
        sign=KEY.sign,
    )
    assert again == RAW
    assert orjson.loads(RAW)["key_id"] == hashlib.sha256(KEY.public_key).hexdigest()[:16]
