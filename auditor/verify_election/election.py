"""The entry points: :func:`verify_election` and the ``verify-election`` command."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from array import array
from pathlib import Path

import click

from auditor.verify_decryption import check_decryption
from auditor.verify_election.ballots import run_ballots, scan_ballots
from auditor.verify_election.log import check_blocks, check_tree
from auditor.verify_election.record import check_manifest, check_roll, load_definition
from auditor.verify_election.report import MAX_DETAILS, ElectionReport, Stop
from auditor.verify_election.tally import check_revotes, check_tally
from auditor.verify_election.witnesses import check_witnessed
from referendum_core.errors import CoreError
from referendum_core.tally import supersessions
from referendum_core.witness import WitnessPolicy

__all__ = ["verify_election", "verify_election_command"]


def verify_election(
    record: Path,
    *,
    jobs: int | None = None,
    log_key: str | None = None,
    manifest_sha256: str | None = None,
    progress: bool = False,
    witness_policy: WitnessPolicy | None = None,
    cosigned_checkpoint: Path | None = None,
) -> ElectionReport:
    """Verify the election record in folder ``record``; never raises for a bad record.

    ``log_key`` and ``manifest_sha256`` pin what an auditor obtained independently (the log's
    verifier key, the manifest's published hash); without them the record's own are used.
    With ``witness_policy`` the final checkpoint must be witnessed: ``cosigned_checkpoint`` is
    a file holding it with the witnesses' cosignature lines (:mod:`.witnesses`).
    """
    started = time.perf_counter()
    jobs = max(1, jobs or os.cpu_count() or 1)
    report = ElectionReport(jobs=jobs)
    root = Path(record)
    if not root.is_dir():
        report.fail("manifest", f"{root} is not a folder")
        return report
    manifest_rid: str | None = None
    with contextlib.suppress(Stop):
        manifest_rid = check_manifest(report, root, manifest_sha256)
    try:
        ref, spec = load_definition(report, root)
    except Stop:
        report.seconds = time.perf_counter() - started
        return report
    if manifest_rid != spec.referendum_id:
        report.fail("manifest", f"the manifest names referendum {manifest_rid!r}, not the record's")
    roll = check_roll(report, root, ref)
    try:
        blocks = check_blocks(report, root, spec.referendum_id, log_key)
    except Stop:
        blocks = []
    if witness_policy is not None:
        check_witnessed(report, blocks, witness_policy, cosigned_checkpoint)
    try:
        offsets, voters = scan_ballots(report, root / "ballots.bin")
    except OSError as exc:
        report.fail("ballot", f"ballots.bin: {exc}")
        offsets, voters = array("Q", [0]), []
    report.ballots = len(voters)
    pairs = supersessions(enumerate(voters))
    superseded = {old for old, _ in pairs} if ref["revote_policy"] == "last_counts" else set()
    results = run_ballots(report, root, spec, roll, offsets, superseded, jobs, progress)
    leaves = b"".join(r.leaf_hashes for r in results)
    hashes = b"".join(r.ballot_hashes for r in results)
    if len(set(hashes[i : i + 32] for i in range(0, len(hashes), 32))) != len(voters):
        report.fail("ballot", "the same ballot appears twice in the log")
    check_tree(report, blocks, leaves, len(voters))
    check_revotes(report, root, ref["revote_policy"], pairs, hashes)
    tally = check_tally(report, root, spec, blocks, results)
    if tally is not None:
        report.result = check_decryption(report.fail, root, ref, spec, tally)
    report.seconds = time.perf_counter() - started
    return report


@click.command("verify-election")
@click.argument("record", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes (default: every core)",
)
@click.option("--log-key", default=None, help="Pin the log's verifier key (else the record's)")
@click.option("--manifest-sha256", default=None, help="Pin the SHA-256 of manifest.json")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar")
@click.option(
    "--witness-policy",
    "policy_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Pin the witness policy (JSON): the final checkpoint must be cosigned by k witnesses",
)
@click.option(
    "--cosigned-checkpoint",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="The final checkpoint note with its cosignature lines (for --witness-policy)",
)
def verify_election_command(
    record: Path,
    jobs: int | None,
    log_key: str | None,
    manifest_sha256: str | None,
    progress: bool,
    policy_file: Path | None,
    cosigned_checkpoint: Path | None,
) -> None:
    """Recompute everything in an election RECORD: tree, checkpoints, ballots, tally, result."""
    policy = None
    if policy_file is not None:
        try:
            policy = WitnessPolicy.from_json(json.loads(policy_file.read_bytes()))
        except (ValueError, CoreError) as exc:
            raise click.BadParameter(str(exc), param_hint="--witness-policy") from exc
    report = verify_election(
        record,
        jobs=jobs,
        log_key=log_key,
        manifest_sha256=manifest_sha256,
        progress=progress,
        witness_policy=policy,
        cosigned_checkpoint=cosigned_checkpoint,
    )
    rate = report.ballots / report.seconds if report.seconds else 0.0
    click.echo(
        f"{report.ballots} ballots ({report.ballots_counted} counted) verified in "
        f"{report.seconds:.1f} s with {report.jobs} processes ({rate:,.0f} ballots/s)"
    )
    if report.ok:
        if report.result is not None:
            click.echo("result: " + ", ".join(str(c) for c in report.result))
        if report.witnessed_by is not None:
            click.echo("witnessed: final checkpoint cosigned by " + ", ".join(report.witnessed_by))
        click.echo("OK: every check holds")
        return
    for failure in report.failures:
        click.echo(f"FAILED {failure.check}: {failure.detail}", err=True)
    for check, count in report.counts.items():
        if count > MAX_DETAILS:
            click.echo(f"FAILED {check}: ... {count - MAX_DETAILS} more", err=True)
    click.echo("FAILED checks: " + ", ".join(report.failed_checks), err=True)
    sys.exit(1)
