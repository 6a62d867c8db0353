"""follow with the default RollBallotVerifier: real encrypted ballots, their credentials proven
in the committed roll, against a canned log served over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nacl.signing
import pytest

from auditor.ballots import RollBallotVerifier
from auditor.client import PublicLogClient
from auditor.follow import AuditFailure, FollowResult, follow
from referendum_core import merkle
from referendum_core.ballot import SIGNING_PREFIX, BallotSpec
from referendum_core.ballot_codec import ballot_from_json, encode_body
from referendum_core.client import make_ballot
from referendum_core.credential import credential_to_did
from referendum_core.group import Point
from referendum_core.roll import roll_leaf_hash

from .test_follow import LOG_KEY, ORIGIN, RID, CannedLog, serving

SPEC = BallotSpec(RID, ("yes", "no"), 1, 1, Point.base_mul(12345).to_compressed())
SECRETS = {f"voter-{i}": bytes([i + 7]) * 32 for i in range(4)}


def public_key(voter: str) -> bytes:
    """The credential of test voter ``voter``."""
    return bytes(nacl.signing.SigningKey(SECRETS[voter]).verify_key)


def canonical(voter: str, choice: int, signer: str | None = None) -> bytes:
    """Canonical bytes of a real ballot of ``voter``'s credential (signed by ``signer``'s
    key, default the voter's own)."""
    body = make_ballot(SPEC, SECRETS[voter], [choice, 1 - choice])
    record = ballot_from_json(body)
    if signer is not None:
        unsigned = encode_body(record)
        return (
            unsigned
            + nacl.signing.SigningKey(SECRETS[signer]).sign(SIGNING_PREFIX + unsigned).signature
        )
    return encode_body(record) + record.signature


def roll_log(entries: list[tuple[str, bytes]], roll_voters: list[str]) -> CannedLog:
    """A log of ``entries`` whose referendum commits to a roll of ``roll_voters``' credentials,
    serving each credential's roll proof under its hex and its did:key."""
    log = CannedLog(entries, [len(entries) // 2, len(entries) - len(entries) // 2])
    ordered = sorted(public_key(v) for v in roll_voters)
    leaves = [roll_leaf_hash(c) for c in ordered]
    root = merkle.root_from_leaf_hashes(leaves)
    log.definition = {
        "options": list(SPEC.options),
        "min_selections": 1,
        "max_selections": 1,
        "election_public_key": SPEC.election_public_key.hex(),
        "roll_root": root.hex(),
        "roll_size": len(ordered),
    }
    for i, c in enumerate(ordered):
        entry = {
            "credential": c.hex(),
            "did": credential_to_did(c),
            "index": i,
            "size": len(ordered),
            "proof": [p.hex() for p in merkle.inclusion_proof(leaves, i)],
            "root": root.hex(),
        }
        log.roll[c.hex()] = log.roll[credential_to_did(c)] = entry
    return log


def run(url: str, state_dir: Path) -> FollowResult:
    async def go() -> FollowResult:
        async with PublicLogClient(url, RID) as client:
            verifier = await RollBallotVerifier.create(client)
            return await follow(
                client,
                log_key=LOG_KEY,
                state_dir=state_dir,
                verifier=verifier,
                origin=ORIGIN,
                once=True,
                echo=lambda _: None,
            )

    return asyncio.run(go())


def test_real_ballots_verify(tmp_path: Path) -> None:
    """Valid ballots of credentials on the roll pass signature, proof and roll checks."""
    entries = [(v, canonical(v, i % 2)) for i, v in enumerate(sorted(SECRETS))]
    with serving(roll_log(entries, list(SECRETS))) as url:
        assert run(url, tmp_path).tree_size == 4


def test_ballot_signed_by_another_voter_fails(tmp_path: Path) -> None:
    """A ballot naming voter-1's credential but signed with voter-2's key fails its signature."""
    entries = [(v, canonical(v, 0)) for v in sorted(SECRETS)]
    entries[1] = ("voter-1", canonical("voter-1", 0, signer="voter-2"))
    with serving(roll_log(entries, list(SECRETS))) as url, pytest.raises(AuditFailure) as err:
        run(url, tmp_path)
    assert err.value.check == "ballot.signature" and "ballot 1" in str(err.value)


def test_credential_missing_from_roll_fails(tmp_path: Path) -> None:
    """A validly signed ballot of a credential that is not on the committed roll is named."""
    entries = [(v, canonical(v, 1)) for v in sorted(SECRETS)]
    roll = [v for v in SECRETS if v != "voter-3"]
    with serving(roll_log(entries, roll)) as url, pytest.raises(AuditFailure) as err:
        run(url, tmp_path)
    assert err.value.check == "roll.credential"
    assert public_key("voter-3").hex() in str(err.value)


def test_roll_proof_of_another_credential_fails(tmp_path: Path) -> None:
    """A roll proof served for a credential that names (and proves) another one is refused."""
    entries = [(v, canonical(v, 1)) for v in sorted(SECRETS)]
    log = roll_log(entries, list(SECRETS))
    log.roll[public_key("voter-2").hex()] = log.roll[public_key("voter-0").hex()]
    with serving(log) as url, pytest.raises(AuditFailure) as err:
        run(url, tmp_path)
    assert err.value.check == "roll.proof" and public_key("voter-2").hex() in str(err.value)


def test_roll_proof_that_does_not_verify_fails(tmp_path: Path) -> None:
    """A roll proof with the right credential but a wrong path is not proof of membership."""
    entries = [(v, canonical(v, 1)) for v in sorted(SECRETS)]
    log = roll_log(entries, list(SECRETS))
    entry = log.roll[public_key("voter-1").hex()]
    entry["index"] = (entry["index"] + 1) % 4
    with serving(log) as url, pytest.raises(AuditFailure) as err:
        run(url, tmp_path)
    assert err.value.check == "roll.proof" and "not proven" in str(err.value)


def test_cli_verify_roll_proves_a_credential_by_hex_or_did() -> None:
    """`audit verify-roll`: a credential on the roll passes by hex and by did:key (printing
    both), one not on it fails naming the check, a pinned root that differs fails, and a
    malformed credential is bad usage."""
    from click.testing import CliRunner

    from auditor.cli import main

    entries = [(v, canonical(v, 1)) for v in sorted(SECRETS)]
    log = roll_log(entries, [v for v in SECRETS if v != "voter-3"])
    runner = CliRunner()
    member, outsider = public_key("voter-1"), public_key("voter-3")
    with serving(log) as url:
        base = ["verify-roll", "--url", url, "--referendum", RID, "--credential"]
        for spelling in (member.hex(), credential_to_did(member)):
            ok = runner.invoke(main, [*base, spelling])
            assert ok.exit_code == 0, ok.output
            assert member.hex() in ok.output and credential_to_did(member) in ok.output
        missing = runner.invoke(main, [*base, outsider.hex()])
        assert missing.exit_code == 1 and "roll.credential" in missing.output
        pinned = runner.invoke(main, [*base, member.hex(), "--roll-root", "00" * 32])
        assert pinned.exit_code == 1 and "roll.commitment" in pinned.output
        bad = runner.invoke(
            main, [*base, "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"]
        )
        assert bad.exit_code == 2
