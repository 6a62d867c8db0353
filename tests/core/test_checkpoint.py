"""Signed checkpoint notes (C2SP signed-note + tlog-checkpoint) and log blocks."""

from __future__ import annotations

import base64
import hashlib

import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referendum_core import block as blk
from referendum_core import checkpoint as ck
from referendum_core.errors import CheckpointError, CoreError

SEED = bytes(range(32))
NAME = "referendum.example/log"
PUB = bytes(nacl.signing.SigningKey(SEED).verify_key)
OTHER_SEED = bytes(range(1, 33))
ROOT = hashlib.sha256(b"some root").digest()
CP = ck.Checkpoint(f"{NAME}/r-1", 42, ROOT)
KEY1_B64 = base64.b64encode(b"\x01" + PUB).decode()  # algorithm 0x01 = Ed25519
KEY2_B64 = base64.b64encode(b"\x02" + PUB).decode()


def test_round_trip() -> None:
    """A signed checkpoint verifies with its key and parses back to the same checkpoint."""
    note = ck.sign_checkpoint(CP, NAME, SEED)
    assert ck.verify_checkpoint(note, ck.verifier_key_string(NAME, PUB)) == CP
    assert ck.verify_checkpoint(note, (NAME, PUB), origin=f"{NAME}/r-1") == CP
    parsed, sigs = ck.parse_note(note)
    assert parsed == CP
    assert [(s.name, s.key_id) for s in sigs] == [(NAME, ck.key_id(NAME, PUB))]


def test_note_layout() -> None:
    """The note is origin, decimal size, base64 root, blank line, one em-dash signature line."""
    note = ck.sign_checkpoint(CP, NAME, SEED)
    lines = note.split("\n")
    assert lines[:4] == [f"{NAME}/r-1", "42", base64.b64encode(ROOT).decode(), ""]
    assert lines[4].startswith("\u2014 " + NAME + " ")
    assert lines[5:] == [""]
    raw = base64.b64decode(lines[4].split(" ")[2])
    assert len(raw) == 4 + 64
    # The signature is plain Ed25519 over the body including its final newline.
    nacl.signing.VerifyKey(PUB).verify(CP.body().encode(), raw[4:])


def test_key_id_known_answer() -> None:
    """The key id is SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4], as the spec states."""
    # Derived independently with hashlib from the spec's formula, and pinned as hex so a
    # change of the formula in either place shows up.
    want = hashlib.sha256(NAME.encode() + b"\n" + b"\x01" + PUB).digest()[:4]
    assert ck.key_id(NAME, PUB) == want
    assert ck.key_id(NAME, PUB).hex() == want.hex()
    vkey = ck.verifier_key_string(NAME, PUB)
    assert vkey == f"{NAME}+{want.hex()}+{KEY1_B64}"


def test_interoperates_with_go_sumdb_note_example() -> None:
    """The documented example note of golang.org/x/mod/sumdb/note verifies with its
    published verifier key (so key id, key encoding and signed text match that tool)."""
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    note = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
        "\n"
        "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p"
        "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
    )
    assert ck.verify_note(note, vkey).startswith("If you think")
    with pytest.raises(ck.SignatureMismatch):
        ck.verify_note(note.replace("problem,", "problem;"), vkey)


def test_forged_signature_is_rejected() -> None:
    """A signature line under the right name and key id but signed by another key fails."""
    note = ck.sign_checkpoint(CP, NAME, SEED)
    forged = ck.sign_checkpoint(CP, NAME, OTHER_SEED)
    sig_other = base64.b64decode(forged.split("\n")[4].split(" ")[2])[4:]
    kid = ck.key_id(NAME, PUB)
    bad_line = f"\u2014 {NAME} {base64.b64encode(kid + sig_other).decode()}"
    bad = note.split("\n\n")[0] + "\n\n" + bad_line + "\n"
    with pytest.raises(ck.SignatureMismatch) as err:
        ck.verify_checkpoint(bad, (NAME, PUB))
    assert err.value.check == "note.signature"


def test_wrong_key_is_unknown() -> None:
    """A note signed only by another key is refused as not signed by the expected key."""
    note = ck.sign_checkpoint(CP, NAME, OTHER_SEED)
    with pytest.raises(ck.UnknownKeyError):
        ck.verify_checkpoint(note, (NAME, PUB))
    renamed = ck.sign_checkpoint(CP, "someone.else", SEED)
    with pytest.raises(ck.UnknownKeyError):
        ck.verify_checkpoint(renamed, (NAME, PUB))


def test_extra_unknown_signature_is_ignored() -> None:
    """A witness signature by an unknown key next to the log's signature does not matter."""
    note = ck.sign_checkpoint(CP, NAME, SEED)
    witness_line = ck.sign_checkpoint(CP, "witness.example", OTHER_SEED).split("\n")[4]
    both = note + witness_line + "\n"
    assert ck.verify_checkpoint(both, (NAME, PUB)) == CP


@pytest.mark.parametrize("line", [0, 1, 2])
def test_altered_body_line_fails(line: int) -> None:
    """Changing the origin, the size or the root after signing breaks the signature."""
    note = ck.sign_checkpoint(CP, NAME, SEED)
    lines = note.split("\n")
    lines[line] = {0: "evil.example/log", 1: "43", 2: base64.b64encode(bytes(32)).decode()}[line]
    with pytest.raises(ck.SignatureMismatch):
        ck.verify_checkpoint("\n".join(lines), (NAME, PUB))


def test_origin_is_checked_when_asked() -> None:
    """A correctly signed checkpoint for another origin is refused when an origin is given."""
    note = ck.sign_checkpoint(ck.Checkpoint(f"{NAME}/r-2", 1, ROOT), NAME, SEED)
    with pytest.raises(ck.NoteFormatError) as err:
        ck.verify_checkpoint(note, (NAME, PUB), origin=f"{NAME}/r-1")
    assert err.value.check == "checkpoint.origin"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.replace("\u2014", "--"),
        lambda n: n.replace("\n\n", "\n"),
        lambda n: n[:-1],
        lambda n: n.replace("42", "042", 1),
        lambda n: n.replace("42", "-42", 1),
        lambda n: n.replace("\n42\n", "\n42\r\n", 1),
        lambda n: n.rstrip("\n") + "!\n",
        lambda n: n.replace("=\n\n", "\n\n", 1),
        lambda n: n + "x" * ck.MAX_NOTE_BYTES,
        lambda n: n + "".join(n.split("\n\n")[1] for _ in range(ck.MAX_SIGNATURES)),
    ],
    ids=[
        "no-em-dash",
        "no-blank-line",
        "no-final-newline",
        "leading-zero",
        "negative",
        "carriage-return",
        "bad-signature-base64",
        "bad-root-base64",
        "too-large",
        "too-many-signatures",
    ],
)
def test_malformed_notes_are_refused(mangle: object) -> None:
    """Malformed notes raise a CheckpointError, never another exception or a success."""
    note = ck.sign_checkpoint(CP, NAME, SEED)
    bad = mangle(note)  # type: ignore[operator]
    assert bad != note
    with pytest.raises(CheckpointError):
        ck.verify_checkpoint(bad, (NAME, PUB))


def test_non_utf8_bytes_are_refused() -> None:
    """A note given as bytes that are not UTF-8 is a NoteFormatError."""
    note = ck.sign_checkpoint(CP, NAME, SEED).encode()
    assert ck.verify_checkpoint(note, (NAME, PUB)) == CP
    with pytest.raises(ck.NoteFormatError) as err:
        ck.verify_checkpoint(note.replace(b"42", b"\xff\xfe"), (NAME, PUB))
    assert err.value.check == "note.encoding"


@pytest.mark.parametrize(
    "vkey",
    [
        "name+00000000+AAAA",
        f"{NAME}+{'0' * 8}+{KEY1_B64}",
        f"{NAME}+{ck.key_id(NAME, PUB).hex()}+{KEY2_B64}",
        "no-plus-signs",
        f"bad name+{ck.key_id(NAME, PUB).hex()}+{KEY1_B64}",
    ],
    ids=["short-key", "wrong-key-id", "wrong-algorithm", "no-fields", "space-in-name"],
)
def test_bad_verifier_keys_are_refused(vkey: str) -> None:
    """Verifier key strings with a wrong id, algorithm, length or name are refused."""
    with pytest.raises(CheckpointError):
        ck.parse_verifier_key(vkey)


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_escapes_typed_errors(text: str) -> None:
    """Whatever the text, verification returns a checkpoint or raises a CheckpointError."""
    try:
        ck.verify_checkpoint(text, (NAME, PUB))
    except CheckpointError:
        return
    raise AssertionError("random text verified")


def _block(
    height: int = 1, prev: bytes = blk.GENESIS_PREV_HASH, first: int = 0, end: int = 42
) -> blk.Block:
    cp = ck.Checkpoint(f"{NAME}/r-1", end, ROOT)
    return blk.Block(
        "r-1",
        height,
        first,
        end,
        end,
        ROOT,
        prev,
        1_763_683_200_000,
        ck.sign_checkpoint(cp, NAME, SEED),
    )


def test_block_hash_covers_every_field() -> None:
    """Changing any block field changes the block hash, and the JSON form round-trips."""
    b = _block()
    assert blk.Block.from_json(b.to_json(), "r-1") == b
    assert b.canonical_bytes().startswith(blk.BLOCK_DOMAIN)
    variants = [
        blk.Block(
            "r-2",
            *[
                getattr(b, f)
                for f in (
                    "height",
                    "first_index",
                    "end_index",
                    "tree_size",
                    "root",
                    "prev_hash",
                    "sealed_at",
                    "checkpoint",
                )
            ],
        ),
        blk.Block("r-1", 2, 0, 42, 42, ROOT, b.block_hash(), b.sealed_at, b.checkpoint),
        blk.Block("r-1", 1, 0, 42, 42, bytes(32), b.prev_hash, b.sealed_at, b.checkpoint),
        blk.Block("r-1", 1, 0, 42, 42, ROOT, b.prev_hash, b.sealed_at + 1, b.checkpoint),
        blk.Block("r-1", 1, 0, 42, 42, ROOT, b.prev_hash, b.sealed_at, b.checkpoint + " "),
        blk.Block("r-1", 1, 0, 43, 43, ROOT, b.prev_hash, b.sealed_at, b.checkpoint),
    ]
    hashes = {v.block_hash() for v in variants} | {b.block_hash()}
    assert len(hashes) == len(variants) + 1


def test_block_json_with_wrong_hash_is_refused() -> None:
    """A block whose stated block_hash does not match its contents is refused."""
    obj = _block().to_json()
    obj["sealed_at"] += 1
    with pytest.raises(blk.BlockError) as err:
        blk.Block.from_json(obj, "r-1")
    assert err.value.check == "block.block_hash"


def test_block_chain_links() -> None:
    """check_link accepts the next block and names a wrong height, range or prev_hash."""
    b1 = _block()
    b2 = _block(2, b1.block_hash(), 42, 50)
    blk.check_link(None, b1)
    blk.check_link(b1, b2)
    cases = {
        "chain.prev_hash": _block(2, bytes([1]) * 32, 42, 50),
        "chain.range": _block(2, b1.block_hash(), 41, 50),
        "chain.height": _block(3, b1.block_hash(), 42, 50),
    }
    for check, bad in cases.items():
        with pytest.raises(blk.BlockError) as err:
            blk.check_link(b1, bad)
        assert err.value.check == check
    with pytest.raises(blk.BlockError):
        blk.check_link(None, b2)


def test_block_checkpoint_must_state_its_root() -> None:
    """A block whose signed checkpoint states another root fails verify_checkpoint."""
    b = _block()
    assert b.verify_checkpoint((NAME, PUB)).size == 42
    other = blk.Block("r-1", 1, 0, 42, 42, bytes(32), b.prev_hash, b.sealed_at, b.checkpoint)
    with pytest.raises(blk.BlockError):
        other.verify_checkpoint((NAME, PUB))


@pytest.mark.parametrize(
    "args",
    [
        ("r", 0, 0, 1, 1),
        ("r", 1, 1, 2, 2),
        ("r", 2, 5, 4, 4),
        ("r", 2, 0, 4, 5),
        ("", 1, 0, 1, 1),
    ],
    ids=["height-0", "first-block-not-at-0", "range-backwards", "size-not-end", "no-id"],
)
def test_malformed_blocks_are_refused(args: tuple[str, int, int, int, int]) -> None:
    """Blocks with impossible heights or ranges raise a CoreError at construction."""
    with pytest.raises(CoreError):
        blk.Block(*args, ROOT, blk.GENESIS_PREV_HASH, 0, "note")
