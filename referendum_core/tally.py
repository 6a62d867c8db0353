"""The encrypted tally: the hash that names it and the per-option sum with the implied option.

Exponential ElGamal is additively homomorphic, so the tally of an option is the component-wise
sum of that option's ciphertexts over the ballots that count. For an exactly-one question the
ballots carry ``k − 1`` ciphertexts (:mod:`referendum_core.ballot`) and the last option's
ciphertext of a ballot is ``(−ΣA_i, G − ΣB_i)``; summed over the ``N`` ballots that count it is
``(−ΣT_i.a, N·G − ΣT_i.b)`` where ``T_i`` are the explicit tallies (:func:`full_tally`), so
only the explicit tallies and ``N`` need keeping up to date (:func:`fold`).

Under the ``last_counts`` re-vote policy the ballot that counts for a credential is its last in log
order; each earlier one is *superseded* by the credential's next ballot (:func:`supersessions`) and
taken out of the tally by adding its negation.

The batcher folds each sealed block with :func:`fold`; the auditor recomputes the whole tally
with :func:`sum_explicit` and :func:`full_tally`; :func:`encrypted_tally` does both in one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, MutableMapping, Sequence

from referendum_core.ballot import BallotSpec, plan
from referendum_core.ballot_codec import ciphertext_bytes, decode_canonical
from referendum_core.elgamal import CIPHERTEXT_BYTES, Ciphertext, aggregate_encoded
from referendum_core.errors import BallotError
from referendum_core.group import IDENTITY, Point

__all__ = [
    "TALLY_DOMAIN",
    "encrypted_tally",
    "fold",
    "full_tally",
    "split_ciphertexts",
    "sum_explicit",
    "supersessions",
    "tally_hash",
]

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


def sum_explicit(blobs: Sequence[bytes], explicit: int) -> list[Ciphertext]:
    """Per-option sums of ballots' explicit ciphertexts, each blob ``explicit × 130`` bytes.

    A blob is what :func:`referendum_core.ballot_codec.ciphertext_bytes` returns (or a partial sum
    in the same layout); no blobs sum to the identity.

    >>> one = Ciphertext(Point.base_mul(2), Point.base_mul(3)).to_bytes()
    >>> sum_explicit([one, one], 1)[0].a == Point.base_mul(4)
    True

    Raises:
        EncodingError / InvalidPoint: a blob part that is not a canonical point.
    """
    return [
        aggregate_encoded(blob[i * CIPHERTEXT_BYTES : (i + 1) * CIPHERTEXT_BYTES] for blob in blobs)
        for i in range(explicit)
    ]


def fold(
    explicit: Sequence[Ciphertext], added: Sequence[bytes], removed: Sequence[bytes]
) -> list[Ciphertext]:
    """The explicit tallies with the ballots ``added`` counted and those ``removed`` taken out.

    ``added`` and ``removed`` hold ciphertext blobs as for :func:`sum_explicit`; a removed
    ballot is subtracted by adding its negation ``(−a, −b)``.

    >>> one = Ciphertext(Point.base_mul(2), Point.base_mul(3))
    >>> fold([one], [one.to_bytes()], [one.to_bytes()]) == [one]
    True
    """
    n = len(explicit)
    plus = sum_explicit(added, n) if added else None
    minus = sum_explicit(removed, n) if removed else None
    out = []
    for i, total in enumerate(explicit):
        parts = [total]
        if plus is not None:
            parts.append(plus[i])
        if minus is not None:
            parts.append(Ciphertext(-minus[i].a, -minus[i].b))
        out.append(Ciphertext(Point.sum(p.a for p in parts), Point.sum(p.b for p in parts)))
    return out


def encrypted_tally(
    spec: BallotSpec, canonical_ballots: Iterable[bytes], *, chunk: int = 100_000
) -> tuple[Ciphertext, ...]:
    """The encrypted per-option tally of counted ballots, one ciphertext per option.

    Requires ballots already verified (one per counted voter, e.g. the last valid ballot of
    each); this only parses their ciphertexts and sums them, ``chunk`` ballots at a time. No
    ballots: every explicit option's tally is the identity.

    Raises:
        EncodingError / InvalidPoint: a ballot that does not parse.
        BallotError: a ballot of another referendum or shape.
    """
    shape = plan(spec)
    explicit = [Ciphertext(IDENTITY, IDENTITY) for _ in range(shape.explicit)]
    blobs: list[bytes] = []
    count = 0
    for data in canonical_ballots:
        record = decode_canonical(data)
        if record.referendum_id != spec.referendum_id or len(record.ciphertexts) != (
            shape.explicit
        ):
            raise BallotError("ballot does not belong to this tally", check="tally")
        blobs.append(ciphertext_bytes(data))
        count += 1
        if len(blobs) >= chunk:
            explicit = fold(explicit, blobs, ())
            blobs.clear()
    explicit = fold(explicit, blobs, ())
    return tuple(full_tally(explicit, count, shape.implied))


def supersessions(
    entries: Iterable[tuple[int, bytes | None]], latest: MutableMapping[bytes, int] | None = None
) -> list[tuple[int, int]]:
    """``(superseded, superseding)`` index pairs: each ballot of a credential by its next.

    ``entries`` are ``(log index, credential)`` in log order (a ``None`` one is skipped);
    ``latest`` maps each credential to the index of its last ballot before ``entries`` and is
    updated to the last one after them. Sorted by the superseded index.

    >>> supersessions(enumerate([b"a", b"b", b"a", b"a"]))
    [(0, 2), (2, 3)]
    >>> last = {b"b": 0}
    >>> supersessions([(5, b"b"), (6, b"c")], last), last
    ([(0, 5)], {b'b': 5, b'c': 6})
    """
    last = {} if latest is None else latest
    pairs = []
    for index, voter in entries:
        if voter is None:
            continue
        before = last.get(voter)
        if before is not None:
            pairs.append((before, index))
        last[voter] = index
    pairs.sort()
    return pairs
