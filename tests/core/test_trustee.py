"""Trustees: the DKG, threshold decryption with proofs, Lagrange combination, decoding."""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.public import PrivateKey

from referendum_core.elgamal import Ciphertext, aggregate, encrypt
from referendum_core.errors import DecodingError, TrusteeError
from referendum_core.group import GENERATOR, IDENTITY, ORDER, Point, seeded_scalars
from referendum_core.proofs import DleqProof
from referendum_core.trustee import (
    DealerCommitment,
    DecryptionShare,
    TrusteeParams,
    combine_decryption,
    dealer_commitment,
    decode,
    decrypt_share,
    election_public_key,
    lagrange_coefficient,
    new_dealer,
    open_share,
    seal_share,
    share_for,
    trustee_share,
    verification_key,
    verify_decryption_share,
    verify_share,
)

PARAMS = TrusteeParams("ref-2026", 3, 5)


@dataclasses.dataclass
class Ceremony:
    """A completed DKG: the commitments, every trustee's share and (for the oracle) the key."""

    params: TrusteeParams
    commitments: list[DealerCommitment]
    shares: dict[int, int]
    secret_key: int


def run_ceremony(params: TrusteeParams, seed: bytes = b"ceremony") -> Ceremony:
    """Every trustee deals, every trustee checks what it receives and keeps its share."""
    rng = seeded_scalars(seed)
    dealers = [new_dealer(params, i, rng) for i in range(1, params.trustees + 1)]
    commitments = [dealer_commitment(params, d, rng) for d in dealers]
    shares = {
        t: trustee_share(params, commitments, t, {d.index: share_for(d, t) for d in dealers})
        for t in range(1, params.trustees + 1)
    }
    secret_key = sum(d.coefficients[0] for d in dealers) % ORDER  # test oracle only
    return Ceremony(params, commitments, shares, secret_key)


CEREMONY = run_ceremony(PARAMS)


def make_tally(counts: list[int], seed: bytes = b"tally") -> list[Ciphertext]:
    """One aggregate ciphertext per option, built from individual 0/1 ballots."""
    rng = seeded_scalars(seed)
    pk = election_public_key(PARAMS, CEREMONY.commitments)
    tally = []
    for count in counts:
        cts = [encrypt(pk, 1, rng()) for _ in range(count)] + [encrypt(pk, 0, rng())]
        tally.append(aggregate(cts))
    return tally


def test_election_key_matches_shares_and_no_dealer_holds_it() -> None:
    """PK = sk·G for the sum of dealers' secrets; each trustee's X_l = x_l·G."""
    pk = election_public_key(PARAMS, CEREMONY.commitments)
    assert pk == Point.base_mul(CEREMONY.secret_key)
    for t, x in CEREMONY.shares.items():
        assert verification_key(CEREMONY.commitments, t) == Point.base_mul(x)
        assert x != CEREMONY.secret_key


@settings(max_examples=20, deadline=None)
@given(st.data())
def test_any_k_trustees_decrypt_the_right_counts(data: st.DataObject) -> None:
    """Any subset of k (or more) trustees recovers every option's count."""
    counts = data.draw(st.lists(st.integers(0, 6), min_size=1, max_size=3))
    size = data.draw(st.integers(PARAMS.threshold, PARAMS.trustees))
    chosen = data.draw(st.permutations(range(1, 6)))[:size]
    tally = make_tally(counts)
    rng = seeded_scalars(b"decrypt")
    shares = [decrypt_share(PARAMS, t, CEREMONY.shares[t], tally, rng) for t in chosen]
    assert combine_decryption(PARAMS, CEREMONY.commitments, tally, shares, 100) == counts


def test_k_minus_one_trustees_cannot_decrypt() -> None:
    """k−1 shares are refused, and interpolating them anyway does not give the count."""
    tally = make_tally([4])
    for subset in itertools.combinations(range(1, 6), PARAMS.threshold - 1):
        shares = [decrypt_share(PARAMS, t, CEREMONY.shares[t], tally) for t in subset]
        with pytest.raises(TrusteeError) as info:
            combine_decryption(PARAMS, CEREMONY.commitments, tally, shares, 100)
        assert info.value.check == "threshold"
        lambdas = {t: lagrange_coefficient(t, subset) for t in subset}
        guess = tally[0].b - Point.sum(s.shares[0] * lambdas[s.trustee] for s in shares)
        with pytest.raises(DecodingError):
            decode(guess, 1000)


def test_duplicate_shares_do_not_count_twice() -> None:
    """The same trustee's share sent k times is still one share."""
    tally = make_tally([2])
    share = decrypt_share(PARAMS, 1, CEREMONY.shares[1], tally)
    with pytest.raises(TrusteeError):
        combine_decryption(PARAMS, CEREMONY.commitments, tally, [share] * 3, 100)


@pytest.mark.parametrize("kind", ["wrong-secret", "tampered-point", "swapped-proof"])
def test_wrong_decryption_share_caught_and_named(kind: str) -> None:
    """A bad partial decryption fails its proof and the error names the trustee."""
    tally = make_tally([3, 1])
    good = decrypt_share(PARAMS, 4, CEREMONY.shares[4], tally)
    if kind == "wrong-secret":
        bad = decrypt_share(PARAMS, 4, CEREMONY.shares[4] + 1, tally)
    elif kind == "tampered-point":
        bad = dataclasses.replace(good, shares=(good.shares[0] + GENERATOR, good.shares[1]))
    else:
        bad = dataclasses.replace(good, proofs=(good.proofs[1], good.proofs[0]))
    with pytest.raises(TrusteeError) as info:
        verify_decryption_share(PARAMS, CEREMONY.commitments, tally, bad)
    assert info.value.check.startswith("trustee[4].decryption")
    others = [decrypt_share(PARAMS, t, CEREMONY.shares[t], tally) for t in (1, 2)]
    with pytest.raises(TrusteeError) as info:
        combine_decryption(PARAMS, CEREMONY.commitments, tally, [*others, bad], 100)
    assert "trustee[4]" in info.value.check


def test_share_for_another_trustee_index_rejected() -> None:
    """A share valid for trustee 2 presented as trustee 3's fails verification."""
    tally = make_tally([1])
    share = decrypt_share(PARAMS, 2, CEREMONY.shares[2], tally)
    with pytest.raises(TrusteeError):
        verify_decryption_share(
            PARAMS, CEREMONY.commitments, tally, dataclasses.replace(share, trustee=3)
        )


def test_bad_dealer_share_caught_and_named() -> None:
    """A dealer sending a share off its polynomial is named by the Feldman check."""
    rng = seeded_scalars(b"bad-dealer")
    dealers = [new_dealer(PARAMS, i, rng) for i in range(1, 6)]
    commitments = [dealer_commitment(PARAMS, d, rng) for d in dealers]
    received = {d.index: share_for(d, 2) for d in dealers}
    received[5] = (received[5] + 1) % ORDER
    with pytest.raises(TrusteeError) as info:
        trustee_share(PARAMS, commitments, 2, received)
    assert info.value.check == "trustee[5].share"
    with pytest.raises(TrusteeError):
        verify_share(PARAMS, commitments[0], 3, share_for(dealers[0], 2))


def test_bad_dealer_commitments_caught_and_named() -> None:
    """Wrong commitment count, a stolen proof of knowledge, or missing dealers are refused."""
    rng = seeded_scalars(b"bad-commitments")
    dealers = [new_dealer(PARAMS, i, rng) for i in range(1, 6)]
    commitments = [dealer_commitment(PARAMS, d, rng) for d in dealers]
    short = dataclasses.replace(commitments[1], commitments=commitments[1].commitments[:2])
    rogue = dataclasses.replace(  # a key chosen to cancel others, without a proof for it
        commitments[2],
        commitments=(-commitments[0].commitments[0], *commitments[2].commitments[1:]),
    )
    for bad, name in ((short, "trustee[2].commitment"), (rogue, "trustee[3].commitment")):
        changed = [bad if c.index == bad.index else c for c in commitments]
        with pytest.raises(TrusteeError) as info:
            election_public_key(PARAMS, changed)
        assert info.value.check == name
    with pytest.raises(TrusteeError):
        election_public_key(PARAMS, commitments[:4])
    with pytest.raises(TrusteeError):
        election_public_key(PARAMS, [*commitments[:4], commitments[0]])


def test_sealed_shares_open_only_for_recipient() -> None:
    """A sealed share opens with the recipient's transport key and not with another."""
    alice, bob = PrivateKey.generate(), PrivateKey.generate()
    sealed = seal_share(bytes(alice.public_key), 12345)
    assert open_share(bytes(alice), sealed, dealer=1) == 12345
    with pytest.raises(TrusteeError) as info:
        open_share(bytes(bob), sealed, dealer=1)
    assert info.value.check == "trustee[1].share"


def test_json_round_trip() -> None:
    """Commitments and decryption shares survive their JSON forms unchanged."""
    tally = make_tally([1])
    share = decrypt_share(PARAMS, 1, CEREMONY.shares[1], tally)
    assert DecryptionShare.from_json(share.to_json()) == share
    for c in CEREMONY.commitments:
        assert DealerCommitment.from_json(c.to_json()) == c


def test_empty_tally_is_identity_and_decodes_to_zero() -> None:
    """An option with no ballots (the identity ciphertext) decrypts, with proofs, to 0."""
    tally = [Ciphertext(IDENTITY, IDENTITY)]
    shares = [decrypt_share(PARAMS, t, CEREMONY.shares[t], tally) for t in (1, 3, 5)]
    assert shares[0].shares[0].is_identity
    share_json = DecryptionShare.from_json(shares[0].to_json())
    assert share_json.shares[0].is_identity
    assert combine_decryption(PARAMS, CEREMONY.commitments, tally, shares, 10) == [0]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000_000))
def test_decode_inverts_within_bound(m: int) -> None:
    """Baby-step giant-step recovers any m in [0, 10,000,000]."""
    assert decode(Point.base_mul(m), 10_000_000) == m


@pytest.mark.parametrize(("m", "bound"), [(101, 100), (ORDER - 1, 10**6), (10**6 + 1, 10**6)])
def test_decode_outside_bound_raises(m: int, bound: int) -> None:
    """A value just past the bound, or −1, raises DecodingError rather than a wrong count."""
    with pytest.raises(DecodingError):
        decode(Point.base_mul(m), bound)
    assert decode(Point.base_mul(bound), bound) == bound


def test_params_checked() -> None:
    """Impossible thresholds and out-of-range indices are refused."""
    for params in (TrusteeParams("r", 0, 3), TrusteeParams("r", 4, 3), TrusteeParams("r", 1, 256)):
        with pytest.raises(TrusteeError):
            new_dealer(params, 1)
    with pytest.raises(TrusteeError):
        new_dealer(PARAMS, 6)
    with pytest.raises(TrusteeError):
        verify_decryption_share(PARAMS, CEREMONY.commitments, [], DecryptionShare(0, (), ()))


def test_lagrange_interpolates_polynomial_at_zero() -> None:
    """Σ λ_l·f(t) over any k points equals f(0) for a random degree-(k−1) polynomial."""
    rnd = random.Random(7)
    coefficients = [rnd.randrange(ORDER) for _ in range(3)]

    def f(x: int) -> int:
        return sum(a * pow(x, j, ORDER) for j, a in enumerate(coefficients)) % ORDER

    for subset in itertools.combinations(range(1, 7), 3):
        assert (
            sum(lagrange_coefficient(t, subset) * f(t) for t in subset) % ORDER == (coefficients[0])
        )


def test_dleq_proof_bytes_checked() -> None:
    """A decryption share's proof with a scalar at the group order is refused when parsed."""
    share = decrypt_share(PARAMS, 1, CEREMONY.shares[1], make_tally([1])).to_json()
    proofs = share["proofs"]
    assert isinstance(proofs, list)
    bad = {**share, "proofs": [ORDER.to_bytes(32, "big").hex() + proofs[0][64:]]}
    with pytest.raises(Exception) as info:
        DecryptionShare.from_json(bad)
    assert type(info.value).__module__ == "referendum_core.errors"
    assert DleqProof.from_bytes(bytes.fromhex(proofs[0])) is not None
