"""C2SP cosignatures (tlog-cosignature), add-checkpoint requests and the witness decision."""

from __future__ import annotations

import base64
import hashlib

import nacl.signing
import pytest

from referendum_core import checkpoint as ck
from referendum_core import witness as wt
from referendum_core.errors import CheckpointError
from referendum_core.merkle import consistency_proof, leaf_hash, root_from_leaf_hashes

LOG_SEED = bytes(range(32))
LOG_NAME = "referendum.example/log"
LOG_PUB = bytes(nacl.signing.SigningKey(LOG_SEED).verify_key)
ORIGIN = f"{LOG_NAME}/r-1"
W_SEEDS = [bytes([i]) * 32 for i in (7, 8, 9)]
W_PUBS = [bytes(nacl.signing.SigningKey(s).verify_key) for s in W_SEEDS]
W_NAMES = ["w1.example", "w2.example", "w3.example"]
LOG_KEYS = {ORIGIN: [(LOG_NAME, LOG_PUB)]}

# The example of C2SP tlog-cosignature ("Format" and "Ed25519 signed message"), verbatim.
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
SPEC_COSIGNATURE = (
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZC"
    "B9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_MESSAGE = (
    "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def _leaves(n: int, tag: bytes = b"") -> list[bytes]:
    return [leaf_hash(tag + i.to_bytes(4, "big")) for i in range(n)]


def _note(size: int, tag: bytes = b"", seed: bytes = LOG_SEED) -> tuple[str, bytes]:
    root = root_from_leaf_hashes(_leaves(size, tag))
    return ck.sign_checkpoint(ck.Checkpoint(ORIGIN, size, root), LOG_NAME, seed), root


def test_spec_example_decodes_to_the_spec_message() -> None:
    """The spec's example cosignature carries the spec's example time, and the message built
    for that checkpoint and time is the spec's message byte for byte."""
    cp = ck.Checkpoint.from_body(SPEC_CHECKPOINT)
    note = SPEC_CHECKPOINT + "\n" + SPEC_COSIGNATURE
    _, sigs = ck.parse_note(note)
    cosig = wt.Cosignature.from_note_signature(sigs[0])
    assert cosig.name == "witness.example.com/w1"
    assert cosig.timestamp == 1679315147  # the "time" line of the spec's message example
    assert cosig.key_id.hex() == "8d66cf3f"
    assert len(cosig.signature) == 64
    assert wt.cosignature_message(cp, cosig.timestamp) == SPEC_MESSAGE.encode()
    assert cosig.line() == SPEC_COSIGNATURE  # re-encoding gives the spec's line back


def test_key_id_uses_signature_type_4() -> None:
    """The cosigner key id is SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[:4], not the 0x01 note id."""
    want = hashlib.sha256(W_NAMES[0].encode() + b"\n\x04" + W_PUBS[0]).digest()[:4]
    assert wt.cosigner_key_id(W_NAMES[0], W_PUBS[0]) == want
    assert want != ck.key_id(W_NAMES[0], W_PUBS[0])
    vkey = wt.cosigner_vkey(W_NAMES[0], W_PUBS[0])
    material = base64.b64encode(b"\x04" + W_PUBS[0]).decode()
    assert vkey == f"{W_NAMES[0]}+{want.hex()}+{material}"
    assert wt.parse_cosigner_vkey(vkey) == (W_NAMES[0], W_PUBS[0])
    with pytest.raises(wt.CosignatureError):  # a 0x01 note key is not a cosigner key
        wt.parse_cosigner_vkey(ck.verifier_key_string(W_NAMES[0], W_PUBS[0]))


def test_cosignature_is_ed25519_over_timestamp_and_message() -> None:
    """The line is key id ‖ u64 big-endian time ‖ Ed25519(message), verifiable by hand."""
    note, root = _note(5)
    cp = ck.Checkpoint(ORIGIN, 5, root)
    line = wt.sign_cosignature(cp, W_NAMES[0], W_SEEDS[0], 1_700_000_000)
    raw = base64.b64decode(line.rstrip("\n").split(" ")[2])
    assert raw[:4] == wt.cosigner_key_id(W_NAMES[0], W_PUBS[0])
    assert int.from_bytes(raw[4:12], "big") == 1_700_000_000
    message = f"cosignature/v1\ntime 1700000000\n{cp.body()}".encode()
    nacl.signing.VerifyKey(W_PUBS[0]).verify(message, raw[12:])
    assert wt.verify_cosignature(cp, line, (W_NAMES[0], W_PUBS[0])) == 1_700_000_000
    # appended to the log's note, the log signature still verifies
    assert ck.verify_checkpoint(note + line, (LOG_NAME, LOG_PUB)) == cp


@pytest.mark.parametrize("what", ["time", "size", "key", "name"])
def test_altered_cosignature_fails(what: str) -> None:
    """Another time, checkpoint, signing key or name makes the cosignature fail."""
    cp = ck.Checkpoint(ORIGIN, 5, bytes(32))
    line = wt.sign_cosignature(cp, W_NAMES[0], W_SEEDS[0], 100)
    if what == "time":
        raw = bytearray(base64.b64decode(line.rstrip("\n").split(" ")[2]))
        raw[11] ^= 1
        line = f"\u2014 {W_NAMES[0]} {base64.b64encode(bytes(raw)).decode()}\n"
    elif what == "size":
        cp = ck.Checkpoint(ORIGIN, 6, bytes(32))
    elif what == "key":
        kid = wt.cosigner_key_id(W_NAMES[0], W_PUBS[0])
        other = wt.sign_cosignature(cp, W_NAMES[0], W_SEEDS[1], 100)
        theirs = base64.b64decode(other.rstrip("\n").split(" ")[2])
        line = f"\u2014 {W_NAMES[0]} {base64.b64encode(kid + theirs[4:]).decode()}\n"
    else:
        line = line.replace(W_NAMES[0], W_NAMES[1])
    with pytest.raises(wt.CosignatureError):
        wt.verify_cosignature(cp, line, (W_NAMES[0], W_PUBS[0]))


def _policy(k: int) -> wt.WitnessPolicy:
    return wt.WitnessPolicy(
        k,
        tuple(
            wt.Witness(n, p, f"http://127.0.0.1:{9000 + i}")
            for i, (n, p) in enumerate(zip(W_NAMES, W_PUBS, strict=True))
        ),
    )


def test_policy_two_of_three() -> None:
    """Two valid cosignatures of three meet 2-of-3; one does not; unknown lines are ignored."""
    note, root = _note(9)
    cp = ck.Checkpoint(ORIGIN, 9, root)
    lines = [wt.sign_cosignature(cp, n, s, 5) for n, s in zip(W_NAMES, W_SEEDS, strict=True)]
    stranger = wt.sign_cosignature(cp, "stranger.example", bytes([42]) * 32, 5)
    policy = _policy(2)
    assert policy.check(note + lines[0] + stranger + lines[2]) == [W_NAMES[0], W_NAMES[2]]
    with pytest.raises(wt.PolicyError) as err:
        policy.check(note + lines[1] + stranger)
    assert err.value.check == "policy.threshold"
    other = ck.Checkpoint(ORIGIN, 9, bytes(32))
    forged = wt.sign_cosignature(other, W_NAMES[1], W_SEEDS[1], 5)  # of another checkpoint
    with pytest.raises(wt.CosignatureError):
        policy.check(note + lines[0] + forged)
    assert wt.WitnessPolicy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize(
    "obj",
    [
        {"threshold": 4, "witnesses": []},
        {"threshold": 0, "witnesses": [{"vkey": "x", "url": "http://a"}]},
        {"threshold": 1},
        {"threshold": True, "witnesses": []},
        {"threshold": 1, "witnesses": [{"vkey": "a+00000000+AAAA", "url": "http://a"}]},
    ],
    ids=["k-above-w", "k-zero", "no-witnesses", "bool-k", "bad-vkey"],
)
def test_malformed_policies_are_refused(obj: object) -> None:
    """A malformed policy raises a CheckpointError subclass, never anything else."""
    with pytest.raises(CheckpointError):
        wt.WitnessPolicy.from_json(obj)


def test_duplicate_witness_refused() -> None:
    """The same witness listed twice cannot count twice towards k."""
    w = wt.Witness(W_NAMES[0], W_PUBS[0], "http://127.0.0.1:1")
    with pytest.raises(wt.PolicyError):
        wt.WitnessPolicy(2, (w, w))


def _request(old: int, new: int, tag: bytes = b"") -> wt.AddCheckpointRequest:
    note, _ = _note(new, tag)
    proof = consistency_proof(_leaves(new, tag), old) if 0 < old < new else []
    return wt.AddCheckpointRequest(old, tuple(proof), note)


def _stored(size: int, tag: bytes = b"") -> wt.StoredCheckpoint:
    note, root = _note(size, tag)
    return wt.StoredCheckpoint(size, root, note)


def test_request_round_trip_and_layout() -> None:
    """The body is 'old N', base64 proof lines, a blank line, the note; parse inverts it."""
    req = _request(3, 10)
    body = req.to_bytes().decode()
    lines = body.split("\n")
    assert lines[0] == "old 3"
    assert [base64.b64decode(x) for x in lines[1 : 1 + len(req.proof)]] == list(req.proof)
    assert lines[1 + len(req.proof)] == ""
    assert body.endswith(req.note)
    assert wt.AddCheckpointRequest.parse(req.to_bytes()) == req


@pytest.mark.parametrize(
    "body",
    [
        b"old 01\n\nx",
        b"old -1\n\nx",
        b"new 1\n\nx",
        b"old 1\nnot base64!\n\nx",
        b"old 1\n" + base64.b64encode(bytes(31)) + b"\n\nx",
        b"old 1\n" + (base64.b64encode(bytes(32)) + b"\n") * 64 + b"\nx",
        b"old 1\n",
        b"\xff\xfe",
        b"old 1\n\n" + b"x" * wt.MAX_REQUEST_BYTES,
    ],
    ids=[
        "zero-pad",
        "negative",
        "no-old",
        "bad-b64",
        "short-hash",
        "64-lines",
        "no-blank",
        "not-utf8",
        "too-large",
    ],
)
def test_malformed_requests(body: bytes) -> None:
    """Bodies off the tlog-witness grammar raise RequestFormatError (answered 400)."""
    with pytest.raises(wt.RequestFormatError):
        wt.AddCheckpointRequest.parse(body)


def test_decide_first_and_consistent() -> None:
    """A first checkpoint (old 0, no proof) and a consistent extension are cosigned."""
    first = wt.decide(None, _request(0, 4), LOG_KEYS.get)
    assert isinstance(first, wt.Cosign) and first.checkpoint.size == 4
    nxt = wt.decide(_stored(4), _request(4, 11), LOG_KEYS.get)
    assert isinstance(nxt, wt.Cosign) and nxt.checkpoint.size == 11
    same = wt.decide(_stored(11), _request(11, 11), LOG_KEYS.get)
    assert isinstance(same, wt.Cosign)


def test_decide_refusals() -> None:
    """Each refusal has the spec's status; a fork and a bad proof carry evidence."""
    stored = _stored(4)
    cases: list[tuple[wt.Decision, int, str | None]] = []
    cases.append((wt.decide(stored, _request(0, 11), LOG_KEYS.get), 409, None))
    cases.append((wt.decide(stored, _request(4, 4, b"fork"), LOG_KEYS.get), 409, "fork"))
    bad = _request(4, 11)
    tampered = wt.AddCheckpointRequest(4, (bytes(32), *bad.proof[1:]), bad.note)
    cases.append((wt.decide(stored, tampered, LOG_KEYS.get), 422, "bad_proof"))
    forked_ext = _request(4, 11, b"other")  # a proof of the other history
    cases.append((wt.decide(stored, forked_ext, LOG_KEYS.get), 422, "bad_proof"))
    cases.append(
        (wt.decide(stored, wt.AddCheckpointRequest(12, (), bad.note), LOG_KEYS.get), 400, None)
    )
    nonempty = wt.AddCheckpointRequest(0, (bytes(32),), bad.note)
    cases.append((wt.decide(None, nonempty, LOG_KEYS.get), 422, None))
    wrong_key = _note(11, seed=bytes([5]) * 32)[0]
    unsigned = wt.AddCheckpointRequest(4, bad.proof, wrong_key)
    cases.append((wt.decide(stored, unsigned, LOG_KEYS.get), 403, None))
    cases.append((wt.decide(stored, bad, {"someone/else": [(LOG_NAME, LOG_PUB)]}.get), 404, None))
    cases.append(
        (wt.decide(stored, wt.AddCheckpointRequest(4, (), "garbage"), LOG_KEYS.get), 400, None)
    )
    for decision, status, evidence in cases:
        assert isinstance(decision, wt.Refuse), decision
        assert (decision.status, decision.evidence) == (status, evidence), decision
        if status == 409:
            assert decision.latest_size == 4
