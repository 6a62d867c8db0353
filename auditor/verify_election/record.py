"""The record's own description: the manifest, the referendum definition and the roll."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

from auditor.verify_election.report import (
    ElectionReport,
    Stop,
    check_members,
    is_count,
    parse_hex,
    read_json,
    sha256_file,
)
from referendum_core import merkle
from referendum_core.ballot import BallotSpec
from referendum_core.credential import bad_key_positions, credential_to_did
from referendum_core.errors import CoreError
from referendum_core.ids import is_referendum_id
from referendum_core.record import (
    DEFINITION_MEMBERS,
    FILE_ENTRY_MEMBERS,
    MANIFEST_MEMBERS,
    RECORD_FILES,
    RECORD_FORMAT,
)
from referendum_core.roll import roll_leaf_hash
from referendum_core.trustee import TrusteeParams

__all__ = ["check_manifest", "check_roll", "load_definition", "read_roll"]

_HEX_64 = re.compile("[0-9a-fA-F]{64}")
_ROLL_LINE = re.compile("[0-9a-f]{64},did:key:z6Mk[1-9A-HJ-NP-Za-km-z]{44}\n")


def check_manifest(report: ElectionReport, root: Path, pinned: str | None) -> str | None:
    """Check ``manifest.json`` against the folder; return the referendum id it names."""
    path = root / "manifest.json"
    if pinned is not None:
        try:
            actual = sha256_file(path)[0]
        except OSError:
            actual = ""
        if actual != pinned.lower():
            report.fail("manifest", f"manifest.json hashes to {actual}, not the pinned {pinned}")
    manifest = read_json(report, root, "manifest.json", "manifest")
    check_members(report, "manifest", "manifest.json", manifest, MANIFEST_MEMBERS)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("format") != RECORD_FORMAT:
        report.fail("manifest", f"manifest is not {RECORD_FORMAT}")
        return None
    rid = manifest.get("referendum_id")
    for name in RECORD_FILES:
        if name not in files:
            report.fail("manifest", f"{name} is not listed")
    for name in sorted(set(files) - set(RECORD_FILES)):
        report.fail("manifest", f"{name!r} is listed but is no file of a record")
    # nothing but the record's own files: an extra file, listed or not, is something an
    # auditor would read without any check vouching for it
    present = {p.name for p in root.iterdir()} - {"manifest.json"}
    for name in sorted(present - set(RECORD_FILES)):
        report.fail("manifest", f"{name!r} is in the record folder but is no file of a record")
    for name in RECORD_FILES:
        if name not in files:
            continue
        entry = files[name]
        path = root / name
        if path.is_symlink() or not path.is_file():
            report.fail("manifest", f"{name} is listed but missing (or not a plain file)")
            continue
        if not check_members(report, "manifest", f"the entry of {name}", entry, FILE_ENTRY_MEMBERS):
            continue
        digest, size = sha256_file(path)
        if entry["sha256"] != digest:
            report.fail("manifest", f"{name}: SHA-256 {digest} differs from the manifest")
        elif entry["bytes"] != size or not is_count(entry["bytes"]):
            report.fail("manifest", f"{name}: {size} bytes, the manifest says {entry['bytes']!r}")
    return rid if isinstance(rid, str) else None


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("a timestamp is a string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no time zone offset")
    return parsed


def _check_definition_fields(report: ElectionReport, ref: dict[str, Any]) -> None:
    """The members of ``referendum.json`` that no ballot or proof binds, each as it must be."""

    def fail(detail: str) -> None:
        report.fail("definition", f"referendum.json: {detail}")

    if not isinstance(ref["id"], str) or not is_referendum_id(ref["id"]):
        fail(f"id {ref['id']!r} is not a referendum id")
    if not isinstance(ref["question"], str) or not ref["question"]:
        fail("question is not a non-empty string")
    options = ref["options"]
    if len(options) < 2 or len(set(options)) != len(options) or not all(options):
        fail("options must be at least two distinct non-empty names")
    try:
        if _timestamp(ref["closes_at"]) <= _timestamp(ref["opens_at"]):
            fail("closes_at is not after opens_at")
        _timestamp(ref["created_at"])
    except (TypeError, ValueError) as exc:
        fail(str(exc))
    if ref["revote_policy"] not in ("forbid", "last_counts"):
        fail(f"unknown re-vote policy {ref['revote_policy']!r}")
    # a record is exported after publication: the result it carries is the published one
    if ref["state"] != "published":
        fail(f"state is {ref['state']!r}, not 'published'")
    try:
        parse_hex(ref["roll_root"], 32)
    except ValueError:
        fail("roll_root is not 32 bytes of lower-case hex")
    if not is_count(ref["roll_size"]):
        fail("roll_size is not a count")


def load_definition(report: ElectionReport, root: Path) -> tuple[dict[str, Any], BallotSpec]:
    """``referendum.json`` and its ballot spec; :class:`Stop` when later checks cannot use it."""
    ref = read_json(report, root, "referendum.json", "definition")
    if not check_members(report, "definition", "referendum.json", ref, DEFINITION_MEMBERS):
        raise Stop
    try:
        spec = BallotSpec.from_definition(ref)
        k, n = ref["threshold_k"], ref["trustees_n"]
        if type(k) is not int or type(n) is not int:
            raise ValueError("threshold_k and trustees_n must be integers")
        TrusteeParams(spec.referendum_id, k, n).check()
    except (TypeError, ValueError, CoreError) as exc:
        report.fail("definition", f"referendum.json: {exc!r}")
        raise Stop from exc
    _check_definition_fields(report, ref)
    return ref, spec


def read_roll(path: Path, problems: list[str] | None = None) -> list[bytes]:
    """``roll.csv`` (``credential,did`` header, then one credential a line) as the list of
    its credentials, in file order.

    Raises ValueError on a line that names no 32-byte key. When ``problems`` is given, what
    the file's canonical form forbids but a reader can still use (a credential twice, out of
    byte order, upper-case hex, a ``did`` that is not the credential's did:key, no final
    newline) is appended to it, one line each.
    """
    credentials: list[bytes] = []
    seen: set[bytes] = set()
    previous = b""
    with path.open("r", encoding="utf-8", newline="") as handle:
        header = handle.readline()
        if header.rstrip("\n") != "credential,did":
            raise ValueError("roll.csv must start with 'credential,did'")
        for number, line in enumerate(handle, start=2):
            key_hex, sep, did = line.rstrip("\n").partition(",")
            key = bytes.fromhex(key_hex) if _HEX_64.fullmatch(key_hex) else b""
            if not sep or len(key) != 32:
                raise ValueError(f"roll.csv line {number} names no 32-byte credential")
            credentials.append(key)
            if problems is None:
                continue
            if key in seen:
                problems.append(f"roll.csv line {number}: credential {key_hex} is repeated")
            seen.add(key)
            if _ROLL_LINE.fullmatch(line) is None:
                problems.append(
                    f"roll.csv line {number} is not '<64 lower-case hex>,did:key:z6Mk...\\n'"
                )
            elif did != credential_to_did(key):
                problems.append(f"roll.csv line {number}: {did} is not the credential's did:key")
            if key < previous:
                problems.append(f"roll.csv line {number}: credential {key_hex} is out of order")
            previous = key
        if problems is not None and not header.endswith("\n"):
            problems.append("roll.csv: the header line does not end in a newline")
    return credentials


def check_roll(report: ElectionReport, root: Path, ref: dict[str, Any]) -> frozenset[bytes]:
    """The roll's form, keys and commitment; the set of its credentials (empty: unreadable)."""
    problems: list[str] = []
    try:
        credentials = read_roll(root / "roll.csv", problems)
    except (OSError, ValueError) as exc:
        report.fail("roll", str(exc))
        return frozenset()
    for problem in problems:
        report.fail("roll", problem)
    ordered = sorted(credentials)
    for position in bad_key_positions(b"".join(ordered)):
        report.fail("roll", f"credential {ordered[position].hex()} is no valid credential key")
    computed = merkle.root_from_leaf_hashes([roll_leaf_hash(c) for c in ordered])
    if ref.get("roll_root") != computed.hex():
        report.fail("roll", f"roll root {computed.hex()} is not the published commitment")
    if ref.get("roll_size") != len(credentials):
        report.fail(
            "roll",
            f"roll has {len(credentials)} credentials, the commitment says {ref.get('roll_size')}",
        )
    return frozenset(credentials)
