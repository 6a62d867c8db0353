"""Verifying logged ballots against the referendum definition and the committed roll.

:class:`RollBallotVerifier` is the :class:`~auditor.follow.BallotVerifier` ``follow`` uses by
default: the ballot spec (options, selection bounds, election key) comes from
``GET /v1/referendums/{rid}``. Each ballot names its signer's credential (the Ed25519 public
key the signature is checked under); that the credential is on the roll is proven by
``GET .../roll/proof/{credential}``, an RFC 9162 inclusion proof checked against the roll
commitment published in the referendum definition. No voter id is asked for or seen.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from auditor.client import NotFoundError, PublicLogClient
from auditor.follow import AuditFailure, parse_hex
from referendum_core import merkle
from referendum_core.ballot import BallotSpec, verify_canonical
from referendum_core.batch import verify_canonical_ballots
from referendum_core.errors import CoreError
from referendum_core.roll import roll_leaf_hash

__all__ = ["RollBallotVerifier"]


def _spec(obj: dict[str, Any]) -> BallotSpec:
    try:
        return BallotSpec.from_definition(obj)
    except CoreError as exc:
        raise AuditFailure("referendum.format", f"bad referendum definition: {exc}") from exc


class RollBallotVerifier:
    """Checks each ballot's credential is proven in the roll, then its signature and proofs."""

    def __init__(
        self,
        client: PublicLogClient,
        spec: BallotSpec,
        roll_root: bytes,
        roll_size: int,
        *,
        cache_size: int = 100_000,
        backend: str = "auto",
    ) -> None:
        self.backend = backend
        self.client = client
        self.spec = spec
        self.roll_root = roll_root
        self.roll_size = roll_size
        self._proven: OrderedDict[bytes, int] = OrderedDict()  # credential -> its leaf index
        self._cache_size = cache_size

    @classmethod
    async def create(cls, client: PublicLogClient) -> RollBallotVerifier:
        """Read the referendum definition and its roll commitment from the server."""
        obj = await client.referendum()
        spec = _spec(obj)
        if obj.get("roll_root") is None:
            raise AuditFailure("roll.commitment", "the referendum has no roll commitment yet")
        root = parse_hex(obj.get("roll_root"), "roll root")
        size = obj.get("roll_size")
        if type(size) is not int or size <= 0:
            raise AuditFailure("roll.commitment", "the roll size is not a positive integer")
        return cls(client, spec, root, size)

    async def prove_on_roll(self, credential: bytes) -> int:
        """Check that ``credential`` is in the committed roll (its fetched inclusion proof);
        return its leaf index."""
        known = self._proven.get(credential)
        if known is not None:
            self._proven.move_to_end(credential)
            return known
        name = credential.hex()
        try:
            obj = await self.client.roll_proof(name)
        except NotFoundError as exc:
            raise AuditFailure("roll.credential", f"credential {name} is not on the roll") from exc
        if obj.get("credential") != name:
            raise AuditFailure("roll.proof", f"roll proof for another credential than {name}")
        index, size = obj.get("index"), obj.get("size")
        proof = obj.get("proof")
        if type(index) is not int or size != self.roll_size or not isinstance(proof, list):
            raise AuditFailure("roll.proof", f"malformed roll proof for {name}")
        if "root" in obj and obj["root"] != self.roll_root.hex():
            raise AuditFailure("roll.proof", f"roll proof for {name} names another roll root")
        try:
            merkle.verify_inclusion(
                roll_leaf_hash(credential),
                index,
                self.roll_size,
                [parse_hex(p, "roll proof element") for p in proof],
                self.roll_root,
            )
        except CoreError as exc:
            raise AuditFailure(
                "roll.proof", f"credential {name} is not proven to be in the committed roll: {exc}"
            ) from exc
        self._proven[credential] = index
        if len(self._proven) > self._cache_size:
            self._proven.popitem(last=False)
        return index

    async def verify(self, index: int, credential: bytes, body: bytes) -> None:
        """Verify ballot ``index``: its credential in the roll, its signature under that
        credential, its proofs."""
        await self.prove_on_roll(credential)
        verified = verify_canonical(self.spec, body)
        if verified.credential != credential:
            raise AuditFailure(
                "ballot.credential",
                f"ballot {index} is listed for {credential.hex()} but names "
                f"{verified.credential.hex()}",
            )

    async def verify_many(
        self, checks: list[tuple[int, bytes, bytes]]
    ) -> list[tuple[int, bytes, CoreError]]:
        """:meth:`verify` for a page of ``(index, credential, body)``, the proofs as one batch.

        Returns the first failing ballot's core error (in log order), or nothing; raises the
        AuditFailure of a roll or credential failure when no earlier ballot failed.
        """
        proven = 0
        roll_failure: AuditFailure | None = None
        for _, credential, _ in checks:
            try:
                await self.prove_on_roll(credential)
            except AuditFailure as exc:
                roll_failure = exc
                break
            proven += 1
        todo = checks[:proven]
        verdicts = verify_canonical_ballots(
            self.spec, [body for _, _, body in todo], backend=self.backend
        )
        for (index, credential, _), verdict in zip(todo, verdicts, strict=True):
            if isinstance(verdict, CoreError):
                return [(index, credential, verdict)]
            if verdict.credential != credential:
                raise AuditFailure(
                    "ballot.credential",
                    f"ballot {index} is listed for {credential.hex()} but names "
                    f"{verdict.credential.hex()}",
                )
        if roll_failure is not None:
            raise roll_failure
        return []
