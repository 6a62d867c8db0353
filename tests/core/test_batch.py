"""Batch verification gives every ballot exactly the verdict of the individual path.

Mixed batches of valid ballots and ballots with each defect the individual path catches
(``tests/core/test_ballot.py``), one, several and all bad, on both backends.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from referendum_core.ballot import (
    BallotSpec,
    VerifiedBallot,
    prepare_record,
    verify_record,
)
from referendum_core.ballot_codec import BallotRecord, ballot_from_json, encode_body
from referendum_core.batch import (
    NATIVE_AVAILABLE,
    BallotInput,
    Verdict,
    claims_hold,
    resolve_backend,
    verify_ballots,
    verify_canonical_ballots,
)
from referendum_core.client import make_ballot, voter_public_key
from referendum_core.errors import CoreError
from referendum_core.group import GENERATOR, ORDER, seeded_scalars
from tests.core.test_ballot import (
    ALICE,
    ALICE_SECRET,
    BOB,
    BOB_SECRET,
    _forged_ballot,
    decode_canonical,
    resign,
    spec_of,
)

YES_NO = spec_of(2, 1, 1)
CHOOSE = spec_of(4, 1, 3)  # 4 ciphertexts, a 0/1 proof each and a 3-branch sum proof
BACKENDS = ["python", "native"] if NATIVE_AVAILABLE else ["python"]

Defect = Callable[[BallotSpec, BallotRecord], BallotInput]


def _input(record: BallotRecord, secret: bytes = ALICE_SECRET) -> BallotInput:
    canonical = resign(record, secret)
    parsed = decode_canonical(canonical)
    return BallotInput(parsed, canonical[:-64])


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


def _proof0(record: BallotRecord, proof: bytes) -> BallotRecord:
    return dataclasses.replace(record, proofs=(proof, *record.proofs[1:]))


def _ct0(record: BallotRecord, ct: bytes) -> BallotRecord:
    return dataclasses.replace(record, ciphertexts=(ct, *record.ciphertexts[1:]))


def _sum_response_flipped(spec: BallotSpec, record: BallotRecord) -> BallotInput:
    assert record.sum_proof is not None
    return _input(dataclasses.replace(record, sum_proof=_flip(record.sum_proof, -1)))


def _forged_two(spec: BallotSpec, record: BallotRecord) -> BallotInput:
    values = [2] + [0] * (len(record.ciphertexts) - 1)
    return _input(decode_canonical(_forged_ballot(spec, values, 1)))


DEFECTS: dict[str, Defect] = {
    # each: (spec, a valid record by alice) -> a ballot the individual path refuses
    "referendum": lambda s, r: _input(dataclasses.replace(r, referendum_id="elsewhere")),
    "ciphertexts.count": lambda s, r: _input(
        dataclasses.replace(r, ciphertexts=r.ciphertexts * 2, proofs=r.proofs * 2)
    ),
    # alice's signature, the ballot naming bob's credential: the signature does not verify
    "signature": lambda s, r: BallotInput(
        dataclasses.replace(r, credential=BOB),
        encode_body(dataclasses.replace(r, credential=BOB)),
    ),
    "credential-length": lambda s, r: BallotInput(
        dataclasses.replace(r, credential=bytes(31)), encode_body(r)
    ),
    "signature-bytes": lambda s, r: BallotInput(
        dataclasses.replace(r, signature=_flip(r.signature, 3)), encode_body(r)
    ),
    "option.a-off-curve": lambda s, r: _input(_ct0(r, _flip(r.ciphertexts[0], 64))),
    "option.b-identity": lambda s, r: _input(_ct0(r, r.ciphertexts[0][:65] + bytes(65))),
    "proof-scalar-above-order": lambda s, r: _input(
        _proof0(r, r.proofs[0][:260] + ORDER.to_bytes(32, "big") + r.proofs[0][292:])
    ),
    "proof-commitment-off-curve": lambda s, r: _input(_proof0(r, _flip(r.proofs[0], 64))),
    "proof-commitment-swapped": lambda s, r: _input(
        _proof0(r, r.proofs[0][:195] + GENERATOR.to_uncompressed() + r.proofs[0][260:])
    ),
    "proof-challenge-changed": lambda s, r: _input(_proof0(r, _flip(r.proofs[0], 291))),
    "proof-response-flipped": lambda s, r: _input(_proof0(r, _flip(r.proofs[0], 387))),
    "proof-response0-flipped": lambda s, r: _input(_proof0(r, _flip(r.proofs[0], 355))),
    "copied-under-bob": lambda s, r: _input(dataclasses.replace(r, credential=BOB), BOB_SECRET),
    "encrypts-two": _forged_two,
}
SUM_DEFECTS: dict[str, Defect] = {
    "sum-response-flipped": _sum_response_flipped,
    "sum-proof-missing": lambda s, r: _input(dataclasses.replace(r, sum_proof=None)),
    "sum-a-identity": lambda s, r: _input(
        dataclasses.replace(
            r,
            ciphertexts=(r.ciphertexts[0], _negated_a(r.ciphertexts[0]), *r.ciphertexts[2:]),
        )
    ),
}


def _negated_a(ct: bytes) -> bytes:
    p = 2**256 - 2**32 - 977
    y = int.from_bytes(ct[33:65], "big")
    return ct[:33] + ((p - y) % p).to_bytes(32, "big") + ct[65:]


def _good(spec: BallotSpec, count: int, seed: int) -> list[BallotRecord]:
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        k = len(spec.options)
        chosen = (
            1 if spec.max_selections == 1 else rnd.randint(spec.min_selections, spec.max_selections)
        )
        picks = set(rnd.sample(range(k), chosen))
        choice = [int(j in picks) for j in range(k)]
        body = make_ballot(
            spec, ALICE_SECRET, choice, rng=seeded_scalars(b"batch/%d/%d" % (seed, i))
        )
        out.append(ballot_from_json(body))
    return out


_POOL: dict[BallotSpec, list[BallotRecord]] = {}


def pool(spec: BallotSpec) -> list[BallotRecord]:
    if spec not in _POOL:
        _POOL[spec] = _good(spec, 12, 1)
    return _POOL[spec]


def individual(spec: BallotSpec, ballot: BallotInput) -> Verdict:
    try:
        return verify_record(spec, ballot.record, ballot.body_bytes)
    except CoreError as exc:
        return exc


def same(got: Verdict, want: Verdict) -> bool:
    if isinstance(want, VerifiedBallot):
        return got == want
    return (
        isinstance(got, CoreError)
        and type(got) is type(want)
        and got.check == want.check
        and str(got) == str(want)
    )


def assert_batch_matches(spec: BallotSpec, ballots: list[BallotInput], backend: str) -> None:
    got = verify_ballots(spec, ballots, backend=backend)
    want = [individual(spec, b) for b in ballots]
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert same(g, w), (i, g, w)


CASES = [(YES_NO, name) for name in DEFECTS] + [(CHOOSE, name) for name in [*DEFECTS, *SUM_DEFECTS]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("spec", "defect"), CASES, ids=[f"{s.max_selections}-{d}" for s, d in CASES]
)
def test_one_bad_ballot_in_a_batch_gets_its_own_verdict(
    spec: BallotSpec, defect: str, backend: str
) -> None:
    """One defective ballot among valid ones: it gets the individual path's error and check,
    every other ballot verifies."""
    good = pool(spec)
    make = {**DEFECTS, **SUM_DEFECTS}[defect]
    for where in (0, 5, 11):
        ballots = [_input(r) for r in good]
        ballots[where] = make(spec, good[where])
        want = individual(spec, ballots[where])
        assert isinstance(want, CoreError)  # the defect is one the individual path catches
        assert_batch_matches(spec, ballots, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", [YES_NO, CHOOSE], ids=["yes-no", "choose"])
def test_several_and_all_bad(spec: BallotSpec, backend: str) -> None:
    """Several bad ballots (every defect kind at random places) and an all-bad batch."""
    good = pool(spec)
    defects = list(DEFECTS.values()) + (list(SUM_DEFECTS.values()) if spec is CHOOSE else [])
    rnd = random.Random(7)
    for trial in range(3):
        ballots = [_input(r) for r in good]
        for where in rnd.sample(range(len(good)), 1 + trial * 3):
            ballots[where] = rnd.choice(defects)(spec, good[where])
        assert_batch_matches(spec, ballots, backend)
    everything_bad = [defects[i % len(defects)](spec, r) for i, r in enumerate(good)]
    assert all(isinstance(individual(spec, b), CoreError) for b in everything_bad)
    assert_batch_matches(spec, everything_bad, backend)
    # only equation defects (they pass every check before the combined one)
    equation_only = [DEFECTS["proof-response-flipped"](spec, r) for r in good]
    assert_batch_matches(spec, equation_only, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_valid_and_empty(backend: str) -> None:
    """Valid batches verify, equal to the individual path; an empty batch has no verdicts."""
    for spec in (YES_NO, CHOOSE):
        ballots = [_input(r) for r in pool(spec)]
        got = verify_ballots(spec, ballots, backend=backend)
        assert all(isinstance(v, VerifiedBallot) for v in got)
        assert_batch_matches(spec, ballots, backend)
    assert verify_ballots(YES_NO, [], backend=backend) == []


def test_canonical_batch_equals_individual_including_undecodable() -> None:
    """verify_canonical_ballots: bytes that do not decode get the decoder's error in place."""
    good = [resign(r) for r in pool(YES_NO)]
    pairs = list(good)
    pairs[3] = b"RBAL\x02garbage"
    got = verify_canonical_ballots(YES_NO, pairs)
    assert isinstance(got[3], CoreError) and got[3].check in {"length", "referendum", "credential"}
    assert all(isinstance(v, VerifiedBallot) for i, v in enumerate(got) if i != 3)
    assert [v.hash for i, v in enumerate(got) if i != 3 and isinstance(v, VerifiedBallot)] == [
        verify_record(YES_NO, decode_canonical(c), c[:-64]).hash
        for i, c in enumerate(good)
        if i != 3
    ]


@pytest.mark.skipif(not NATIVE_AVAILABLE, reason="the native extension is not built")
def test_combined_check_catches_one_bad_equation_among_many() -> None:
    """claims_hold: true for valid claims; false when one equation of many is off by one."""
    ballots = [_input(r) for r in pool(CHOOSE)]
    prepared = [prepare_record(CHOOSE, b.record, b.body_bytes) for b in ballots]
    claims = [c for p in prepared for c in p.claims]
    assert claims_hold(claims)
    bad = claims[7]
    proof = dataclasses.replace(
        bad.proof, responses=(bad.proof.responses[0], (bad.proof.responses[1] + 1) % ORDER)
    )
    for _ in range(20):  # fresh weights every call: never passes
        assert not claims_hold([*claims[:7], dataclasses.replace(bad, proof=proof), *claims[8:]])


def test_backend_selection() -> None:
    """auto picks native when built; native without the extension and unknown names raise."""
    assert resolve_backend("python") == "python"
    assert resolve_backend("auto") == ("native" if NATIVE_AVAILABLE else "python")
    with pytest.raises(ValueError):
        resolve_backend("gpu")
    if not NATIVE_AVAILABLE:
        with pytest.raises(ValueError):
            resolve_backend("native")


def test_valid_key_of_another_voter_unused() -> None:
    """voter_public_key of the fixtures is what the batch helpers sign with (sanity)."""
    assert voter_public_key(ALICE_SECRET) == ALICE


def test_without_the_extension_commitments_are_checked_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the native parser unavailable (a machine without a compiler), every defect gets
    the same verdict, error message included, from libsecp256k1's decoder."""
    from referendum_core import group

    spec = YES_NO
    good = pool(spec)
    ballots = [make(spec, good[i % len(good)]) for i, make in enumerate(DEFECTS.values())]
    with_native = [individual(spec, b) for b in ballots]
    monkeypatch.setattr(group, "_native", None)
    without = verify_ballots(spec, ballots, backend="python")
    for got, want in zip(without, with_native, strict=True):
        assert same(got, want), (got, want)
