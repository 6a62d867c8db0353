"""The node's witness: ``add-checkpoint`` decided by the core, persisted, then cosigned.

:meth:`NodeWitness.add_checkpoint` reads the origin's latest cosigned checkpoint, asks
:func:`referendum_core.witness.decide`, and for a cosign moves the latest with the conditional
write of :func:`node.store.advance_latest` *before* signing: a cosignature is only ever
returned for a checkpoint that is the persisted latest. When another request moved the latest
in between, it decides again on the new one. A refusal that carries evidence (a log-signed
checkpoint that forks from the latest, or that came with a proof that does not verify) is
stored and alerted: a structured log line at error (fork) or warning (bad proof), a metric,
and :attr:`NodeWitness.fork_seen` for the command to exit non-zero.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter

from node.store import advance_latest, read_latest, store_evidence
from referendum_core.checkpoint import parse_note, parse_verifier_key
from referendum_core.errors import CheckpointError
from referendum_core.ids import is_referendum_id
from referendum_core.witness import (
    AddCheckpointRequest,
    Refuse,
    RequestFormatError,
    cosigner_vkey,
    decide,
    sign_cosignature,
)
from referendum_service.keys import ServiceKey

__all__ = ["COSIGNATURES", "SPLIT_VIEWS", "NodeWitness", "Outcome"]

log = structlog.get_logger("node.witness")

COSIGNATURES = Counter("referendum_node_cosignatures_total", "Checkpoints this node cosigned.")
REFUSALS = Counter(
    "referendum_node_refusals_total", "add-checkpoint requests refused, by status.", ["status"]
)
SPLIT_VIEWS = Counter(
    "referendum_node_split_view_evidence_total",
    "Log-signed checkpoints stored as evidence: fork (conclusive) or bad_proof (suspect).",
    ["kind"],
)

_MAX_TRIES = 16  # decisions redone when the latest moved under us; each try is a real change


@dataclass(frozen=True)
class Outcome:
    """The HTTP answer to one add-checkpoint request."""

    status: int
    body: str
    content_type: str
    check: str = ""


class NodeWitness:
    """A cosigner ``name`` with ``key`` that witnesses the log of ``log_vkey``."""

    def __init__(self, name: str, key: ServiceKey, log_vkey: str) -> None:
        self.name = name
        self.key = key
        self.log_key = parse_verifier_key(log_vkey)
        self.vkey = cosigner_vkey(name, key.public_key)
        self.fork_seen = asyncio.Event()

    def trusted_keys(self, origin: str) -> list[tuple[str, bytes]] | None:
        """The log key for origins ``<log key name>/<referendum id>``; None for others."""
        prefix = self.log_key[0] + "/"
        if origin.startswith(prefix) and is_referendum_id(origin[len(prefix) :]):
            return [self.log_key]
        return None

    async def add_checkpoint(self, conn: Any, body: bytes) -> Outcome:
        """Answer one add-checkpoint body (C2SP tlog-witness)."""
        try:
            request = AddCheckpointRequest.parse(body)
        except RequestFormatError as exc:
            return self._refused(Refuse(400, str(exc), exc.check))
        try:
            origin: str | None = parse_note(request.note)[0].origin
        except CheckpointError:
            origin = None  # decide() answers 400 for it
        for _ in range(_MAX_TRIES):
            known = origin is not None and self.trusted_keys(origin) is not None
            stored = await read_latest(conn, origin) if known and origin else None
            decision = decide(stored, request, self.trusted_keys)
            if isinstance(decision, Refuse):
                if decision.evidence is not None and decision.checkpoint is not None and stored:
                    await self._evidence(conn, decision, stored.note, request)
                return self._refused(decision)
            cp = decision.checkpoint
            if await advance_latest(conn, cp.origin, stored, cp.size, cp.root, decision.note):
                line = sign_cosignature(cp, self.name, self.key.seed, int(time.time()))
                COSIGNATURES.inc()
                return Outcome(200, line, "text/plain; charset=utf-8")
        return Outcome(503, "the latest checkpoint keeps moving; try again\n", "text/plain")

    def _refused(self, decision: Refuse) -> Outcome:
        REFUSALS.labels(str(decision.status)).inc()
        if decision.status == 409 and decision.latest_size is not None:
            return Outcome(409, f"{decision.latest_size}\n", "text/x.tlog.size", decision.check)
        return Outcome(decision.status, decision.reason, "", decision.check)

    async def _evidence(
        self, conn: Any, decision: Refuse, latest_note: str, request: AddCheckpointRequest
    ) -> None:
        cp = decision.checkpoint
        kind = decision.evidence
        assert cp is not None and kind is not None
        new = await store_evidence(
            conn,
            cp.origin,
            kind,
            cp.size,
            request.note,
            latest_note,
            request.old_size,
            request.proof,
        )
        if new:
            SPLIT_VIEWS.labels(kind).inc()
        if kind == "fork":  # alerted each time it is shown, stored once
            log.error("split_view", origin=cp.origin, tree_size=cp.size, new=new)
            self.fork_seen.set()
        elif new:
            log.warning("suspect_checkpoint", origin=cp.origin, tree_size=cp.size)
