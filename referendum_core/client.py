"""The voter client: keys, encrypted and signed ballots, and the cast-or-spoil check.

>>> from referendum_core.group import Point
>>> spec = BallotSpec("r1", ("yes", "no"), 1, 1, Point.base_mul(5).to_compressed())
>>> secret, public = new_voter_key()
>>> body = make_ballot(spec, secret, [1, 0])
>>> verify_ballot(spec, body).credential == public
True
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from referendum_core.ballot import (
    SIGNING_PREFIX,
    TAG_PROOF01,
    TAG_SUM,
    BallotSpec,
    VerifiedBallot,
    ballot_context,
    plan,
    verify_ballot,
)
from referendum_core.ballot_codec import BallotRecord, encode_body, record_to_json
from referendum_core.elgamal import Ciphertext, encrypt
from referendum_core.errors import BallotError, EncodingError
from referendum_core.group import (
    ORDER,
    Point,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
)
from referendum_core.proofs import ScalarSource, prove_disjunctive

__all__ = [
    "SpoilableBallot",
    "check_spoiled",
    "make_ballot",
    "make_spoilable_ballot",
    "new_voter_key",
    "voter_public_key",
]


def new_voter_key() -> tuple[bytes, bytes]:
    """A fresh Ed25519 voter key: ``(32-byte secret seed, 32-byte public key)``."""
    key = SigningKey.generate()
    return bytes(key), bytes(key.verify_key)


def voter_public_key(voter_secret: bytes) -> bytes:
    """The 32-byte Ed25519 public key of a 32-byte secret seed."""
    return bytes(SigningKey(voter_secret).verify_key)


@dataclass(frozen=True)
class SpoilableBallot:
    """A ballot together with the secrets that open it (keep them to spoil, erase to cast)."""

    body: dict[str, Any]
    selections: tuple[int, ...]
    randomness: tuple[int, ...]

    def reveal(self) -> dict[str, Any]:
        """The JSON anyone can check with :func:`check_spoiled` (the ballot is then void)."""
        return {
            "ballot": self.body,
            "selections": list(self.selections),
            "randomness": [scalar_to_bytes(r).hex() for r in self.randomness],
        }


def make_spoilable_ballot(
    spec: BallotSpec,
    voter_secret: bytes,
    selections: Sequence[int],
    *,
    rng: ScalarSource = random_scalar,
) -> SpoilableBallot:
    """Encrypt, prove and sign ``selections`` (one 0/1 per option), keeping the randomness.

    Requires a valid ``spec`` and the 32-byte Ed25519 seed of the voter's credential; the
    ballot names the credential (the seed's public key) as its signer, nothing else.

    Raises:
        BallotError: a selection is not 0 or 1, the count is wrong, or their number is
            outside ``[min_selections, max_selections]``.
    """
    shape = plan(spec)
    choice = tuple(selections)
    if len(choice) != len(spec.options) or any(m not in (0, 1) for m in choice):
        raise BallotError("one selection of 0 or 1 per option", check="selections")
    if not spec.min_selections <= sum(choice) <= spec.max_selections:
        raise BallotError("number of selections outside [min, max]", check="selections")
    signer = SigningKey(voter_secret)
    voter_key = bytes(signer.verify_key)
    pk = shape.public_key
    explicit = choice[: shape.explicit]
    rs: list[int] = []
    cts: list[Ciphertext] = []
    for m in explicit:
        while True:  # b = identity has probability ~2**-256; retry keeps the encoding total
            r = rng()
            ct = encrypt(pk, m, r)
            if not ct.b.is_identity:
                break
        rs.append(r)
        cts.append(ct)
    encoded = tuple(ct.to_bytes() for ct in cts)
    context = ballot_context(spec, voter_key, encoded)
    proofs = tuple(
        prove_disjunctive(
            TAG_PROOF01, context, struct.pack(">I", i), pk, ct, 0, 1, m, r, rng
        ).to_bytes()
        for i, (ct, m, r) in enumerate(zip(cts, explicit, rs, strict=True))
    )
    sum_proof = None
    if shape.sum_range is not None:
        lo, hi = shape.sum_range
        total = Ciphertext(Point.sum(ct.a for ct in cts), Point.sum(ct.b for ct in cts))
        sum_proof = prove_disjunctive(
            TAG_SUM, context, b"", pk, total, lo, hi, sum(explicit), sum(rs) % ORDER, rng
        ).to_bytes()
    record = BallotRecord(spec.referendum_id, voter_key, encoded, proofs, sum_proof, b"")
    body = encode_body(record)
    signature = signer.sign(SIGNING_PREFIX + body).signature
    signed = BallotRecord(spec.referendum_id, voter_key, encoded, proofs, sum_proof, signature)
    return SpoilableBallot(record_to_json(signed), choice, tuple(rs))


def make_ballot(
    spec: BallotSpec,
    voter_secret: bytes,
    selections: Sequence[int],
    *,
    rng: ScalarSource = random_scalar,
) -> dict[str, Any]:
    """The JSON ballot body the server accepts, for ``selections`` (one 0/1 per option).

    Raises:
        BallotError: selections that do not fit the referendum.
    """
    return make_spoilable_ballot(spec, voter_secret, selections, rng=rng).body


def check_spoiled(spec: BallotSpec, revealed: Mapping[str, Any]) -> VerifiedBallot:
    """Check a spoiled ballot: valid, and each ciphertext encrypts the stated selection.

    Anyone can run this on the output of :meth:`SpoilableBallot.reveal`.

    Raises:
        EncodingError: malformed reveal.
        BallotError: a ciphertext does not open to the stated selection (check
            ``option[i].spoil``), or the selections do not fit the referendum.
        Any error of :func:`referendum_core.ballot.verify_ballot`.
    """
    if not isinstance(revealed, Mapping) or set(revealed) != {"ballot", "selections", "randomness"}:
        raise EncodingError("reveal must hold ballot, selections, randomness", check="spoil")
    verified = verify_ballot(spec, revealed["ballot"])
    shape = plan(spec)
    selections = revealed["selections"]
    randomness = revealed["randomness"]
    if (
        not isinstance(selections, list)
        or len(selections) != len(spec.options)
        or any(type(m) is not int or m not in (0, 1) for m in selections)
    ):
        raise BallotError("one selection of 0 or 1 per option", check="spoil.selections")
    if not isinstance(randomness, list) or len(randomness) != shape.explicit:
        raise EncodingError("one randomness per ciphertext", check="spoil.randomness")
    if not spec.min_selections <= sum(selections) <= spec.max_selections:
        raise BallotError("number of selections outside [min, max]", check="spoil.selections")
    for i, (m, r_hex) in enumerate(zip(selections, randomness, strict=False)):
        if not isinstance(r_hex, str) or len(r_hex) != 64:
            raise EncodingError("randomness must be 32-byte hex", check=f"option[{i}].spoil")
        try:
            r_raw = bytes.fromhex(r_hex)
        except ValueError as exc:
            raise EncodingError("randomness must be hex", check=f"option[{i}].spoil") from exc
        r = scalar_from_bytes(r_raw, check=f"option[{i}].spoil")
        if encrypt(shape.public_key, m, r).to_bytes() != verified.ciphertexts[i].to_bytes():
            raise BallotError(
                "ciphertext does not encrypt the stated selection", check=f"option[{i}].spoil"
            )
    return verified
