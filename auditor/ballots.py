"""Verifying logged ballots against the referendum definition and the committed voter roll.

:class:`RollBallotVerifier` is the :class:`~auditor.follow.BallotVerifier` ``follow`` uses by
default: the ballot spec (options, selection bounds, election key) comes from
``GET /v1/referendums/{rid}``, and each voter's public key from
``GET .../roll/proof/{voter_id}``, whose RFC 9162 inclusion proof is checked against the roll
commitment published in the referendum definition before the key is trusted.
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
    """Checks each ballot's signature and proofs with the voter key proven in the roll."""

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
        self._keys: OrderedDict[str, bytes] = OrderedDict()
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

    async def voter_key(self, voter_id: str) -> bytes:
        """The voter's public key, proven to be in the committed roll."""
        key = self._keys.get(voter_id)
        if key is not None:
            self._keys.move_to_end(voter_id)
            return key
        try:
            obj = await self.client.roll_proof(voter_id)
        except NotFoundError as exc:
            raise AuditFailure("roll.voter", f"voter {voter_id!r} is not on the roll") from exc
        if obj.get("voter_id") != voter_id:
            raise AuditFailure("roll.proof", f"roll proof for another voter than {voter_id!r}")
        key = parse_hex(obj.get("public_key"), "voter public key")
        index, size = obj.get("index"), obj.get("size")
        proof = obj.get("proof")
        if type(index) is not int or size != self.roll_size or not isinstance(proof, list):
            raise AuditFailure("roll.proof", f"malformed roll proof for {voter_id!r}")
        try:
            merkle.verify_inclusion(
                roll_leaf_hash(voter_id, key),
                index,
                self.roll_size,
                [parse_hex(p, "roll proof element") for p in proof],
                self.roll_root,
            )
        except CoreError as exc:
            raise AuditFailure(
                "roll.proof", f"voter {voter_id!r} is not proven to be in the committed roll: {exc}"
            ) from exc
        self._keys[voter_id] = key
        if len(self._keys) > self._cache_size:
            self._keys.popitem(last=False)
        return key

    async def verify(self, index: int, voter_id: str, body: bytes) -> None:
        """Verify ballot ``index``: voter in the roll, signature, proofs, voter id matches."""
        key = await self.voter_key(voter_id)
        verified = verify_canonical(self.spec, body, key)
        if verified.voter_id != voter_id:
            raise AuditFailure(
                "ballot.voter",
                f"ballot {index} is listed for {voter_id!r} but signed as {verified.voter_id!r}",
            )

    async def verify_many(
        self, checks: list[tuple[int, str, bytes]]
    ) -> list[tuple[int, str, CoreError]]:
        """:meth:`verify` for a page of ``(index, voter id, body)``, the proofs as one batch.

        Returns the first failing ballot's core error (in log order), or nothing; raises the
        AuditFailure of a roll or voter-id failure when no earlier ballot failed.
        """
        keys: list[bytes] = []
        roll_failure: AuditFailure | None = None
        for _, voter_id, _ in checks:
            try:
                keys.append(await self.voter_key(voter_id))
            except AuditFailure as exc:
                roll_failure = exc
                break
        todo = checks[: len(keys)]
        verdicts = verify_canonical_ballots(
            self.spec,
            [(body, key) for (_, _, body), key in zip(todo, keys, strict=True)],
            backend=self.backend,
        )
        for (index, voter_id, _), verdict in zip(todo, verdicts, strict=True):
            if isinstance(verdict, CoreError):
                return [(index, voter_id, verdict)]
            if verdict.voter_id != voter_id:
                raise AuditFailure(
                    "ballot.voter",
                    f"ballot {index} is listed for {voter_id!r} but signed as {verdict.voter_id!r}",
                )
        if roll_failure is not None:
            raise roll_failure
        return []
