"""Encrypted, signed ballots: the spec a referendum implies and the verification of a ballot.

A ballot for a referendum with ``k`` options carries one exponential-ElGamal ciphertext per
*explicit* option, a 0/1 proof for each, an optional proof that the number of selections is
within ``[min, max]``, and an Ed25519 signature under the voter's credential, the public key the
ballot names as its signer. Whether that credential is on the referendum's roll is the
caller's check (the server's directory, the auditor's ``roll.csv``): verification here proves
the ballot well formed and signed by the key it names. For an exactly-one question
(``min = max = 1``) the last option is implied (``k − 1`` explicit options); the verifier
reconstructs its ciphertext as ``(−ΣA_i, G − ΣB_i)``, so :attr:`VerifiedBallot.ciphertexts`
always has one ciphertext per option.

The canonical bytes and the JSON form are :mod:`referendum_core.ballot_codec`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from referendum_core.ballot_codec import (
    MAX_OPTIONS,
    SIGNATURE_BYTES,
    BallotRecord,
    ballot_from_json,
    decode_canonical,
    encode_body,
    hex_field,
    id_bytes,
)
from referendum_core.elgamal import Ciphertext
from referendum_core.errors import BallotError, EncodingError, InvalidPoint, SignatureError
from referendum_core.group import GENERATOR, Point, decode_key, transcript
from referendum_core.proofs import BRANCH_BYTES, DisjunctiveProof, ProofClaim, check_challenge

__all__ = [
    "SIGNING_PREFIX",
    "TAG_CONTEXT",
    "TAG_PROOF01",
    "TAG_SUM",
    "BallotPlan",
    "BallotSpec",
    "PreparedBallot",
    "VerifiedBallot",
    "ballot_context",
    "plan",
    "prepare_record",
    "verify_ballot",
    "verify_canonical",
    "verify_record",
]

SIGNING_PREFIX = b"referendum/v1/ballot-signature\x00"
TAG_CONTEXT = b"referendum/v1/ballot-context"
TAG_PROOF01 = b"referendum/v1/proof01"
TAG_SUM = b"referendum/v1/proof-sum"


@dataclass(frozen=True)
class BallotSpec:
    """What a ballot must fit: the referendum's id, options, selection bounds and key.

    Requires ``1 <= len(options) <= 64`` and ``0 <= min_selections <= max_selections <=
    len(options)`` with ``max_selections >= 1``; ``election_public_key`` is a 33-byte
    compressed point. ``imply_last=False`` makes an exactly-one question carry all ``k``
    ciphertexts (kept to measure the trade-off; the protocol default is ``True``).
    """

    referendum_id: str
    options: tuple[str, ...]
    min_selections: int
    max_selections: int
    election_public_key: bytes
    imply_last: bool = True

    @classmethod
    def from_definition(cls, definition: Mapping[str, Any]) -> BallotSpec:
        """The spec of a public referendum definition (``GET /v1/referendums/{rid}``,
        ``referendum.json`` of a record), validated as :func:`plan` does.

        >>> key = "02" + "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        >>> BallotSpec.from_definition({"id": "r1", "options": ["yes", "no"],
        ...     "min_selections": 1, "max_selections": 1, "election_public_key": key}).options
        ('yes', 'no')

        Raises:
            BallotError: a field is missing or of the wrong type, or the spec is inconsistent
                (check ``"spec"``).
            EncodingError: the election key is not 33 bytes of lowercase hex.
            InvalidPoint: the election key is not a canonical compressed point.
        """
        try:
            options = definition["options"]
            rid = definition["id"]
            lo, hi = definition["min_selections"], definition["max_selections"]
            key_hex = definition["election_public_key"]
        except (KeyError, TypeError) as exc:
            raise BallotError(f"definition lacks {exc}", check="spec") from exc
        if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
            raise BallotError("options must be a list of names", check="spec")
        spec = cls(rid, tuple(options), lo, hi, hex_field(key_hex, "election_public_key", 33))
        plan(spec)
        return spec

    @classmethod
    def from_row(cls, referendum_id: str, row: Any) -> BallotSpec:
        """The spec of a ``referendums`` row with an election key (options as JSON text or list).

        ``row`` is anything indexed by column name (a mapping, a database record).

        >>> BallotSpec.from_row("r1", {"options": '["yes", "no"]', "min_selections": 1,
        ...     "max_selections": 1, "election_public_key": bytes(33)}).options
        ('yes', 'no')
        """
        options = row["options"]
        if isinstance(options, str):
            options = json.loads(options)
        return cls(
            referendum_id,
            tuple(str(o) for o in options),
            row["min_selections"],
            row["max_selections"],
            bytes(row["election_public_key"]),
        )


@dataclass(frozen=True)
class BallotPlan:
    """The shape a spec implies: explicit ciphertext count and the sum proof's range."""

    public_key: Point
    explicit: int
    implied: bool
    sum_range: tuple[int, int] | None


@dataclass(frozen=True)
class VerifiedBallot:
    """A ballot that passed every check.

    ``ciphertexts`` has one entry per option; for an exactly-one question the last one is
    reconstructed from the others as ``(−ΣA_i, G − ΣB_i)``.
    """

    referendum_id: str
    credential: bytes
    canonical: bytes
    hash: bytes
    ciphertexts: tuple[Ciphertext, ...]


def plan(spec: BallotSpec) -> BallotPlan:
    """Validate ``spec`` and derive the ballot shape it implies (cached per spec).

    A spec built with a list of options is accepted as if it held a tuple.

    Raises:
        BallotError: the spec itself is inconsistent (check ``"spec"``).
        InvalidPoint: the election key is not a canonical compressed point.
    """
    if not isinstance(spec.options, tuple):
        if not isinstance(spec.options, list | tuple):
            raise BallotError("options must be a sequence of names", check="spec")
        spec = dataclasses.replace(spec, options=tuple(spec.options))
    if not (
        isinstance(spec.referendum_id, str)
        and isinstance(spec.election_public_key, bytes)
        and type(spec.min_selections) is int
        and type(spec.max_selections) is int
    ):
        raise BallotError("spec fields have the wrong types", check="spec")
    return _plan(spec)


@lru_cache(maxsize=256)
def _plan(spec: BallotSpec) -> BallotPlan:
    k = len(spec.options)
    if not 1 <= k <= MAX_OPTIONS:
        raise BallotError(f"a referendum needs 1..{MAX_OPTIONS} options", check="spec")
    lo, hi = spec.min_selections, spec.max_selections
    if not (0 <= lo <= hi <= k and hi >= 1):
        raise BallotError(
            "selection bounds must satisfy 0 <= min <= max <= k, max >= 1", check="spec"
        )
    try:
        id_bytes(spec.referendum_id, "referendum")
    except EncodingError as exc:
        raise BallotError(
            "referendum id must be 1..255 printable UTF-8 bytes", check="spec"
        ) from exc
    pk = decode_key(spec.election_public_key)
    implied = spec.imply_last and lo == hi == 1 and k >= 2
    explicit = k - 1 if implied else k
    if implied:
        lo, hi = 0, 1  # the explicit options sum to 0 or 1; the last option makes it 1
    lo, hi = max(lo, 0), min(hi, explicit)
    # Each option is proven 0 or 1, so [0, explicit] needs no further proof.
    sum_range = None if (lo == 0 and hi == explicit) else (lo, hi)
    return BallotPlan(pk, explicit, implied, sum_range)


# --- verification ------------------------------------------------------------------------


def ballot_context(spec: BallotSpec, credential: bytes, ciphertexts: tuple[bytes, ...]) -> bytes:
    """The 32-byte digest every challenge of a ballot hashes (strong Fiat–Shamir binding).

    ``SHA-256(transcript(TAG_CONTEXT, referendum, election key, credential,
    ciphertext_1 ‖ … ‖ ciphertext_count))``.
    """
    return hashlib.sha256(
        transcript(
            TAG_CONTEXT,
            spec.referendum_id.encode(),
            spec.election_public_key,
            credential,
            b"".join(ciphertexts),
        )
    ).digest()


def verify_ballot(spec: BallotSpec, body: Mapping[str, Any]) -> VerifiedBallot:
    """Verify the JSON ballot body the server received against ``spec``, signed by the
    credential it names.

    Raises (only these, whatever ``body`` holds):
        EncodingError: shape, types, lengths, hex.
        BallotError: wrong referendum, wrong number of ciphertexts, proofs or sum branches.
        SignatureError: the Ed25519 signature or the credential key is bad.
        InvalidPoint / InvalidScalar: an element that is not canonical or not acceptable.
        ProofError: a 0/1 proof or the sum proof does not verify (check names which).
    """
    record = ballot_from_json(body)
    body_bytes = encode_body(record)
    return verify_record(spec, record, body_bytes)


def verify_canonical(spec: BallotSpec, canonical: bytes) -> VerifiedBallot:
    """Verify canonical ballot bytes, as read from the public log (auditors).

    Raises the same errors as :func:`verify_ballot`.
    """
    record = decode_canonical(canonical)
    return verify_record(spec, record, bytes(canonical[: len(canonical) - SIGNATURE_BYTES]))


@dataclass(frozen=True)
class PreparedBallot:
    """A ballot that passed every check but the group equations of its proofs (``claims``,
    in the order the individual path checks them)."""

    verified: VerifiedBallot
    claims: tuple[ProofClaim, ...]

    def check_alone(self) -> None:
        """The claims one by one. Raises ProofError naming the first that fails."""
        for claim in self.claims:
            claim.check_alone()


def prepare_record(spec: BallotSpec, record: BallotRecord, body_bytes: bytes) -> PreparedBallot:
    """Every check of a ballot but its proofs' group equations (steps 1–7 of
    ``docs/crypto.md`` §5.6), which the caller checks alone or in a batch. The signature is
    checked under the credential the ballot names; roll membership is the caller's.

    Raises the same errors as :func:`verify_ballot`, but no ProofError from step 8.
    """
    shape = plan(spec)
    if record.referendum_id != spec.referendum_id:
        raise BallotError("ballot is for another referendum", check="referendum")
    if len(record.ciphertexts) != shape.explicit:
        raise BallotError(
            f"expected {shape.explicit} ciphertexts, got {len(record.ciphertexts)}",
            check="ciphertexts.count",
        )
    if len(record.proofs) != shape.explicit:
        raise BallotError("one proof per ciphertext", check="proofs.count")
    if shape.sum_range is None:
        if record.sum_proof is not None:
            raise BallotError("this referendum's ballots carry no sum proof", check="sum_proof")
    else:
        branches = shape.sum_range[1] - shape.sum_range[0] + 1
        if record.sum_proof is None or len(record.sum_proof) != BRANCH_BYTES * branches:
            raise BallotError(f"sum proof must have {branches} branches", check="sum_proof")
    credential = bytes(record.credential)
    if len(credential) != 32:
        raise SignatureError("credential must be 32 bytes", check="credential")
    canonical = body_bytes + record.signature
    try:
        crypto_sign_open(record.signature + SIGNING_PREFIX + body_bytes, credential)
    except (CryptoError, ValueError, TypeError) as exc:
        raise SignatureError("voter signature does not verify", check="signature") from exc

    pk = shape.public_key
    cts: list[Ciphertext] = []
    for i, raw in enumerate(record.ciphertexts):
        ct = Ciphertext(
            Point.decode_uncompressed(raw[:65], check=f"option[{i}].a"),
            Point.decode_uncompressed(raw[65:], check=f"option[{i}].b"),
        )
        cts.append(ct)
    context = ballot_context(spec, credential, record.ciphertexts)
    claims: list[ProofClaim] = []
    for i, ct in enumerate(cts):
        name = f"option[{i}].proof"
        proof = DisjunctiveProof.from_bytes(record.proofs[i], 2, check=name)
        check_challenge(TAG_PROOF01, context, struct.pack(">I", i), ct, 0, 1, proof, check=name)
        claims.append(ProofClaim(pk, ct, 0, proof, name))
    total: Ciphertext | None = None
    if shape.sum_range is not None or shape.implied:
        total = Ciphertext(Point.sum(c.a for c in cts), Point.sum(c.b for c in cts))
        if total.a.is_identity:
            # Honest randomness never cancels; a crafted one would publish the sum in clear.
            raise InvalidPoint("sum of the ballot's ciphertexts has a = identity", check="sum.a")
    if shape.sum_range is not None and total is not None and record.sum_proof is not None:
        lo, hi = shape.sum_range
        proof = DisjunctiveProof.from_bytes(record.sum_proof, hi - lo + 1, check="sum_proof")
        check_challenge(TAG_SUM, context, b"", total, lo, hi, proof, check="sum_proof")
        claims.append(ProofClaim(pk, total, lo, proof, "sum_proof"))
    if shape.implied and total is not None:
        cts.append(Ciphertext(-total.a, Point.sum((GENERATOR, -total.b))))
    verified = VerifiedBallot(
        referendum_id=record.referendum_id,
        credential=credential,
        canonical=canonical,
        hash=hashlib.sha256(canonical).digest(),
        ciphertexts=tuple(cts),
    )
    return PreparedBallot(verified, tuple(claims))


def verify_record(spec: BallotSpec, record: BallotRecord, body_bytes: bytes) -> VerifiedBallot:
    """Every check of a ballot whose canonical body bytes are ``body_bytes``, one at a time.

    Raises the same errors as :func:`verify_ballot`.
    """
    prepared = prepare_record(spec, record, body_bytes)
    prepared.check_alone()
    return prepared.verified
