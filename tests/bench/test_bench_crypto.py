"""``referendum bench crypto`` at toy sizes: it runs, and its same-run baseline is coherent."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

import bench.common
from bench.crypto import REFERENCE_ED25519_PER_S, REFERENCE_PROOF01_PER_S, crypto


def test_bench_crypto_writes_figures_with_a_same_run_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bench.common, "RESULTS_DIR", tmp_path)
    result = CliRunner().invoke(
        crypto, ["--runs", "1", "--ballots", "6", "--aggregate", "200", "--voters", "1000"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["metric"]: r for r in orjson.loads((tmp_path / "crypto.json").read_bytes())["rows"]}

    ed = rows["baseline: Ed25519 signature verify (PyNaCl), same run"]["value"]
    proof = rows["baseline: 0/1 proof verify alone, same run"]["value"]
    floor = rows["primitive floor of a yes/no check (signature + proof)"]["value"]
    paired = rows["yes/no verify, timed in turn with the two above"]["value"]
    speed = rows["this machine vs DESIGN.md's reference (same primitives)"]["value"]
    scaled = rows["yes/no verify scaled to the reference"]["value"]

    # The floor is the harmonic combination of the two primitives, below each of them.
    assert floor == pytest.approx(1 / (1 / ed + 1 / proof))
    assert floor < min(ed, proof)
    reference = 1 / (1 / REFERENCE_ED25519_PER_S + 1 / REFERENCE_PROOF01_PER_S)
    assert speed == pytest.approx(floor / reference)
    assert scaled == pytest.approx(paired / speed)
    assert rows["yes/no verify as a share of that floor"]["value"] == pytest.approx(paired / floor)
    # The target row carries its verdict.
    target = rows["verify yes/no (implied 'no', 1 ciphertext), signature included"]
    assert target["ok"] == ("yes" if target["value"] >= 3000 else "NO")
    assert "== bench crypto ==" in result.output
