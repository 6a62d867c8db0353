"""Witness checks of the auditor: a pinned policy, a cosigned checkpoint, and its coverage.

The auditor gets the witness policy out of band (the referendum's published definition, a
party's own copy) and never takes it from the server it checks. A checkpoint is *witnessed*
when it verifies under the log key and ``threshold`` of the policy's cosigners signed it
(:meth:`referendum_core.witness.WitnessPolicy.check`). ``verify-receipt`` then needs the
ballot to sit inside a witnessed tree consistent with its proof, ``follow`` the verified log
to be consistent with the latest witnessed checkpoint, ``verify-election`` the record's final
checkpoint to be witnessed (a cosigned note given beside the record).
"""

from __future__ import annotations

from pathlib import Path

import orjson

from auditor.client import PublicLogClient
from auditor.follow import AuditFailure, parse_hex
from referendum_core import merkle
from referendum_core.checkpoint import Checkpoint, verify_checkpoint
from referendum_core.errors import CoreError
from referendum_core.witness import WitnessPolicy

__all__ = ["Witnessed", "check_cosigned", "check_prefix", "latest_witnessed", "load_policy_file"]


def load_policy_file(path: Path) -> WitnessPolicy:
    """The policy in a JSON file (the form of ``GET .../witness-policy``)."""
    try:
        return WitnessPolicy.from_json(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError) as exc:
        raise AuditFailure(
            "witness.policy", f"cannot read the witness policy {path}: {exc}"
        ) from exc
    except CoreError as exc:
        raise AuditFailure("witness.policy", f"witness policy {path}: {exc}") from exc


class Witnessed:
    """A checkpoint that verified under the log key and met the policy, and its cosigners."""

    def __init__(self, checkpoint: Checkpoint, cosigners: list[str]) -> None:
        self.checkpoint = checkpoint
        self.cosigners = cosigners


def check_cosigned(
    note: str, policy: WitnessPolicy, log_key: str | tuple[str, bytes], origin: str | None
) -> Witnessed:
    """Verify the log's signature on ``note`` and that it meets ``policy``."""
    try:
        checkpoint = verify_checkpoint(note, log_key, origin=origin)
        names = policy.check(note)
    except CoreError as exc:
        raise AuditFailure(f"witness.{exc.check}", f"cosigned checkpoint: {exc}") from exc
    return Witnessed(checkpoint, names)


async def latest_witnessed(
    client: PublicLogClient,
    policy: WitnessPolicy,
    log_key: str | tuple[str, bytes],
    origin: str | None,
) -> Witnessed | None:
    """The server's latest witnessed checkpoint, checked here; None when none is yet."""
    obj = await client.get_json("/log/checkpoint", {"witnessed": "true"})
    note = obj.get("note") if isinstance(obj, dict) else None
    if note is None:
        return None
    if not isinstance(note, str):
        raise AuditFailure("response.format", "witnessed checkpoint note is not text")
    return check_cosigned(note, policy, log_key, origin)


async def check_prefix(client: PublicLogClient, a: Checkpoint, b: Checkpoint) -> None:
    """Check that the smaller of two checkpoints is a prefix of the larger (fetching the
    consistency proof between them); :class:`AuditFailure` ``witness.consistency`` if not."""
    small, large = (a, b) if a.size <= b.size else (b, a)
    if small.size == large.size:
        if small.root != large.root:
            raise AuditFailure("witness.consistency", f"two roots for tree size {small.size}")
        return
    proof: list[bytes] = []
    if small.size > 0:
        obj = await client.consistency_proof(small.size, large.size)
        items = obj.get("proof")
        if not isinstance(items, list):
            raise AuditFailure("response.format", "malformed consistency proof")
        proof = [parse_hex(p, "consistency element") for p in items]
    try:
        merkle.verify_consistency(small.size, large.size, proof, small.root, large.root)
    except CoreError as exc:
        raise AuditFailure(
            "witness.consistency",
            f"the witnessed checkpoint (size {b.size}) and the one checked (size {a.size}) "
            f"are not one log: {exc}",
        ) from exc
