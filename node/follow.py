"""``referendum node --follow URL``: pull the operator's checkpoints through the witness path.

A node witnesses what the log pushes to it (``add-checkpoint``), and with ``--follow`` it
also fetches each followed referendum's latest checkpoint from the operator's public API
every ``node_follow_poll_ms``, with a consistency proof from the size it last cosigned, and
submits both to its own :class:`~node.witness.NodeWitness` exactly as a request from the log
would be decided: so what the operator shows the public is held to what the node cosigned.
A checkpoint that forks from the node's latest is stored as evidence and stops the follower
(the command exits non-zero). Network errors are retried on the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from auditor.client import ApiError, PublicLogClient
from node.store import read_latest
from node.witness import NodeWitness, Outcome
from referendum_core.checkpoint import parse_note
from referendum_core.errors import CheckpointError
from referendum_core.witness import AddCheckpointRequest

__all__ = ["follow_once", "run_follower"]

log = structlog.get_logger("node.follow")


async def follow_once(conn: Any, witness: NodeWitness, client: PublicLogClient) -> Outcome | None:
    """Fetch the latest checkpoint of ``client``'s referendum and submit it to ``witness``.

    None when there is nothing to submit (no checkpoint yet, or the one already cosigned).
    """
    head = await client.checkpoint()
    note = head.get("note")
    if not isinstance(note, str):
        return None
    try:
        checkpoint, _ = parse_note(note)
    except CheckpointError:
        return await witness.add_checkpoint(conn, b"old 0\n\n" + note.encode())
    stored = await read_latest(conn, checkpoint.origin)
    old = 0 if stored is None else stored.size
    if stored is not None and (stored.size, stored.root) == (checkpoint.size, checkpoint.root):
        return None
    proof: tuple[bytes, ...] = ()
    if 0 < old < checkpoint.size:
        body = await client.consistency_proof(old, checkpoint.size)
        try:
            proof = tuple(bytes.fromhex(h) for h in body["proof"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError("the operator's consistency proof is malformed") from exc
        if len(proof) > 63 or any(len(h) != 32 for h in proof):
            raise ApiError("the operator's consistency proof is malformed")
    request = AddCheckpointRequest(old, proof, note)
    return await witness.add_checkpoint(conn, request.to_bytes())


async def run_follower(
    pool: Any,
    witness: NodeWitness,
    base_url: str,
    referendum_ids: list[str],
    poll_s: float,
    stop: asyncio.Event,
) -> None:
    """Follow each referendum until ``stop`` is set or a fork is seen."""
    clients = [PublicLogClient(base_url, rid, attempts=1, timeout_s=10) for rid in referendum_ids]
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        while not stop.is_set() and not witness.fork_seen.is_set():
            for client in clients:
                try:
                    async with pool.acquire() as conn:
                        outcome = await follow_once(conn, witness, client)
                except (ApiError, OSError) as exc:
                    log.warning("follow_failed", referendum_id=client.referendum_id, error=str(exc))
                    continue
                if outcome is not None and outcome.status != 200:
                    log.warning(
                        "follow_refused",
                        referendum_id=client.referendum_id,
                        status=outcome.status,
                        check=outcome.check,
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=poll_s)
