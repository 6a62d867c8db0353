"""The auditor command line: ``referendum audit ...`` and ``referendum-audit ...``.

Exit status: 0 verified; 1 a check failed (the message names it); 2 bad usage; 3 the
server could not be read.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from auditor.ballots import RollBallotVerifier
from auditor.client import ApiError, PublicLogClient
from auditor.follow import AuditFailure, BallotVerifier, SkipBallotChecks, follow
from auditor.receipt import (
    ballot_hash_from_receipt,
    check_receipt_signature,
    parse_receipt_key,
    verify_receipt,
)
from auditor.verify_election import verify_election_command
from auditor.witnessed import Witnessed, check_prefix, latest_witnessed, load_policy_file
from referendum_core.checkpoint import Checkpoint, parse_verifier_key
from referendum_core.credential import credential_to_did, parse_credential
from referendum_core.errors import CoreError
from referendum_core.witness import WitnessPolicy

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_UNREACHABLE = 3

T = TypeVar("T")


def _run(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; turn audit failures into exit codes with a named check."""
    try:
        return asyncio.run(make())
    except AuditFailure as exc:
        click.echo(f"FAILED {exc.check}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except CoreError as exc:
        click.echo(f"FAILED {exc.check}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except ApiError as exc:
        click.echo(f"ERROR cannot read the log: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)


def _log_key(value: str) -> str:
    try:
        parse_verifier_key(value)
    except CoreError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


@click.group(name="audit")
def main() -> None:
    """Verify receipts and follow the public log of a referendum, from public data only."""


_url = click.option(
    "--url", required=True, help="Base URL of the public API, e.g. http://host:8080"
)
_rid = click.option("--referendum", "referendum_id", required=True, help="Referendum id")
_key = click.option(
    "--log-key",
    required=True,
    callback=lambda _c, _p, v: _log_key(v),
    help="Verifier key of the log: <name>+<key id hex>+<base64 key>",
)
_origin = click.option(
    "--origin", default=None, help="Expected checkpoint origin line (default: not checked)"
)
_policy = click.option(
    "--witness-policy",
    "policy_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="The referendum's witness policy (JSON, obtained out of band): also require a "
    "checkpoint cosigned by k of its witnesses",
)


def _policy_or_none(path: Path | None) -> WitnessPolicy | None:
    return None if path is None else _run_sync(lambda: load_policy_file(path))


async def _witnessed(
    client: PublicLogClient,
    policy: WitnessPolicy,
    log_key: str,
    origin: str | None,
    checkpoint: Checkpoint,
) -> Witnessed:
    """The latest witnessed checkpoint, checked to be one log with ``checkpoint``."""
    found = await latest_witnessed(client, policy, log_key, origin)
    if found is None:
        raise AuditFailure("witness.none", "no checkpoint meets the witness policy yet")
    await check_prefix(client, checkpoint, found.checkpoint)
    return found


def _witnessed_line(found: Witnessed, policy: WitnessPolicy) -> str:
    return (
        f"OK witnessed: the checkpoint of tree size {found.checkpoint.size} is cosigned by "
        f"{', '.join(found.cosigners)} ({len(found.cosigners)} of the {policy.threshold} "
        f"of {len(policy.witnesses)} needed)"
    )


@main.command("verify-receipt")
@_url
@_rid
@click.option(
    "--receipt",
    "receipt_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="Receipt JSON holding ballot_hash",
)
@click.option("--ballot-hash", default=None, help="Ballot hash (hex) instead of --receipt")
@click.option(
    "--receipt-key",
    default=None,
    help="The server's receipt public key (hex or base64, from /v1/keys/receipts, obtained "
    "out of band); with --receipt, the receipt's signature is checked too",
)
@_key
@_origin
@_policy
def verify_receipt_command(
    url: str,
    referendum_id: str,
    receipt_file: Path | None,
    ballot_hash: str | None,
    receipt_key: str | None,
    log_key: str,
    origin: str | None,
    policy_file: Path | None,
) -> None:
    """Check that a ballot is in the log, against a signed checkpoint.

    With --receipt and --receipt-key, first check the server's signed promise itself. With
    --witness-policy, the ballot must also sit inside the latest witnessed checkpoint.
    """
    policy = _policy_or_none(policy_file)
    if (receipt_file is None) == (ballot_hash is None):
        raise click.UsageError("give exactly one of --receipt and --ballot-hash")
    if receipt_file is not None and receipt_key is not None:
        key_text = receipt_key
        digest = _run_sync(
            lambda: check_receipt_signature(
                receipt_file, parse_receipt_key(key_text), referendum_id
            )
        )
        click.echo("OK receipt signature verifies under the given receipt key")
    elif receipt_file is not None:
        click.echo("note: receipt signature not checked (no --receipt-key)", err=True)
        digest = _run_sync(lambda: ballot_hash_from_receipt(receipt_file))
    else:
        try:
            digest = bytes.fromhex(ballot_hash or "")
        except ValueError as exc:
            raise click.BadParameter("not hex", param_hint="--ballot-hash") from exc
        if len(digest) != 32:
            raise click.BadParameter("not 32 bytes", param_hint="--ballot-hash")

    async def go() -> None:
        async with PublicLogClient(url, referendum_id) as client:
            result = await verify_receipt(client, digest, log_key, origin=origin)
            found = None
            if policy is not None:
                found = await _witnessed(client, policy, log_key, origin, result.checkpoint)
                if result.leaf_index >= found.checkpoint.size:
                    raise AuditFailure(
                        "witness.not_yet",
                        f"ballot {result.leaf_index} is beyond the latest witnessed checkpoint "
                        f"(tree size {found.checkpoint.size}): not witnessed yet",
                    )
        click.echo(
            f"OK ballot {digest.hex()} is leaf {result.leaf_index} of the log at tree size "
            f"{result.checkpoint.size}; the latest signed checkpoint (size "
            f"{result.latest.size}) is consistent with it"
        )
        if found is not None and policy is not None:
            click.echo(_witnessed_line(found, policy))

    _run(go)


@main.command("verify-roll")
@_url
@_rid
@click.option(
    "--credential",
    required=True,
    help="The voter's credential: its Ed25519 public key as 64 hex digits or a did:key",
)
@click.option(
    "--roll-root",
    default=None,
    help="Pin the roll commitment (hex, as published) instead of trusting the server's",
)
def verify_roll_command(
    url: str, referendum_id: str, credential: str, roll_root: str | None
) -> None:
    """Check that a credential is on the referendum's committed roll (its inclusion proof).

    What a voter runs with their own credential: no voter id is sent or needed.
    """
    key = parse_credential(credential)
    if key is None:
        raise click.BadParameter(
            "not 64 hex digits or an Ed25519 did:key", param_hint="--credential"
        )

    async def go() -> None:
        async with PublicLogClient(url, referendum_id) as client:
            verifier = await RollBallotVerifier.create(client)
            if roll_root is not None and roll_root.lower() != verifier.roll_root.hex():
                raise AuditFailure(
                    "roll.commitment",
                    f"the server's roll root {verifier.roll_root.hex()} is not the pinned one",
                )
            index = await verifier.prove_on_roll(key)
        click.echo(
            f"OK credential {key.hex()} ({credential_to_did(key)}) is leaf {index} of the "
            f"committed roll of {referendum_id} ({verifier.roll_size} credentials, root "
            f"{verifier.roll_root.hex()})"
        )

    _run(go)


def _run_sync(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except AuditFailure as exc:
        click.echo(f"FAILED {exc.check}: {exc}", err=True)
        sys.exit(EXIT_FAILED)


@main.command("follow")
@_url
@_rid
@_key
@click.option(
    "--state-dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Folder for the verified copy and the resume state",
)
@click.option("--once", is_flag=True, help="Stop when caught up instead of polling")
@click.option(
    "--max-blocks",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after verifying this many blocks",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between polls while voting runs",
)
@click.option(
    "--no-ballot-checks",
    is_flag=True,
    help="Skip ballot signature, roll and proof checks (structure and tree still checked)",
)
@_origin
@_policy
def follow_command(
    url: str,
    referendum_id: str,
    log_key: str,
    state_dir: Path,
    once: bool,
    max_blocks: int | None,
    poll_interval: float,
    no_ballot_checks: bool,
    origin: str | None,
    policy_file: Path | None,
) -> None:
    """Stream the log block by block and verify every checkpoint, link and ballot.

    With --witness-policy, the verified log must also be one log with the latest checkpoint
    cosigned by k of the policy's witnesses (checked when the run stops).
    """
    policy = _policy_or_none(policy_file)

    async def go() -> None:
        async with PublicLogClient(url, referendum_id) as client:
            verifier: BallotVerifier
            if no_ballot_checks:
                verifier = SkipBallotChecks()
            else:
                from auditor.ballots import RollBallotVerifier

                verifier = await RollBallotVerifier.create(client)
            result = await follow(
                client,
                log_key=log_key,
                state_dir=state_dir,
                verifier=verifier,
                once=once,
                max_blocks=max_blocks,
                origin=origin,
                poll_interval_s=poll_interval,
                echo=click.echo,
            )
            found = None
            if policy is not None and result.tree_size > 0:
                # only size and root take part in the consistency check
                verified = Checkpoint(origin or "followed", result.tree_size, result.root)
                found = await _witnessed(client, policy, log_key, origin, verified)
        click.echo(
            f"OK verified {result.blocks_verified} new blocks; log at block "
            f"{result.height}, tree size {result.tree_size}"
        )
        if found is not None and policy is not None:
            click.echo(_witnessed_line(found, policy))

    _run(go)


main.add_command(verify_election_command)
