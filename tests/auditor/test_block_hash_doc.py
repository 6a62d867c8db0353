"""The block-hash layout of docs/log.md §4 is the one the core hashes, byte for byte."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from referendum_core.block import Block
from referendum_core.checkpoint import verifier_key_string, verify_checkpoint

DOC = Path(__file__).resolve().parents[2] / "docs" / "log.md"
ROW = re.compile(r"\s*(\d+)\s+(\d*)\s+(\S+)\s+(.+)")


def _example() -> tuple[dict[str, object], str, list[tuple[int, int, str, str]]]:
    """The worked example: the JSON block, its referendum id, and its table rows."""
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- block-hash-example -->\n```\n", 1)[1].split("\n```", 1)[0]
    lines = block.splitlines()
    assert lines[0].startswith("block ") and lines[1].startswith("rid ")
    assert lines[2].split() == ["offset", "width", "field", "hex"]
    rows = []
    for line in lines[3:]:
        match = ROW.fullmatch(line)
        assert match is not None, line
        offset, width, field, value = match.groups()
        rows.append((int(offset), int(width or 0), field, value))
    return json.loads(lines[0].removeprefix("block ")), lines[1].removeprefix("rid "), rows


def test_worked_example_is_the_cores_canonical_bytes_and_hash() -> None:
    """Concatenating the page's fields gives Block.canonical_bytes(); their SHA-256 the hash."""
    obj, rid, rows = _example()
    block = Block.from_json(obj, rid)  # also recomputes block_hash against the JSON's
    *fields, (end, _, last_name, digest) = rows
    assert last_name == "SHA-256"
    assembled = b""
    for offset, width, name, value in fields:
        assert offset == len(assembled), name  # no gap, no overlap
        raw = block.checkpoint.encode() if name == "checkpoint" else bytes.fromhex(value)
        assert len(raw) == width, name
        assembled += raw
    assert end == len(assembled) == 134 + len(rid.encode()) + len(block.checkpoint.encode())
    assert assembled == block.canonical_bytes()
    assert hashlib.sha256(assembled).hexdigest() == digest == obj["block_hash"]


def test_worked_example_fields_are_the_documented_encodings() -> None:
    """Each row of the example encodes its JSON field as the layout table says."""
    obj, rid, rows = _example()
    values = {name: value for _, _, name, value in rows}
    assert bytes.fromhex(values["domain"]) == b"referendum-log/block/v1\x00"
    assert int(values["len(rid)"], 16) == len(rid.encode())
    assert bytes.fromhex(values["rid"]).decode() == rid
    for name in ("height", "first_index", "end_index", "tree_size", "sealed_at"):
        assert int(values[name], 16) == obj[name], name
    assert values["root"] == obj["root"] and values["prev_hash"] == obj["prev_hash"]
    note = obj["checkpoint"]
    assert isinstance(note, str)
    assert int(values["len(checkpoint)"], 16) == len(note.encode())


def test_worked_example_checkpoint_is_signed_by_the_stated_key() -> None:
    """The example's note verifies under the key derived from the seed of 32 zero bytes."""
    from nacl.signing import SigningKey

    obj, rid, _ = _example()
    public = SigningKey(bytes(32)).verify_key.encode()
    cp = verify_checkpoint(str(obj["checkpoint"]), verifier_key_string("example.org/log", public))
    assert cp.origin == f"example.org/log/{rid}" and cp.size == obj["tree_size"]
