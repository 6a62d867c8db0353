"""A naive edwards25519 written from RFC 8032 §5.1 alone, as a test oracle for the roll's key check.

Extended coordinates on Python ints (slow, not constant time), no libsodium. ``decode`` follows
libsodium's decompression: y is taken modulo p (the caller decides on canonical encodings) and
x = 0 with the sign bit set decodes to x = 0 (the points with x = 0 have small order anyway).
"""

from __future__ import annotations

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int, int, int]  # (X, Y, Z, T): x = X/Z, y = Y/Z, x·y = T/Z
IDENTITY: Point = (0, 1, 1, 0)


def decode(data: bytes) -> Point | None:
    """The point a 32-byte encoding names, or None when no x satisfies the curve equation."""
    y = (int.from_bytes(data, "little") & (2**255 - 1)) % P
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P == (-u) % P:
        x = x * SQRT_M1 % P
    if v * x * x % P != u:
        return None
    if x & 1 != data[31] >> 7:
        x = (P - x) % P
    return (x, y, 1, x * y % P)


def add(p: Point, q: Point) -> Point:
    """p + q (RFC 8032 §5.1.4, a = -1)."""
    a = (p[1] - p[0]) * (q[1] - q[0]) % P
    b = (p[1] + p[0]) * (q[1] + q[0]) % P
    c = 2 * D * p[3] * q[3] % P
    d = 2 * p[2] * q[2] % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def mul(k: int, p: Point) -> Point:
    """k·p by double-and-add."""
    acc = IDENTITY
    while k:
        if k & 1:
            acc = add(acc, p)
        p = add(p, p)
        k >>= 1
    return acc


def is_identity(p: Point) -> bool:
    return p[0] % P == 0 and (p[1] - p[2]) % P == 0


def encode(p: Point) -> bytes:
    """The canonical encoding: y, with the sign (low bit) of x in the top bit."""
    z = pow(p[2], -1, P)
    x, y = p[0] * z % P, p[1] * z % P
    return (y | (x & 1) << 255).to_bytes(32, "little")


def verifiable_key(data: bytes) -> bool:
    """Whether a signature can verify under ``data`` in libsodium: 32 bytes, y below p, on
    the curve, not of small order (8·A is not the identity). The subgroup is not asked for."""
    if len(data) != 32 or int.from_bytes(data, "little") & (2**255 - 1) >= P:
        return False
    point = decode(data)
    return point is not None and not is_identity(mul(8, point))


def in_prime_order_subgroup(data: bytes) -> bool:
    """Whether ``data`` decodes to a point P with L·P the identity."""
    point = decode(data)
    return point is not None and is_identity(mul(L, point))
