"""The whole k-of-n Joint-Feldman key ceremony in one process, for demos, benchmarks and tests.

In a real referendum each trustee runs ``referendum trustee`` on its own machine and nobody
ever holds every share. Here one process plays all ``n`` trustees: each deals a polynomial,
publishes its commitments, and combines the shares the others dealt to it. The result is the
same joint election key and the same per-trustee shares the file-based ceremony gives, kept
together (test data only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from referendum_core.elgamal import Ciphertext
from referendum_core.group import random_scalar
from referendum_core.proofs import ScalarSource
from referendum_core.trustee import (
    DealerCommitment,
    DecryptionShare,
    TrusteeParams,
    dealer_commitment,
    decrypt_share,
    election_public_key,
    new_dealer,
    share_for,
    trustee_share,
)

__all__ = ["Ceremony"]


@dataclass(frozen=True)
class Ceremony:
    """A finished key ceremony: the public commitments and every trustee's key share."""

    params: TrusteeParams
    commitments: list[DealerCommitment]
    shares: dict[int, int]
    """Trustee index → its share of the election secret key."""

    @classmethod
    def run(
        cls,
        referendum_id: str,
        threshold: int = 2,
        trustees: int = 3,
        rng: ScalarSource = random_scalar,
    ) -> Ceremony:
        """Every trustee deals; every trustee checks the shares it receives and keeps its own.

        Args:
            referendum_id: The referendum the key is for (bound into every proof).
            threshold: k, the trustees needed to decrypt.
            trustees: n, the trustees taking part.
            rng: Where the secret scalars come from (seeded only in tests).
        """
        params = TrusteeParams(referendum_id, threshold, trustees)
        indices = range(1, trustees + 1)
        dealers = [new_dealer(params, i, rng) for i in indices]
        commitments = [dealer_commitment(params, d, rng) for d in dealers]
        # each trustee combines the shares the others dealt to it; no one holds the whole key
        shares = {
            i: trustee_share(params, commitments, i, {d.index: share_for(d, i) for d in dealers})
            for i in indices
        }
        return cls(params, commitments, shares)

    @property
    def election_key(self) -> bytes:
        """The joint election public key (compressed) the commitments imply."""
        key: bytes = election_public_key(self.params, self.commitments).to_compressed()
        return key

    def commitments_json(self) -> dict[str, Any]:
        """The body of ``PUT /v1/referendums/{rid}/trustees``: every trustee's commitments."""
        return {"commitments": [c.to_json() for c in self.commitments]}

    def decrypt(self, index: int, tally: Sequence[Ciphertext]) -> DecryptionShare:
        """Trustee ``index``'s partial decryption of ``tally``, with a proof per ciphertext."""
        return decrypt_share(self.params, index, self.shares[index], tally)

    def save(self, path: Path) -> None:
        """Write the ceremony (shares included) to ``path``, e.g. beside a cached ballot pool."""
        data = {
            "referendum_id": self.params.referendum_id,
            "threshold": self.params.threshold,
            "trustees": self.params.trustees,
            "commitments": [c.to_json() for c in self.commitments],
            "secrets": {str(i): hex(x) for i, x in self.shares.items()},
        }
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, path: Path) -> Ceremony:
        """The ceremony :meth:`save` wrote."""
        data = orjson.loads(path.read_bytes())
        return cls(
            TrusteeParams(data["referendum_id"], data["threshold"], data["trustees"]),
            [DealerCommitment.from_json(c) for c in data["commitments"]],
            {int(i): int(x, 16) for i, x in data["secrets"].items()},
        )
