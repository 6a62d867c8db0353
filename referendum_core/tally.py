"""The encrypted tally: the hash that names it and the per-option sum with the implied option.

Exponential ElGamal is additively homomorphic, so the tally of an option is the component-wise
sum of that option's ciphertexts over the ballots that count. For an exactly-one question the
ballots carry ``k − 1`` ciphertexts (:mod:`referendum_core.ballot`) and the last option's
ciphertext of a ballot is ``(−ΣA_i, G − ΣB_i)``; summed over the ``N`` ballots that count it is
``(−ΣT_i.a, N·G − ΣT_i.b)`` where ``T_i`` are the explicit tallies (:func:`full_tally`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from referendum_core.elgamal import CIPHERTEXT_BYTES, Ciphertext
from referendum_core.group import Point

__all__ = ["TALLY_DOMAIN", "full_tally", "split_ciphertexts", "tally_hash"]

TALLY_DOMAIN = b"referendum/v1/encrypted-tally\x00"
"""Domain tag of :func:`tally_hash`."""


def tally_hash(referendum_id: str, ciphertexts: Sequence[bytes]) -> bytes:
    """``SHA-256(TALLY_DOMAIN ‖ u16 len ‖ referendum id ‖ u8 count ‖ ciphertexts)``.

    Names the exact encrypted tally a decryption share is for.

    >>> len(tally_hash("r1", [bytes(130)]))
    32
    """
    rid = referendum_id.encode()
    return hashlib.sha256(
        TALLY_DOMAIN
        + len(rid).to_bytes(2, "big")
        + rid
        + bytes([len(ciphertexts)])
        + b"".join(ciphertexts)
    ).digest()


def full_tally(explicit: Sequence[Ciphertext], counted: int, implied: bool) -> list[Ciphertext]:
    """One ciphertext per option: the explicit tallies, plus the derived last one if implied.

    >>> t = full_tally([Ciphertext(Point.base_mul(2), Point.base_mul(3))], 1, True)
    >>> t[1].a == -Point.base_mul(2) and t[1].b == Point.base_mul(1) - Point.base_mul(3)
    True
    """
    result = list(explicit)
    if implied:
        a = Point.sum(-ct.a for ct in explicit)
        b = Point.sum([Point.base_mul(counted), *(-ct.b for ct in explicit)])
        result.append(Ciphertext(a, b))
    return result


def split_ciphertexts(blob: bytes) -> tuple[bytes, ...]:
    """Concatenated encoded ciphertexts cut into one ``CIPHERTEXT_BYTES`` piece each.

    >>> len(split_ciphertexts(bytes(2 * CIPHERTEXT_BYTES)))
    2
    """
    return tuple(blob[i : i + CIPHERTEXT_BYTES] for i in range(0, len(blob), CIPHERTEXT_BYTES))
