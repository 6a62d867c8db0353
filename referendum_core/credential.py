"""Voter credential keys: which Ed25519 public keys a roll may hold.

A credential key is accepted exactly when libsodium's Ed25519 signature verification
(``crypto_sign_verify_detached`` / ``crypto_sign_open``, which checks every ballot signature)
can accept a signature under it: 32 bytes encoding y canonically (y < p, either sign bit), a
point on the curve, not of small order (not one of the 8 torsion points). Verification does not
require the key to lie in the prime-order subgroup: whoever holds the scalar of a key that
carries a torsion component signs ballots that verify (those whose challenge the torsion
component's order divides: one try in 8 at worst), and nobody else can. Refusing such keys at
import would protect no ballot; it would cost a full scalar multiplication a key, 3 to 6 times
the check kept. See :func:`is_valid_credential_key`.

The roll import checks millions of keys, so :func:`bad_key_positions` runs the same checks in
bulk on worker threads; an auditor applies :func:`is_valid_credential_key` to ``roll.csv``.
"""

from __future__ import annotations

import itertools
import re

from nacl._sodium import ffi as _ffi  # type: ignore[import-not-found]
from nacl._sodium import lib as _sodium

__all__ = [
    "DID_KEY_PREFIX",
    "bad_key_positions",
    "credential_from_did",
    "credential_to_did",
    "is_valid_credential_key",
    "parse_credential",
]

_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1  # the encoding's low 255 bits are y; the top bit is the sign of x
# y of the 8 points of order 1, 2, 4 and 8: 1, -1, 0 (x = ±sqrt(-1)) and ±y8 (x = ±x8 each).
_Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y8, _P - _Y8})
# The last byte of every encoding refused by the byte checks: y >= p needs its top 7 bits set
# (0x7f), each small-order y has its own; either sign bit. Any other last byte passes them.
_SUSPECT_LAST = re.compile(
    b"[%s]"
    % b"".join(
        re.escape(bytes([last | sign]))
        for last in sorted({0x7F} | {y.to_bytes(32, "little")[31] for y in _SMALL_ORDER_Y})
        for sign in (0, 0x80)
    )
)
_BASE = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")


def _canonical_not_small(key: bytes) -> bool:
    y = int.from_bytes(key, "little") & _Y_MASK
    return y < _P and y not in _SMALL_ORDER_Y


def is_valid_credential_key(key: bytes) -> bool:
    """Whether ``key`` is an Ed25519 public key under which a signature can verify: 32 bytes,
    y canonical (below p, whatever the sign bit), not of small order, a point on the curve.

    These are the refusals of libsodium's ``crypto_sign_verify_detached``, which verifies
    ballot signatures: ``ge25519_is_canonical`` (y < p), then decompression
    (``ge25519_frombytes_negate_vartime``: x² = (y² − 1)/(d·y² + 1) must have a root) and
    ``ge25519_has_small_order``. The small-order points are exactly those with y in {0, 1,
    −1, ±y8}, so y alone decides, both sign bits included (x = 0 with the sign bit set is one
    of these). The prime-order-subgroup check of ``crypto_core_ed25519_is_valid_point`` is
    deliberately left out: verification does not apply it, so a mixed-order key carries valid
    signatures anyway, and it costs a full scalar multiplication. On-curve is decided by
    libsodium decompressing the point (``crypto_core_ed25519_add`` with the base point),
    called through the cffi library directly, which drops the GIL.

    >>> is_valid_credential_key(_BASE)
    True
    >>> is_valid_credential_key(bytes(32))  # y = 0: order 4
    False
    """
    if len(key) != 32 or not _canonical_not_small(key):
        return False
    out = _ffi.new("unsigned char[32]")
    status: int = _sodium.crypto_core_ed25519_add(out, key, _BASE)
    return status == 0


def bad_key_positions(keys: bytes) -> list[int]:
    """Indexes, ascending, of the keys :func:`is_valid_credential_key` refuses among ``keys``
    (32-byte keys laid end to end); for worker threads, as libsodium drops the GIL.

    The same checks, cheaper in bulk: the byte checks run only on keys whose last byte can
    fail them (one regular-expression pass over every 32nd byte; ~3% of random keys), and the
    points are decompressed two at a time, one ``crypto_core_ed25519_add`` a pair (a call
    decompresses both operands and compresses the sum: 1.5 field exponentiations a key
    instead of 3); only a refused pair is checked key by key.
    """
    if len(keys) % 32:
        raise ValueError("keys must be 32-byte keys laid end to end")
    count = len(keys) // 32
    split = [keys[i : i + 32] for i in range(0, len(keys), 32)]
    bad = {
        m.start()
        for m in _SUSPECT_LAST.finditer(keys[31::32])  # the last byte of every key
        if not _canonical_not_small(split[m.start()])
    }
    if count % 2:
        split.append(_BASE)  # a valid partner for the last key
    add = _sodium.crypto_core_ed25519_add
    out = _ffi.new("unsigned char[32]")
    for pair, status in enumerate(map(add, itertools.repeat(out), split[::2], split[1::2])):
        if status != 0:
            bad.update(i for i in (2 * pair, 2 * pair + 1) if add(out, split[i], _BASE) != 0)
    return sorted(i for i in bad if i < count)


# --- did:key -------------------------------------------------------------------------------
# A credential is also written as a W3C did:key: "did:key:z" ‖ base58btc(0xed 0x01 ‖ key),
# 0xed01 being the unsigned-varint multicodec code of ed25519-pub (so every such DID starts
# "did:key:z6Mk"). Roll imports accept either spelling; the record and the client print both.

DID_KEY_PREFIX = "did:key:z"
_MULTICODEC_ED25519_PUB = b"\xed\x01"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}


def _b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58[r])
    pad = len(data) - len(data.lstrip(b"\x00"))
    return "1" * pad + "".join(reversed(out))


def _b58decode(text: str) -> bytes | None:
    n = 0
    for c in text:
        digit = _B58_INDEX.get(c)
        if digit is None:
            return None
        n = n * 58 + digit
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\x00" * pad + body


def credential_to_did(key: bytes) -> str:
    """The ``did:key`` spelling of a 32-byte Ed25519 credential.

    >>> credential_to_did(_BASE)[:12]
    'did:key:z6Mk'
    """
    if len(key) != 32:
        raise ValueError("a credential is a 32-byte Ed25519 public key")
    return DID_KEY_PREFIX + _b58encode(_MULTICODEC_ED25519_PUB + key)


def credential_from_did(did: str) -> bytes | None:
    """The 32-byte key of an Ed25519 ``did:key`` in its canonical spelling, else None (another
    key type, a bad base58 digit, a wrong length, or a non-canonical encoding).

    >>> credential_from_did(credential_to_did(_BASE)) == _BASE
    True
    >>> credential_from_did("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme") is None
    True
    """
    if not did.startswith(DID_KEY_PREFIX) or len(did) > 64:
        return None
    raw = _b58decode(did[len(DID_KEY_PREFIX) :])
    if raw is None or len(raw) != 34 or raw[:2] != _MULTICODEC_ED25519_PUB:
        return None
    key = raw[2:]
    return key if credential_to_did(key) == did else None


def parse_credential(text: str) -> bytes | None:
    """A credential written as 64 hex digits (either case) or as an Ed25519 ``did:key``;
    None when it is neither (validity of the point is :func:`is_valid_credential_key`).

    >>> parse_credential("58" + "66" * 31) == parse_credential(credential_to_did(_BASE))
    True
    """
    if text.startswith(DID_KEY_PREFIX):
        return credential_from_did(text)
    if len(text) != 64:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None
