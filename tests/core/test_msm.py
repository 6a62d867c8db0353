"""The native multi-scalar multiplication, cross-checked against coincurve (libsecp256k1).

Skipped where the extension was not built (no compiler): the python backend is then the only
one, and ``tests/core/test_batch.py`` still runs it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referendum_core.group import FIELD_PRIME, GENERATOR, IDENTITY, ORDER, Point

native = pytest.importorskip("referendum_core._secp256k1")

SETTINGS = settings(max_examples=60, deadline=None)
scalars = st.integers(min_value=0, max_value=ORDER - 1)
edge_scalars = st.sampled_from([0, 1, 2, ORDER - 1, ORDER - 2, 2**128, 2**255, (ORDER - 1) // 2])
any_scalars = st.one_of(scalars, edge_scalars)
points = st.one_of(
    st.integers(min_value=1, max_value=ORDER - 1).map(Point.base_mul),
    st.just(IDENTITY),
    st.just(GENERATOR),
)


def coincurve_sum(terms: list[tuple[Point, int]]) -> Point:
    """Σ k·P by one tweak_mul a term and one combine: the oracle."""
    return Point.sum(p * k for p, k in terms)


def encode(terms: list[tuple[Point, int]]) -> tuple[bytes, bytes]:
    return (
        b"".join(p.to_uncompressed() for p, _ in terms),
        b"".join(k.to_bytes(32, "big") for _, k in terms),
    )


@SETTINGS
@given(st.lists(st.tuples(points, any_scalars), min_size=0, max_size=12))
def test_multi_mul_matches_coincurve(terms: list[tuple[Point, int]]) -> None:
    """Σ kᵢ·Pᵢ equals coincurve's, identity and edge scalars included; so does the identity test."""
    want = coincurve_sum(terms)
    pts, ks = encode(terms)
    assert native.multi_mul(pts, ks) == want.to_uncompressed()
    assert native.multi_mul_is_identity(pts, ks) is want.is_identity


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=100, max_value=700), st.randoms(use_true_random=False))
def test_large_multi_mul_matches_coincurve(n: int, rnd: object) -> None:
    """Hundreds of terms (Pippenger's wider windows) give coincurve's sum."""
    import random

    assert isinstance(rnd, random.Random)
    terms = [(Point.base_mul(rnd.randrange(1, ORDER)), rnd.randrange(ORDER)) for _ in range(n)]
    assert native.multi_mul(*encode(terms)) == coincurve_sum(terms).to_uncompressed()


@SETTINGS
@given(st.integers(min_value=1, max_value=ORDER - 1), any_scalars, st.integers(1, 40))
def test_repeated_point_and_cancellation(k: int, j: int, copies: int) -> None:
    """The same point many times sums to (Σk)·P; P·j + P·(n − j) cancels to the identity."""
    p = Point.base_mul(k)
    terms = [(p, j)] * copies
    assert native.multi_mul(*encode(terms)) == (p * (j * copies % ORDER)).to_uncompressed()
    cancel = [(p, j), (p, (ORDER - j) % ORDER)]
    assert native.multi_mul_is_identity(*encode(cancel))


def test_small_and_empty_inputs() -> None:
    """n = 0 is the identity; n = 1 is one multiplication; zero and n − 1 scalars."""
    g = GENERATOR
    assert native.multi_mul(b"", b"") == bytes(65)
    assert native.multi_mul_is_identity(b"", b"")
    assert native.multi_mul(*encode([(g, 1)])) == g.to_uncompressed()
    assert native.multi_mul(*encode([(g, ORDER - 1)])) == (-g).to_uncompressed()
    assert native.multi_mul(*encode([(g, 0)])) == bytes(65)
    assert native.multi_mul(*encode([(g, 1), (g, 1)])) == (g + g).to_uncompressed()
    assert native.multi_mul(*encode([(IDENTITY, 5)])) == bytes(65)


def _small_x_point_plus_p() -> bytes:
    x = 1
    while True:
        rhs = (x**3 + 7) % FIELD_PRIME
        y = pow(rhs, (FIELD_PRIME + 1) // 4, FIELD_PRIME)
        if y * y % FIELD_PRIME == rhs:
            return b"\x04" + (x + FIELD_PRIME).to_bytes(32, "big") + y.to_bytes(32, "big")
        x += 1


def test_bad_inputs_raise_value_error() -> None:
    """Mismatched lengths, scalars ≥ n, off-curve, non-canonical and hybrid points are refused."""
    g65 = GENERATOR.to_uncompressed()
    one = (1).to_bytes(32, "big")
    bad_points = [
        g65[:64] + bytes([g65[64] ^ 1]),  # off the curve
        bytes([6 + (g65[64] & 1)]) + g65[1:],  # hybrid prefix
        _small_x_point_plus_p(),  # a curve point with x written as x + p (not canonical)
        b"\x04" + FIELD_PRIME.to_bytes(32, "big") + g65[33:],  # x = p
        b"\x01" + bytes(64),  # a stray non-zero prefix with zero coordinates
    ]
    for point in bad_points:
        with pytest.raises(ValueError):
            native.multi_mul(point, one)
    for k in (ORDER, ORDER + 1, 2**256 - 1):
        with pytest.raises(ValueError):
            native.multi_mul(g65, k.to_bytes(32, "big"))
    for pts, ks in [(g65, b""), (g65 * 2, one), (g65[:64], one), (g65, one[:31])]:
        with pytest.raises(ValueError):
            native.multi_mul(pts, ks)


@SETTINGS
@given(st.integers(min_value=1, max_value=ORDER - 1))
def test_decode_point_matches_coincurve(k: int) -> None:
    """Both SEC1 forms of a point decode to its uncompressed encoding."""
    p = Point.base_mul(k)
    assert native.decode_point(p.to_compressed()) == p.to_uncompressed()
    assert native.decode_point(p.to_uncompressed()) == p.to_uncompressed()


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(
        st.binary(min_size=0, max_size=70),
        st.tuples(st.sampled_from([0, 2, 3, 4, 6, 7]), st.binary(min_size=32, max_size=32)).map(
            lambda t: bytes([t[0]]) + t[1]
        ),
        st.tuples(st.sampled_from([0, 4, 6]), st.binary(min_size=64, max_size=64)).map(
            lambda t: bytes([t[0]]) + t[1]
        ),
        st.integers(min_value=FIELD_PRIME - 3, max_value=2**256 - 1).map(
            lambda x: b"\x02" + x.to_bytes(32, "big")
        ),
    )
)
def test_parser_fuzz_agrees_with_coincurve(data: bytes) -> None:
    """Fuzz target over the point parser: on any bytes it accepts exactly what the core's
    decoder (libsecp256k1) accepts, as the same point, and otherwise raises ValueError."""
    try:
        if len(data) == 33:
            want: bytes | None = Point.decode_compressed(data).to_uncompressed()
        else:
            want = Point.decode_uncompressed(data).to_uncompressed()
    except Exception:
        want = None
    try:
        got: bytes | None = native.decode_point(data)
    except ValueError:
        got = None
    assert got == want
    if len(data) == 65:  # the MSM's own parser: the same acceptance (it also takes 65 zeros)
        try:
            native.multi_mul(data, (1).to_bytes(32, "big"))
            parsed = True
        except ValueError:
            parsed = False
        assert parsed == (want is not None or data == bytes(65))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_scalar_parser_fuzz(raw: bytes) -> None:
    """Fuzz target over the scalar parser: any 32 bytes below n are k, the rest are refused."""
    k = int.from_bytes(raw, "big")
    if k < ORDER:
        assert (
            native.multi_mul(GENERATOR.to_uncompressed(), raw)
            == Point.base_mul(k).to_uncompressed()
        )
    else:
        with pytest.raises(ValueError):
            native.multi_mul(GENERATOR.to_uncompressed(), raw)


@settings(max_examples=10, deadline=None)
@given(
    st.integers(min_value=1, max_value=ORDER - 1),
    any_scalars,
    st.integers(100, 400),
    st.integers(0, 3),
)
def test_many_equal_terms_take_the_affine_rounds(k: int, j: int, copies: int, flips: int) -> None:
    """Hundreds of equal terms (bucket doublings and P + (−P) inside the batched affine
    rounds, beyond the small-input path) and some negated copies sum as coincurve says."""
    p = Point.base_mul(k)
    terms = [(p, j)] * copies + [(-p, j)] * flips + [(p, (ORDER - j) % ORDER)] * flips
    want = p * (j * (copies - 2 * flips) % ORDER)
    assert want == coincurve_sum(terms)
    assert native.multi_mul(*encode(terms)) == want.to_uncompressed()
