"""The log: blocks, their checkpoints, and the Merkle tree recomputed from the ballots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from auditor.verify_election.report import ElectionReport, Stop, check_members, read_jsonl
from referendum_core import merkle
from referendum_core.block import Block, BlockError, check_link
from referendum_core.checkpoint import parse_verifier_key
from referendum_core.errors import CoreError
from referendum_core.record import BLOCK_MEMBERS

__all__ = ["check_blocks", "check_tree"]


def _read_log_key(report: ElectionReport, root: Path) -> tuple[str, str]:
    """The record's verifier key and its key name; ``("", "")`` when it is unusable."""
    try:
        text = (root / "log_key.txt").read_text(encoding="utf-8")
        key = text.removesuffix("\n")
        # one line, the key alone: whatever else the file held would be read by some
        # verifiers and not by others
        if not key or text != key + "\n" or key != key.strip() or "\n" in key:
            report.fail("log.checkpoint", "log_key.txt is not one verifier key and a newline")
            key = key.strip()
        name, _ = parse_verifier_key(key)
    except (OSError, UnicodeDecodeError, CoreError) as exc:
        report.fail("log.checkpoint", f"log_key.txt: {exc}")
        return "", ""
    return key, name


def check_blocks(
    report: ElectionReport, root: Path, rid: str, pinned_key: str | None
) -> list[Block]:
    log_key, key_name = _read_log_key(report, root)
    if pinned_key is not None and log_key != pinned_key:
        report.fail("log.checkpoint", "the record's log key is not the pinned --log-key")
        log_key = pinned_key
        try:
            key_name = parse_verifier_key(pinned_key)[0]
        except CoreError as exc:
            report.fail("log.checkpoint", f"--log-key: {exc}")
            log_key = ""
    # the batcher signs as its log origin and names each referendum's log below it
    # (docs/log.md §3): a checkpoint of another log, even one by this key, is not this one's
    origin = f"{key_name}/{rid}"
    rows = read_jsonl(report, root, "blocks.jsonl", "log.blocks")
    blocks: list[Block] = []
    prev: Block | None = None
    for number, obj in enumerate(rows, start=1):
        check_members(report, "log.blocks", f"block line {number}", obj, BLOCK_MEMBERS)
        try:
            block = Block.from_json(obj, rid)
        except CoreError as exc:
            report.fail("log.blocks", f"block line {number}: {exc}")
            raise Stop from exc
        try:
            check_link(prev, block)
        except BlockError as exc:
            report.fail("log.blocks", str(exc))
        final = obj.get("final") if isinstance(obj, dict) else None
        if final is not (number == len(rows)):
            report.fail("log.blocks", f"block {block.height}: only the last block is final")
        if log_key:
            try:
                cp = block.verify_checkpoint(log_key)
                if cp.origin != origin:
                    report.fail(
                        "log.checkpoint",
                        f"block {block.height}: origin {cp.origin!r} is not {origin!r}",
                    )
            except CoreError as exc:
                report.fail("log.checkpoint", f"block {block.height}: {exc.check}: {exc}")
        blocks.append(block)
        prev = block
    if not blocks:
        report.fail("log.blocks", "the record has no block")
    return blocks


def check_tree(report: ElectionReport, blocks: Sequence[Block], leaves: bytes, n: int) -> None:
    if blocks and blocks[-1].end_index != n:
        report.fail(
            "log.coverage", f"the blocks cover {blocks[-1].end_index} ballots, the record holds {n}"
        )
    tree = merkle.CompactRange()
    for block in blocks:
        end = min(block.end_index, n)
        if end > tree.size:
            tree.extend(leaves[i * 32 : (i + 1) * 32] for i in range(tree.size, end))
        if block.end_index > n or tree.root() != block.root:
            report.fail(
                "log.tree", f"block {block.height}: the recomputed root differs from the block's"
            )
