"""The roll's credential-key check: exactly the keys libsodium's signature verification can
accept, checked against a naive edwards25519 written from RFC 8032 and against libsodium."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import (
    crypto_core_ed25519_add,
    crypto_core_ed25519_is_valid_point,
    crypto_core_ed25519_scalar_add,
    crypto_core_ed25519_scalar_mul,
    crypto_core_ed25519_scalar_reduce,
    crypto_scalarmult_ed25519_base_noclamp,
    crypto_sign_open,
    crypto_sign_seed_keypair,
)
from nacl.exceptions import BadSignatureError

from referendum_core.credential import (
    bad_key_positions,
    credential_from_did,
    credential_to_did,
    is_valid_credential_key,
    parse_credential,
)
from tests.core import ed25519_reference as ref

P = ref.P
Y8 = 2707385501144840649318225287225658788936804267575313519463743609750303402022
SMALL_ORDER_Y = (0, 1, P - 1, Y8, P - Y8)  # the y of all 8 points of order 1, 2, 4 or 8


def encoding(y: int, sign: int = 0) -> bytes:
    """The 32 bytes encoding y (any value below 2^255) with the given sign bit."""
    return (y | sign << 255).to_bytes(32, "little")


SMALL_ORDER = [encoding(y, s) for y in SMALL_ORDER_Y for s in (0, 1)]
# The non-canonical aliases p and p + 1 of y = 0 and y = 1 (the others do not fit in 255 bits).
SMALL_ORDER_ALIASES = [encoding(P + y, s) for y in (0, 1) for s in (0, 1)]
TORSION = {2: encoding(P - 1), 4: encoding(0), 8: encoding(Y8)}  # a point of each order


def honest_key(i: int) -> bytes:
    return bytes(crypto_sign_seed_keypair(i.to_bytes(32, "big"))[0])


def scalar(seed: bytes) -> bytes:
    return bytes(crypto_core_ed25519_scalar_reduce(hashlib.sha512(seed).digest()))


def sign_with(a: bytes, key: bytes, message: bytes, r: bytes) -> bytes:
    """An Ed25519 signature (RFC 8032 §5.1.6, nonce ``r`` given) by scalar ``a`` under the
    encoding ``key``, whatever point it names: R = r·B, S = r + H(R ‖ key ‖ M)·a."""
    big_r = bytes(crypto_scalarmult_ed25519_base_noclamp(r))
    k = scalar(big_r + key + message)
    return big_r + bytes(crypto_core_ed25519_scalar_add(r, crypto_core_ed25519_scalar_mul(k, a)))


def message_with_challenge_divisible_by_8(big_r: bytes, key: bytes) -> bytes:
    """A message whose challenge k = H(R ‖ key ‖ M) is a multiple of 8, so k·T vanishes for
    every torsion point T (cofactorless verifiers then accept what cofactored ones do)."""
    for i in itertools.count():
        message = b"ballot %d" % i
        if int.from_bytes(scalar(big_r + key + message), "little") % 8 == 0:
            return message
    raise AssertionError("unreachable")


def test_signing_helper_makes_signatures_libsodium_accepts() -> None:
    """The oracle's own check: a signature by sign_with under an honest key verifies."""
    a = scalar(b"voter")
    key = bytes(crypto_scalarmult_ed25519_base_noclamp(a))
    signed = sign_with(a, key, b"ballot", scalar(b"nonce")) + b"ballot"
    assert crypto_sign_open(signed, key) == b"ballot"


@pytest.mark.parametrize("order", sorted(TORSION))
def test_libsodium_verifies_signatures_under_mixed_order_keys(order: int) -> None:
    """The premise of leaving the subgroup check out: a key outside the prime-order subgroup
    (an honest key plus a torsion point) carries signatures libsodium's verification accepts,
    so refusing it at import would protect no ballot. The import accepts it;
    crypto_core_ed25519_is_valid_point, which the import used to call, refuses it."""
    a = scalar(b"mixed voter")
    key = bytes(crypto_core_ed25519_add(crypto_scalarmult_ed25519_base_noclamp(a), TORSION[order]))
    assert not ref.in_prime_order_subgroup(key)
    r = scalar(b"mixed nonce")
    message = message_with_challenge_divisible_by_8(crypto_scalarmult_ed25519_base_noclamp(r), key)
    assert crypto_sign_open(sign_with(a, key, message, r) + message, key) == message
    assert is_valid_credential_key(key)
    assert not crypto_core_ed25519_is_valid_point(key)


@pytest.mark.parametrize("key", SMALL_ORDER + SMALL_ORDER_ALIASES, ids=lambda k: k.hex()[:8])
def test_small_order_keys_are_refused_like_libsodium_refuses_them(key: bytes) -> None:
    """Under a small-order key A anyone can forge: R = r·B and S = r satisfy S·B = R + k·A
    once 8 divides k. libsodium's verification refuses the forgery (it refuses the key), and
    so does the import, for every small-order encoding, both sign bits (x = 0 with the sign
    bit set included) and the non-canonical aliases of y = 0 and y = 1."""
    point = ref.decode(key)
    assert point is not None and ref.is_identity(ref.mul(8, point))
    r = scalar(b"forger")
    big_r = bytes(crypto_scalarmult_ed25519_base_noclamp(r))
    message = message_with_challenge_divisible_by_8(big_r, key)
    k = int.from_bytes(scalar(big_r + key + message), "little")
    base = ref.decode(bytes.fromhex("58" + "66" * 31))
    assert base is not None
    s_b = ref.mul(int.from_bytes(r, "little"), base)  # S·B, and R = r·B is the same point
    assert ref.encode(s_b) == big_r
    assert ref.encode(ref.add(s_b, ref.mul(k, point))) == big_r  # S·B = R + k·A holds
    with pytest.raises(BadSignatureError):
        crypto_sign_open(big_r + r + message, key)
    assert not is_valid_credential_key(key)


def test_key_classes() -> None:
    """Honest keys pass; non-canonical y (y ≥ p, either sign), points off the curve and wrong
    lengths are refused; random strings pass exactly when the reference finds a point of
    large order."""
    for i in range(20):
        assert is_valid_credential_key(honest_key(i))
    for y in (P, P + 2, P + 5, 2**255 - 1):
        for sign in (0, 1):
            assert not is_valid_credential_key(encoding(y, sign))
    off_curve = [
        k for k in (hashlib.sha256(b"%d" % i).digest() for i in range(64)) if ref.decode(k) is None
    ]
    assert len(off_curve) > 10
    assert not any(is_valid_credential_key(k) for k in off_curve)
    assert not is_valid_credential_key(honest_key(5)[:31])
    assert not is_valid_credential_key(honest_key(5) + b"\x00")
    assert not is_valid_credential_key(b"")


def _key_strategy() -> st.SearchStrategy[bytes]:
    """Keys of every class: random strings, honest, mixed order, small order (and aliases),
    non-canonical y ≥ p (some of them on the curve), y just above p."""
    return st.one_of(
        st.binary(min_size=32, max_size=32),
        st.integers(0, 10**6).map(honest_key),
        st.tuples(st.integers(0, 10**6), st.sampled_from(sorted(TORSION.values()))).map(
            lambda t: bytes(crypto_core_ed25519_add(honest_key(t[0]), t[1]))
        ),
        st.sampled_from(SMALL_ORDER + SMALL_ORDER_ALIASES),
        st.tuples(st.integers(P, 2**255 - 1), st.integers(0, 1)).map(lambda t: encoding(*t)),
        st.tuples(st.integers(0, 18), st.integers(0, 1)).map(lambda t: encoding(P + t[0], t[1])),
    )


@settings(max_examples=300, deadline=None)
@given(_key_strategy())
def test_key_check_equals_the_reference(key: bytes) -> None:
    """is_valid_credential_key is exactly "a signature can verify under this key" computed on
    the RFC 8032 reference curve: canonical, on the curve, 8·A not the identity."""
    assert is_valid_credential_key(key) == ref.verifiable_key(key)


@settings(max_examples=100, deadline=None)
@given(_key_strategy())
def test_key_check_is_libsodium_full_validation_minus_the_subgroup(key: bytes) -> None:
    """libsodium's crypto_core_ed25519_is_valid_point accepts exactly the keys the import
    accepts that also lie in the prime-order subgroup."""
    expected = is_valid_credential_key(key) and ref.in_prime_order_subgroup(key)
    assert bool(crypto_core_ed25519_is_valid_point(key)) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(_key_strategy(), max_size=9))
def test_bad_key_positions_equals_the_key_check(keys: list[bytes]) -> None:
    """The bulk check (pairs, byte screen) finds exactly the keys the one-key check refuses,
    whatever their place in a pair and the count's parity."""
    expected = [i for i, key in enumerate(keys) if not is_valid_credential_key(key)]
    assert bad_key_positions(b"".join(keys)) == expected


def test_bad_key_positions_in_a_long_run() -> None:
    """One bad key among many honest ones is found wherever it sits."""
    keys = [honest_key(i) for i in range(41)]
    off_curve = next(
        k for k in (hashlib.sha256(b"%d" % i).digest() for i in range(64)) if ref.decode(k) is None
    )
    for position in (0, 1, 20, 39, 40):
        for bad in (SMALL_ORDER[4], encoding(P + 3), off_curve):
            trial = [*keys[:position], bad, *keys[position + 1 :]]
            assert bad_key_positions(b"".join(trial)) == [position]
    assert bad_key_positions(b"") == []
    with pytest.raises(ValueError):
        bad_key_positions(bytes(33))


# --- did:key ----------------------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def naive_did(key: bytes) -> str:
    """did:key from the W3C spelling rule, digit by digit (leading 0xed: no "1" padding)."""
    n, digits = int.from_bytes(b"\xed\x01" + key, "big"), ""
    while n:
        n, r = divmod(n, 58)
        digits = _B58[r] + digits
    return "did:key:z" + digits


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_did_key_round_trips_and_matches_the_spelling_rule(key: bytes) -> None:
    """Every 32-byte key has one did:key, z6Mk..., the same as the naive rule, read back to the
    key; parse_credential reads it and the hex spelling (either case) to the same key."""
    did = credential_to_did(key)
    assert did == naive_did(key) and did.startswith("did:key:z6Mk")
    assert credential_from_did(did) == key
    assert parse_credential(did) == parse_credential(key.hex()) == key
    assert parse_credential(key.hex().upper()) == key


def test_known_did_key_of_the_rfc_8032_test_key() -> None:
    """RFC 8032 §7.1 test 1's public key has the did:key published for it in the did:key
    method's examples."""
    key = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    assert credential_to_did(key) == "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "did:key:z",
        "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",  # a secp256k1 did:key
        "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMs",  # one digit short
        "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsww",  # one digit more
        "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMs0",  # 0 is not base58
        "did:key:z1" + "6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw",  # leading zero byte
        "did:web:example.org",
        "00" * 31,
        "00" * 33,
        "zz" * 32,
    ],
)
def test_malformed_credentials_are_none(text: str) -> None:
    """Another key type, a wrong length, a bad digit, a non-canonical spelling: None."""
    assert parse_credential(text) is None
