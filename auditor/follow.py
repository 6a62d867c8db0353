"""Follow a referendum's public log block by block and verify everything it says.

For each new block (``docs/log.md`` §6): its hash and link to the previous block, its
checkpoint's signature and stated size and root, the checkpoint's consistency with the last
verified one (a fetched RFC 9162 consistency proof), every ballot of the block in index order
(hash, signature and validity proofs through a :class:`BallotVerifier`), and the root
recomputed from the ballots with a :class:`~referendum_core.merkle.CompactRange`. The latest
checkpoint is also checked for consistency on every poll, so a rewritten history is noticed
before new blocks are read.

What was verified is kept under the state folder (``state.json``, ``blocks/``) after each
block, so a later run resumes where this one stopped. Any failure raises
:class:`AuditFailure` naming the check and the block.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from auditor.client import PublicLogClient
from referendum_core import merkle
from referendum_core.ballot_codec import credential_of
from referendum_core.block import Block, check_link
from referendum_core.checkpoint import Checkpoint, parse_verifier_key, verify_checkpoint
from referendum_core.errors import CoreError

__all__ = [
    "AuditFailure",
    "BallotVerifier",
    "FollowResult",
    "FollowState",
    "SkipBallotChecks",
    "follow",
    "parse_hex",
]

STATE_VERSION = 1
_OPEN_STATES = frozenset({"draft", "open"})


class AuditFailure(Exception):
    """The log failed a check. ``check`` names it; the message says where and why."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class BallotVerifier(Protocol):
    """Checks one logged ballot: its credential on the roll, its signature, its proofs."""

    async def verify(self, index: int, credential: bytes, body: bytes) -> None:
        """Raise a :class:`~referendum_core.errors.CoreError` or :class:`AuditFailure`."""


class SkipBallotChecks:
    """A verifier that checks nothing (``--no-ballot-checks``); structure is still checked."""

    async def verify(self, index: int, credential: bytes, body: bytes) -> None:
        """Accept every ballot."""


def parse_hex(value: Any, what: str, size: int | None = 32) -> bytes:
    """Decode a lower-case hex field of a response; :class:`AuditFailure` otherwise."""
    if not isinstance(value, str):
        raise AuditFailure("response.format", f"{what} is not a hex string")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise AuditFailure("response.format", f"{what} is not hex") from exc
    if size is not None and len(raw) != size:
        raise AuditFailure("response.format", f"{what} is not {size} bytes")
    return raw


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise AuditFailure("response.format", f"{what} is not a non-negative integer")
    return value


@dataclass
class FollowState:
    """What has been verified so far: the last block and the tree after it."""

    referendum_id: str
    height: int = 0
    tree_size: int = 0
    root: bytes = merkle.EMPTY_ROOT
    checkpoint: str | None = None
    compact_range: bytes = merkle.CompactRange().to_bytes()
    last_block: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "referendum_id": self.referendum_id,
            "height": self.height,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "checkpoint": self.checkpoint,
            "compact_range": self.compact_range.hex(),
            "last_block": self.last_block,
        }

    @classmethod
    def load(cls, state_dir: Path, referendum_id: str) -> FollowState:
        """The saved state, or a fresh one when the folder has none."""
        path = state_dir / "state.json"
        if not path.exists():
            return cls(referendum_id)
        try:
            obj = json.loads(path.read_text())
            if obj["version"] != STATE_VERSION:
                raise ValueError("unknown state version")
            state = cls(
                obj["referendum_id"],
                obj["height"],
                obj["tree_size"],
                bytes.fromhex(obj["root"]),
                obj["checkpoint"],
                bytes.fromhex(obj["compact_range"]),
                obj["last_block"],
            )
            acc = merkle.CompactRange.from_bytes(state.compact_range)
        except (ValueError, KeyError, TypeError, CoreError) as exc:
            raise AuditFailure("state", f"cannot read {path}: {exc}") from exc
        if state.referendum_id != referendum_id:
            raise AuditFailure("state", f"{path} follows referendum {state.referendum_id!r}")
        if acc.size != state.tree_size or acc.root() != state.root:
            raise AuditFailure("state", f"{path} is inconsistent: delete it to start over")
        return state

    def save(self, state_dir: Path) -> None:
        """Write ``state.json`` atomically (a crash leaves the old or the new state)."""
        _write_atomic(state_dir / "state.json", json.dumps(self.to_json(), indent=1))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class FollowResult:
    """Where a run stopped: blocks verified in this run, the height and tree size reached."""

    blocks_verified: int
    height: int
    tree_size: int
    root: bytes = merkle.EMPTY_ROOT
    """The verified root at ``tree_size``."""


def _failure(where: str, exc: CoreError) -> AuditFailure:
    return AuditFailure(exc.check, f"{where}: {exc}")


class _Follower:
    def __init__(
        self,
        client: PublicLogClient,
        log_key: str | tuple[str, bytes],
        state_dir: Path,
        verifier: BallotVerifier,
        origin: str | None,
        echo: Callable[[str], None],
    ) -> None:
        self.client = client
        self.log_key = parse_verifier_key(log_key) if isinstance(log_key, str) else log_key
        self.state_dir = state_dir
        self.verifier = verifier
        self.origin = origin
        self.echo = echo
        self.rid = client.referendum_id
        self.state = FollowState.load(state_dir, self.rid)

    async def check_consistency(self, where: str, size: int, root: bytes) -> None:
        """Check that (size, root) extends the last verified checkpoint."""
        old_size, old_root = self.state.tree_size, self.state.root
        if old_size == 0:
            return
        if size < old_size:
            raise AuditFailure(
                "checkpoint.consistency",
                f"{where}: tree size {size} is smaller than the verified {old_size} "
                "(the log was rolled back or forked)",
            )
        if size == old_size:
            proof: list[bytes] = []
        else:
            obj = await self.client.consistency_proof(old_size, size)
            if obj.get("from") != old_size or obj.get("to") != size:
                raise AuditFailure(
                    "response.format",
                    f"{where}: consistency proof for other sizes than {old_size} → {size}",
                )
            items = obj.get("proof")
            if not isinstance(items, list):
                raise AuditFailure("response.format", f"{where}: consistency proof missing")
            proof = [parse_hex(p, "consistency proof element") for p in items]
        try:
            merkle.verify_consistency(old_size, size, proof, old_root, root)
        except CoreError as exc:
            raise AuditFailure(
                "checkpoint.consistency",
                f"{where}: not consistent with the verified checkpoint at size {old_size} "
                f"(a fork or rewritten history): {exc}",
            ) from exc

    async def check_latest(self) -> Checkpoint | None:
        """Verify the latest checkpoint and its consistency with what was verified."""
        obj = await self.client.checkpoint()
        note = obj.get("note")
        if note is None:
            if _int(obj.get("tree_size"), "checkpoint tree_size") != 0:
                raise AuditFailure("response.format", "checkpoint without a note")
            if self.state.tree_size:
                raise AuditFailure(
                    "checkpoint.consistency", "latest checkpoint: the log is empty again"
                )
            return None
        if not isinstance(note, str):
            raise AuditFailure("response.format", "checkpoint note is not text")
        try:
            cp = verify_checkpoint(note, self.log_key, origin=self.origin)
        except CoreError as exc:
            raise _failure("latest checkpoint", exc) from exc
        if (obj.get("tree_size"), obj.get("root")) != (cp.size, cp.root.hex()):
            raise AuditFailure(
                "checkpoint.fields", "latest checkpoint: JSON size/root differ from the signed note"
            )
        await self.check_consistency("latest checkpoint", cp.size, cp.root)
        return cp

    async def verify_block(self, height: int, obj: dict[str, Any]) -> None:
        where = f"block {height}"
        try:
            block = Block.from_json(obj, self.rid)
            if block.height != height:
                raise AuditFailure("block.height", f"{where}: the server sent block {block.height}")
            prev = None
            if self.state.last_block is not None:
                prev = Block.from_json(self.state.last_block, self.rid)
            check_link(prev, block)
            block.verify_checkpoint(self.log_key, origin=self.origin)
        except CoreError as exc:
            raise _failure(where, exc) from exc
        await self.check_consistency(where, block.tree_size, block.root)

        acc = merkle.CompactRange.from_bytes(self.state.compact_range)
        if acc.size != block.first_index:
            raise AuditFailure(
                "block.range",
                f"{where}: starts at {block.first_index}, the verified tree has {acc.size} leaves",
            )
        expected = block.first_index
        kept: list[dict[str, Any]] = []
        count = block.end_index - block.first_index
        max_pages = count // max(1, self.client.page_limit) + 2
        async for page in self.client.block_ballots(height, max_pages=max_pages):
            for item in page:
                if not isinstance(item, dict):
                    raise AuditFailure("response.format", f"{where}: a ballot is not an object")
                index = _int(item.get("index"), "ballot index")
                if index != expected:
                    if index > expected:
                        raise AuditFailure(
                            "ballot.missing",
                            f"{where}: ballot {expected} is missing (next listed: {index})",
                        )
                    raise AuditFailure(
                        "ballot.order",
                        f"{where}: ballot {index} listed again or out of order "
                        f"(expected {expected})",
                    )
                if index >= block.end_index:
                    raise AuditFailure(
                        "ballot.extra",
                        f"{where}: ballot {index} is beyond "
                        f"the block's range [{block.first_index}, "
                        f"{block.end_index})",
                    )
                body = parse_hex(item.get("body"), f"ballot {index} body", None)
                ballot_hash = parse_hex(item.get("ballot_hash"), f"ballot {index} hash")
                if hashlib.sha256(body).digest() != ballot_hash:
                    raise AuditFailure(
                        "ballot.hash", f"{where}: ballot {index}'s hash is not SHA-256 of its body"
                    )
                try:
                    credential = credential_of(body)
                except CoreError as exc:
                    raise AuditFailure(
                        f"ballot.{exc.check}", f"{where}: ballot {index} is malformed: {exc}"
                    ) from exc
                if item.get("credential", credential.hex()) != credential.hex():
                    raise AuditFailure(
                        "ballot.credential",
                        f"{where}: ballot {index} is listed under another credential than the "
                        "one its body names",
                    )
                try:
                    await self.verifier.verify(index, credential, body)
                except CoreError as exc:
                    raise AuditFailure(
                        f"ballot.{exc.check}",
                        f"{where}: ballot {index} of credential {credential.hex()} fails its "
                        f"check: {exc}",
                    ) from exc
                acc.append(merkle.leaf_hash(body))
                kept.append(item)
                expected += 1
        if expected != block.end_index:
            raise AuditFailure(
                "ballot.missing",
                f"{where}: lists {expected - block.first_index} ballots, its range "
                f"[{block.first_index}, {block.end_index}) holds {count}",
            )
        if acc.root() != block.root:
            raise AuditFailure(
                "block.root",
                f"{where}: the ballots do not recompute the block's signed root (a ballot "
                "was changed, removed, inserted or reordered)",
            )
        self._save(block, obj, kept, acc)

    def _save(
        self,
        block: Block,
        obj: dict[str, Any],
        ballots: list[dict[str, Any]],
        acc: merkle.CompactRange,
    ) -> None:
        blocks = self.state_dir / "blocks"
        blocks.mkdir(parents=True, exist_ok=True)
        name = f"{block.height:010d}"
        _write_atomic(blocks / f"{name}.json", json.dumps(block.to_json(), indent=1))
        _write_atomic(
            blocks / f"{name}.ballots.jsonl",
            "".join(json.dumps(b, sort_keys=True) + "\n" for b in ballots),
        )
        self.state = FollowState(
            self.rid,
            block.height,
            block.tree_size,
            block.root,
            block.checkpoint,
            acc.to_bytes(),
            block.to_json(),
        )
        self.state.save(self.state_dir)


async def follow(
    client: PublicLogClient,
    *,
    log_key: str | tuple[str, bytes],
    state_dir: Path,
    verifier: BallotVerifier,
    once: bool = False,
    max_blocks: int | None = None,
    origin: str | None = None,
    poll_interval_s: float = 2.0,
    max_polls: int | None = None,
    echo: Callable[[str], None] = print,
) -> FollowResult:
    """Verify new blocks until caught up (``once``), ``max_blocks`` are done, ``max_polls``
    polls are made, or the referendum is closed and its last block verified.

    Requires ``client`` to be open. Raises :class:`AuditFailure` on the first failed check
    and :class:`~auditor.client.ApiError` when the log cannot be read.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    f = _Follower(client, log_key, state_dir, verifier, origin, echo)
    if f.state.height:
        echo(f"resuming after block {f.state.height} (tree size {f.state.tree_size})")
    done = 0
    polls = 0
    while True:
        polls += 1
        closed = (await client.referendum()).get("state") not in _OPEN_STATES
        await f.check_latest()
        new_blocks = 0
        while max_blocks is None or done < max_blocks:
            height = f.state.height + 1
            obj = await client.block(height)
            if obj is None:
                break
            await f.verify_block(height, obj)
            done += 1
            new_blocks += 1
            s = f.state
            echo(f"block {s.height}: verified, tree size {s.tree_size}, root {s.root.hex()}")
        finished = (
            once
            or (max_blocks is not None and done >= max_blocks)
            or (max_polls is not None and polls >= max_polls)
            or (closed and new_blocks == 0)
        )
        if finished:
            return FollowResult(done, f.state.height, f.state.tree_size, f.state.root)
        await asyncio.sleep(poll_interval_s)  # waiting for the batcher, not synchronising
