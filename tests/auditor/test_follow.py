"""The auditor's follow and verify-receipt commands against canned logs served over HTTP.

The logs are built here with the pure core (no server, no database) and served by a tiny
aiohttp app in a background thread; the tampered variants show that ``follow`` names each
kind of damage and exits non-zero.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from aiohttp import web
from click.testing import CliRunner

from auditor.cli import main
from auditor.client import PublicLogClient
from auditor.follow import AuditFailure, FollowResult, SkipBallotChecks, follow
from referendum_core import merkle
from referendum_core.ballot_codec import credential_of
from referendum_core.block import GENESIS_PREV_HASH, Block
from referendum_core.checkpoint import (
    Checkpoint,
    key_id,
    sign_checkpoint,
    verifier_key_string,
)
from referendum_core.errors import SignatureError

RID = "r-audit"
KEY_NAME = "referendum.test/log"
ORIGIN = f"{KEY_NAME}/{RID}"
LOG_SEED = bytes(range(32))
FORGER_SEED = bytes(range(100, 132))
LOG_KEY = verifier_key_string(KEY_NAME, bytes(nacl.signing.SigningKey(LOG_SEED).verify_key))
VOTERS = {f"v{i}": nacl.signing.SigningKey(bytes([i + 1]) * 32) for i in range(12)}


def forge(note: str) -> str:
    """The note re-signed by the forger's key but labelled with the log's key id."""
    body = note.split("\n\n")[0] + "\n"
    signature = nacl.signing.SigningKey(FORGER_SEED).sign(body.encode()).signature
    kid = key_id(KEY_NAME, bytes(nacl.signing.SigningKey(LOG_SEED).verify_key))
    return f"{body}\n\u2014 {KEY_NAME} {base64.b64encode(kid + signature).decode()}\n"


def credential(voter: str) -> bytes:
    """The credential (Ed25519 public key) of test voter ``voter``."""
    return bytes(VOTERS[voter].verify_key)


def signed_body(voter: str, payload: bytes) -> bytes:
    """A stand-in ballot laid out like a version-2 one up to its credential (so the auditor
    reads the signer from it), then a payload, signed by the credential's secret."""
    message = b"RBAL\x02" + bytes([len(RID)]) + RID.encode() + credential(voter) + payload
    return message + VOTERS[voter].sign(message).signature


class SignatureVerifier:
    """Test BallotVerifier: checks the stand-in ballot's signature under its credential."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.credentials: list[bytes] = []

    async def verify(self, index: int, key: bytes, body: bytes) -> None:
        self.seen.append(index)
        self.credentials.append(key)
        message, signature = body[:-64], body[-64:]
        try:
            nacl.signing.VerifyKey(key).verify(message, signature)
        except Exception as exc:
            raise SignatureError("voter signature does not verify", check="signature") from exc


class CannedLog:
    """A log built with the core: ballots, blocks with signed checkpoints, proofs."""

    def __init__(
        self,
        bodies: list[tuple[str, bytes]],
        block_sizes: list[int],
        forged: frozenset[int] = frozenset(),
    ) -> None:
        self.entries = list(bodies)
        self.leaves = [merkle.leaf_hash(b) for _, b in bodies]
        self.blocks: list[Block] = []
        self.listing: dict[int, list[dict[str, Any]]] = {}
        self.state = "open"
        acc = merkle.CompactRange()
        prev = GENESIS_PREV_HASH
        first = 0
        for height, size in enumerate(block_sizes, start=1):
            acc.extend(self.leaves[first : first + size])
            note = sign_checkpoint(Checkpoint(ORIGIN, acc.size, acc.root()), KEY_NAME, LOG_SEED)
            if height in forged:
                note = forge(note)
            block = Block(
                RID,
                height,
                first,
                acc.size,
                acc.size,
                acc.root(),
                prev,
                1_763_600_000_000 + height,
                note,
            )
            self.blocks.append(block)
            self.listing[height] = [
                {
                    "index": i,
                    "ballot_hash": hashlib.sha256(bodies[i][1]).hexdigest(),
                    "body": bodies[i][1].hex(),
                    "credential": credential_of(bodies[i][1]).hex(),
                }
                for i in range(first, acc.size)
            ]
            prev = block.block_hash()
            first = acc.size
        self.visible = len(self.blocks)
        self.latest: int | None = None  # height served as latest checkpoint (default: last)
        self.definition: dict[str, Any] = {}  # more fields of GET /v1/referendums/{rid}
        self.roll: dict[str, dict[str, Any]] = {}  # credential (hex) -> roll proof JSON

    def app(self) -> web.Application:
        routes = web.RouteTableDef()
        base = f"/v1/referendums/{RID}"

        @routes.get(base)
        async def referendum(_: web.Request) -> web.Response:
            return web.json_response({"id": RID, "state": self.state, **self.definition})

        @routes.get(base + "/roll/proof/{credential}")
        async def roll_proof(request: web.Request) -> web.Response:
            entry = self.roll.get(request.match_info["credential"])
            if entry is None:
                raise web.HTTPNotFound()
            return web.json_response(entry)

        @routes.get(base + "/log/checkpoint")
        async def checkpoint(_: web.Request) -> web.Response:
            b = self.blocks[(self.latest or self.visible) - 1]
            return web.json_response(
                {
                    "tree_size": b.tree_size,
                    "root": b.root.hex(),
                    "note": b.checkpoint,
                    "height": b.height,
                }
            )

        @routes.get(base + "/log/blocks/{height}")
        async def block(request: web.Request) -> web.Response:
            h = int(request.match_info["height"])
            if not 1 <= h <= self.visible:
                raise web.HTTPNotFound()
            return web.json_response(self.blocks[h - 1].to_json())

        @routes.get(base + "/log/blocks/{height}/ballots")
        async def ballots(request: web.Request) -> web.Response:
            h = int(request.match_info["height"])
            limit = int(request.query.get("limit", "1000"))
            after = int(request.query.get("cursor", "-1"))
            rows = self.listing[h]
            start = next((k for k, r in enumerate(rows) if r["index"] > after), len(rows))
            if after >= 0:  # a cursor is the last index returned, as docs/log.md says
                start = next(k for k, r in enumerate(rows) if r["index"] == after) + 1
            page = rows[start : start + limit]
            more = start + limit < len(rows)
            return web.json_response(
                {"ballots": page, "next_cursor": str(page[-1]["index"]) if more else None}
            )

        @routes.get(base + "/log/proof/consistency")
        async def consistency(request: web.Request) -> web.Response:
            m, n = int(request.query["from"]), int(request.query["to"])
            proof = merkle.consistency_proof(self.leaves[:n], m)
            return web.json_response({"from": m, "to": n, "proof": [p.hex() for p in proof]})

        @routes.get(base + "/log/proof/inclusion/{ballot_hash}")
        async def inclusion(request: web.Request) -> web.Response:
            wanted = request.match_info["ballot_hash"]
            size = int(request.query.get("tree_size", self.blocks[self.visible - 1].tree_size))
            block = next(b for b in self.blocks if b.tree_size == size)
            for i, (_, body) in enumerate(self.entries[:size]):
                if hashlib.sha256(body).hexdigest() == wanted:
                    proof = merkle.inclusion_proof(self.leaves[:size], i)
                    return web.json_response(
                        {
                            "leaf_index": i,
                            "tree_size": size,
                            "proof": [p.hex() for p in proof],
                            "checkpoint": block.checkpoint,
                            "body": body.hex(),
                        }
                    )
            raise web.HTTPNotFound()

        app = web.Application()
        app.add_routes(routes)
        return app


@contextlib.contextmanager
def serving(log: CannedLog) -> Iterator[str]:
    """Serve ``log`` on a free local port from a background thread; yield its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(log.app())
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


def ballots(n: int, tag: bytes = b"") -> list[tuple[str, bytes]]:
    voters = sorted(VOTERS)
    return [
        (voters[i % len(voters)], signed_body(voters[i % len(voters)], b"choice-%d" % i + tag))
        for i in range(n)
    ]


SIZES = [3, 4, 1, 5]  # 13 ballots in 4 blocks


def run_follow(url: str, state_dir: Path, **kwargs: Any) -> FollowResult:
    verifier = kwargs.pop("verifier", None) or SignatureVerifier()

    async def go() -> FollowResult:
        async with PublicLogClient(url, RID, page_limit=2) as client:
            return await follow(
                client,
                log_key=LOG_KEY,
                state_dir=state_dir,
                verifier=verifier,
                origin=ORIGIN,
                echo=lambda _: None,
                **kwargs,
            )

    return asyncio.run(go())


def failure(log: CannedLog, state_dir: Path) -> AuditFailure:
    with serving(log) as url, pytest.raises(AuditFailure) as err:
        run_follow(url, state_dir, once=True)
    return err.value


def test_honest_log_passes_and_resumes(tmp_path: Path) -> None:
    """An honest log verifies; a second run resumes after the saved block and finishes."""
    log = CannedLog(ballots(13), SIZES)
    verifier = SignatureVerifier()
    with serving(log) as url:
        first = run_follow(url, tmp_path, max_blocks=2, verifier=verifier)
        assert (first.blocks_verified, first.height, first.tree_size) == (2, 2, 7)
        second = run_follow(url, tmp_path, once=True, verifier=verifier)
    assert (second.blocks_verified, second.height, second.tree_size) == (2, 4, 13)
    assert verifier.seen == list(range(13))  # every ballot checked once, none twice
    # each under the credential its body names, read from the body
    assert verifier.credentials == [credential(v) for v, _ in log.entries]
    state = json.loads((tmp_path / "state.json").read_text())
    assert bytes.fromhex(state["root"]) == merkle.root_from_leaf_hashes(log.leaves)
    copied = (tmp_path / "blocks" / "0000000004.ballots.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in copied] == list(range(8, 13))


def test_growing_log_is_followed_across_polls(tmp_path: Path) -> None:
    """Blocks appearing between polls are verified; a closed referendum ends the loop."""
    log = CannedLog(ballots(13), SIZES)
    log.visible = 1
    with serving(log) as url:
        assert run_follow(url, tmp_path, once=True).height == 1
        log.visible = 4
        log.state = "closed"
        result = run_follow(url, tmp_path, poll_interval_s=0.01, max_polls=5)
    assert (result.height, result.tree_size) == (4, 13)


def test_deleted_ballot_is_detected(tmp_path: Path) -> None:
    """A ballot removed from a block's listing is named as missing."""
    log = CannedLog(ballots(13), SIZES)
    del log.listing[2][1]  # log index 4
    err = failure(log, tmp_path)
    assert err.check == "ballot.missing"
    assert "block 2" in str(err) and "ballot 4" in str(err)


def test_deleted_last_ballot_is_detected(tmp_path: Path) -> None:
    """Dropping a block's last ballot is caught by the count of its range."""
    log = CannedLog(ballots(13), SIZES)
    log.listing[4].pop()
    err = failure(log, tmp_path)
    assert err.check == "ballot.missing" and "block 4" in str(err)


def test_changed_ballot_is_detected(tmp_path: Path) -> None:
    """A ballot whose body was altered (hash updated to match) fails its voter signature."""
    log = CannedLog(ballots(13), SIZES)
    row = log.listing[3][0]
    body = bytearray(bytes.fromhex(row["body"]))
    body[-66] ^= 1  # in the payload
    row["body"], row["ballot_hash"] = body.hex(), hashlib.sha256(body).hexdigest()
    err = failure(log, tmp_path)
    assert err.check == "ballot.signature"
    assert "block 3" in str(err) and "ballot 7" in str(err)


def test_ballot_listed_under_another_credential_is_detected(tmp_path: Path) -> None:
    """A listing whose credential member is not the one inside the ballot body is refused
    (the auditor reads the signer from the body, and checks the listing agrees)."""
    log = CannedLog(ballots(13), SIZES)
    log.listing[2][1]["credential"] = credential("v11").hex()
    err = failure(log, tmp_path)
    assert err.check == "ballot.credential" and "ballot 4" in str(err)


def test_ballot_whose_credential_is_swapped_in_the_body_fails_its_signature(
    tmp_path: Path,
) -> None:
    """Another voter's credential put into a body (listing and hash updated) fails: the
    signature is checked under the credential the body names."""
    log = CannedLog(ballots(13), SIZES)
    row = log.listing[3][0]
    body = bytearray(bytes.fromhex(row["body"]))
    start = 6 + len(RID)
    body[start : start + 32] = credential("v11")
    row["body"], row["ballot_hash"] = body.hex(), hashlib.sha256(body).hexdigest()
    row["credential"] = credential("v11").hex()
    err = failure(log, tmp_path)
    assert err.check == "ballot.signature" and "ballot 7" in str(err)


def test_changed_validly_signed_ballot_breaks_the_root(tmp_path: Path) -> None:
    """Replacing a ballot by another validly signed one is caught by the recomputed root."""
    log = CannedLog(ballots(13), SIZES)
    row = log.listing[2][2]
    voter = next(v for v in VOTERS if credential(v).hex() == row["credential"])
    body = signed_body(voter, b"another choice")
    row["body"], row["ballot_hash"] = body.hex(), hashlib.sha256(body).hexdigest()
    err = failure(log, tmp_path)
    assert err.check == "block.root" and "block 2" in str(err)


def test_reordered_entries_are_detected(tmp_path: Path) -> None:
    """Two ballots swapped inside a block (indexes kept in order) break the root."""
    log = CannedLog(ballots(13), SIZES)
    rows = log.listing[4]
    for key in ("body", "ballot_hash", "credential"):
        rows[0][key], rows[3][key] = rows[3][key], rows[0][key]
    err = failure(log, tmp_path)
    assert err.check == "block.root" and "block 4" in str(err)


def test_reordered_listing_is_detected(tmp_path: Path) -> None:
    """A listing whose indexes come out of order is refused before any hashing."""
    log = CannedLog(ballots(13), SIZES)
    rows = log.listing[2]
    rows[0], rows[1] = rows[1], rows[0]
    err = failure(log, tmp_path)
    assert err.check in ("ballot.missing", "ballot.order") and "block 2" in str(err)


def test_forged_checkpoint_signature_is_detected(tmp_path: Path) -> None:
    """A block whose checkpoint is signed by another key under the log's name is refused."""
    log = CannedLog(ballots(13), SIZES, forged=frozenset({3}))
    log.visible = 3
    err = failure(log, tmp_path)
    assert err.check == "note.signature"
    assert "latest checkpoint" in str(err) or "block 3" in str(err)
    log.visible = 4  # the latest checkpoint is honest again: the block itself is caught
    with serving(log) as url, pytest.raises(AuditFailure) as again:
        run_follow(url, tmp_path / "fresh", once=True)
    assert again.value.check == "note.signature" and "block 3" in str(again.value)


def test_fork_is_detected_on_resume(tmp_path: Path) -> None:
    """After verifying two blocks, a log that rewrote its history (properly signed) is
    refused as inconsistent with the earlier checkpoint."""
    honest = CannedLog(ballots(13), SIZES)
    honest.visible = 2
    with serving(honest) as url:
        assert run_follow(url, tmp_path, once=True).tree_size == 7
    history = ballots(13)
    history[1] = (history[1][0], signed_body(history[1][0], b"rewritten"))
    forked = CannedLog(history, SIZES)
    err = failure(forked, tmp_path)
    assert err.check == "checkpoint.consistency"
    assert "size 7" in str(err)


def test_fork_in_a_new_block_is_detected(tmp_path: Path) -> None:
    """A new block whose signed checkpoint does not extend the verified one is refused even
    when the latest-checkpoint endpoint still shows the old, honest checkpoint."""
    honest = CannedLog(ballots(13), SIZES)
    honest.visible = 2
    with serving(honest) as url:
        run_follow(url, tmp_path, once=True)
    history = ballots(13)
    history[0] = (history[0][0], signed_body(history[0][0], b"rewritten"))
    forked = CannedLog(history, SIZES)
    forked.blocks[:2] = honest.blocks[:2]  # same first blocks, diverging tree after them
    forked.blocks[2] = Block(
        RID,
        3,
        7,
        8,
        8,
        forked.blocks[2].root,
        honest.blocks[1].block_hash(),
        forked.blocks[2].sealed_at,
        forked.blocks[2].checkpoint,
    )
    forked.visible = 3
    forked.latest = 2  # the latest-checkpoint endpoint still shows honest block 2
    err = failure(forked, tmp_path)
    assert err.check == "checkpoint.consistency" and "block 3" in str(err)


def test_broken_hash_chain_is_detected(tmp_path: Path) -> None:
    """A block whose prev_hash does not name the previous block is refused."""
    log = CannedLog(ballots(13), SIZES)
    b = log.blocks[1]
    log.blocks[1] = Block(
        RID,
        2,
        b.first_index,
        b.end_index,
        b.tree_size,
        b.root,
        bytes([7]) * 32,
        b.sealed_at,
        b.checkpoint,
    )
    err = failure(log, tmp_path)
    assert err.check == "chain.prev_hash" and "block 2" in str(err)


def test_cli_follow_exit_codes(tmp_path: Path) -> None:
    """The follow command exits 0 on an honest log and 1 naming the check on a bad one."""
    runner = CliRunner()
    log = CannedLog(ballots(13), SIZES)
    args = [
        "follow",
        "--referendum",
        RID,
        "--log-key",
        LOG_KEY,
        "--once",
        "--no-ballot-checks",
        "--origin",
        ORIGIN,
    ]
    with serving(log) as url:
        ok = runner.invoke(main, [*args, "--url", url, "--state-dir", str(tmp_path / "a")])
    assert ok.exit_code == 0, ok.output
    assert "tree size 13" in ok.output
    del log.listing[1][0]
    with serving(log) as url:
        bad = runner.invoke(main, [*args, "--url", url, "--state-dir", str(tmp_path / "b")])
    assert bad.exit_code == 1
    assert "FAILED ballot.missing" in bad.output


def test_cli_verify_receipt(tmp_path: Path) -> None:
    """verify-receipt accepts a logged ballot and refuses, with exit 1, an unknown ballot or
    a proof from a tampered tree."""
    runner = CliRunner()
    log = CannedLog(ballots(13), SIZES)
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps({"ballot_hash": log.listing[2][1]["ballot_hash"]}))
    args = ["verify-receipt", "--referendum", RID, "--log-key", LOG_KEY]
    with serving(log) as url:
        ok = runner.invoke(main, [*args, "--url", url, "--receipt", str(receipt)])
        unknown = runner.invoke(main, [*args, "--url", url, "--ballot-hash", "ab" * 32])
    assert ok.exit_code == 0, ok.output
    assert "is leaf 4 " in ok.output
    assert unknown.exit_code == 1
    assert "FAILED inclusion.not_found" in unknown.output
    log.leaves[5] = merkle.leaf_hash(b"tampered")  # the server now proves a wrong tree
    with serving(log) as url:
        bad = runner.invoke(main, [*args, "--url", url, "--receipt", str(receipt)])
    assert bad.exit_code == 1
    assert "FAILED inclusion." in bad.output


def test_wrong_log_key_is_refused(tmp_path: Path) -> None:
    """Following with another log's verifier key fails on the first checkpoint."""
    other = verifier_key_string(KEY_NAME, bytes(nacl.signing.SigningKey(FORGER_SEED).verify_key))
    log = CannedLog(ballots(4), [4])
    with serving(log) as url:

        async def go() -> None:
            async with PublicLogClient(url, RID) as client:
                await follow(
                    client,
                    log_key=other,
                    state_dir=tmp_path,
                    verifier=SkipBallotChecks(),
                    once=True,
                    echo=lambda _: None,
                )

        with pytest.raises(AuditFailure) as err:
            asyncio.run(go())
    assert err.value.check == "note.unknown_key"
