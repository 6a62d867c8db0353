"""The checkpoint publisher: each new checkpoint goes to the referendum's witnesses.

Beside the sealing rounds (never inside one): :meth:`CheckpointPublisher.offer` records a
referendum's newest checkpoint and wakes one task per witness of its policy
(:func:`referendum_service.store.witnesses.load_policy`). Each task sends the newest checkpoint
it has not had cosigned, as a C2SP ``add-checkpoint`` request with a consistency proof from the
size the witness last cosigned (read from the stored log, :mod:`referendum_service.store.proofs`),
under ``witness_timeout_ms``. A witness that is down, slow or refusing costs only its own task:
sealing never waits for it; the task retries with back-off and, as new checkpoints arrive,
sends only the newest (one proof catches the witness up). A 409 answer tells the witness's
latest size, and the next request starts from it; that is also how a restarted batcher learns
where each witness stands. Valid cosignature lines (:func:`~referendum_core.witness.
verify_cosignature`, lines by unknown keys ignored) are stored per (referendum, tree size,
witness) and served with the checkpoint by the public API.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from referendum_core.checkpoint import parse_note
from referendum_core.errors import CheckpointError, CoreError
from referendum_core.witness import (
    AddCheckpointRequest,
    Witness,
    WitnessPolicy,
    verify_cosignature,
)
from referendum_service.store.proofs import stored_consistency_proof
from referendum_service.store.witnesses import load_policy, store_cosignatures

__all__ = ["CheckpointPublisher"]

log = structlog.get_logger("batcher.witnessing")

_MAX_ANSWER = 64 * 1024
_BACKOFF_MIN_S = 0.5
_BACKOFF_MAX_S = 30.0


@dataclass
class _Newest:
    size: int
    note: str
    wake: list[asyncio.Event] = field(default_factory=list)


@dataclass
class _WitnessState:
    cosigned: int | None = None  # size of the witness's latest cosigned checkpoint, if known
    failures: int = 0


class CheckpointPublisher:
    """Sends checkpoints to witnesses and stores their cosignatures (see the module doc)."""

    def __init__(self, pool: Any, timeout_s: float) -> None:
        self.pool = pool
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._newest: dict[str, _Newest] = {}
        self._policies: dict[str, WitnessPolicy | None] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._done: dict[tuple[str, str], int] = {}
        self._progress = asyncio.Event()

    async def __aenter__(self) -> CheckpointPublisher:
        self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        for newest in self._newest.values():
            for event in newest.wake:
                event.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def offer(self, rid: str, size: int, note: str) -> None:
        """Make ``note`` (tree ``size``) the newest checkpoint of ``rid`` to get cosigned.

        Returns at once (after reading the policy the first time): the witnesses are asked in
        the background.
        """
        if rid not in self._policies:
            try:
                async with self.pool.acquire() as conn:
                    self._policies[rid] = await load_policy(conn, rid)
            except Exception as exc:  # the publisher never fails a sealing round
                log.warning("policy_unreadable", referendum_id=rid, error=repr(exc))
                return  # asked again with the next checkpoint
        policy = self._policies[rid]
        if policy is None:
            return
        newest = self._newest.get(rid)
        if newest is None:
            newest = self._newest[rid] = _Newest(size, note)
            for witness in policy.witnesses:
                wake = asyncio.Event()
                newest.wake.append(wake)
                self._tasks.append(
                    asyncio.create_task(
                        self._serve(rid, witness, wake), name=f"witness-{rid}-{witness.name}"
                    )
                )
        elif size >= newest.size:
            newest.size, newest.note = size, note
        for event in newest.wake:
            event.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every witness to have cosigned its newest checkpoint
        (before a batcher whose log is final exits); True when all did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            pending = [
                (rid, name)
                for rid, newest in self._newest.items()
                for name in self._names(rid)
                if self._done.get((rid, name), -1) < newest.size
            ]
            left = deadline - loop.time()
            if not pending or left <= 0:
                return not pending
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), timeout=left)

    def _names(self, rid: str) -> list[str]:
        policy = self._policies.get(rid)
        return [] if policy is None else [w.name for w in policy.witnesses]

    async def _serve(self, rid: str, witness: Witness, wake: asyncio.Event) -> None:
        state = _WitnessState()
        done = -1  # the size last cosigned through this task
        bound = log.bind(referendum_id=rid, witness=witness.name)
        while not self._stop.is_set():
            newest = self._newest[rid]
            if newest.size <= done:
                wake.clear()
                await wake.wait()
                continue
            size, note = newest.size, newest.note
            try:
                if await self._ask(rid, witness, state, size, note):
                    done = self._done[(rid, witness.name)] = size
                    state.failures = 0
                    self._progress.set()
                    continue
            except (CoreError, OSError, aiohttp.ClientError, TimeoutError) as exc:
                bound.warning("witness_failed", tree_size=size, error=repr(exc))
            except Exception as exc:  # never let one witness end the publisher
                bound.error("witness_error", tree_size=size, error=repr(exc))
            state.failures += 1
            delay = min(_BACKOFF_MAX_S, _BACKOFF_MIN_S * 2 ** min(state.failures, 8))
            wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)

    async def _ask(
        self, rid: str, witness: Witness, state: _WitnessState, size: int, note: str
    ) -> bool:
        """One add-checkpoint round trip (and one retry after a 409); True once cosigned."""
        assert self._session is not None
        checkpoint, _ = parse_note(note)
        for _ in range(2):
            old = state.cosigned or 0
            if old > size:
                log.error(
                    "witness_ahead_of_log",
                    referendum_id=rid,
                    witness=witness.name,
                    witness_size=old,
                    tree_size=size,
                )
                return False
            proof: list[bytes] = []
            if 0 < old < size:
                async with self.pool.acquire() as conn:
                    proof = await stored_consistency_proof(conn, rid, old, size)
            body = AddCheckpointRequest(old, tuple(proof), note).to_bytes()
            async with self._session.post(f"{witness.url}/add-checkpoint", data=body) as resp:
                text = (await resp.content.read(_MAX_ANSWER)).decode("utf-8", "replace")
                status = resp.status
            if status == 409:
                state.cosigned = _size(text)
                if state.cosigned is None:
                    return False
                continue
            if status != 200:
                log.warning(
                    "witness_refused",
                    referendum_id=rid,
                    witness=witness.name,
                    status=status,
                    tree_size=size,
                    detail=text[:300],
                )
                return False
            lines = _cosignatures(checkpoint, witness, text)
            if not lines:
                log.warning("witness_answer_invalid", referendum_id=rid, witness=witness.name)
                return False
            async with self.pool.acquire() as conn:
                await store_cosignatures(conn, rid, size, {witness.name: lines[0]})
            state.cosigned = size
            log.info("cosigned", referendum_id=rid, witness=witness.name, tree_size=size)
            return True
        return False


def _size(text: str) -> int | None:
    line = text.removesuffix("\n")
    return int(line) if line.isascii() and line.isdigit() and len(line) < 20 else None


def _cosignatures(checkpoint: Any, witness: Witness, text: str) -> list[str]:
    """The answer's lines that are valid cosignatures of ``checkpoint`` by ``witness``."""
    found = []
    for raw in text.splitlines(keepends=True):
        try:
            verify_cosignature(checkpoint, raw, (witness.name, witness.public_key))
        except CheckpointError:
            continue
        found.append(raw)
    return found
