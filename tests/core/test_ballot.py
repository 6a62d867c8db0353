"""Ballots: honest ballots verify; every kind of tampering is rejected with a typed error."""

from __future__ import annotations

import dataclasses
import itertools
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from referendum_core.ballot import (
    SIGNING_PREFIX,
    TAG_PROOF01,
    TAG_SUM,
    BallotSpec,
    ballot_context,
    verify_ballot,
    verify_canonical,
)
from referendum_core.ballot_codec import (
    BallotRecord,
    ballot_from_json,
    ballot_to_json,
    ciphertext_bytes,
    credential_of,
    decode_canonical,
    encode_body,
    record_to_json,
)
from referendum_core.client import (
    check_spoiled,
    make_ballot,
    make_spoilable_ballot,
    new_voter_key,
    voter_public_key,
)
from referendum_core.elgamal import Ciphertext, encrypt
from referendum_core.errors import (
    BallotError,
    CoreError,
    EncodingError,
    InvalidPoint,
    InvalidScalar,
    ProofError,
    SignatureError,
)
from referendum_core.group import ORDER, Point, seeded_scalars
from referendum_core.proofs import BRANCH_BYTES, prove_disjunctive
from referendum_core.tally import encrypted_tally

ELECTION_SK = 0x1234567890ABCDEF1234567890ABCDEF
ELECTION_PK = Point.base_mul(ELECTION_SK)
ALICE_SECRET = bytes(range(32))
ALICE = voter_public_key(ALICE_SECRET)
BOB_SECRET = bytes(range(1, 33))
BOB = voter_public_key(BOB_SECRET)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spec_of(options: int, lo: int, hi: int, rid: str = "ref-2026") -> BallotSpec:
    """A spec with ``options`` options named o0.. and the test election key."""
    return BallotSpec(
        rid, tuple(f"o{i}" for i in range(options)), lo, hi, ELECTION_PK.to_compressed()
    )


YES_NO = spec_of(2, 1, 1)
APPROVAL = spec_of(4, 1, 2)


def decrypt(ct: Ciphertext) -> int:
    """Small plaintext of a ciphertext under the test key (brute force 0..8)."""
    m = ct.b - ct.a * ELECTION_SK
    for v in range(9):
        if m == Point.base_mul(v):
            return v
    raise AssertionError("plaintext out of test range")


def resign(record: BallotRecord, secret: bytes = ALICE_SECRET) -> bytes:
    """Canonical bytes of ``record`` with a fresh valid signature by ``secret``."""
    body = encode_body(record)
    return body + SigningKey(secret).sign(SIGNING_PREFIX + body).signature


@st.composite
def referendums_and_choices(draw: st.DrawFn) -> tuple[BallotSpec, list[int]]:
    """A random referendum shape and a choice that fits it."""
    k = draw(st.integers(1, 5))
    hi = draw(st.integers(1, k))
    lo = draw(st.integers(0, hi))
    rid = draw(
        st.text(
            st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=20
        ).filter(str.isprintable)
    )
    count = draw(st.integers(lo, hi))
    chosen = set(draw(st.permutations(range(k)))[:count])
    return spec_of(k, lo, hi, rid), [1 if i in chosen else 0 for i in range(k)]


@SETTINGS
@given(referendums_and_choices())
def test_honest_ballots_verify_and_decrypt(case: tuple[BallotSpec, list[int]]) -> None:
    """An honest ballot verifies from JSON and from canonical bytes, names its signer's
    credential and nothing else of the voter, and decrypts to the choice."""
    spec, choice = case
    secret, public = new_voter_key()
    body = make_ballot(spec, secret, choice)
    assert body["credential"] == public.hex() and "voter" not in body
    verified = verify_ballot(spec, body)
    assert verified.credential == public and verified.referendum_id == spec.referendum_id
    assert [decrypt(ct) for ct in verified.ciphertexts] == choice
    again = verify_canonical(spec, verified.canonical)
    assert again.hash == verified.hash and len(verified.hash) == 32
    assert ballot_to_json(verified.canonical) == body


@SETTINGS
@given(referendums_and_choices(), st.binary(min_size=32, max_size=32))
def test_field_accessors_agree_with_decode_canonical(
    case: tuple[BallotSpec, list[int]], seed: bytes
) -> None:
    """credential_of and ciphertext_bytes read what decode_canonical parses, at any offset."""
    spec, choices = case
    canonical = verify_ballot(spec, make_ballot(spec, seed, choices)).canonical
    record = decode_canonical(canonical)
    credential = voter_public_key(seed)
    assert credential_of(canonical) == record.credential == credential
    assert credential_of(b"\x00" * 7 + canonical, 7) == credential
    assert ciphertext_bytes(canonical) == b"".join(record.ciphertexts)


def test_field_accessors_reject_truncated_bytes() -> None:
    """A ballot cut inside the credential or the ciphertexts is an EncodingError, not a short
    read."""
    canonical = verify_ballot(YES_NO, make_ballot(YES_NO, ALICE_SECRET, [1, 0])).canonical
    credential_end = 5 + 1 + len(YES_NO.referendum_id) + 32
    assert canonical[credential_end - 32 : credential_end] == ALICE
    assert credential_of(canonical[:credential_end]) == ALICE
    with pytest.raises(EncodingError):
        credential_of(canonical[: credential_end - 1])
    with pytest.raises(EncodingError):
        ciphertext_bytes(canonical[: credential_end + 100])
    with pytest.raises(EncodingError):
        credential_of(b"RBAL\x02")


def test_yes_no_ballot_is_one_ciphertext_with_implied_last() -> None:
    """A yes/no ballot carries one ciphertext, one proof and no sum proof; 'no' is implied."""
    for choice in ([1, 0], [0, 1]):
        body = make_ballot(YES_NO, ALICE_SECRET, choice)
        assert len(body["ciphertexts"]) == 1 and body["sum_proof"] is None
        verified = verify_ballot(YES_NO, body)
        assert [decrypt(ct) for ct in verified.ciphertexts] == choice


def test_exactly_one_of_many_has_sum_proof_over_zero_one() -> None:
    """Exactly-one with 4 options: 3 ciphertexts and a 2-branch sum proof; explicit form too."""
    spec = spec_of(4, 1, 1)
    for i in range(4):
        choice = [int(j == i) for j in range(4)]
        body = make_ballot(spec, ALICE_SECRET, choice)
        assert len(body["ciphertexts"]) == 3 and len(body["sum_proof"]) == 2 * 2 * BRANCH_BYTES
        assert [decrypt(ct) for ct in verify_ballot(spec, body).ciphertexts] == choice
    explicit = dataclasses.replace(spec, imply_last=False)
    body = make_ballot(explicit, ALICE_SECRET, [0, 0, 1, 0])
    assert len(body["ciphertexts"]) == 4
    assert [decrypt(ct) for ct in verify_ballot(explicit, body).ciphertexts] == [0, 0, 1, 0]
    with pytest.raises(BallotError):  # the implied-form verifier refuses the explicit form
        verify_ballot(spec, body)


@SETTINGS
@given(st.data())
def test_any_flipped_bit_in_canonical_bytes_is_rejected(data: st.DataObject) -> None:
    """Flipping any single bit of a signed ballot's canonical bytes gives a CoreError."""
    spec = data.draw(st.sampled_from([YES_NO, APPROVAL, spec_of(3, 0, 3)]))
    choice = {2: [1, 0], 4: [1, 1, 0, 0], 3: [0, 1, 1]}[len(spec.options)]
    canonical = verify_ballot(spec, make_ballot(spec, ALICE_SECRET, choice)).canonical
    bit = data.draw(st.integers(0, len(canonical) * 8 - 1))
    tampered = bytearray(canonical)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CoreError):
        verify_canonical(spec, bytes(tampered))


@SETTINGS
@given(st.data())
def test_any_flipped_bit_in_json_field_is_rejected(data: st.DataObject) -> None:
    """Flipping a bit inside any hex field of the JSON body, even re-signed, is rejected."""
    body = make_ballot(APPROVAL, ALICE_SECRET, [0, 1, 1, 0])
    record = ballot_from_json(body)
    field = data.draw(st.sampled_from(["ciphertexts", "proofs", "sum_proof", "signature"]))
    resigned = data.draw(st.booleans()) and field != "signature"
    values = {
        "ciphertexts": list(record.ciphertexts),
        "proofs": list(record.proofs),
        "sum_proof": [record.sum_proof or b""],
        "signature": [record.signature],
    }[field]
    index = data.draw(st.integers(0, len(values) - 1))
    bit = data.draw(st.integers(0, len(values[index]) * 8 - 1))
    flipped = bytearray(values[index])
    flipped[bit // 8] ^= 1 << (bit % 8)
    values[index] = bytes(flipped)
    changed: dict[str, Any] = (
        {field: tuple(values)} if field in ("ciphertexts", "proofs") else {field: values[0]}
    )
    tampered = dataclasses.replace(record, **changed)
    if resigned:
        tampered_json = ballot_to_json(resign(tampered))
        expected: type[CoreError] = CoreError
    else:
        tampered_json = record_to_json(tampered)
        expected = SignatureError  # the signature check comes before any group check
    with pytest.raises(expected):
        verify_ballot(APPROVAL, tampered_json)


def test_swapped_ciphertexts_between_options_rejected() -> None:
    """Swapping two options' ciphertexts (with their proofs), re-signed, fails the proofs."""
    spec = spec_of(3, 0, 3)
    record = ballot_from_json(make_ballot(spec, ALICE_SECRET, [1, 0, 0]))
    cts, proofs = list(record.ciphertexts), list(record.proofs)
    cts[0], cts[1] = cts[1], cts[0]
    swapped_both = dataclasses.replace(
        record, ciphertexts=tuple(cts), proofs=(proofs[1], proofs[0], proofs[2])
    )
    swapped_cts = dataclasses.replace(record, ciphertexts=tuple(cts))
    for tampered in (swapped_both, swapped_cts):
        with pytest.raises(ProofError):
            verify_canonical(spec, resign(tampered))


@pytest.mark.parametrize("spec", [YES_NO, APPROVAL], ids=["yes-no", "approval"])
def test_proof_copied_under_another_voter_rejected(spec: BallotSpec) -> None:
    """Alice's ciphertexts and proofs, signed by Bob under his own credential, fail."""
    choice = [1, 0] if spec is YES_NO else [1, 0, 1, 0]
    record = ballot_from_json(make_ballot(spec, ALICE_SECRET, choice))
    as_bob = dataclasses.replace(record, credential=BOB)
    with pytest.raises(ProofError):
        verify_canonical(spec, resign(as_bob, BOB_SECRET))
    # Alice's credential left in place, signed by Bob: the signature is checked under Alice's
    with pytest.raises(SignatureError):
        verify_canonical(spec, resign(record, BOB_SECRET))


def test_proof_copied_into_another_referendum_rejected() -> None:
    """A ballot's proofs moved to another referendum under the same key and voter fail."""
    record = ballot_from_json(make_ballot(YES_NO, ALICE_SECRET, [0, 1]))
    other = spec_of(2, 1, 1, rid="other-referendum")
    moved = dataclasses.replace(record, referendum_id=other.referendum_id)
    with pytest.raises(ProofError):
        verify_canonical(other, resign(moved))
    with pytest.raises(BallotError):  # and unmodified it names the wrong referendum
        verify_ballot(other, record_to_json(record))


@pytest.mark.parametrize("offset", [260, 292, 324, 356])
@pytest.mark.parametrize("value", [ORDER, ORDER + 5, 2**256 - 1])
def test_proof_scalar_at_or_above_order_rejected(offset: int, value: int) -> None:
    """Any proof scalar at or above the group order (re-signed) raises InvalidScalar."""
    record = ballot_from_json(make_ballot(YES_NO, ALICE_SECRET, [1, 0]))
    proof = bytearray(record.proofs[0])
    proof[offset : offset + 32] = value.to_bytes(32, "big")
    tampered = dataclasses.replace(record, proofs=(bytes(proof),))
    with pytest.raises(InvalidScalar):
        verify_canonical(YES_NO, resign(tampered))


def _with_point(record: BallotRecord, part: int, encoded: bytes) -> BallotRecord:
    ct = bytearray(record.ciphertexts[0])
    ct[65 * part : 65 * part + 65] = encoded
    return dataclasses.replace(record, ciphertexts=(bytes(ct), *record.ciphertexts[1:]))


@pytest.mark.parametrize("part", [0, 1], ids=["a", "b"])
@pytest.mark.parametrize(
    "kind", ["off-curve", "hybrid-prefix", "identity", "x-above-p", "compressed-padded"]
)
def test_bad_points_in_ballot_rejected(part: int, kind: str) -> None:
    """Off-curve, non-canonical and identity ciphertext points (re-signed) raise InvalidPoint."""
    record = ballot_from_json(make_ballot(YES_NO, ALICE_SECRET, [1, 0]))
    good = record.ciphertexts[0][65 * part : 65 * part + 65]
    p = 2**256 - 2**32 - 977
    encoded = {
        "off-curve": good[:64] + bytes([good[64] ^ 1]),
        "hybrid-prefix": bytes([6 + (good[64] & 1)]) + good[1:],
        "identity": bytes(65),
        "x-above-p": b"\x04" + (p + 1).to_bytes(32, "big") + good[33:],
        "compressed-padded": Point.decode_uncompressed(good).to_compressed() + bytes(32),
    }[kind]
    with pytest.raises(InvalidPoint):
        verify_canonical(YES_NO, resign(_with_point(record, part, encoded)))


def _forged_ballot(
    spec: BallotSpec, values: list[int], claim: int | None, sum_claim: int | None = None
) -> bytes:
    """A ballot whose options encrypt ``values`` with 0/1 proofs built as if each were
    ``claim`` (``None``: the true value), and a sum proof built as if the sum were
    ``sum_claim``."""
    rng = seeded_scalars(b"forgery")
    pk = ELECTION_PK
    rs = [rng() for _ in values]
    cts = [encrypt(pk, v, r) for v, r in zip(values, rs, strict=True)]
    encoded = tuple(ct.to_bytes() for ct in cts)
    context = ballot_context(spec, ALICE, encoded)
    proofs = tuple(
        prove_disjunctive(
            TAG_PROOF01,
            context,
            struct.pack(">I", i),
            pk,
            ct,
            0,
            1,
            v if claim is None else claim,
            r,
            rng,
        ).to_bytes()
        for i, (ct, r, v) in enumerate(zip(cts, rs, values, strict=True))
    )
    sum_proof = None
    if sum_claim is not None:
        lo, hi = spec.min_selections, spec.max_selections
        total = Ciphertext(Point.sum(c.a for c in cts), Point.sum(c.b for c in cts))
        sum_proof = prove_disjunctive(
            TAG_SUM, context, b"", pk, total, lo, hi, sum_claim, sum(rs) % ORDER, rng
        ).to_bytes()
    return resign(BallotRecord(spec.referendum_id, ALICE, encoded, proofs, sum_proof, b""))


@pytest.mark.parametrize("claim", [0, 1, 2])
@pytest.mark.parametrize("value", [2, 3, ORDER - 1], ids=["two", "three", "minus-one"])
def test_option_encrypting_out_of_range_value_rejected(claim: int, value: int) -> None:
    """An option encrypting 2, 3 or −1, with a 0/1 proof built any way, fails its proof."""
    with pytest.raises(ProofError) as info:
        verify_canonical(YES_NO, _forged_ballot(YES_NO, [value], claim))
    assert info.value.check == "option[0].proof"


def test_forgery_oracle_is_sound() -> None:
    """The forgery builder makes valid ballots when the values are honest (so it can fail)."""
    spec = spec_of(3, 1, 2)
    verified = verify_canonical(spec, _forged_ballot(spec, [1, 1, 0], None, sum_claim=2))
    assert [decrypt(ct) for ct in verified.ciphertexts] == [1, 1, 0]


@pytest.mark.parametrize("values", [[1, 1, 1], [0, 0, 0]], ids=["too-many", "too-few"])
def test_too_many_or_too_few_selections_rejected(values: list[int]) -> None:
    """Selections outside [min, max] fail the sum proof however it is built."""
    spec = spec_of(3, 1, 2)
    honest = [[1, 0, 0], [1, 1, 0]]
    for claim in (1, 2, sum(values)):
        # each option's proof is honest (0/1); only the sum is out of range
        forged = _forged_ballot(spec, values, None, sum_claim=claim)
        with pytest.raises(ProofError) as info:
            verify_canonical(spec, forged)
        assert info.value.check == "sum_proof"
    for choice in honest:
        verify_ballot(spec, make_ballot(spec, ALICE_SECRET, choice))
    with pytest.raises(BallotError):
        make_ballot(spec, ALICE_SECRET, values)


def test_exactly_one_with_two_selected_rejected() -> None:
    """Exactly-one of 3 with two explicit options set (implied last = −1) fails the sum proof."""
    spec = spec_of(3, 1, 1)
    rng = seeded_scalars(b"two-of-exactly-one")
    rs = [rng(), rng()]
    cts = [encrypt(ELECTION_PK, 1, r) for r in rs]
    encoded = tuple(ct.to_bytes() for ct in cts)
    context = ballot_context(spec, ALICE, encoded)
    proofs = tuple(
        prove_disjunctive(
            TAG_PROOF01, context, struct.pack(">I", i), ELECTION_PK, ct, 0, 1, 1, r, rng
        ).to_bytes()
        for i, (ct, r) in enumerate(zip(cts, rs, strict=True))
    )
    total = Ciphertext(cts[0].a + cts[1].a, cts[0].b + cts[1].b)
    for claim in (0, 1, 2):
        sum_proof = prove_disjunctive(
            TAG_SUM, context, b"", ELECTION_PK, total, 0, 1, claim, sum(rs) % ORDER, rng
        ).to_bytes()
        forged = resign(BallotRecord(spec.referendum_id, ALICE, encoded, proofs, sum_proof, b""))
        with pytest.raises(ProofError):
            verify_canonical(spec, forged)


def test_structure_mismatches_rejected() -> None:
    """Wrong ciphertext count, missing or extra sum proof, wrong branch count: BallotError."""
    approval = ballot_from_json(make_ballot(APPROVAL, ALICE_SECRET, [1, 0, 0, 0]))
    yes_no = ballot_from_json(make_ballot(YES_NO, ALICE_SECRET, [1, 0]))
    cases = [
        dataclasses.replace(
            approval, ciphertexts=approval.ciphertexts[:3], proofs=approval.proofs[:3]
        ),
        dataclasses.replace(approval, sum_proof=None),
        dataclasses.replace(approval, sum_proof=(approval.sum_proof or b"") + bytes(BRANCH_BYTES)),
        dataclasses.replace(yes_no, sum_proof=bytes(BRANCH_BYTES)),
    ]
    specs = [APPROVAL, APPROVAL, APPROVAL, YES_NO]
    for spec, record in zip(specs, cases, strict=True):
        with pytest.raises(BallotError):
            verify_canonical(spec, resign(record))


def test_ballot_naming_another_credential_rejected() -> None:
    """A valid ballot whose credential is replaced by another voter's key (not re-signed), or
    by a key that is not a usable Ed25519 point, fails at the signature."""
    body = make_ballot(YES_NO, ALICE_SECRET, [1, 0])
    assert verify_ballot(YES_NO, body).credential == ALICE
    for key in (BOB, bytes(32), b"\x01" + bytes(31), b"\xff" * 32):
        with pytest.raises(SignatureError):
            verify_ballot(YES_NO, {**body, "credential": key.hex()})
    for text in ("", "00" * 31, "00" * 33, ALICE.hex().upper(), None, 5):
        with pytest.raises(EncodingError):
            verify_ballot(YES_NO, {**body, "credential": text})


def _json_mutations(body: dict[str, Any]) -> list[Any]:
    cases: list[Any] = [None, [], "x", 5, {}]
    for field in body:
        without = dict(body)
        del without[field]
        cases.append(without)
        bad_values: tuple[Any, ...] = (
            None,
            1,
            1.5,
            True,
            [],
            {},
            "",
            "zz",
            "00",
            ["00"],
            [1],
            [None],
        )
        for bad in bad_values:
            cases.append({**body, field: bad})
    cases.append({**body, "extra": 1})
    cases.append({**body, "signature": body["signature"].upper()})
    cases.append({**body, "signature": " " + body["signature"][1:]})
    cases.append({**body, "ciphertexts": [c.upper() for c in body["ciphertexts"]]})
    cases.append({**body, "ciphertexts": body["ciphertexts"] * 70})
    cases.append({**body, "credential": body["credential"][:-2]})
    cases.append({**body, "credential": "did:key:z6Mk" + "a" * 40})
    cases.append({**body, "voter": "alice"})
    cases.append({**body, "referendum": "\ud800"})
    return cases


def test_malformed_json_bodies_give_typed_errors() -> None:
    """Missing, unknown, mistyped, mis-sized or non-canonical fields raise only CoreError."""
    body = make_ballot(APPROVAL, ALICE_SECRET, [1, 0, 0, 0])
    for case in _json_mutations(body):
        # a well-formed but different credential fails only at the signature
        with pytest.raises((EncodingError, BallotError, SignatureError)):
            verify_ballot(APPROVAL, case)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)


@SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(
            ["referendum", "credential", "ciphertexts", "proofs", "sum_proof", "signature", "x"]
        ),
        json_values,
    )
)
def test_arbitrary_json_gives_only_core_errors(body: dict[str, Any]) -> None:
    """Whatever JSON object arrives, verification raises only CoreError subclasses."""
    with pytest.raises(CoreError):
        verify_ballot(APPROVAL, body)


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_give_only_encoding_errors(data: bytes) -> None:
    """Random bytes fed to the canonical decoder raise EncodingError, nothing else."""
    with pytest.raises(CoreError):
        verify_canonical(YES_NO, data)
    with pytest.raises(EncodingError):
        decode_canonical(data)


def test_truncated_or_extended_canonical_rejected() -> None:
    """Every proper prefix, and the bytes with anything appended, fail to decode."""
    canonical = verify_ballot(YES_NO, make_ballot(YES_NO, ALICE_SECRET, [1, 0])).canonical
    for cut in range(len(canonical)):
        with pytest.raises(EncodingError):
            decode_canonical(canonical[:cut])
    with pytest.raises(EncodingError):
        decode_canonical(canonical + b"\x00")


def test_cast_or_spoil() -> None:
    """A spoiled ballot opens to its stated choice; a lie about the choice is caught."""
    spec = spec_of(3, 0, 3)
    for choice in itertools.islice(itertools.product((0, 1), repeat=3), 8):
        spoiled = make_spoilable_ballot(spec, ALICE_SECRET, list(choice))
        revealed = spoiled.reveal()
        assert [decrypt(ct) for ct in check_spoiled(spec, revealed).ciphertexts] == list(choice)
    lie = {**revealed, "selections": [0, 0, 0] if list(choice) != [0, 0, 0] else [1, 0, 0]}
    with pytest.raises(BallotError):
        check_spoiled(spec, lie)
    wrong_r = {**revealed, "randomness": [revealed["randomness"][1], *revealed["randomness"][1:]]}
    with pytest.raises(BallotError):
        check_spoiled(spec, wrong_r)
    bad: dict[str, Any]
    for bad in ({}, {**revealed, "randomness": ["zz"] * 3}, {**revealed, "selections": "1"}):
        with pytest.raises(CoreError):
            check_spoiled(spec, bad)


def test_cast_or_spoil_yes_no_implied() -> None:
    """Spoiling a yes/no ballot reveals one randomness and opens both options."""
    spoiled = make_spoilable_ballot(YES_NO, ALICE_SECRET, [0, 1])
    assert len(spoiled.randomness) == 1
    verified = check_spoiled(YES_NO, spoiled.reveal())
    assert [decrypt(ct) for ct in verified.ciphertexts] == [0, 1]
    with pytest.raises(BallotError):
        check_spoiled(YES_NO, {**spoiled.reveal(), "selections": [1, 0]})


def test_make_ballot_rejects_bad_selections() -> None:
    """The client refuses selections that are not 0/1 per option or break [min, max]."""
    for bad in ([1], [1, 1], [0, 0], [2, 0], [1, 0, 0]):
        with pytest.raises(BallotError):
            make_ballot(YES_NO, ALICE_SECRET, bad)


def test_bad_specs_rejected() -> None:
    """A spec with impossible bounds, no options or a bad election key is refused."""
    key = ELECTION_PK.to_compressed()
    for spec in (
        BallotSpec("r", (), 0, 1, key),
        BallotSpec("r", ("a", "b"), 2, 1, key),
        BallotSpec("r", ("a", "b"), 0, 3, key),
        BallotSpec("r", ("a", "b"), 0, 0, key),
        BallotSpec("", ("a", "b"), 1, 1, key),
    ):
        with pytest.raises(BallotError):
            make_ballot(spec, ALICE_SECRET, [1, 0])
    with pytest.raises(InvalidPoint):
        make_ballot(BallotSpec("r", ("a", "b"), 1, 1, bytes(33)), ALICE_SECRET, [1, 0])
    listed = BallotSpec("ref-2026", ["o0", "o1"], 1, 1, key)  # type: ignore[arg-type]
    assert verify_ballot(listed, make_ballot(YES_NO, ALICE_SECRET, [1, 0]))
    with pytest.raises(BallotError):
        verify_ballot(
            BallotSpec("r", ("a", "b"), "1", 1, key),  # type: ignore[arg-type]
            make_ballot(YES_NO, ALICE_SECRET, [1, 0]),
        )


@pytest.mark.parametrize(
    "spec",
    [YES_NO, spec_of(4, 1, 1), spec_of(3, 0, 3)],
    ids=["yes-no", "exactly-one-of-4", "approval"],
)
def test_tally_of_canonical_ballots_counts_every_option(spec: BallotSpec) -> None:
    """The streamed tally of canonical ballots decrypts to each option's count."""
    k = len(spec.options)
    choices = [[int(j == i % k) for j in range(k)] for i in range(7)]
    if spec.max_selections == k:
        choices.append([1] * k)
    canonicals = [
        verify_ballot(spec, make_ballot(spec, ALICE_SECRET, c)).canonical
        for i, c in enumerate(choices)
    ]
    sums = encrypted_tally(spec, canonicals, chunk=3)
    assert [decrypt(ct) for ct in sums] == [sum(c[j] for c in choices) for j in range(k)]
    assert all(ct.is_identity for ct in encrypted_tally(spec, [])[: k - 1])
    with pytest.raises(BallotError):
        encrypted_tally(
            spec_of(k, spec.min_selections, spec.max_selections, rid="other"), canonicals
        )


@SETTINGS
@given(st.binary(min_size=2 * BRANCH_BYTES, max_size=2 * BRANCH_BYTES))
def test_option_encrypting_two_with_arbitrary_proof_bytes_rejected(proof: bytes) -> None:
    """An encryption of 2 with any 388 proof bytes (re-signed) never verifies."""
    record = decode_canonical(_forged_ballot(YES_NO, [2], 1))
    with pytest.raises((ProofError, InvalidScalar, InvalidPoint)):
        verify_canonical(YES_NO, resign(dataclasses.replace(record, proofs=(proof,))))


def test_spec_from_definition_and_row_agree_and_reject_bad_fields() -> None:
    """The public definition and the stored row give one spec; a bad definition is a CoreError."""
    definition = {
        "id": YES_NO.referendum_id,
        "options": list(YES_NO.options),
        "min_selections": 1,
        "max_selections": 1,
        "election_public_key": YES_NO.election_public_key.hex(),
    }
    row = {
        **definition,
        "options": '["o0", "o1"]',
        "election_public_key": ELECTION_PK.to_compressed(),
    }
    assert BallotSpec.from_definition(definition) == YES_NO
    assert BallotSpec.from_row(YES_NO.referendum_id, row) == YES_NO
    for field, value in [
        ("options", "o0"),
        ("options", [1, 2]),
        ("min_selections", "1"),
        ("max_selections", 3),
        ("election_public_key", YES_NO.election_public_key.hex().upper()),
        ("election_public_key", "02" + "00" * 32),
    ]:
        with pytest.raises(CoreError):
            BallotSpec.from_definition({**definition, field: value})
    with pytest.raises(BallotError):
        BallotSpec.from_definition({k: v for k, v in definition.items() if k != "id"})
