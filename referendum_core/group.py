"""The prime-order group: secp256k1 through libsecp256k1 (coincurve's cffi binding).

Elements are :class:`Point` values; scalars are Python ``int`` in ``[0, ORDER)``. The library
cannot represent the point at infinity, so :data:`IDENTITY` is a ``Point`` whose handle is
``None`` and every operation handles it explicitly (a tally of zero is the identity).

Encodings (see ``docs/crypto.md`` §2):

* scalar: 32 bytes big-endian, value ``< ORDER``;
* compressed point (keys, commitments, decryption shares): 33 bytes SEC1 ``02|03 ‖ x``;
* uncompressed point (ciphertext components, bulk-aggregated): 65 bytes SEC1 ``04 ‖ x ‖ y``.
  Decompressing costs a field square root (~4.5 µs here) against ~0.25 µs to parse the
  uncompressed form, which is what makes aggregating a million ciphertexts fast;
* the identity, only where a field allows it: 33 (or 65) zero bytes, so widths stay fixed.

Scalar multiplication uses the library's constant-time ``tweak_mul`` and fixed-base
``pubkey_create``; :meth:`Point.lincomb_base` computes ``α·P + β·G`` in one variable-time
double multiplication by feeding ECDSA public-key recovery a synthetic signature (public
data only), which is what makes proof verification cheap.

>>> g = Point.base_mul(1)
>>> (g * 3 - g - g - g).is_identity
True
>>> Point.decode_compressed(g.to_compressed()) == g
True
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from coincurve._libsecp256k1 import ffi, lib
from coincurve.context import GLOBAL_CONTEXT

from referendum_core.errors import InvalidPoint, InvalidScalar

try:
    from referendum_core import _secp256k1 as _native
except ImportError:  # built without a compiler: libsecp256k1 decodes every point
    _native = None  # type: ignore[assignment]

__all__ = [
    "FIELD_PRIME",
    "GENERATOR",
    "IDENTITY",
    "ORDER",
    "Point",
    "chaum_pedersen_commitments",
    "check_uncompressed",
    "decode_key",
    "hash_to_scalar",
    "random_scalar",
    "scalar_from_bytes",
    "scalar_to_bytes",
    "seeded_scalars",
    "transcript",
    "zero_one_commitments",
]

#: Order n of the secp256k1 group (prime).
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
#: Prime p of the base field.
FIELD_PRIME = 2**256 - 2**32 - 977

_CTX = GLOBAL_CONTEXT.ctx
_COMPRESSED = 258  # SECP256K1_EC_COMPRESSED
_UNCOMPRESSED = 2  # SECP256K1_EC_UNCOMPRESSED
_ZERO33 = bytes(33)
_ZERO65 = bytes(65)
_new = ffi.new
_parse = lib.secp256k1_ec_pubkey_parse
_tweak_mul = lib.secp256k1_ec_pubkey_tweak_mul
_create = lib.secp256k1_ec_pubkey_create
_combine = lib.secp256k1_ec_pubkey_combine
_negate = lib.secp256k1_ec_pubkey_negate
_serialize = lib.secp256k1_ec_pubkey_serialize
_sig_parse = lib.secp256k1_ecdsa_recoverable_signature_parse_compact
_recover = lib.secp256k1_ecdsa_recover
_PUBKEY = "secp256k1_pubkey *"
_U16 = struct.Struct(">H").pack
_U32 = struct.Struct(">I").pack
_SIG = "secp256k1_ecdsa_recoverable_signature *"


def scalar_to_bytes(k: int) -> bytes:
    """Encode a scalar as 32 bytes big-endian. Requires ``0 <= k < ORDER``.

    >>> scalar_to_bytes(1).hex()[-4:]
    '0001'
    """
    return k.to_bytes(32, "big")


def scalar_from_bytes(data: bytes, *, check: str = "scalar", nonzero: bool = False) -> int:
    """Decode a canonical 32-byte big-endian scalar.

    Raises:
        InvalidScalar: wrong length, value ``>= ORDER``, or zero when ``nonzero``.

    >>> scalar_from_bytes(bytes(31) + b"\\x05")
    5
    """
    if len(data) != 32:
        raise InvalidScalar(f"scalar must be 32 bytes, got {len(data)}", check=check)
    k = int.from_bytes(data, "big")
    if k >= ORDER:
        raise InvalidScalar("scalar is not below the group order", check=check)
    if nonzero and k == 0:
        raise InvalidScalar("scalar must not be zero", check=check)
    return k


def random_scalar() -> int:
    """A uniformly random non-zero scalar from the operating system's CSPRNG."""
    return secrets.randbelow(ORDER - 1) + 1


def transcript(tag: bytes, *parts: bytes) -> bytes:
    """Length-prefixed concatenation ``u16(len tag) ‖ tag ‖ (u32(len p) ‖ p)*``.

    Unambiguous: no two different part lists give the same bytes.

    >>> transcript(b"t", b"ab").hex()
    '000174000000026162'
    """
    chunks = [_U16(len(tag)), tag]
    for part in parts:
        chunks += (_U32(len(part)), part)
    return b"".join(chunks)


def hash_to_scalar(tag: bytes, *parts: bytes) -> int:
    """``int(SHA-256(transcript(tag, *parts))) mod ORDER`` (bias below 2**-127).

    >>> 0 <= hash_to_scalar(b"test", b"a", b"b") < ORDER
    True
    """
    return int.from_bytes(hashlib.sha256(transcript(tag, *parts)).digest(), "big") % ORDER


def _copy(raw: Any) -> Any:
    return _new(_PUBKEY, raw[0])


class Point:
    """An element of the secp256k1 group, immutable; the identity has ``_raw is None``."""

    __slots__ = ("_enc65", "_raw")

    def __init__(self, raw: Any, enc65: bytes | None = None) -> None:
        """Wrap a library handle. Internal: use the ``decode_*`` and arithmetic methods."""
        self._raw = raw
        self._enc65 = enc65

    # --- decoding -------------------------------------------------------------------------

    @classmethod
    def decode_compressed(
        cls, data: bytes, *, check: str = "point", allow_identity: bool = False
    ) -> Point:
        """Decode a 33-byte compressed point (or 33 zero bytes for the identity if allowed).

        Raises:
            InvalidPoint: wrong length or prefix, x not below p, not on the curve, or the
                identity where it is forbidden.
        """
        if len(data) != 33:
            raise InvalidPoint(f"compressed point must be 33 bytes, got {len(data)}", check=check)
        if data == _ZERO33:
            if allow_identity:
                return IDENTITY
            raise InvalidPoint("identity element not allowed here", check=check)
        if data[0] not in (2, 3):
            raise InvalidPoint("compressed point must start with 02 or 03", check=check)
        raw = _new(_PUBKEY)
        # libsecp256k1 rejects x >= p and x with no square root (not on the curve).
        if not _parse(_CTX, raw, data, 33):
            raise InvalidPoint("not a point on secp256k1", check=check)
        return cls(raw)

    @classmethod
    def decode_uncompressed(
        cls, data: bytes, *, check: str = "point", allow_identity: bool = False
    ) -> Point:
        """Decode a 65-byte uncompressed point (or 65 zero bytes for the identity if allowed).

        Raises:
            InvalidPoint: wrong length or prefix (hybrid 06/07 forms are refused),
                coordinates not below p, not on the curve, or a forbidden identity.
        """
        if len(data) != 65:
            raise InvalidPoint(f"uncompressed point must be 65 bytes, got {len(data)}", check=check)
        if data[0] != 4:
            if data == _ZERO65 and allow_identity:
                return IDENTITY
            if data == _ZERO65:
                raise InvalidPoint("identity element not allowed here", check=check)
            raise InvalidPoint("uncompressed point must start with 04", check=check)
        raw = _new(_PUBKEY)
        if not _parse(_CTX, raw, data, 65):
            raise InvalidPoint("not a point on secp256k1", check=check)
        return cls(raw, bytes(data))

    # --- encoding -------------------------------------------------------------------------

    def to_compressed(self) -> bytes:
        """33-byte compressed encoding (33 zero bytes for the identity)."""
        if self._raw is None:
            return _ZERO33
        out = _new("unsigned char[33]")
        size = _new("size_t *", 33)
        _serialize(_CTX, out, size, self._raw, _COMPRESSED)
        return bytes(ffi.buffer(out, 33))

    def to_uncompressed(self) -> bytes:
        """65-byte uncompressed encoding (65 zero bytes for the identity)."""
        if self._enc65 is not None:
            return self._enc65
        if self._raw is None:
            return _ZERO65
        out = _new("unsigned char[65]")
        size = _new("size_t *", 65)
        _serialize(_CTX, out, size, self._raw, _UNCOMPRESSED)
        enc = bytes(ffi.buffer(out, 65))
        self._enc65 = enc
        return enc

    # --- arithmetic -----------------------------------------------------------------------

    @property
    def is_identity(self) -> bool:
        """Whether this is the point at infinity."""
        return self._raw is None

    @staticmethod
    def base_mul(k: int) -> Point:
        """``k·G`` by the library's fixed-base multiplication. Requires ``0 <= k < ORDER``."""
        k %= ORDER
        if k == 0:
            return IDENTITY
        raw = _new(_PUBKEY)
        _create(_CTX, raw, k.to_bytes(32, "big"))
        return Point(raw)

    def __mul__(self, k: int) -> Point:
        k %= ORDER
        if k == 0 or self._raw is None:
            return IDENTITY
        raw = _copy(self._raw)
        _tweak_mul(_CTX, raw, k.to_bytes(32, "big"))
        return Point(raw)

    __rmul__ = __mul__

    def __add__(self, other: Point) -> Point:
        return Point.sum((self, other))

    def __neg__(self) -> Point:
        if self._raw is None:
            return self
        raw = _copy(self._raw)
        _negate(_CTX, raw)
        return Point(raw)

    def __sub__(self, other: Point) -> Point:
        return Point.sum((self, -other))

    @staticmethod
    def sum(points: Iterable[Point]) -> Point:
        """The sum of any number of points in one library call (identities skipped)."""
        raws = [p._raw for p in points if p._raw is not None]
        if not raws:
            return IDENTITY
        if len(raws) == 1:
            return Point(raws[0])
        out = _new(_PUBKEY)
        # combine fails only when the sum is the point at infinity.
        if not _combine(_CTX, out, raws, len(raws)):
            return IDENTITY
        return Point(out)

    def lincomb_base(self, alpha: int, beta: int) -> Point:
        """``alpha·self + beta·G`` in one variable-time double multiplication.

        Uses ECDSA recovery ``Q = r⁻¹(s·R − e·G)`` with ``R = self``, ``r = x(R)``,
        ``s = alpha·r``, ``e = −beta·r``; all inputs are public, so variable time is fine.
        Falls back to two multiplications when ``x(R) >= ORDER`` or ``alpha == 0``.
        """
        alpha %= ORDER
        beta %= ORDER
        if self._raw is None or alpha == 0:
            return Point.base_mul(beta)
        enc = self.to_uncompressed()
        r = int.from_bytes(enc[1:33], "big")
        if r >= ORDER:
            return Point.sum((self * alpha, Point.base_mul(beta)))
        sig = _new(_SIG)
        _sig_parse(_CTX, sig, enc[1:33] + (alpha * r % ORDER).to_bytes(32, "big"), enc[64] & 1)
        out = _new(_PUBKEY)
        if not _recover(_CTX, out, sig, (-beta * r % ORDER).to_bytes(32, "big")):
            return IDENTITY
        return Point(out)

    # --- comparison -----------------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Point):
            return NotImplemented
        return self.to_uncompressed() == other.to_uncompressed()

    def __hash__(self) -> int:
        return hash(self.to_uncompressed())

    def __repr__(self) -> str:
        return f"Point({self.to_compressed().hex()})"


def _ser33(raw: Any) -> bytes:
    out = _new("unsigned char[33]")
    size = _new("size_t *", 33)
    _serialize(_CTX, out, size, raw, _COMPRESSED)
    return bytes(ffi.buffer(out, 33))


def chaum_pedersen_commitments(
    a: Point, b: Point, base: Point, c: int, s: int
) -> tuple[bytes, bytes]:
    """Compressed encodings of ``s·G − c·a`` and ``s·base − c·b``.

    The verifier's recomputation of a Chaum–Pedersen commitment pair, in four library calls
    (one recovery-based double multiplication, two ``tweak_mul``, one ``combine``) when every
    input is a non-identity point and ``c, s`` are non-zero; otherwise by the general path.
    Requires ``0 <= c, s < ORDER``. Identity results encode as 33 zero bytes.
    """
    if a._raw is not None and b._raw is not None and base._raw is not None and c and s:
        enc = a.to_uncompressed()
        r = int.from_bytes(enc[1:33], "big")
        if r < ORDER:
            neg_c = ORDER - c
            sig = _new(_SIG)
            _sig_parse(_CTX, sig, enc[1:33] + (neg_c * r % ORDER).to_bytes(32, "big"), enc[64] & 1)
            first = _new(_PUBKEY)
            first_ok = _recover(_CTX, first, sig, (ORDER - s * r % ORDER).to_bytes(32, "big"))
            left = _new(_PUBKEY, base._raw[0])
            _tweak_mul(_CTX, left, s.to_bytes(32, "big"))
            right = _new(_PUBKEY, b._raw[0])
            _tweak_mul(_CTX, right, neg_c.to_bytes(32, "big"))
            second = _new(_PUBKEY)
            second_ok = _combine(_CTX, second, [left, right], 2)
            return (
                _ser33(first) if first_ok else _ZERO33,
                _ser33(second) if second_ok else _ZERO33,
            )
    return (
        a.lincomb_base(ORDER - c, s).to_compressed(),
        Point.sum((base * s, b * (ORDER - c))).to_compressed(),
    )


def zero_one_commitments(
    a: Point, b: Point, base: Point, c0: int, c1: int, s0: int, s1: int
) -> list[bytes]:
    """The four recomputed commitments of a 0/1 proof on ``(a, b)`` under key ``base``.

    ``[s0·G − c0·a, s0·base − c0·b, s1·G − c1·a, s1·base − c1·(b − G)]``, compressed. Same
    result as four :func:`chaum_pedersen_commitments` halves, fused into one run of library
    calls because this is the hottest loop of ballot verification. Requires scalars ``< n``.
    """
    enc = a.to_uncompressed()
    r = int.from_bytes(enc[1:33], "big")
    if (
        a._raw is None
        or b._raw is None
        or base._raw is None
        or not (c0 and c1 and s0 and s1)
        or r >= ORDER
    ):
        b1 = Point.sum((b, _MINUS_G))
        return [
            *chaum_pedersen_commitments(a, b, base, c0, s0),
            *chaum_pedersen_commitments(a, b1, base, c1, s1),
        ]
    ctx = _CTX
    x = enc[1:33]
    parity = enc[64] & 1
    pts = _new("secp256k1_pubkey[7]")
    sig = _new(_SIG)
    out = _new("unsigned char[132]")
    size = _new("size_t *")
    ok = [0, 0, 0, 0]
    # a_j = s_j·G − c_j·a by ECDSA recovery (see Point.lincomb_base)
    _sig_parse(ctx, sig, x + ((ORDER - c0) * r % ORDER).to_bytes(32, "big"), parity)
    ok[0] = _recover(ctx, pts + 0, sig, (ORDER - s0 * r % ORDER).to_bytes(32, "big"))
    _sig_parse(ctx, sig, x + ((ORDER - c1) * r % ORDER).to_bytes(32, "big"), parity)
    ok[2] = _recover(ctx, pts + 1, sig, (ORDER - s1 * r % ORDER).to_bytes(32, "big"))
    # b_0 = s0·PK − c0·b ;  b_1 = s1·PK − c1·(b − G)
    pts[2] = base._raw[0]
    _tweak_mul(ctx, pts + 2, s0.to_bytes(32, "big"))
    pts[3] = b._raw[0]
    _tweak_mul(ctx, pts + 3, (ORDER - c0).to_bytes(32, "big"))
    ok[1] = _combine(ctx, pts + 4, [pts + 2, pts + 3], 2)
    if not _combine(ctx, pts + 5, [b._raw, _MINUS_G._raw], 2):  # b == G
        return [
            *chaum_pedersen_commitments(a, b, base, c0, s0),
            *chaum_pedersen_commitments(a, IDENTITY, base, c1, s1),
        ]
    pts[2] = base._raw[0]
    _tweak_mul(ctx, pts + 2, s1.to_bytes(32, "big"))
    _tweak_mul(ctx, pts + 5, (ORDER - c1).to_bytes(32, "big"))
    ok[3] = _combine(ctx, pts + 6, [pts + 2, pts + 5], 2)
    for slot, (index, good) in enumerate(zip((0, 4, 1, 6), ok, strict=True)):
        if good:
            size[0] = 33
            _serialize(ctx, out + 33 * slot, size, pts + index, _COMPRESSED)
    raw = bytes(ffi.buffer(out, 132))
    return [raw[0:33], raw[33:66], raw[66:99], raw[99:132]]


IDENTITY = Point(None, _ZERO65)
GENERATOR = Point.base_mul(1)
_MINUS_G = -GENERATOR


def check_uncompressed(data: bytes, *, check: str) -> None:
    """Check that ``data`` is a run of 65-byte non-identity uncompressed points.

    One call of the native parser when it is built (its acceptance equals
    :meth:`Point.decode_uncompressed`'s, tests/core/test_msm.py), else one decode each; either
    way a bad point raises what :meth:`Point.decode_uncompressed` raises for it.

    Raises:
        InvalidPoint: a length that is not a multiple of 65, or a bad point.
    """
    if len(data) % 65:
        raise InvalidPoint("points must be 65 bytes each", check=check)
    if _native is not None:
        bad = _native.first_invalid_point(data)
        if bad < 0:
            return
        Point.decode_uncompressed(data[65 * bad : 65 * bad + 65], check=check)
        raise InvalidPoint("not a point on secp256k1", check=check)  # pragma: no cover
    for i in range(0, len(data), 65):
        Point.decode_uncompressed(data[i : i + 65], check=check)


@lru_cache(maxsize=64)
def decode_key(data: bytes, check: str = "election_public_key") -> Point:
    """Decode (and cache) a non-identity compressed public key such as the election key."""
    return Point.decode_compressed(data, check=check)


def seeded_scalars(seed: bytes) -> Callable[[], int]:
    """A deterministic scalar source for known-answer vectors and tests, never for ballots.

    The i-th scalar (i = 0, 1, …) is ``int(SHA-256("referendum/v1/test-rng" ‖ seed ‖ u64 i))
    mod ORDER``, skipping zero.
    """
    counter = 0

    def next_scalar() -> int:
        nonlocal counter
        while True:
            digest = hashlib.sha256(
                b"referendum/v1/test-rng" + seed + struct.pack(">Q", counter)
            ).digest()
            counter += 1
            k = int.from_bytes(digest, "big") % ORDER
            if k:
                return k

    return next_scalar
