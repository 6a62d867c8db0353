"""Batch verification: many ballots' proofs checked as one random linear combination.

Every group equation of a batch's proofs (``docs/crypto.md`` §4.1) is written as
``Σ_j k_j·P_j = O``. Each equation ``e`` is multiplied by an independent weight ``w_e`` of 128
bits drawn from the operating system's CSPRNG *after* the batch is fixed, and all are summed
into one multi-scalar multiplication (``referendum_core._secp256k1``, a C extension of this
project). If some equation does not hold, the sum is the identity with probability at most
``2^-128`` per check (the soundness argument is in ``docs/crypto.md`` §4.4). When the sum is not
the identity the batch is split in halves until each bad ballot is found, and a bad ballot
always gets the verdict of the individual path (:meth:`PreparedBallot.check_alone`), so the
verdicts equal the individual path's on every input.

The backend is chosen explicitly: ``native`` needs the extension, ``python`` checks every
proof alone (today's path, also what ``auto`` falls back to without a compiler).

>>> resolve_backend("python")
'python'
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from referendum_core.ballot import BallotSpec, PreparedBallot, VerifiedBallot, prepare_record
from referendum_core.ballot_codec import SIGNATURE_BYTES, BallotRecord, decode_canonical
from referendum_core.errors import CoreError
from referendum_core.group import GENERATOR, ORDER, Point
from referendum_core.proofs import ProofClaim

try:
    from referendum_core import _secp256k1 as _native
except ImportError:  # built without a compiler: the python backend only
    _native = None  # type: ignore[assignment]

__all__ = [
    "BACKENDS",
    "NATIVE_AVAILABLE",
    "BallotInput",
    "Verdict",
    "claims_hold",
    "resolve_backend",
    "verify_ballots",
    "verify_canonical_ballots",
]

BACKENDS = ("auto", "native", "python")
NATIVE_AVAILABLE = _native is not None
#: Bits of each verifier weight: a false batch passes with probability at most 2^-WEIGHT_BITS.
WEIGHT_BITS = 128
#: Groups this small are checked ballot by ballot instead of split further.
_ALONE = 2

Verdict = VerifiedBallot | CoreError
"""A ballot's outcome: the verified ballot, or the error the individual path raises."""


@dataclass(frozen=True)
class BallotInput:
    """One ballot to verify: its fields and its canonical body bytes (the signature is
    checked under the credential the record names)."""

    record: BallotRecord
    body_bytes: bytes


def resolve_backend(name: str) -> str:
    """``native`` or ``python`` for a setting of ``auto``, ``native`` or ``python``.

    Raises:
        ValueError: an unknown name, or ``native`` without the extension built.
    """
    if name not in BACKENDS:
        raise ValueError(f"verify backend must be one of {', '.join(BACKENDS)}, not {name!r}")
    if name == "auto":
        return "native" if NATIVE_AVAILABLE else "python"
    if name == "native" and not NATIVE_AVAILABLE:
        raise ValueError("verify backend 'native' needs the C extension referendum_core._secp256k1")
    return name


def claims_hold(claims: Sequence[ProofClaim]) -> bool:
    """Whether every group equation of ``claims`` holds, by one weighted multi-scalar
    multiplication (false with probability ≥ 1 − 2^-128 if any does not).

    Requires the native extension (:data:`NATIVE_AVAILABLE`).
    """
    if _native is None:
        raise RuntimeError("claims_hold needs the C extension referendum_core._secp256k1")
    branches = sum(len(c.proof.challenges) for c in claims)
    randomness = secrets.token_bytes(2 * branches * (WEIGHT_BITS // 8))
    width = WEIGHT_BITS // 8
    points: list[bytes] = []
    scalars: list[int] = []
    # Coefficients of the generator and of each election key, summed over the batch.
    g = 0
    key_points: dict[bytes, Point] = {}
    key_coefficients: dict[bytes, int] = {}
    pos = 0
    for claim in claims:
        proof = claim.proof
        ca = cb = 0
        key = claim.public_key.to_uncompressed()
        key_points.setdefault(key, claim.public_key)
        h = 0
        commitments = proof.commitments
        for i, (c, s) in enumerate(zip(proof.challenges, proof.responses, strict=True)):
            w1 = int.from_bytes(randomness[pos : pos + width], "big")
            w2 = int.from_bytes(randomness[pos + width : pos + 2 * width], "big")
            pos += 2 * width
            # w1·(a + c·A − s·G) + w2·(b + c·B − c·v·G − s·PK) = O
            points.append(commitments[2 * i])
            points.append(commitments[2 * i + 1])
            scalars.append(w1)
            scalars.append(w2)
            ca += w1 * c
            cb += w2 * c
            g -= w1 * s + w2 * c * (claim.lo + i)
            h -= w2 * s
        key_coefficients[key] = key_coefficients.get(key, 0) + h
        points.append(claim.ct.a.to_uncompressed())
        points.append(claim.ct.b.to_uncompressed())
        scalars.append(ca % ORDER)
        scalars.append(cb % ORDER)
    points.append(GENERATOR.to_uncompressed())
    scalars.append(g % ORDER)
    for key, coefficient in key_coefficients.items():
        points.append(key)
        scalars.append(coefficient % ORDER)
    return _native.multi_mul_is_identity(
        b"".join(points), b"".join(k.to_bytes(32, "big") for k in scalars)
    )


def _settle(group: list[tuple[int, PreparedBallot]], verdicts: list[Verdict | None]) -> None:
    """Give every ballot of ``group`` its verdict: the batch, else its halves, else alone."""
    if len(group) > _ALONE and claims_hold([c for _, p in group for c in p.claims]):
        for index, prepared in group:
            verdicts[index] = prepared.verified
        return
    if len(group) > _ALONE:
        half = len(group) // 2
        _settle(group[:half], verdicts)
        _settle(group[half:], verdicts)
        return
    for index, prepared in group:
        try:
            prepared.check_alone()
        except CoreError as exc:
            verdicts[index] = exc
        else:
            verdicts[index] = prepared.verified


def verify_ballots(
    spec: BallotSpec, ballots: Sequence[BallotInput], *, backend: str = "auto"
) -> list[Verdict]:
    """The verdict of every ballot, each equal to what the individual path gives it.

    Checks every 0/1 and sum proof of the batch in one combined check (``native``), or each
    alone (``python``); signatures are checked one by one (Ed25519). On a failed combined
    check the batch is bisected, so a bad ballot costs about ``2·log2(len)`` smaller checks.

    Raises:
        ValueError: an unusable ``backend`` (see :func:`resolve_backend`).
    """
    chosen = resolve_backend(backend)
    verdicts: list[Verdict | None] = [None] * len(ballots)
    pending: list[tuple[int, PreparedBallot]] = []
    for index, ballot in enumerate(ballots):
        try:
            prepared = prepare_record(spec, ballot.record, ballot.body_bytes)
        except CoreError as exc:
            verdicts[index] = exc
            continue
        if prepared.claims:
            pending.append((index, prepared))
        else:
            verdicts[index] = prepared.verified
    if chosen == "native":
        _settle(pending, verdicts)
    else:
        for index, prepared in pending:
            try:
                prepared.check_alone()
            except CoreError as exc:
                verdicts[index] = exc
            else:
                verdicts[index] = prepared.verified
    return [v for v in verdicts if v is not None]


def verify_canonical_ballots(
    spec: BallotSpec, ballots: Sequence[bytes], *, backend: str = "auto"
) -> list[Verdict]:
    """:func:`verify_ballots` for canonical bytes (stored ballots); each verdict equals
    :func:`referendum_core.ballot.verify_canonical`'s."""
    verdicts: list[Verdict | None] = [None] * len(ballots)
    inputs: list[BallotInput] = []
    where: list[int] = []
    for index, canonical in enumerate(ballots):
        try:
            record = decode_canonical(canonical)
        except CoreError as exc:
            verdicts[index] = exc
            continue
        body = bytes(canonical[: len(canonical) - SIGNATURE_BYTES])
        inputs.append(BallotInput(record, body))
        where.append(index)
    for index, verdict in zip(where, verify_ballots(spec, inputs, backend=backend), strict=True):
        verdicts[index] = verdict
    return [v for v in verdicts if v is not None]
