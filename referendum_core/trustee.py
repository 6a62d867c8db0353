"""k-of-n trustees: distributed key generation, verifiable partial decryption, decoding.

**Key generation** is a Joint-Feldman DKG (Pedersen 1991): no party ever holds the whole key.
Each trustee ``i`` (1-based) picks a random polynomial ``f_i`` of degree ``k − 1`` and publishes
Feldman commitments ``C_{i,j} = a_{i,j}·G`` with a Schnorr proof of knowledge of ``a_{i,0}``
(no rogue keys); it sends ``f_i(l)`` to trustee ``l`` in a sealed box (X25519 +
XSalsa20-Poly1305, PyNaCl). Trustee ``l`` checks every received share against the dealer's
commitments, ``f_i(l)·G = Σ_j l^j·C_{i,j}``, and keeps ``x_l = Σ_i f_i(l)``. The election key is
``PK = Σ_i C_{i,0}`` and trustee ``l``'s verification key ``X_l = Σ_i Σ_j l^j·C_{i,j} = x_l·G``,
both computable by anyone from the published commitments.

Trust assumption: fewer than ``k`` trustees collude (else they can decrypt single ballots), and
at least ``k`` are available at the tally. A dealer whose share fails the check is named by
:class:`~referendum_core.errors.TrusteeError` and the ceremony restarts without it; the
complaint round that would let honest trustees continue is not implemented. As known for
Joint-Feldman, colluders can bias the key's distribution; that does not help them decrypt.

**Decryption**: trustee ``l`` publishes ``D_l = x_l·A`` for each tally ciphertext ``(A, B)``
with a DLEQ proof ``log_G X_l = log_A D_l``. Any ``k`` valid shares combine by Lagrange
interpolation at 0: ``M = B − Σ λ_l·D_l`` with ``λ_l = Π_{j≠l} j/(j − l)``, and ``m`` is
recovered from ``M = m·G`` by a baby-step giant-step search over ``[0, bound]``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from referendum_core.elgamal import Ciphertext
from referendum_core.errors import DecodingError, EncodingError, ProofError, TrusteeError
from referendum_core.group import (
    GENERATOR,
    IDENTITY,
    ORDER,
    Point,
    random_scalar,
    scalar_from_bytes,
    scalar_to_bytes,
)
from referendum_core.proofs import DleqProof, ScalarSource, prove_dleq, verify_dleq

__all__ = [
    "TAG_DEALER_POK",
    "TAG_DECRYPTION",
    "DealerCommitment",
    "DealerSecret",
    "DecryptionShare",
    "TrusteeParams",
    "combine_decryption",
    "dealer_commitment",
    "decode",
    "decrypt_share",
    "election_public_key",
    "lagrange_coefficient",
    "new_dealer",
    "open_share",
    "seal_share",
    "share_for",
    "trustee_share",
    "verification_key",
    "verify_commitment",
    "verify_decryption_share",
    "verify_share",
]

TAG_DEALER_POK = b"referendum/v1/dealer-pok"
TAG_DECRYPTION = b"referendum/v1/decryption-share"
MAX_TRUSTEES = 255


@dataclass(frozen=True)
class TrusteeParams:
    """A ceremony: ``threshold`` of ``trustees`` (indices 1..n) for one referendum."""

    referendum_id: str
    threshold: int
    trustees: int

    def check(self) -> None:
        """Raises TrusteeError unless ``1 <= threshold <= trustees <= 255``."""
        if not 1 <= self.threshold <= self.trustees <= MAX_TRUSTEES:
            raise TrusteeError("need 1 <= threshold <= trustees <= 255", check="params")

    def index(self, i: object) -> int:
        """``i`` checked as a trustee index. Raises TrusteeError."""
        if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i <= self.trustees:
            raise TrusteeError(
                f"trustee index {i!r} outside 1..{self.trustees}", check="trustee.index"
            )
        return i


@dataclass(frozen=True)
class DealerSecret:
    """Trustee ``index``'s polynomial coefficients ``a_0..a_{k−1}`` (secret)."""

    index: int
    coefficients: tuple[int, ...]


@dataclass(frozen=True)
class DealerCommitment:
    """Trustee ``index``'s public Feldman commitments and proof of knowledge of ``a_0``."""

    index: int
    commitments: tuple[Point, ...]
    proof: DleqProof

    def to_json(self) -> dict[str, object]:
        """``{"index", "commitments": [hex33…], "proof": hex64}``."""
        return {
            "index": self.index,
            "commitments": [c.to_compressed().hex() for c in self.commitments],
            "proof": self.proof.to_bytes().hex(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> DealerCommitment:
        """Parse :meth:`to_json` output. Raises EncodingError or GroupError."""
        try:
            index = data["index"]
            commitments = data["commitments"]
            proof = data["proof"]
            if type(index) is not int or not isinstance(commitments, list):
                raise TypeError
            points = tuple(
                Point.decode_compressed(_unhex(c), check=f"trustee[{index}].commitment")
                for c in commitments
            )
            return cls(index, points, DleqProof.from_bytes(_unhex(proof)))
        except (KeyError, TypeError) as exc:
            raise EncodingError("malformed dealer commitment", check="commitment") from exc


@dataclass(frozen=True)
class DecryptionShare:
    """Trustee ``trustee``'s ``D = x·A`` for each tally ciphertext, with DLEQ proofs."""

    trustee: int
    shares: tuple[Point, ...]
    proofs: tuple[DleqProof, ...]

    def to_json(self) -> dict[str, object]:
        """``{"trustee", "shares": [hex33…], "proofs": [hex64…]}`` (identity: 33 zero bytes)."""
        return {
            "trustee": self.trustee,
            "shares": [d.to_compressed().hex() for d in self.shares],
            "proofs": [p.to_bytes().hex() for p in self.proofs],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> DecryptionShare:
        """Parse :meth:`to_json` output. Raises EncodingError or GroupError."""
        try:
            trustee, shares, proofs = data["trustee"], data["shares"], data["proofs"]
            if (
                type(trustee) is not int
                or not isinstance(shares, list)
                or not isinstance(proofs, list)
            ):
                raise TypeError
            return cls(
                trustee,
                tuple(
                    Point.decode_compressed(
                        _unhex(d), check=f"trustee[{trustee}].share", allow_identity=True
                    )
                    for d in shares
                ),
                tuple(
                    DleqProof.from_bytes(_unhex(p), check=f"trustee[{trustee}].proof")
                    for p in proofs
                ),
            )
        except (KeyError, TypeError) as exc:
            raise EncodingError("malformed decryption share", check="decryption_share") from exc


def _unhex(value: object) -> bytes:
    if not isinstance(value, str):
        raise EncodingError("expected a hex string", check="hex")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise EncodingError("not hex", check="hex") from exc
    if raw.hex() != value:
        raise EncodingError("hex must be lowercase without spaces", check="hex")
    return raw


# --- key generation ----------------------------------------------------------------------


def new_dealer(
    params: TrusteeParams, index: int, rng: ScalarSource = random_scalar
) -> DealerSecret:
    """Trustee ``index``'s random polynomial of degree ``threshold − 1``."""
    params.check()
    return DealerSecret(params.index(index), tuple(rng() for _ in range(params.threshold)))


def _pok_context(params: TrusteeParams, index: int, commitments: Sequence[Point]) -> list[bytes]:
    return [
        params.referendum_id.encode(),
        struct.pack(">BBB", params.threshold, params.trustees, index),
        b"".join(c.to_compressed() for c in commitments),
    ]


def dealer_commitment(
    params: TrusteeParams, secret: DealerSecret, rng: ScalarSource = random_scalar
) -> DealerCommitment:
    """Public commitments ``a_j·G`` and a Schnorr proof of knowledge of ``a_0``.

    The proof is a DLEQ proof with base ``G`` on both sides, so one verifier serves both.
    """
    commitments = tuple(Point.base_mul(a) for a in secret.coefficients)
    c0 = commitments[0]
    proof = prove_dleq(
        TAG_DEALER_POK,
        _pok_context(params, secret.index, commitments),
        secret.coefficients[0],
        c0,
        GENERATOR,
        c0,
        rng,
    )
    return DealerCommitment(secret.index, commitments, proof)


def verify_commitment(params: TrusteeParams, commitment: DealerCommitment) -> None:
    """Check a dealer's commitment count and proof of knowledge.

    Raises:
        TrusteeError: naming the trustee (check ``trustee[i].commitment``).
    """
    params.check()
    i = params.index(commitment.index)
    if len(commitment.commitments) != params.threshold:
        raise TrusteeError(
            f"trustee {i} published {len(commitment.commitments)} commitments,"
            f" expected {params.threshold}",
            check=f"trustee[{i}].commitment",
        )
    c0 = commitment.commitments[0]
    try:
        verify_dleq(
            TAG_DEALER_POK,
            _pok_context(params, i, commitment.commitments),
            c0,
            GENERATOR,
            c0,
            commitment.proof,
        )
    except ProofError as exc:
        raise TrusteeError(
            f"trustee {i}'s proof of knowledge fails", check=f"trustee[{i}].commitment"
        ) from exc


def share_for(secret: DealerSecret, recipient: int) -> int:
    """``f_i(recipient)``, the share dealer ``i`` sends to ``recipient`` (1-based)."""
    acc = 0
    for a in reversed(secret.coefficients):
        acc = (acc * recipient + a) % ORDER
    return acc


def _commitment_at(commitments: Sequence[Point], x: int) -> Point:
    """``Σ_j x^j·C_j``: the public image of the committed polynomial at ``x``."""
    return Point.sum(c * pow(x, j, ORDER) for j, c in enumerate(commitments))


def verify_share(
    params: TrusteeParams, commitment: DealerCommitment, recipient: int, share: int
) -> None:
    """Feldman check ``share·G == Σ_j recipient^j·C_{i,j}``.

    Raises:
        TrusteeError: naming the dealer (check ``trustee[i].share``).
    """
    i = commitment.index
    if not 0 <= share < ORDER or Point.base_mul(share) != _commitment_at(
        commitment.commitments, params.index(recipient)
    ):
        raise TrusteeError(
            f"share from trustee {i} to trustee {recipient} fails its Feldman check",
            check=f"trustee[{i}].share",
        )


def seal_share(recipient_transport_key: bytes, share: int) -> bytes:
    """Encrypt a share to the recipient's 32-byte X25519 transport key (sealed box)."""
    return bytes(SealedBox(PublicKey(recipient_transport_key)).encrypt(scalar_to_bytes(share)))


def open_share(transport_secret: bytes, sealed: bytes, dealer: int) -> int:
    """Decrypt a sealed share. Raises TrusteeError naming the dealer if it does not open."""
    try:
        raw = SealedBox(PrivateKey(transport_secret)).decrypt(sealed)
        return scalar_from_bytes(raw, check=f"trustee[{dealer}].share")
    except (CryptoError, ValueError, TypeError) as exc:
        raise TrusteeError(
            f"share from trustee {dealer} does not open", check=f"trustee[{dealer}].share"
        ) from exc


def trustee_share(
    params: TrusteeParams,
    commitments: Sequence[DealerCommitment],
    recipient: int,
    shares: Mapping[int, int],
) -> int:
    """Check every dealer and its share to ``recipient``; return ``x = Σ_i f_i(recipient)``.

    Requires ``shares`` to map each dealer index to the share it sent ``recipient``.

    Raises:
        TrusteeError: a missing or duplicate dealer, a bad commitment or a bad share, naming
            the trustee at fault.
    """
    _check_all(params, commitments)
    total = 0
    for c in commitments:
        if c.index not in shares:
            raise TrusteeError(
                f"no share from trustee {c.index}", check=f"trustee[{c.index}].share"
            )
        verify_share(params, c, recipient, shares[c.index])
        total += shares[c.index]
    return total % ORDER


def _check_all(params: TrusteeParams, commitments: Sequence[DealerCommitment]) -> None:
    params.check()
    indices = sorted(c.index for c in commitments)
    if indices != list(range(1, params.trustees + 1)):
        raise TrusteeError(
            f"need commitments from trustees 1..{params.trustees}, got {indices}",
            check="commitments",
        )
    for c in commitments:
        verify_commitment(params, c)


def election_public_key(params: TrusteeParams, commitments: Sequence[DealerCommitment]) -> Point:
    """``PK = Σ_i C_{i,0}`` after checking every dealer. Raises TrusteeError."""
    _check_all(params, commitments)
    pk = Point.sum(c.commitments[0] for c in commitments)
    if pk.is_identity:
        raise TrusteeError("the election key is the identity", check="election_public_key")
    return pk


def verification_key(commitments: Sequence[DealerCommitment], index: int) -> Point:
    """``X_l = Σ_i Σ_j l^j·C_{i,j}``, trustee ``l``'s public key share."""
    return Point.sum(_commitment_at(c.commitments, index) for c in commitments)


# --- decryption --------------------------------------------------------------------------


def _share_context(params: TrusteeParams, trustee: int, position: int) -> list[bytes]:
    return [params.referendum_id.encode(), struct.pack(">BI", trustee, position)]


def decrypt_share(
    params: TrusteeParams,
    index: int,
    secret_share: int,
    tally: Sequence[Ciphertext],
    rng: ScalarSource = random_scalar,
) -> DecryptionShare:
    """Trustee ``index``'s partial decryption ``D = x·A`` of each tally ciphertext, proven."""
    big_x = Point.base_mul(secret_share)
    shares: list[Point] = []
    proofs: list[DleqProof] = []
    for position, ct in enumerate(tally):
        d = ct.a * secret_share
        shares.append(d)
        proofs.append(
            prove_dleq(
                TAG_DECRYPTION,
                _share_context(params, index, position),
                secret_share,
                big_x,
                ct.a,
                d,
                rng,
            )
        )
    return DecryptionShare(index, tuple(shares), tuple(proofs))


def verify_decryption_share(
    params: TrusteeParams,
    commitments: Sequence[DealerCommitment],
    tally: Sequence[Ciphertext],
    share: DecryptionShare,
) -> None:
    """Check a trustee's partial decryption against its verification key.

    Requires ``commitments`` already checked (e.g. by :func:`election_public_key`).

    Raises:
        TrusteeError: naming the trustee (check ``trustee[l].decryption[position]``).
    """
    index = params.index(share.trustee)
    if len(share.shares) != len(tally) or len(share.proofs) != len(tally):
        raise TrusteeError(
            f"trustee {index} sent {len(share.shares)} shares for {len(tally)} ciphertexts",
            check=f"trustee[{index}].decryption",
        )
    big_x = verification_key(commitments, index)
    for position, (ct, d, proof) in enumerate(zip(tally, share.shares, share.proofs, strict=True)):
        try:
            verify_dleq(
                TAG_DECRYPTION, _share_context(params, index, position), big_x, ct.a, d, proof
            )
        except ProofError as exc:
            raise TrusteeError(
                f"trustee {index}'s decryption share {position} is wrong",
                check=f"trustee[{index}].decryption[{position}]",
            ) from exc


def lagrange_coefficient(index: int, indices: Sequence[int]) -> int:
    """``λ_index = Π_{j≠index} j / (j − index) mod n`` for interpolation at 0."""
    num, den = 1, 1
    for j in indices:
        if j != index:
            num = num * j % ORDER
            den = den * (j - index) % ORDER
    return num * pow(den, -1, ORDER) % ORDER


def combine_decryption(
    params: TrusteeParams,
    commitments: Sequence[DealerCommitment],
    tally: Sequence[Ciphertext],
    shares: Sequence[DecryptionShare],
    bound: int,
) -> list[int]:
    """Verify the shares, combine any ``threshold`` of them and decode each count.

    Requires ``commitments`` from all trustees; extra valid shares beyond ``threshold`` are
    ignored (the lowest indices are used).

    Raises:
        TrusteeError: fewer than ``threshold`` distinct shares, or a bad share (named).
        DecodingError: a count outside ``[0, bound]``.
    """
    _check_all(params, commitments)
    by_index: dict[int, DecryptionShare] = {}
    for share in shares:
        verify_decryption_share(params, commitments, tally, share)
        by_index[share.trustee] = share
    if len(by_index) < params.threshold:
        raise TrusteeError(
            f"{len(by_index)} distinct decryption shares, {params.threshold} needed",
            check="threshold",
        )
    chosen = sorted(by_index)[: params.threshold]
    lambdas = {i: lagrange_coefficient(i, chosen) for i in chosen}
    counts = []
    for position, ct in enumerate(tally):
        combined = Point.sum(by_index[i].shares[position] * lambdas[i] for i in chosen)
        counts.append(decode(ct.b - combined, bound))
    return counts


# --- decoding ----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _baby_steps(m: int) -> dict[bytes, int]:
    table: dict[bytes, int] = {IDENTITY.to_compressed(): 0}
    point = GENERATOR
    for x in range(1, m):
        table[point.to_compressed()] = x
        point = point + GENERATOR
    return table


def decode(point: Point, bound: int) -> int:
    """The ``m`` in ``[0, bound]`` with ``point = m·G``, by baby-step giant-step.

    ``O(√bound)`` group operations; the baby-step table is cached per size.

    Raises:
        DecodingError: no such ``m``.

    >>> decode(Point.base_mul(1234), 10_000)
    1234
    """
    if bound < 0:
        raise DecodingError("negative bound", check="bound")
    m = max(1, math.isqrt(bound) + 1)
    table = _baby_steps(m)
    giant = Point.base_mul(-m)
    current = point
    for j in range(m + 1):
        x = table.get(current.to_compressed())
        if x is not None:
            value = j * m + x
            if value <= bound:
                return value
            break
        current = current + giant
    raise DecodingError(f"plaintext is not in [0, {bound}]", check="decode")
