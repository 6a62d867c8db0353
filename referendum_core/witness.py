"""Witnesses of the log: C2SP ``tlog-cosignature`` lines, ``tlog-witness`` requests, policies.

A witness cosigns a checkpoint it has checked is consistent with every checkpoint of the same
origin it cosigned before. The rules, one implementation each:

* **key id** of an Ed25519 cosigner: ``SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]``; its
  verifier key is ``<name>+<key id, 8 hex>+<base64(0x04 ‖ public key)>``;
* **signed message** (``cosignature/v1``)::

      cosignature/v1\\n
      time <POSIX seconds, decimal>\\n
      <the whole checkpoint body, final newline included>

* **cosignature line**: ``— <name> base64(key id ‖ u64 big-endian timestamp ‖ signature)``,
  a note signature line that can be appended to the log's signed checkpoint;
* **add-checkpoint request** (``POST <prefix>/add-checkpoint``): ``old <size>\\n``, at most 63
  base64 consistency-proof lines, an empty line, the signed checkpoint note;
* **the witness's decision** (:func:`decide`): given its latest cosigned checkpoint of the
  origin and a request, cosign or refuse with the status the spec gives: 400 bad syntax or
  old size above the checkpoint's, 403 no trusted log signature, 404 unknown origin, 409 old
  size unlike the latest cosigned one (the body carries that size) or the same size with
  another root (a fork: evidence), 422 a consistency proof that does not verify;
* a **witness policy** (:class:`WitnessPolicy`): ``k`` of the listed cosigners must have
  cosigned a checkpoint for it to be *witnessed*.

Errors: :class:`CosignatureError` (a :class:`~referendum_core.errors.CheckpointError`) for a
cosignature that does not parse or verify, :class:`RequestFormatError` for a request body
that does not parse, :class:`PolicyError` for a malformed policy or one not met.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import nacl.exceptions
import nacl.signing

from referendum_core.checkpoint import (
    Checkpoint,
    NoteSignature,
    parse_note,
    verify_note,
)
from referendum_core.errors import CheckpointError, MerkleError
from referendum_core.merkle import verify_consistency

__all__ = [
    "COSIGNATURE_V1",
    "MAX_PROOF_LINES",
    "AddCheckpointRequest",
    "Cosign",
    "Cosignature",
    "CosignatureError",
    "Decision",
    "PolicyError",
    "Refuse",
    "RequestFormatError",
    "StoredCheckpoint",
    "Witness",
    "WitnessPolicy",
    "cosignature_message",
    "cosigner_key_id",
    "cosigner_vkey",
    "decide",
    "parse_cosigner_vkey",
    "sign_cosignature",
    "verify_cosignature",
]

COSIGNATURE_V1 = 0x04
"""Signature type of an Ed25519 ``cosignature/v1`` (C2SP signed-note)."""
MAX_PROOF_LINES = 63
"""Most consistency-proof lines a request may carry (tlog-witness)."""
MAX_REQUEST_BYTES = 64 * 1024
"""Larger add-checkpoint bodies are refused before parsing."""

_DASH = "\u2014 "
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_NAME_BAD = re.compile(r"[\s+\x00-\x1f]")


class CosignatureError(CheckpointError):
    """A cosignature line or verifier key that does not parse, or does not verify."""


class RequestFormatError(CheckpointError):
    """An add-checkpoint request body that does not parse (answered 400)."""


class PolicyError(CheckpointError):
    """A witness policy that is malformed, or a checkpoint that does not meet it."""


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or _NAME_BAD.search(name):
        raise CosignatureError(f"bad cosigner name {name!r}", check="cosignature.name")


def _b64(text: str, check: str, error: type[CheckpointError]) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise error("bad base64", check=check) from exc
    if base64.b64encode(raw).decode() != text:  # one canonical encoding only
        raise error("non-canonical base64", check=check)
    return raw


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte key id of an Ed25519 cosigner: ``SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[:4]``.

    >>> cosigner_key_id("witness.example/w1", bytes(32)).hex()
    '490ca8b1'
    """
    _check_name(name)
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise CosignatureError("an Ed25519 public key is 32 bytes", check="cosignature.key")
    return hashlib.sha256(name.encode() + b"\n" + bytes([COSIGNATURE_V1]) + public_key).digest()[:4]


def cosigner_vkey(name: str, public_key: bytes) -> str:
    """The verifier key string ``<name>+<key id hex>+<base64(0x04 ‖ public key)>``.

    >>> parse_cosigner_vkey(cosigner_vkey("w.example", bytes(32))) == ("w.example", bytes(32))
    True
    """
    kid = cosigner_key_id(name, public_key)
    material = base64.b64encode(bytes([COSIGNATURE_V1]) + public_key).decode()
    return f"{name}+{kid.hex()}+{material}"


def parse_cosigner_vkey(vkey: str) -> tuple[str, bytes]:
    """Parse a cosigner verifier key into ``(name, public_key)``, checking its key id."""
    parts = vkey.split("+", 2) if isinstance(vkey, str) else []
    if len(parts) != 3:
        raise CosignatureError("a verifier key is name+keyid+key", check="vkey.format")
    name, kid_hex, material = parts
    _check_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", kid_hex):
        raise CosignatureError("verifier key id is not 8 hex digits", check="vkey.id")
    raw = _b64(material, "vkey.key", CosignatureError)
    if len(raw) != 33 or raw[0] != COSIGNATURE_V1:
        raise CosignatureError("not an Ed25519 cosignature/v1 key (type 0x04)", check="vkey.key")
    if cosigner_key_id(name, raw[1:]) != bytes.fromhex(kid_hex):
        raise CosignatureError("verifier key id does not match its key", check="vkey.id")
    return name, raw[1:]


def cosignature_message(checkpoint: Checkpoint, timestamp: int) -> bytes:
    """The bytes a ``cosignature/v1`` signs: header, time line, the whole checkpoint body.

    >>> cp = Checkpoint("example.com/behind-the-sofa", 20852163,
    ...                 base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="))
    >>> print(cosignature_message(cp, 1679315147).decode(), end="")
    cosignature/v1
    time 1679315147
    example.com/behind-the-sofa
    20852163
    CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
    """
    if type(timestamp) is not int or not 0 <= timestamp < 2**63:
        raise CosignatureError("a timestamp is 0 to 2^63-1 seconds", check="cosignature.time")
    return f"cosignature/v1\ntime {timestamp}\n{checkpoint.body()}".encode()


@dataclass(frozen=True, slots=True)
class Cosignature:
    """One parsed cosignature: cosigner name, key id, timestamp and the 64-byte signature."""

    name: str
    key_id: bytes
    timestamp: int
    signature: bytes

    def line(self) -> str:
        """The note signature line, ending in a newline."""
        raw = self.key_id + self.timestamp.to_bytes(8, "big") + self.signature
        return f"{_DASH}{self.name} {base64.b64encode(raw).decode()}\n"

    @classmethod
    def from_note_signature(cls, sig: NoteSignature) -> Cosignature:
        """Read the timestamp and signature out of a parsed note signature line."""
        if len(sig.signature) != 8 + 64:
            raise CosignatureError(
                "a cosignature/v1 is 8 + 64 bytes after its key id", check="cosignature.length"
            )
        timestamp = int.from_bytes(sig.signature[:8], "big")
        if timestamp >= 2**63:
            raise CosignatureError("timestamp above 2^63-1", check="cosignature.time")
        return cls(sig.name, sig.key_id, timestamp, sig.signature[8:])


def sign_cosignature(checkpoint: Checkpoint, name: str, seed: bytes, timestamp: int) -> str:
    """The cosignature line of ``checkpoint`` by the Ed25519 key of ``seed`` at ``timestamp``.

    >>> seed = bytes(range(32))
    >>> cp = Checkpoint("o", 1, bytes(32))
    >>> line = sign_cosignature(cp, "w.example", seed, 7)
    >>> pub = bytes(nacl.signing.SigningKey(seed).verify_key)
    >>> verify_cosignature(cp, line, ("w.example", pub))
    7
    """
    if not isinstance(seed, bytes) or len(seed) != 32:
        raise CosignatureError("an Ed25519 seed is 32 bytes", check="cosignature.key")
    key = nacl.signing.SigningKey(seed)
    kid = cosigner_key_id(name, bytes(key.verify_key))
    signature = key.sign(cosignature_message(checkpoint, timestamp)).signature
    return Cosignature(name, kid, timestamp, bytes(signature)).line()


def _parse_line(line: str) -> NoteSignature:
    """Parse one signature line through the note parser (a dummy note around it)."""
    if not isinstance(line, str) or not line.endswith("\n") or line.count("\n") != 1:
        raise CosignatureError("a cosignature is one line ending in a newline", check="cosignature")
    try:
        _, sigs = parse_note("x\n1\n" + base64.b64encode(bytes(32)).decode() + "\n\n" + line)
    except CheckpointError as exc:
        raise CosignatureError(str(exc), check="cosignature.line") from exc
    return sigs[0]


def verify_cosignature(
    checkpoint: Checkpoint, line: str | NoteSignature, cosigner: str | tuple[str, bytes]
) -> int:
    """Verify one cosignature line by ``cosigner`` (vkey or ``(name, key)``); its timestamp.

    The line must carry the cosigner's name and key id and a valid Ed25519 signature of
    :func:`cosignature_message`; else :class:`CosignatureError`.
    """
    name, public_key = parse_cosigner_vkey(cosigner) if isinstance(cosigner, str) else cosigner
    sig = _parse_line(line) if isinstance(line, str) else line
    if sig.name != name or sig.key_id != cosigner_key_id(name, public_key):
        raise CosignatureError(f"not a cosignature by {name}", check="cosignature.key_id")
    cosig = Cosignature.from_note_signature(sig)
    try:
        nacl.signing.VerifyKey(public_key).verify(
            cosignature_message(checkpoint, cosig.timestamp), cosig.signature
        )
    except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError) as exc:
        raise CosignatureError(
            f"cosignature by {name} does not verify", check="cosignature.signature"
        ) from exc
    return cosig.timestamp


# ---------------------------------------------------------------------------------------------
# Witness policy


@dataclass(frozen=True, slots=True)
class Witness:
    """One cosigner of a policy: its name, Ed25519 public key and submission URL prefix."""

    name: str
    public_key: bytes
    url: str

    def vkey(self) -> str:
        """The cosigner's verifier key string."""
        return cosigner_vkey(self.name, self.public_key)


@dataclass(frozen=True, slots=True)
class WitnessPolicy:
    """``threshold`` of ``witnesses`` must cosign a checkpoint for it to be witnessed.

    Requires ``1 <= threshold <= len(witnesses)`` and distinct names and keys.

    >>> w = Witness("w.example", bytes(32), "http://127.0.0.1:1")
    >>> WitnessPolicy.from_json(WitnessPolicy(1, (w,)).to_json()).threshold
    1
    """

    threshold: int
    witnesses: tuple[Witness, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.witnesses, tuple) or not self.witnesses:
            raise PolicyError("a policy lists at least one witness", check="policy.witnesses")
        if type(self.threshold) is not int or not 1 <= self.threshold <= len(self.witnesses):
            raise PolicyError("threshold must be 1 to the number of witnesses", check="policy.k")
        names = {w.name for w in self.witnesses}
        keys = {w.public_key for w in self.witnesses}
        if len(names) != len(self.witnesses) or len(keys) != len(self.witnesses):
            raise PolicyError("witness names and keys must be distinct", check="policy.witnesses")

    def to_json(self) -> dict[str, Any]:
        """The policy as it is published in the referendum's definition."""
        return {
            "threshold": self.threshold,
            "witnesses": [{"vkey": w.vkey(), "url": w.url} for w in self.witnesses],
        }

    @classmethod
    def from_json(cls, obj: Any) -> WitnessPolicy:
        """Parse :meth:`to_json`'s form; :class:`PolicyError` (or a vkey error) otherwise."""
        if not isinstance(obj, dict) or set(obj) != {"threshold", "witnesses"}:
            raise PolicyError("a policy has threshold and witnesses", check="policy.format")
        items = obj["witnesses"]
        if not isinstance(items, list) or len(items) > 32:
            raise PolicyError("witnesses is a list of at most 32", check="policy.witnesses")
        witnesses = []
        for item in items:
            if not isinstance(item, dict) or set(item) != {"vkey", "url"}:
                raise PolicyError("a witness has vkey and url", check="policy.witness")
            url = item["url"]
            if not isinstance(url, str) or not re.fullmatch(r"https?://[!-~]{1,500}", url):
                raise PolicyError("a witness url is http(s)://...", check="policy.url")
            name, key = parse_cosigner_vkey(item["vkey"])
            witnesses.append(Witness(name, key, url.rstrip("/")))
        threshold = obj["threshold"]
        if type(threshold) is not int:
            raise PolicyError("threshold is an integer", check="policy.k")
        return cls(threshold, tuple(witnesses))

    def cosigners(self, note: str, checkpoint: Checkpoint | None = None) -> list[str]:
        """Names of the policy's witnesses with a valid cosignature in ``note``.

        Lines by unknown keys are ignored; a line under a witness's name and key id that does
        not verify raises :class:`CosignatureError` (a forged line is an error, not a miss).
        """
        cp, sigs = parse_note(note)
        if checkpoint is not None and cp != checkpoint:
            raise PolicyError("cosigned note is of another checkpoint", check="policy.note")
        found: list[str] = []
        for w in self.witnesses:
            kid = cosigner_key_id(w.name, w.public_key)
            mine = [s for s in sigs if s.name == w.name and s.key_id == kid]
            for s in mine:
                verify_cosignature(cp, s, (w.name, w.public_key))
            if mine:
                found.append(w.name)
        return found

    def check(self, note: str) -> list[str]:
        """The cosigners of ``note``; :class:`PolicyError` when fewer than the threshold."""
        names = self.cosigners(note)
        if len(names) < self.threshold:
            raise PolicyError(
                f"checkpoint cosigned by {len(names)} of the {self.threshold} witnesses needed",
                check="policy.threshold",
            )
        return names


# ---------------------------------------------------------------------------------------------
# add-checkpoint


@dataclass(frozen=True, slots=True)
class AddCheckpointRequest:
    """The body of ``POST add-checkpoint``: old size, consistency proof, signed checkpoint.

    >>> req = AddCheckpointRequest(0, (), "o\\n0\\n" + "A" * 43 + "=\\n\\n— o AAAAAAA=\\n")
    >>> AddCheckpointRequest.parse(req.to_bytes()) == req
    True
    """

    old_size: int
    proof: tuple[bytes, ...]
    note: str

    def to_bytes(self) -> bytes:
        """The request body."""
        lines = [f"old {self.old_size}", *(base64.b64encode(h).decode() for h in self.proof)]
        return ("".join(line + "\n" for line in lines) + "\n" + self.note).encode()

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpointRequest:
        """Parse a request body; :class:`RequestFormatError` when it does not parse.

        The note is only split off here; :func:`decide` parses and verifies it.
        """
        if len(body) > MAX_REQUEST_BYTES:
            raise RequestFormatError("request body too large", check="request.size")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestFormatError("request is not UTF-8", check="request.encoding") from exc
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise RequestFormatError("no empty line before the checkpoint", check="request.format")
        lines = head.split("\n")
        first = lines[0]
        if not first.startswith("old ") or not _DECIMAL.fullmatch(first[4:]):
            raise RequestFormatError("first line must be 'old <size>'", check="request.old")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise RequestFormatError("more than 63 proof lines", check="request.proof")
        proof = []
        for line in lines[1:]:
            raw = _b64(line, "request.proof", RequestFormatError)
            if len(raw) != 32:
                raise RequestFormatError("a proof line is a 32-byte hash", check="request.proof")
            proof.append(raw)
        return cls(int(first[4:]), tuple(proof), note)


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A witness's latest cosigned checkpoint of an origin: its size, root and signed note."""

    size: int
    root: bytes
    note: str


@dataclass(frozen=True, slots=True)
class Cosign:
    """Decision: cosign ``checkpoint`` and make ``note`` the origin's latest."""

    checkpoint: Checkpoint
    note: str


EvidenceKind = Literal["fork", "bad_proof"]


@dataclass(frozen=True, slots=True)
class Refuse:
    """Decision: answer ``status`` with ``reason``; nothing is cosigned nor stored as latest.

    ``latest_size`` is set for 409 (the body of the answer). ``evidence`` is set when the
    request carried a checkpoint validly signed by the log that is a sign of misbehaviour:
    ``fork`` (same size as the latest cosigned checkpoint, another root: two log-signed
    checkpoints that cannot both be true) or ``bad_proof`` (no valid consistency proof from the
    latest: suspect, not proof, since anyone may send a genuine checkpoint with a bad proof).
    """

    status: int
    reason: str
    check: str
    latest_size: int | None = None
    evidence: EvidenceKind | None = None
    checkpoint: Checkpoint | None = None


Decision = Cosign | Refuse


def decide(
    stored: StoredCheckpoint | None,
    request: AddCheckpointRequest,
    log_keys: Callable[[str], Sequence[tuple[str, bytes]] | None],
) -> Decision:
    """What a witness answers ``request`` given its latest cosigned checkpoint of the origin.

    ``log_keys(origin)`` gives the log keys ``(name, public key)`` trusted for an origin (None
    or empty: an unknown origin; a dict's ``get`` will do);
    ``stored`` is the latest checkpoint cosigned for the request's origin (None: never). The
    caller persists a :class:`Cosign`'s note atomically with having read ``stored`` (the
    spec's rollback race) and then signs.
    """
    try:
        checkpoint, _ = parse_note(request.note)
    except CheckpointError as exc:
        return Refuse(400, f"checkpoint does not parse: {exc}", exc.check)
    keys = log_keys(checkpoint.origin)
    if not keys:
        return Refuse(404, f"unknown log origin {checkpoint.origin!r}", "request.origin")
    if not any(_signed_by(request.note, key) for key in keys):
        return Refuse(403, "no valid signature by a trusted log key", "request.signature")
    if request.old_size > checkpoint.size:
        return Refuse(400, "old size is above the checkpoint size", "request.old")
    latest = 0 if stored is None else stored.size
    if request.old_size != latest:
        return Refuse(
            409, f"latest cosigned size is {latest}", "request.old_size", latest_size=latest
        )
    if stored is not None and checkpoint.size == stored.size:
        if checkpoint.root != stored.root:
            return Refuse(
                409,
                "same size as the latest cosigned checkpoint with another root",
                "request.fork",
                latest_size=latest,
                evidence="fork",
                checkpoint=checkpoint,
            )
        if request.proof:
            return Refuse(422, "a proof between equal sizes is empty", "request.proof")
        return Cosign(checkpoint, request.note)
    if stored is None or stored.size == 0:
        if request.proof:
            return Refuse(422, "the proof from size 0 is empty", "request.proof")
        return Cosign(checkpoint, request.note)
    try:
        verify_consistency(
            stored.size, checkpoint.size, request.proof, stored.root, checkpoint.root
        )
    except MerkleError as exc:
        return Refuse(
            422,
            f"consistency proof does not verify: {exc}",
            "request.proof",
            evidence="bad_proof",
            checkpoint=checkpoint,
        )
    return Cosign(checkpoint, request.note)


def _signed_by(note: str, key: tuple[str, bytes]) -> bool:
    try:
        verify_note(note, key)
    except CheckpointError:
        return False
    return True
