"""Exponential ElGamal over secp256k1 and fast homomorphic aggregation.

A ciphertext of ``m`` under election key ``PK`` with randomness ``r`` is
``(a, b) = (r·G, m·G + r·PK)``. Adding ciphertexts component-wise adds the plaintexts, so
the sum of all ballots' ciphertexts for an option encrypts that option's count.

Canonical bytes of a ciphertext: ``a ‖ b``, each a 65-byte uncompressed point (65 zero bytes
for the identity, which only aggregates may contain).

>>> from referendum_core.group import Point
>>> pk = Point.base_mul(7)
>>> total = aggregate([encrypt(pk, 1, 11), encrypt(pk, 0, 12), encrypt(pk, 1, 13)])
>>> total.b - total.a * 7 == Point.base_mul(2)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

from referendum_core.errors import EncodingError, InvalidPoint
from referendum_core.group import IDENTITY, Point

__all__ = ["CIPHERTEXT_BYTES", "Ciphertext", "aggregate", "aggregate_encoded", "encrypt"]

CIPHERTEXT_BYTES = 130
_CHUNK = 4096
_CTX = GLOBAL_CONTEXT.ctx


@dataclass(frozen=True, slots=True)
class Ciphertext:
    """An exponential-ElGamal ciphertext ``(a, b)``; either part may be the identity."""

    a: Point
    b: Point

    def to_bytes(self) -> bytes:
        """Canonical 130 bytes: ``a ‖ b`` uncompressed."""
        return self.a.to_uncompressed() + self.b.to_uncompressed()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, check: str = "ciphertext", allow_identity: bool = True
    ) -> Ciphertext:
        """Decode 130 canonical bytes.

        Raises:
            InvalidPoint: a part is not a canonical point (or is a forbidden identity).
        """
        if len(data) != CIPHERTEXT_BYTES:
            raise InvalidPoint(f"ciphertext must be 130 bytes, got {len(data)}", check=check)
        return cls(
            Point.decode_uncompressed(data[:65], check=f"{check}.a", allow_identity=allow_identity),
            Point.decode_uncompressed(data[65:], check=f"{check}.b", allow_identity=allow_identity),
        )

    def __add__(self, other: Ciphertext) -> Ciphertext:
        return Ciphertext(self.a + other.a, self.b + other.b)

    @property
    def is_identity(self) -> bool:
        """Whether both parts are the identity (the encryption of 0 with randomness 0)."""
        return self.a.is_identity and self.b.is_identity


def encrypt(public_key: Point, m: int, r: int) -> Ciphertext:
    """``(r·G, m·G + r·PK)``. Requires ``0 < r < ORDER`` and ``0 <= m < ORDER``."""
    return Ciphertext(Point.base_mul(r), Point.sum((Point.base_mul(m), public_key * r)))


def aggregate(ciphertexts: Iterable[Ciphertext]) -> Ciphertext:
    """Component-wise sum of ciphertexts, in chunks of 4096 per library call.

    The empty sum, or a sum that cancels, is the identity ciphertext.
    """
    a_parts: list[Point] = []
    b_parts: list[Point] = []
    a_chunk: list[Point] = []
    b_chunk: list[Point] = []
    for ct in ciphertexts:
        a_chunk.append(ct.a)
        b_chunk.append(ct.b)
        if len(a_chunk) == _CHUNK:
            a_parts.append(Point.sum(a_chunk))
            b_parts.append(Point.sum(b_chunk))
            a_chunk, b_chunk = [], []
    a_parts.append(Point.sum(a_chunk))
    b_parts.append(Point.sum(b_chunk))
    return Ciphertext(Point.sum(a_parts), Point.sum(b_parts))


def aggregate_encoded(encoded: Iterable[bytes]) -> Ciphertext:
    """Sum ciphertexts given as canonical 130-byte strings, parsing straight into C arrays.

    This is the tally's hot loop: each point is parsed once (no Python objects per point)
    and summed 4096 at a time. Identity parts (65 zero bytes) are allowed and skipped.

    Raises:
        EncodingError: an entry is not 130 bytes.
        InvalidPoint: an entry holds a part that is not a canonical point.
    """
    a_arr = ffi.new("secp256k1_pubkey[]", _CHUNK)
    b_arr = ffi.new("secp256k1_pubkey[]", _CHUNK)
    a_ptrs = ffi.new("secp256k1_pubkey *[]", [a_arr + i for i in range(_CHUNK)])
    b_ptrs = ffi.new("secp256k1_pubkey *[]", [b_arr + i for i in range(_CHUNK)])
    parse = lib.secp256k1_ec_pubkey_parse
    ctx = _CTX
    zero = bytes(65)
    a_parts: list[Point] = []
    b_parts: list[Point] = []
    na = nb = 0

    def flush() -> None:
        nonlocal na, nb
        a_parts.append(_sum_raw(a_ptrs, na))
        b_parts.append(_sum_raw(b_ptrs, nb))
        na = nb = 0

    for index, data in enumerate(encoded):
        if len(data) != CIPHERTEXT_BYTES:
            raise EncodingError(f"ciphertext {index} is not 130 bytes", check="ciphertext")
        a = data[:65]
        b = data[65:]
        if a[0] == 4 and parse(ctx, a_ptrs[na], a, 65):
            na += 1
        elif a != zero:
            raise InvalidPoint(f"ciphertext {index}: bad point a", check="ciphertext.a")
        if b[0] == 4 and parse(ctx, b_ptrs[nb], b, 65):
            nb += 1
        elif b != zero:
            raise InvalidPoint(f"ciphertext {index}: bad point b", check="ciphertext.b")
        if na == _CHUNK or nb == _CHUNK:
            flush()
    flush()
    return Ciphertext(Point.sum(a_parts), Point.sum(b_parts))


def _sum_raw(ptrs: object, count: int) -> Point:
    if count == 0:
        return IDENTITY
    out = ffi.new("secp256k1_pubkey *")
    if not lib.secp256k1_ec_pubkey_combine(_CTX, out, ptrs, count):
        return IDENTITY
    return Point(out)
