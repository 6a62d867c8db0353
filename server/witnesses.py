"""A referendum's witness policy: set by the operator while draft, public, fixed at open.

The policy (:class:`referendum_core.witness.WitnessPolicy`: ``threshold`` of the listed
cosigners, each a C2SP cosigner verifier key and the URL of its ``add-checkpoint``) is part
of the referendum's public definition: the batcher's publisher asks its witnesses, and
auditors check checkpoints against it. A trigger of migration 004 refuses any change once the
referendum left draft, as :func:`set_policy` does first with a 409.
"""

from __future__ import annotations

from typing import Any

import orjson

from referendum_core.errors import CheckpointError
from referendum_core.witness import WitnessPolicy
from referendum_service.db import translated
from referendum_service.store.witnesses import load_policy
from server.audit import record_action
from server.errors import NotFound, UnprocessableContent
from server.referendums import load_draft, load_referendum

__all__ = ["get_policy", "parse_policy", "set_policy"]


def parse_policy(body: dict[str, Any]) -> WitnessPolicy:
    """The policy of a request body; 422 naming the failed check otherwise."""
    try:
        return WitnessPolicy.from_json(body)
    except CheckpointError as exc:
        raise UnprocessableContent(
            f"witness policy: {exc}", slug="invalid-witness-policy", check=exc.check
        ) from exc


async def set_policy(conn: Any, rid: str, policy: WitnessPolicy, actor: str) -> WitnessPolicy:
    """Set (or replace) the witness policy of a draft; 409 once it opened."""
    async with conn.transaction():
        await load_draft(conn, rid, "the witness policy is")
        with translated():
            await conn.execute(
                "INSERT INTO witness_policies (referendum_id, threshold, policy)"
                " VALUES ($1, $2, $3::jsonb) ON CONFLICT (referendum_id)"
                " DO UPDATE SET threshold = EXCLUDED.threshold, policy = EXCLUDED.policy,"
                " set_at = now()",
                rid,
                policy.threshold,
                orjson.dumps(policy.to_json()).decode(),
            )
        await record_action(conn, actor, "referendum.witness-policy", rid, policy.to_json())
    return policy


async def get_policy(conn: Any, rid: str) -> WitnessPolicy:
    """The referendum's policy; 404 for an unknown referendum or one without a policy."""
    await load_referendum(conn, rid)
    policy = await load_policy(conn, rid)
    if policy is None:
        raise NotFound(f"referendum {rid!r} has no witness policy", slug="no-witness-policy")
    return policy
