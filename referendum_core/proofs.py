"""Chaum–Pedersen proofs, non-interactive by strong Fiat–Shamir.

Two kinds, both in the compact ``(challenges, responses)`` form the verifier recomputes the
commitments from (``docs/crypto.md`` §4):

* **Disjunctive** proof that ciphertext ``(A, B)`` under key ``PK`` encrypts some ``v`` in a
  contiguous range ``[lo, hi]``: for each ``v`` the verifier computes
  ``a_v = s_v·G − c_v·A`` and ``b_v = s_v·PK − c_v·(B − v·G)`` and checks
  ``Σ c_v ≡ H(tag, context, label, A, B, a_lo, b_lo, …, a_hi, b_hi) (mod n)``. With
  ``[0, 1]`` this is the per-option 0/1 proof; with ``[min, max]`` the ballot's sum proof.
* **DLEQ** proof (decryption shares) that ``log_G X = log_A D``: ``t1 = s·G − c·X``,
  ``t2 = s·A − c·D``, ``c ≡ H(tag, context, X, A, D, t1, t2)``.

The caller's ``context`` carries what Fiat–Shamir must bind beyond the statement (referendum
id, election key, voter credential, all ciphertexts): see ``referendum_core.ballot``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from referendum_core.elgamal import Ciphertext
from referendum_core.errors import EncodingError, ProofError
from referendum_core.group import (
    ORDER,
    Point,
    chaum_pedersen_commitments,
    hash_to_scalar,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
    zero_one_commitments,
)

__all__ = [
    "DisjunctiveProof",
    "DleqProof",
    "ScalarSource",
    "prove_disjunctive",
    "prove_dleq",
    "verify_disjunctive",
    "verify_dleq",
    "verify_zero_one",
]

#: A source of uniformly random non-zero scalars (tests pass a seeded one).
ScalarSource = Callable[[], int]


@dataclass(frozen=True, slots=True)
class DisjunctiveProof:
    """Challenges ``c_lo..c_hi`` and responses ``s_lo..s_hi``, scalars below the order."""

    challenges: tuple[int, ...]
    responses: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """``c_lo ‖ … ‖ c_hi ‖ s_lo ‖ … ‖ s_hi``, 32 bytes each."""
        return b"".join(scalar_to_bytes(k) for k in (*self.challenges, *self.responses))

    @classmethod
    def from_bytes(cls, data: bytes, branches: int, *, check: str = "proof") -> DisjunctiveProof:
        """Decode a proof with ``branches`` values.

        Raises:
            EncodingError: wrong length.
            InvalidScalar: a scalar not below the group order.
        """
        if len(data) != 64 * branches:
            raise EncodingError(f"proof must be {64 * branches} bytes", check=check)
        ks = [scalar_from_bytes(data[i : i + 32], check=check) for i in range(0, len(data), 32)]
        return cls(tuple(ks[:branches]), tuple(ks[branches:]))


@dataclass(frozen=True, slots=True)
class DleqProof:
    """Challenge ``c`` and response ``s`` of a Chaum–Pedersen equality-of-logs proof."""

    c: int
    s: int

    def to_bytes(self) -> bytes:
        """``c ‖ s``, 64 bytes."""
        return scalar_to_bytes(self.c) + scalar_to_bytes(self.s)

    @classmethod
    def from_bytes(cls, data: bytes, *, check: str = "proof") -> DleqProof:
        """Decode 64 bytes. Raises EncodingError or InvalidScalar."""
        if len(data) != 64:
            raise EncodingError("DLEQ proof must be 64 bytes", check=check)
        return cls(
            scalar_from_bytes(data[:32], check=check), scalar_from_bytes(data[32:], check=check)
        )


@lru_cache(maxsize=256)
def _minus_vg(v: int) -> Point:
    return Point.base_mul(-v)


def _shifted(b: Point, v: int) -> Point:
    """``B − v·G``."""
    return b if v == 0 else Point.sum((b, _minus_vg(v)))


def _label_range(label: bytes, lo: int, hi: int) -> bytes:
    return label + struct.pack(">II", lo, hi)


def prove_disjunctive(
    tag: bytes,
    context: bytes,
    label: bytes,
    public_key: Point,
    ct: Ciphertext,
    lo: int,
    hi: int,
    value: int,
    r: int,
    rng: ScalarSource = random_scalar,
) -> DisjunctiveProof:
    """Prove that ``ct`` encrypts a value in ``[lo, hi]``, knowing it is ``value`` under ``r``.

    Requires ``lo <= value <= hi`` and ``ct == (r·G, value·G + r·PK)``; otherwise the result
    is a proof that does not verify (tests use this to build forgeries).
    """
    values = range(lo, hi + 1)
    cs: dict[int, int] = {}
    ss: dict[int, int] = {}
    commitments: list[bytes] = []
    u = rng()
    for v in values:
        if v == value:
            a, b = Point.base_mul(u), public_key * u
        else:
            cs[v], ss[v] = rng(), rng()
            a = ct.a.lincomb_base(-cs[v], ss[v])
            b = Point.sum((public_key * ss[v], _shifted(ct.b, v) * (ORDER - cs[v])))
        commitments += (a.to_compressed(), b.to_compressed())
    c = hash_to_scalar(
        tag,
        context,
        _label_range(label, lo, hi),
        ct.a.to_uncompressed(),
        ct.b.to_uncompressed(),
        *commitments,
    )
    # A value outside the range leaves every branch simulated: the challenges cannot add up.
    if lo <= value <= hi:
        cs[value] = (c - sum(cs.values())) % ORDER
        ss[value] = (u + cs[value] * r) % ORDER
    return DisjunctiveProof(
        tuple(cs.get(v, 0) for v in values), tuple(ss.get(v, 0) for v in values)
    )


def verify_disjunctive(
    tag: bytes,
    context: bytes,
    label: bytes,
    public_key: Point,
    ct: Ciphertext,
    lo: int,
    hi: int,
    proof: DisjunctiveProof,
    *,
    check: str = "proof",
) -> None:
    """Check a disjunctive proof that ``ct`` encrypts a value in ``[lo, hi]``.

    Requires ``ct.a`` not the identity (callers reject it first) and
    ``len(proof.challenges) == len(proof.responses) == hi - lo + 1``.

    Raises:
        ProofError: the challenges do not add up to the Fiat–Shamir hash.
    """
    commitments: list[bytes] = []
    for i, v in enumerate(range(lo, hi + 1)):
        commitments += chaum_pedersen_commitments(
            ct.a, _shifted(ct.b, v), public_key, proof.challenges[i], proof.responses[i]
        )
    c = hash_to_scalar(
        tag,
        context,
        _label_range(label, lo, hi),
        ct.a.to_uncompressed(),
        ct.b.to_uncompressed(),
        *commitments,
    )
    if sum(proof.challenges) % ORDER != c:
        raise ProofError("proof does not verify", check=check)


def verify_zero_one(
    tag: bytes,
    context: bytes,
    label: bytes,
    public_key: Point,
    ct: Ciphertext,
    proof: DisjunctiveProof,
    *,
    check: str = "proof",
) -> None:
    """:func:`verify_disjunctive` for ``[0, 1]``, on the fused fast path.

    Raises:
        ProofError: the proof does not verify.
    """
    (c0, c1), (s0, s1) = proof.challenges, proof.responses
    commitments = zero_one_commitments(ct.a, ct.b, public_key, c0, c1, s0, s1)
    c = hash_to_scalar(
        tag,
        context,
        _label_range(label, 0, 1),
        ct.a.to_uncompressed(),
        ct.b.to_uncompressed(),
        *commitments,
    )
    if (c0 + c1) % ORDER != c:
        raise ProofError("proof does not verify", check=check)


def prove_dleq(
    tag: bytes,
    context: Sequence[bytes],
    x: int,
    big_x: Point,
    base: Point,
    d: Point,
    rng: ScalarSource = random_scalar,
) -> DleqProof:
    """Prove ``big_x = x·G`` and ``d = x·base`` without revealing ``x``."""
    u = rng()
    t1, t2 = Point.base_mul(u), base * u
    c = _dleq_challenge(tag, context, big_x, base, d, t1.to_compressed(), t2.to_compressed())
    return DleqProof(c, (u + c * x) % ORDER)


def verify_dleq(
    tag: bytes,
    context: Sequence[bytes],
    big_x: Point,
    base: Point,
    d: Point,
    proof: DleqProof,
    *,
    check: str = "proof",
) -> None:
    """Check ``log_G big_x = log_base d``. Raises ProofError if the proof fails."""
    t1, t2 = chaum_pedersen_commitments(big_x, d, base, proof.c, proof.s)
    if _dleq_challenge(tag, context, big_x, base, d, t1, t2) != proof.c:
        raise ProofError("equality-of-logarithms proof does not verify", check=check)


def _dleq_challenge(
    tag: bytes, context: Sequence[bytes], big_x: Point, base: Point, d: Point, t1: bytes, t2: bytes
) -> int:
    return hash_to_scalar(
        tag, *context, big_x.to_compressed(), base.to_compressed(), d.to_compressed(), t1, t2
    )
