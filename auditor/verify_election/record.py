"""The record's own description: the manifest, the referendum definition and the roll."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditor.verify_election.report import ElectionReport, Stop, read_json, sha256_file
from referendum_core import merkle
from referendum_core.ballot import BallotSpec
from referendum_core.credential import bad_key_positions
from referendum_core.errors import CoreError
from referendum_core.record import RECORD_FILES, RECORD_FORMAT
from referendum_core.roll import roll_leaf_hash

__all__ = ["check_manifest", "check_roll", "load_definition", "read_roll"]


def check_manifest(report: ElectionReport, root: Path, pinned: str | None) -> None:
    path = root / "manifest.json"
    if pinned is not None:
        try:
            actual = sha256_file(path)[0]
        except OSError:
            actual = ""
        if actual != pinned.lower():
            report.fail("manifest", f"manifest.json hashes to {actual}, not the pinned {pinned}")
    manifest = read_json(report, root, "manifest.json", "manifest")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != RECORD_FORMAT:
        report.fail("manifest", f"manifest is not {RECORD_FORMAT}")
        return
    for name in RECORD_FILES:
        if name not in files:
            report.fail("manifest", f"{name} is not listed")
    present = {p.name for p in root.iterdir() if p.is_file()} - {"manifest.json"}
    for name in sorted(present - set(files)):
        report.fail("manifest", f"{name} is in the record but not in the manifest")
    for name, entry in sorted(files.items()):
        path = root / name
        if "/" in name or name.startswith(".") or not path.is_file():
            report.fail("manifest", f"{name} is listed but missing")
            continue
        digest, size = sha256_file(path)
        if not isinstance(entry, dict) or entry.get("sha256") != digest:
            report.fail("manifest", f"{name}: SHA-256 {digest} differs from the manifest")
        elif entry.get("bytes") != size:
            report.fail("manifest", f"{name}: {size} bytes, the manifest says {entry.get('bytes')}")


def load_definition(report: ElectionReport, root: Path) -> tuple[dict[str, Any], BallotSpec]:
    ref = read_json(report, root, "referendum.json", "definition")
    try:
        spec = BallotSpec.from_definition(ref)
        if ref["revote_policy"] not in ("forbid", "last_counts"):
            raise ValueError("unknown re-vote policy")
        int(ref["threshold_k"])
        int(ref["trustees_n"])
    except (KeyError, TypeError, ValueError, CoreError) as exc:
        report.fail("definition", f"referendum.json: {exc!r}")
        raise Stop from exc
    return ref, spec


def read_roll(path: Path) -> dict[str, bytes]:
    """``roll.csv`` (``voter_id,public_key`` header, then one voter a line) as a dict.

    Raises ValueError on a malformed line or a repeated voter.
    """
    voters: dict[str, bytes] = {}
    with path.open("r", encoding="utf-8") as handle:
        header = handle.readline().rstrip("\n")
        if header != "voter_id,public_key":
            raise ValueError("roll.csv must start with 'voter_id,public_key'")
        for number, line in enumerate(handle, start=2):
            voter, sep, key_hex = line.rstrip("\n").partition(",")
            key = bytes.fromhex(key_hex)
            if not sep or len(key) != 32 or voter in voters:
                raise ValueError(f"roll.csv line {number} is malformed or repeated")
            voters[voter] = key
    return voters


def check_roll(report: ElectionReport, root: Path, ref: dict[str, Any]) -> dict[str, bytes]:
    try:
        voters = read_roll(root / "roll.csv")
    except (OSError, ValueError) as exc:
        report.fail("roll", str(exc))
        return {}
    ordered = sorted(voters, key=lambda v: v.encode())
    for position in bad_key_positions(b"".join(voters[v] for v in ordered)):
        report.fail("roll", f"voter {ordered[position]!r} has no valid credential key")
    computed = merkle.root_from_leaf_hashes([roll_leaf_hash(v, voters[v]) for v in ordered])
    if ref.get("roll_root") != computed.hex():
        report.fail("roll", f"roll root {computed.hex()} is not the published commitment")
    if ref.get("roll_size") != len(voters):
        report.fail(
            "roll", f"roll has {len(voters)} voters, the commitment says {ref.get('roll_size')}"
        )
    return voters
