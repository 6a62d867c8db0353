"""The secp256k1 group wrapper: encodings, identity handling, arithmetic, hashing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referendum_core.elgamal import Ciphertext, aggregate, aggregate_encoded, encrypt
from referendum_core.errors import CoreError, InvalidPoint, InvalidScalar
from referendum_core.group import (
    FIELD_PRIME,
    GENERATOR,
    IDENTITY,
    ORDER,
    Point,
    chaum_pedersen_commitments,
    hash_to_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
    transcript,
    zero_one_commitments,
)

scalars = st.integers(min_value=1, max_value=ORDER - 1)
any_scalars = st.integers(min_value=0, max_value=ORDER - 1)
SETTINGS = settings(max_examples=40, deadline=None)


def naive_mul(k: int) -> Point:
    """k·G by double-and-add over the library's addition: an oracle independent of tweak_mul."""
    acc, addend = IDENTITY, GENERATOR
    while k:
        if k & 1:
            acc = acc + addend
        addend = addend + addend
        k >>= 1
    return acc


def point_with_x(x: int) -> bytes:
    """Uncompressed encoding of a curve point with x-coordinate ``x`` (the even-y one)."""
    y = pow((x**3 + 7) % FIELD_PRIME, (FIELD_PRIME + 1) // 4, FIELD_PRIME)
    assert y * y % FIELD_PRIME == (x**3 + 7) % FIELD_PRIME
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


@SETTINGS
@given(any_scalars)
def test_base_mul_matches_double_and_add(k: int) -> None:
    """Fixed-base multiplication agrees with a naive double-and-add oracle."""
    assert Point.base_mul(k) == naive_mul(k)
    assert GENERATOR * k == naive_mul(k)


@SETTINGS
@given(scalars)
def test_encodings_round_trip(k: int) -> None:
    """Compressed and uncompressed encodings decode to the same point and re-encode equal."""
    p = Point.base_mul(k)
    c, u = p.to_compressed(), p.to_uncompressed()
    assert len(c) == 33 and len(u) == 65
    assert Point.decode_compressed(c).to_uncompressed() == u
    assert Point.decode_uncompressed(u).to_compressed() == c


@SETTINGS
@given(scalars, any_scalars, any_scalars)
def test_lincomb_base_matches_separate_multiplications(k: int, alpha: int, beta: int) -> None:
    """The ECDSA-recovery double multiplication equals alpha·P + beta·G computed separately."""
    p = Point.decode_uncompressed(Point.base_mul(k).to_uncompressed())
    assert p.lincomb_base(alpha, beta) == p * alpha + Point.base_mul(beta)


def test_lincomb_base_with_x_above_order() -> None:
    """A point whose x-coordinate is >= the group order takes the fallback path correctly."""
    p = Point.decode_uncompressed(point_with_x(ORDER))
    assert p.lincomb_base(5, 7) == p * 5 + Point.base_mul(7)
    assert p.lincomb_base(3, 0) == p * 3


def test_identity_arithmetic() -> None:
    """The explicit identity behaves as the neutral element everywhere."""
    g = GENERATOR
    assert (g - g).is_identity
    assert g + IDENTITY == g
    assert IDENTITY * 5 == IDENTITY
    assert (g * 0).is_identity
    assert -IDENTITY == IDENTITY
    assert Point.sum([]) == IDENTITY
    assert Point.sum([g, g * 2, -(g * 3)]) == IDENTITY
    assert IDENTITY.lincomb_base(3, 2) == g * 2


def test_identity_encoding_only_where_allowed() -> None:
    """The all-zero encodings decode to the identity only when the field allows it."""
    assert Point.decode_compressed(bytes(33), allow_identity=True).is_identity
    assert Point.decode_uncompressed(bytes(65), allow_identity=True).is_identity
    with pytest.raises(InvalidPoint):
        Point.decode_compressed(bytes(33))
    with pytest.raises(InvalidPoint):
        Point.decode_uncompressed(bytes(65))
    assert IDENTITY.to_compressed() == bytes(33)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x04" + bytes(63),  # short
        b"\x02" + bytes(64),  # compressed prefix on an uncompressed length
        b"\x06" + point_with_x(1)[1:],  # hybrid even prefix: valid in SEC1, not canonical here
        b"\x07" + point_with_x(1)[1:],
        b"\x04" + (1).to_bytes(32, "big") + (5).to_bytes(32, "big"),  # off the curve
        point_with_x(1)[:64] + bytes([point_with_x(1)[64] ^ 1]),  # y flipped: off the curve
        b"\x04" + (FIELD_PRIME + 1).to_bytes(32, "big") + point_with_x(1)[33:],  # x >= p
    ],
)
def test_bad_uncompressed_points_rejected(data: bytes) -> None:
    """Off-curve, non-canonical (hybrid, x >= p) and mis-sized encodings raise InvalidPoint."""
    with pytest.raises(InvalidPoint):
        Point.decode_uncompressed(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x04" + bytes(32),
        b"\x02" + (FIELD_PRIME + 1).to_bytes(32, "big"),  # x >= p
        b"\x02" + (5).to_bytes(32, "big"),  # 5^3 + 7 = 132 is not a square mod p
        GENERATOR.to_compressed()[:32],
    ],
)
def test_bad_compressed_points_rejected(data: bytes) -> None:
    """Compressed encodings with x >= p, no square root, bad prefix or length are rejected."""
    assert pow(132, (FIELD_PRIME - 1) // 2, FIELD_PRIME) != 1
    with pytest.raises(InvalidPoint):
        Point.decode_compressed(data)


@pytest.mark.parametrize("value", [ORDER, ORDER + 1, 2**256 - 1])
def test_scalars_at_or_above_order_rejected(value: int) -> None:
    """A 32-byte scalar at or above the group order raises InvalidScalar."""
    with pytest.raises(InvalidScalar):
        scalar_from_bytes(value.to_bytes(32, "big"))


def test_scalar_length_and_zero() -> None:
    """Scalars must be exactly 32 bytes, and non-zero where required."""
    with pytest.raises(InvalidScalar):
        scalar_from_bytes(bytes(31))
    with pytest.raises(InvalidScalar):
        scalar_from_bytes(bytes(32), nonzero=True)
    assert scalar_from_bytes(scalar_to_bytes(ORDER - 1)) == ORDER - 1


def test_transcript_is_unambiguous() -> None:
    """Moving a byte between parts, or between tag and parts, changes the transcript."""
    assert transcript(b"t", b"ab", b"c") != transcript(b"t", b"a", b"bc")
    assert transcript(b"ta", b"b") != transcript(b"t", b"ab")
    assert hash_to_scalar(b"x", b"1") != hash_to_scalar(b"y", b"1")


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 1), scalars), min_size=0, max_size=20), scalars)
def test_aggregate_adds_plaintexts(items: list[tuple[int, int]], sk: int) -> None:
    """Both aggregation paths sum plaintexts and randomness; an empty sum is the identity."""
    pk = Point.base_mul(sk)
    cts = [encrypt(pk, m, r) for m, r in items]
    total = aggregate(cts)
    assert total == aggregate_encoded(ct.to_bytes() for ct in cts)
    assert total.b - total.a * sk == Point.base_mul(sum(m for m, _ in items))
    assert total.a == Point.base_mul(sum(r for _, r in items))
    assert Ciphertext.from_bytes(total.to_bytes()) == total


def test_aggregate_encoded_rejects_bad_points() -> None:
    """The fast aggregation path still checks every point it parses."""
    good = encrypt(GENERATOR, 1, 5).to_bytes()
    with pytest.raises(InvalidPoint):
        aggregate_encoded([good, b"\x06" + good[1:]])
    with pytest.raises(CoreError):
        aggregate_encoded([good[:-1]])
    bad_b = good[:65] + b"\x04" + (1).to_bytes(32, "big") + (5).to_bytes(32, "big")
    with pytest.raises(InvalidPoint):
        aggregate_encoded([bad_b])


def test_aggregate_cancelling_to_identity() -> None:
    """Ciphertexts that cancel aggregate to the identity, which encodes and decodes."""
    ct = encrypt(GENERATOR * 3, 1, 9)
    neg = Ciphertext(-ct.a, -ct.b)
    total = aggregate([ct, neg])
    assert total.is_identity
    assert aggregate_encoded([ct.to_bytes(), neg.to_bytes()]).is_identity
    assert Ciphertext.from_bytes(bytes(130)).is_identity


def _naive_zero_one(
    a: Point, b: Point, pk: Point, c0: int, c1: int, s0: int, s1: int
) -> list[bytes]:
    b1 = b - GENERATOR
    return [
        (Point.base_mul(s0) - a * c0).to_compressed(),
        (pk * s0 - b * c0).to_compressed(),
        (Point.base_mul(s1) - a * c1).to_compressed(),
        (pk * s1 - b1 * c1).to_compressed(),
    ]


@SETTINGS
@given(scalars, scalars, scalars, st.lists(any_scalars, min_size=4, max_size=4))
def test_fused_zero_one_commitments_match_separate_arithmetic(
    ka: int, kb: int, kp: int, cs: list[int]
) -> None:
    """The fused 0/1 commitment computation equals plain multiplications and additions."""
    a, b, pk = Point.base_mul(ka), Point.base_mul(kb), Point.base_mul(kp)
    assert zero_one_commitments(a, b, pk, *cs) == _naive_zero_one(a, b, pk, *cs)
    single = chaum_pedersen_commitments(a, b, pk, cs[0], cs[2])
    assert list(single) == _naive_zero_one(a, b, pk, *cs)[:2]


def test_fused_zero_one_commitments_edge_cases() -> None:
    """Zero scalars, b = G, x(a) >= n and identity inputs all take a correct path."""
    high = Point.decode_uncompressed(point_with_x(ORDER))
    g, pk = GENERATOR, Point.base_mul(99)
    cases = [
        (g * 5, g * 7, pk, 0, 3, 4, 0),
        (g * 5, GENERATOR, pk, 1, 2, 3, 4),
        (high, g * 7, pk, 1, 2, 3, 4),
        (g * 5, g * 5 * 99 + g, pk, 2, 3, 4, 5),
    ]
    for a, b, key, c0, c1, s0, s1 in cases:
        assert zero_one_commitments(a, b, key, c0, c1, s0, s1) == _naive_zero_one(
            a, b, key, c0, c1, s0, s1
        )
    assert chaum_pedersen_commitments(IDENTITY, IDENTITY, pk, 3, 4) == (
        Point.base_mul(4).to_compressed(),
        (pk * 4).to_compressed(),
    )
