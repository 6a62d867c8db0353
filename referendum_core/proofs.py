"""Chaum–Pedersen proofs, non-interactive by strong Fiat–Shamir.

Two kinds (``docs/crypto.md`` §4):

* **Disjunctive** proof that ciphertext ``(A, B)`` under key ``PK`` encrypts some ``v`` in a
  contiguous range ``[lo, hi]``, in the *batchable* form that carries its commitments: for
  each ``v`` the commitments ``(a_v, b_v)``, a challenge ``c_v`` and a response ``s_v``, with

      Σ c_v ≡ H(tag, context, label, A, B, a_lo, b_lo, …, a_hi, b_hi)   (mod n)
      s_v·G  = a_v + c_v·A
      s_v·PK = b_v + c_v·(B − v·G)

  (commitments hashed compressed). The hash is checked per proof; the group equations either
  one by one (:func:`check_branches`) or, for many proofs at once, as one random linear
  combination (:mod:`referendum_core.batch`). With ``[0, 1]`` this is the per-option 0/1
  proof; with ``[min, max]`` the ballot's sum proof.
* **DLEQ** proof (decryption shares) that ``log_G X = log_A D``, in the compact ``(c, s)``
  form: ``t1 = s·G − c·X``, ``t2 = s·A − c·D``, ``c ≡ H(tag, context, X, A, D, t1, t2)``.

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
    check_uncompressed,
    hash_to_scalar,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
    zero_one_commitments,
)

__all__ = [
    "BRANCH_BYTES",
    "DisjunctiveProof",
    "DleqProof",
    "ProofClaim",
    "ScalarSource",
    "check_branches",
    "check_challenge",
    "prove_disjunctive",
    "prove_dleq",
    "verify_disjunctive",
    "verify_dleq",
    "verify_zero_one",
]

#: A source of uniformly random non-zero scalars (tests pass a seeded one).
ScalarSource = Callable[[], int]

#: Bytes per branch of a disjunctive proof: two uncompressed commitments and two scalars.
BRANCH_BYTES = 2 * 65 + 2 * 32


@dataclass(frozen=True, slots=True)
class DisjunctiveProof:
    """Per branch ``v = lo..hi``: commitments ``(a_v, b_v)``, challenge ``c_v``, response ``s_v``.

    ``commitments`` holds the uncompressed encodings ``a_lo, b_lo, …, a_hi, b_hi`` (checked
    curve points, never the identity: the verifier only hashes them and feeds them to the
    group equations, so it keeps them as bytes); scalars are below the order.
    """

    commitments: tuple[bytes, ...]
    challenges: tuple[int, ...]
    responses: tuple[int, ...]

    def to_bytes(self) -> bytes:
        """``a_lo ‖ b_lo ‖ … ‖ a_hi ‖ b_hi ‖ c_lo ‖ … ‖ c_hi ‖ s_lo ‖ … ‖ s_hi``.

        Points 65 bytes uncompressed, scalars 32 bytes: :data:`BRANCH_BYTES` per branch.
        """
        points = b"".join(self.commitments)
        scalars = b"".join(scalar_to_bytes(k) for k in (*self.challenges, *self.responses))
        return points + scalars

    @classmethod
    def from_bytes(cls, data: bytes, branches: int, *, check: str = "proof") -> DisjunctiveProof:
        """Decode a proof with ``branches`` values.

        Raises:
            EncodingError: wrong length.
            InvalidPoint: a commitment that is not a canonical curve point (or the identity).
            InvalidScalar: a scalar not below the group order.
        """
        if len(data) != BRANCH_BYTES * branches:
            raise EncodingError(f"proof must be {BRANCH_BYTES * branches} bytes", check=check)
        base = 130 * branches
        check_uncompressed(data[:base], check=check)
        commitments = tuple(data[i : i + 65] for i in range(0, base, 65))
        ks = [scalar_from_bytes(data[j : j + 32], check=check) for j in range(base, len(data), 32)]
        return cls(commitments, tuple(ks[:branches]), tuple(ks[branches:]))

    def commitment_bytes(self) -> list[bytes]:
        """The commitments as the challenge hashes them: compressed, ``a_lo, b_lo, …``."""
        return [bytes((2 | (p[64] & 1),)) + p[1:33] for p in self.commitments]


@dataclass(frozen=True, slots=True)
class ProofClaim:
    """A disjunctive proof whose Fiat–Shamir challenge checked out: its group equations
    (branch ``i`` for the value ``lo + i``) are what is left to check, alone
    (:meth:`check_alone`) or batched with others (:mod:`referendum_core.batch`)."""

    public_key: Point
    ct: Ciphertext
    lo: int
    proof: DisjunctiveProof
    check: str

    def check_alone(self) -> None:
        """The individual path. Raises ProofError naming :attr:`check` if an equation fails."""
        proof = self.proof
        if self.lo == 0 and len(proof.challenges) == 2:
            (c0, c1), (s0, s1) = proof.challenges, proof.responses
            got = zero_one_commitments(self.ct.a, self.ct.b, self.public_key, c0, c1, s0, s1)
            if got != proof.commitment_bytes():
                raise ProofError("proof does not verify", check=self.check)
            return
        check_branches(self.public_key, self.ct, self.lo, proof, check=self.check)


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


def _challenge(
    tag: bytes, context: bytes, label: bytes, ct: Ciphertext, lo: int, hi: int, points: list[bytes]
) -> int:
    return hash_to_scalar(
        tag,
        context,
        _label_range(label, lo, hi),
        ct.a.to_uncompressed(),
        ct.b.to_uncompressed(),
        *points,
    )


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
    pairs: list[Point] = []
    u = rng()
    for v in values:
        if v == value:
            a, b = Point.base_mul(u), public_key * u
        else:
            cs[v], ss[v] = rng(), rng()
            a = ct.a.lincomb_base(-cs[v], ss[v])
            b = Point.sum((public_key * ss[v], _shifted(ct.b, v) * (ORDER - cs[v])))
        pairs += (a, b)
    hashed = [p.to_compressed() for p in pairs]
    c = _challenge(tag, context, label, ct, lo, hi, hashed)
    # A value outside the range leaves every branch simulated: the challenges cannot add up.
    if lo <= value <= hi:
        cs[value] = (c - sum(cs.values())) % ORDER
        ss[value] = (u + cs[value] * r) % ORDER
    return DisjunctiveProof(
        tuple(p.to_uncompressed() for p in pairs),
        tuple(cs.get(v, 0) for v in values),
        tuple(ss.get(v, 0) for v in values),
    )


def check_challenge(
    tag: bytes,
    context: bytes,
    label: bytes,
    ct: Ciphertext,
    lo: int,
    hi: int,
    proof: DisjunctiveProof,
    *,
    check: str = "proof",
) -> None:
    """The Fiat–Shamir half of a disjunctive proof: ``Σ c_v ≡ H(…, commitments)``.

    Requires ``len(proof.challenges) == hi - lo + 1``.

    Raises:
        ProofError: the challenges do not add up to the hash.
    """
    c = _challenge(tag, context, label, ct, lo, hi, proof.commitment_bytes())
    if sum(proof.challenges) % ORDER != c:
        raise ProofError("proof does not verify", check=check)


def check_branches(
    public_key: Point, ct: Ciphertext, lo: int, proof: DisjunctiveProof, *, check: str = "proof"
) -> None:
    """The group half, one branch at a time: ``s_v·G = a_v + c_v·A`` and
    ``s_v·PK = b_v + c_v·(B − v·G)`` for every branch (the individual path).

    Raises:
        ProofError: an equation does not hold.
    """
    hashed = proof.commitment_bytes()
    for i, (c, s) in enumerate(zip(proof.challenges, proof.responses, strict=True)):
        want = chaum_pedersen_commitments(ct.a, _shifted(ct.b, lo + i), public_key, c, s)
        if want != (hashed[2 * i], hashed[2 * i + 1]):
            raise ProofError("proof does not verify", check=check)


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
    """Check a disjunctive proof that ``ct`` encrypts a value in ``[lo, hi]``, individually.

    Requires ``ct.a`` not the identity (callers reject it first) and ``hi - lo + 1``
    branches in ``proof``.

    Raises:
        ProofError: the challenges do not add up to the hash, or a group equation fails.
    """
    check_challenge(tag, context, label, ct, lo, hi, proof, check=check)
    check_branches(public_key, ct, lo, proof, check=check)


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
    """:func:`verify_disjunctive` for ``[0, 1]``, its group half on the fused fast path.

    Raises:
        ProofError: the proof does not verify.
    """
    check_challenge(tag, context, label, ct, 0, 1, proof, check=check)
    ProofClaim(public_key, ct, 0, proof, check).check_alone()


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
