"""verify-election's witness check and the auditor's policy file, on constructed checkpoints."""

from __future__ import annotations

from pathlib import Path

import nacl.signing
import orjson
import pytest

from auditor.follow import AuditFailure
from auditor.verify_election.report import ElectionReport
from auditor.verify_election.witnesses import check_witnessed
from auditor.witnessed import check_cosigned, load_policy_file
from referendum_core import block as blk
from referendum_core import checkpoint as ck
from referendum_core.witness import Witness, WitnessPolicy, sign_cosignature

LOG_SEED = bytes(range(32))
LOG = ("test.example/log", bytes(nacl.signing.SigningKey(LOG_SEED).verify_key))
SEEDS = [bytes([i]) * 32 for i in (1, 2, 3)]
POLICY = WitnessPolicy(
    2,
    tuple(
        Witness(f"w{i}.example", bytes(nacl.signing.SigningKey(s).verify_key), "http://127.0.0.1:1")
        for i, s in enumerate(SEEDS)
    ),
)


def _final(size: int, root: bytes = bytes([9]) * 32) -> tuple[blk.Block, ck.Checkpoint]:
    cp = ck.Checkpoint("test.example/log/r", size, root)
    note = ck.sign_checkpoint(cp, LOG[0], LOG_SEED)
    return blk.Block("r", 1, 0, size, size, root, blk.GENESIS_PREV_HASH, 0, note), cp


def _cosigned(block: blk.Block, cp: ck.Checkpoint, witnesses: list[int]) -> str:
    return block.checkpoint + "".join(
        sign_cosignature(cp, f"w{i}.example", SEEDS[i], 1_800_000_000) for i in witnesses
    )


@pytest.mark.parametrize(
    ("witnesses", "other_size", "ok"),
    [([0, 2], None, True), ([1], None, False), ([0, 1], 6, False)],
    ids=["two-of-three", "one-of-three", "not-the-final-checkpoint"],
)
def test_final_checkpoint_must_be_witnessed(
    tmp_path: Path, witnesses: list[int], other_size: int | None, ok: bool
) -> None:
    """The record's final checkpoint with 2 of 3 cosignatures passes; with one, or when the
    cosigned note is of another checkpoint, the 'witness' check fails."""
    block, cp = _final(5)
    signed_block, signed_cp = _final(other_size) if other_size else (block, cp)
    note_file = tmp_path / "cosigned.txt"
    note_file.write_text(_cosigned(signed_block, signed_cp, witnesses))
    report = ElectionReport()
    check_witnessed(report, [block], POLICY, note_file)
    assert report.ok is ok, report.failures
    if ok:
        assert report.witnessed_by == ["w0.example", "w2.example"]
    else:
        assert report.failed_checks == ["witness"]


def test_policy_needs_the_cosigned_note() -> None:
    """A pinned policy without a cosigned checkpoint is a failure, not a pass."""
    report = ElectionReport()
    check_witnessed(report, [_final(5)[0]], POLICY, None)
    assert report.failed_checks == ["witness"]


def test_policy_file_and_cosigned_check(tmp_path: Path) -> None:
    """A policy file round-trips; check_cosigned needs the log's signature and k cosigners."""
    path = tmp_path / "policy.json"
    path.write_bytes(orjson.dumps(POLICY.to_json()))
    policy = load_policy_file(path)
    assert policy == POLICY
    block, cp = _final(5)
    assert check_cosigned(_cosigned(block, cp, [0, 1]), policy, LOG, None).cosigners == [
        "w0.example",
        "w1.example",
    ]
    forged = (
        ck.sign_checkpoint(cp, LOG[0], bytes(32))
        + _cosigned(block, cp, [0, 1]).split("\n\n")[1].split("\n", 1)[1]
    )
    with pytest.raises(AuditFailure):
        check_cosigned(forged, policy, LOG, None)  # cosigned, but not signed by the log
    path.write_text('{"threshold": 5, "witnesses": []}')
    with pytest.raises(AuditFailure) as err:
        load_policy_file(path)
    assert err.value.check == "witness.policy"
