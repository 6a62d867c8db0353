"""Blocks of the public log: the batches the batcher seals, chained by hash.

Block ``h`` covers log indexes ``[first_index, end_index)``; after it the tree has
``tree_size == end_index`` leaves and root ``root``, and ``checkpoint`` is the signed note
for that size and root. Heights start at 1; block 1 starts at index 0 and its ``prev_hash``
is :data:`GENESIS_PREV_HASH` (32 zero bytes). ``sealed_at`` is Unix time in milliseconds
(an integer, so every party encodes it the same way).

``block_hash = SHA-256(canonical_bytes)``, where the canonical bytes are::

    "referendum-log/block/v1" 0x00
    u16 len ‖ referendum_id (UTF-8)
    u64 height ‖ u64 first_index ‖ u64 end_index ‖ u64 tree_size
    root (32) ‖ prev_hash (32) ‖ u64 sealed_at
    u32 len ‖ checkpoint note (UTF-8)

all integers big-endian. Errors are :class:`BlockError` with a ``check`` name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from referendum_core.checkpoint import Checkpoint, verify_checkpoint
from referendum_core.errors import CoreError

__all__ = ["BLOCK_DOMAIN", "GENESIS_PREV_HASH", "Block", "BlockError", "check_link"]

BLOCK_DOMAIN = b"referendum-log/block/v1\x00"
GENESIS_PREV_HASH = bytes(32)
"""``prev_hash`` of block 1."""

_U64 = 2**64


class BlockError(CoreError):
    """A block that is malformed, does not match its checkpoint or does not link."""


def _hex32(obj: dict[str, Any], field: str) -> bytes:
    value = obj.get(field)
    if not isinstance(value, str) or len(value) != 64:
        raise BlockError(f"block field {field} is not 32 bytes of hex", check=f"block.{field}")
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise BlockError(f"block field {field} is not hex", check=f"block.{field}") from exc
    if raw.hex() != value:
        raise BlockError(f"block field {field} is not lower-case hex", check=f"block.{field}")
    return raw


def _int(obj: dict[str, Any], field: str) -> int:
    value = obj.get(field)
    if type(value) is not int:
        raise BlockError(f"block field {field} is not an integer", check=f"block.{field}")
    return value


@dataclass(frozen=True, slots=True)
class Block:
    """One sealed block of the log. See the module docstring for the fields' meaning.

    >>> b = Block("r1", 1, 0, 2, 2, bytes(32), GENESIS_PREV_HASH, 1_700_000_000_000, "n")
    >>> Block.from_json(b.to_json(), "r1") == b
    True
    >>> len(b.block_hash())
    32
    """

    referendum_id: str
    height: int
    first_index: int
    end_index: int
    tree_size: int
    root: bytes
    prev_hash: bytes
    sealed_at: int
    checkpoint: str

    def __post_init__(self) -> None:
        if not isinstance(self.referendum_id, str) or not self.referendum_id:
            raise BlockError("block needs a referendum id", check="block.referendum_id")
        if len(self.referendum_id.encode()) >= 2**16:
            raise BlockError("referendum id too long", check="block.referendum_id")
        for field in ("height", "first_index", "end_index", "tree_size", "sealed_at"):
            value = getattr(self, field)
            if type(value) is not int or not 0 <= value < _U64:
                raise BlockError(f"block {field} out of range", check=f"block.{field}")
        if self.height < 1:
            raise BlockError("block heights start at 1", check="block.height")
        if not self.first_index <= self.end_index == self.tree_size:
            raise BlockError("block range does not end at its tree size", check="block.range")
        for field in ("root", "prev_hash"):
            value = getattr(self, field)
            if not isinstance(value, bytes) or len(value) != 32:
                raise BlockError(f"block {field} is not 32 bytes", check=f"block.{field}")
        if self.height == 1 and (self.first_index != 0 or self.prev_hash != GENESIS_PREV_HASH):
            raise BlockError("block 1 must start the log", check="block.genesis")
        if not isinstance(self.checkpoint, str):
            raise BlockError("block checkpoint is a note", check="block.checkpoint")

    def canonical_bytes(self) -> bytes:
        """The one byte encoding that :meth:`block_hash` hashes (see the module docstring)."""
        rid = self.referendum_id.encode()
        note = self.checkpoint.encode()
        return b"".join(
            [
                BLOCK_DOMAIN,
                len(rid).to_bytes(2, "big"),
                rid,
                self.height.to_bytes(8, "big"),
                self.first_index.to_bytes(8, "big"),
                self.end_index.to_bytes(8, "big"),
                self.tree_size.to_bytes(8, "big"),
                self.root,
                self.prev_hash,
                self.sealed_at.to_bytes(8, "big"),
                len(note).to_bytes(4, "big"),
                note,
            ]
        )

    def block_hash(self) -> bytes:
        """SHA-256 of :meth:`canonical_bytes`; the next block's ``prev_hash``."""
        return hashlib.sha256(self.canonical_bytes()).digest()

    def to_json(self) -> dict[str, Any]:
        """The read API's JSON object for this block (bytes as lower-case hex)."""
        return {
            "height": self.height,
            "first_index": self.first_index,
            "end_index": self.end_index,
            "tree_size": self.tree_size,
            "root": self.root.hex(),
            "prev_hash": self.prev_hash.hex(),
            "block_hash": self.block_hash().hex(),
            "sealed_at": self.sealed_at,
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, obj: Any, referendum_id: str | None = None) -> Block:
        """Parse the read API's JSON block; check ``block_hash`` when present.

        ``referendum_id`` defaults to ``obj["referendum_id"]`` (the API object omits it: it
        is in the URL). Raises :class:`BlockError`.
        """
        if not isinstance(obj, dict):
            raise BlockError("a block is a JSON object", check="block.json")
        rid = referendum_id if referendum_id is not None else obj.get("referendum_id")
        note = obj.get("checkpoint")
        if not isinstance(rid, str) or not isinstance(note, str):
            raise BlockError("block lacks referendum id or checkpoint", check="block.json")
        block = cls(
            rid,
            _int(obj, "height"),
            _int(obj, "first_index"),
            _int(obj, "end_index"),
            _int(obj, "tree_size"),
            _hex32(obj, "root"),
            _hex32(obj, "prev_hash"),
            _int(obj, "sealed_at"),
            note,
        )
        if "block_hash" in obj and _hex32(obj, "block_hash") != block.block_hash():
            raise BlockError(
                f"block {block.height} hash does not match its contents", check="block.block_hash"
            )
        return block

    def verify_checkpoint(
        self, verifier_key: str | tuple[str, bytes], *, origin: str | None = None
    ) -> Checkpoint:
        """Verify the block's checkpoint signature and that it states this size and root.

        Raises :class:`~referendum_core.errors.CheckpointError` for the signature and
        :class:`BlockError` when size or root differ.
        """
        cp = verify_checkpoint(self.checkpoint, verifier_key, origin=origin)
        if cp.size != self.tree_size or cp.root != self.root:
            raise BlockError(
                f"block {self.height} checkpoint states another size or root",
                check="block.checkpoint",
            )
        return cp


def check_link(prev: Block | None, block: Block) -> None:
    """Check that ``block`` directly follows ``prev`` (``None``: the log's first block).

    Same referendum, the next height, the next index range and ``prev_hash`` equal to the
    previous block's hash. Raises :class:`BlockError` naming the broken link.

    >>> b1 = Block("r", 1, 0, 2, 2, bytes(32), GENESIS_PREV_HASH, 0, "n")
    >>> b2 = Block("r", 2, 2, 3, 3, bytes(32), b1.block_hash(), 1, "n")
    >>> check_link(b1, b2)
    """
    if prev is None:
        if block.height != 1:
            raise BlockError(f"block {block.height} has no predecessor", check="chain.height")
        return
    if block.referendum_id != prev.referendum_id:
        raise BlockError("block of another referendum", check="chain.referendum")
    if block.height != prev.height + 1:
        raise BlockError(
            f"block {block.height} does not follow block {prev.height}", check="chain.height"
        )
    if block.first_index != prev.end_index:
        raise BlockError(
            f"block {block.height} starts at {block.first_index}, not {prev.end_index}",
            check="chain.range",
        )
    if block.prev_hash != prev.block_hash():
        raise BlockError(
            f"block {block.height} does not link to block {prev.height}", check="chain.prev_hash"
        )
