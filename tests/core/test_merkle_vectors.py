"""Known-answer tests of referendum_core.merkle: the RFC 9162 vectors of transparency-dev and
the project's own vectors generated from the naive reference."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from referendum_core import merkle
from referendum_core.errors import MerkleError

REPO = Path(__file__).resolve().parents[2]
OWN = REPO / "tests" / "vectors" / "merkle"


def _standard_dir() -> Path:
    env = os.environ.get("REFERENDUM_RFC9162_VECTORS")
    return Path(env) if env else (REPO / "../shared/vectors/rfc9162").resolve()


STANDARD = _standard_dir()
STANDARD_FILES = sorted(STANDARD.rglob("*.json")) if STANDARD.is_dir() else []


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _outcome(check: Any) -> bool:
    """Run a verification; True when it raised a MerkleError (anything else propagates)."""
    try:
        check()
    except MerkleError:
        return True
    return False


@pytest.mark.skipif(not STANDARD_FILES, reason=f"no RFC 9162 vectors at {STANDARD}")
@pytest.mark.parametrize(
    "path", STANDARD_FILES, ids=[str(p.relative_to(STANDARD)) for p in STANDARD_FILES]
)
def test_standard_vector(path: Path) -> None:
    """The verifiers accept exactly the transparency-dev vectors marked wantErr: false."""
    v = json.loads(path.read_text())
    if "leafIdx" in v:
        failed = _outcome(
            lambda: merkle.verify_inclusion(
                _b64(v["leafHash"]),
                v["leafIdx"],
                v["treeSize"],
                [_b64(p) for p in v["proof"] or []],
                _b64(v["root"]),
            )
        )
    else:
        failed = _outcome(
            lambda: merkle.verify_consistency(
                v["size1"],
                v["size2"],
                [_b64(p) for p in v["proof"] or []],
                _b64(v["root1"]),
                _b64(v["root2"]),
            )
        )
    assert failed == v["wantErr"], v["desc"]


def test_standard_vectors_present_in_ci() -> None:
    """When the vectors folder exists it holds both kinds of files (a bad path must not pass)."""
    if not STANDARD.is_dir():
        pytest.skip(f"no RFC 9162 vectors at {STANDARD}")
    names = {p.relative_to(STANDARD).parts[0] for p in STANDARD_FILES}
    assert {"inclusion", "consistency"} <= names


def _cases(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((OWN / name).read_text())["cases"]
    return cases


def _entries(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"ballot-{i}".encode()) for i in range(n)]


@pytest.mark.parametrize("case", _cases("roots.json"), ids=lambda c: c["desc"])
def test_own_root_vector(case: dict[str, Any]) -> None:
    """Batch and incremental roots equal the reference root of each vector size."""
    leaves = _entries(case["size"])
    acc = merkle.CompactRange()
    acc.extend(leaves)
    assert merkle.root_from_leaf_hashes(leaves).hex() == case["want"]
    assert acc.root().hex() == case["want"]


@pytest.mark.parametrize("case", _cases("inclusion.json"), ids=lambda c: c["desc"])
def test_own_inclusion_vector(case: dict[str, Any]) -> None:
    """verify_inclusion fails exactly on the vectors the reference rejects."""
    proof = [bytes.fromhex(p) for p in case["proof"]]
    failed = _outcome(
        lambda: merkle.verify_inclusion(
            bytes.fromhex(case["leaf_hash"]),
            case["leaf_index"],
            case["tree_size"],
            proof,
            bytes.fromhex(case["root"]),
        )
    )
    assert failed == case["want_err"]
    if case["desc"].endswith("happy path"):
        leaves = _entries(case["tree_size"])
        assert merkle.inclusion_proof(leaves, case["leaf_index"]) == proof


@pytest.mark.parametrize("case", _cases("consistency.json"), ids=lambda c: c["desc"])
def test_own_consistency_vector(case: dict[str, Any]) -> None:
    """verify_consistency fails exactly on the vectors the reference rejects."""
    proof = [bytes.fromhex(p) for p in case["proof"]]
    failed = _outcome(
        lambda: merkle.verify_consistency(
            case["size1"],
            case["size2"],
            proof,
            bytes.fromhex(case["root1"]),
            bytes.fromhex(case["root2"]),
        )
    )
    assert failed == case["want_err"]
    if case["desc"].endswith("happy path"):
        leaves = _entries(case["size2"])
        assert merkle.consistency_proof(leaves, case["size1"]) == proof


def _generator() -> ModuleType:
    path = REPO / "scripts" / "gen_merkle_vectors.py"
    spec = importlib.util.spec_from_file_location("gen_merkle_vectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vectors_are_up_to_date() -> None:
    """Regenerating the vectors from the reference gives the committed files byte for byte."""
    files = _generator().build()
    assert sorted(files) == sorted(p.name for p in OWN.glob("*.json"))
    for name, text in files.items():
        assert (OWN / name).read_text() == text, f"{name} is stale: run the generator"


def test_own_vectors_contain_failures_and_successes() -> None:
    """The mutation cases really are there: most fail, every happy path passes."""
    for name in ("inclusion.json", "consistency.json"):
        cases = _cases(name)
        assert all(not c["want_err"] for c in cases if c["desc"].endswith("happy path"))
        assert sum(c["want_err"] for c in cases) > len(cases) // 2
