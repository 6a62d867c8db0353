"""Checkpoints of the public log as C2SP signed notes with Ed25519 signatures.

A checkpoint (C2SP ``tlog-checkpoint``) is the note text::

    <origin>\\n
    <tree size, decimal>\\n
    <root hash, base64>\\n
    [<extension line>\\n ...]

and a signed note (C2SP ``signed-note``) is that text, a blank line, and one or more lines
``— <key name> <base64(key id ‖ signature)>\\n`` (U+2014 em dash). The Ed25519 signature
covers the text including its final newline; the key id is the first 4 bytes of
``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)``. A verifier key is written
``<name>+<key id, 8 hex digits>+<base64(0x01 ‖ public key)>``.

Errors (all :class:`~referendum_core.errors.CheckpointError`): :class:`NoteFormatError` for a
note that does not parse, :class:`UnknownKeyError` when no signature line is by the expected
key, :class:`SignatureMismatch` when that line's signature does not verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from referendum_core.errors import CheckpointError

__all__ = [
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteFormatError",
    "NoteSignature",
    "SignatureMismatch",
    "UnknownKeyError",
    "key_id",
    "parse_note",
    "parse_verifier_key",
    "sign_checkpoint",
    "verifier_key_string",
    "verify_checkpoint",
    "verify_note",
]

MAX_NOTE_BYTES = 16 * 1024
"""Larger notes are refused before parsing: a checkpoint is a few hundred bytes."""
MAX_SIGNATURES = 100
"""More signature lines than this are refused (the cap of the reference implementation)."""

_ED25519 = 0x01
_DASH = "\u2014 "
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


class NoteFormatError(CheckpointError):
    """The note or the checkpoint in it does not parse."""


class UnknownKeyError(CheckpointError):
    """No signature line is by the expected key (only unknown keys signed, or none)."""


class SignatureMismatch(CheckpointError):
    """The expected key's signature line does not verify over the note text."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement of the log: its origin, tree size and root hash.

    Requires a non-empty ``origin`` without newline, ``size >= 0``, a 32-byte ``root`` and
    non-empty extension lines without newline.

    >>> cp = Checkpoint("example.org/log", 2, bytes(32))
    >>> cp.body()
    'example.org/log\\n2\\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\\n'
    >>> Checkpoint.from_body(cp.body()) == cp
    True
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for line, what in [(self.origin, "origin"), *((e, "extension") for e in self.extensions)]:
            if not isinstance(line, str) or not line or "\n" in line or _CONTROL.search(line):
                raise NoteFormatError(f"bad checkpoint {what} line", check=f"checkpoint.{what}")
        if type(self.size) is not int or not 0 <= self.size < 2**63:
            raise NoteFormatError("bad checkpoint tree size", check="checkpoint.size")
        if not isinstance(self.root, bytes) or len(self.root) != 32:
            raise NoteFormatError("checkpoint root is not 32 bytes", check="checkpoint.root")
        if not isinstance(self.extensions, tuple):
            raise NoteFormatError("extensions must be a tuple", check="checkpoint.extension")

    def body(self) -> str:
        """The checkpoint text that is signed, ending in a newline."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root).decode(),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse checkpoint text; raises :class:`NoteFormatError`."""
        if not text.endswith("\n"):
            raise NoteFormatError("checkpoint text must end in a newline", check="checkpoint.body")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteFormatError(
                "checkpoint needs origin, size and root lines", check="checkpoint.body"
            )
        origin, size_line, root_line, *extensions = lines
        if not _DECIMAL.fullmatch(size_line):
            raise NoteFormatError(
                "checkpoint tree size is not a decimal number", check="checkpoint.size"
            )
        root = _b64decode(root_line, "checkpoint.root")
        return cls(origin, int(size_line), root, tuple(extensions))


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line of a note: key name, 4-byte key id and the signature bytes."""

    name: str
    key_id: bytes
    signature: bytes


def _b64decode(text: str, check: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise NoteFormatError("bad base64", check=check) from exc
    if base64.b64encode(raw).decode() != text:  # one canonical encoding only
        raise NoteFormatError("non-canonical base64", check=check)
    return raw


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or "+" in name or any(c.isspace() for c in name):
        raise NoteFormatError(f"bad key name {name!r}", check="note.name")
    if _CONTROL.search(name):
        raise NoteFormatError("key name with a control character", check="note.name")


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte Ed25519 key id: ``SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key)[:4]``.

    Requires a valid key name and a 32-byte public key.

    >>> len(key_id("example.org/log", bytes(32)))
    4
    """
    _check_name(name)
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise NoteFormatError("an Ed25519 public key is 32 bytes", check="note.key")
    return hashlib.sha256(name.encode() + b"\n" + bytes([_ED25519]) + public_key).digest()[:4]


def verifier_key_string(name: str, public_key: bytes) -> str:
    """The verifier key ``<name>+<hex key id>+<base64(0x01 ‖ public key)>``.

    >>> verifier_key_string("example.org/log", bytes(32)).split("+")[0]
    'example.org/log'
    """
    kid = key_id(name, public_key)
    return f"{name}+{kid.hex()}+{base64.b64encode(bytes([_ED25519]) + public_key).decode()}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """Parse a verifier key string into ``(name, public_key)``; check its key id.

    Raises :class:`NoteFormatError` for a malformed string, another algorithm than Ed25519,
    or a key id that does not match the name and key.

    >>> vk = verifier_key_string("example.org/log", bytes(32))
    >>> parse_verifier_key(vk) == ("example.org/log", bytes(32))
    True
    """
    parts = vkey.split("+", 2) if isinstance(vkey, str) else []
    if len(parts) != 3:
        raise NoteFormatError("a verifier key is name+keyid+key", check="vkey.format")
    name, kid_hex, key_b64 = parts
    _check_name(name)
    if not re.fullmatch(r"[0-9a-f]{8}", kid_hex):
        raise NoteFormatError("verifier key id is not 8 hex digits", check="vkey.id")
    raw = _b64decode(key_b64, "vkey.key")
    if len(raw) != 33 or raw[0] != _ED25519:
        raise NoteFormatError("verifier key is not an Ed25519 key", check="vkey.key")
    if key_id(name, raw[1:]) != bytes.fromhex(kid_hex):
        raise NoteFormatError("verifier key id does not match its key", check="vkey.id")
    return name, raw[1:]


def sign_checkpoint(cp: Checkpoint, name: str, signing_seed: bytes) -> str:
    """Sign ``cp`` with the Ed25519 key of the 32-byte ``signing_seed``; return the note.

    >>> seed = bytes(range(32))
    >>> note = sign_checkpoint(Checkpoint("example.org/log", 0, bytes(32)), "example.org/log", seed)
    >>> note.splitlines()[4].startswith("— example.org/log ")
    True
    """
    _check_name(name)
    if not isinstance(signing_seed, bytes) or len(signing_seed) != 32:
        raise NoteFormatError("an Ed25519 seed is 32 bytes", check="note.key")
    key = nacl.signing.SigningKey(signing_seed)
    text = cp.body()
    signature = key.sign(text.encode()).signature
    kid = key_id(name, bytes(key.verify_key))
    return f"{text}\n{_DASH}{name} {base64.b64encode(kid + signature).decode()}\n"


def _split_note(note: str | bytes) -> tuple[str, list[NoteSignature]]:
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise NoteFormatError("note is too large", check="note.size")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoteFormatError("note is not UTF-8", check="note.encoding") from exc
    if not isinstance(note, str):
        raise NoteFormatError("a note is text", check="note.encoding")
    try:
        encoded = note.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise NoteFormatError("note is not UTF-8", check="note.encoding") from exc
    if len(encoded) > MAX_NOTE_BYTES:
        raise NoteFormatError("note is too large", check="note.size")
    if _CONTROL.search(note):
        raise NoteFormatError("note contains a control character", check="note.encoding")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise NoteFormatError("note has no signature block", check="note.format")
    text, sig_block = note[: cut + 1], note[cut + 2 :]
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError("note has too many signatures", check="note.signatures")
    signatures: list[NoteSignature] = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteFormatError("malformed signature line", check="note.signature_line")
        fields = line[len(_DASH) :].split(" ")
        if len(fields) != 2:
            raise NoteFormatError("malformed signature line", check="note.signature_line")
        name, sig_b64 = fields
        _check_name(name)
        raw = _b64decode(sig_b64, "note.signature_line")
        if len(raw) < 5:
            raise NoteFormatError("signature too short", check="note.signature_line")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    return text, signatures


def parse_note(note: str | bytes) -> tuple[Checkpoint, list[NoteSignature]]:
    """Parse a signed checkpoint note without checking any signature.

    The checkpoint MUST NOT be trusted before :func:`verify_checkpoint`. Raises
    :class:`NoteFormatError` for notes over :data:`MAX_NOTE_BYTES`, non-UTF-8, control
    characters, bad base64 or a malformed checkpoint.
    """
    text, signatures = _split_note(note)
    return Checkpoint.from_body(text), signatures


def verify_note(note: str | bytes, verifier_key: str | tuple[str, bytes]) -> str:
    """Verify the expected key's signature on any signed note; return the signed text.

    ``verifier_key`` is a verifier key string or ``(name, public_key)``. Signatures by other
    keys are ignored; at least one line must be by the expected key (same name and key id)
    and every such line must verify, else :class:`UnknownKeyError` or
    :class:`SignatureMismatch`. Malformed notes raise :class:`NoteFormatError`.
    """
    if isinstance(verifier_key, str):
        name, public_key = parse_verifier_key(verifier_key)
    else:
        name, public_key = verifier_key
    kid = key_id(name, public_key)
    text, signatures = _split_note(note)
    mine = [s for s in signatures if s.name == name and s.key_id == kid]
    if not mine:
        raise UnknownKeyError(f"note is not signed by {name}", check="note.unknown_key")
    verify_key = nacl.signing.VerifyKey(public_key)
    for s in mine:
        try:
            verify_key.verify(text.encode(), s.signature)
        except (nacl.exceptions.CryptoError, nacl.exceptions.ValueError) as exc:
            raise SignatureMismatch(
                f"signature by {name} does not verify", check="note.signature"
            ) from exc
    return text


def verify_checkpoint(
    note: str | bytes,
    verifier_key: str | tuple[str, bytes],
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Verify a checkpoint note's signature by the expected key; return the checkpoint.

    See :func:`verify_note` for ``verifier_key`` and the signature rules. When ``origin`` is
    given the checkpoint must carry it (:class:`NoteFormatError`, check
    ``checkpoint.origin``).

    >>> seed = bytes(range(32))
    >>> pub = bytes(nacl.signing.SigningKey(seed).verify_key)
    >>> note = sign_checkpoint(Checkpoint("o", 3, bytes(32)), "o", seed)
    >>> verify_checkpoint(note, verifier_key_string("o", pub)).size
    3
    """
    checkpoint = Checkpoint.from_body(verify_note(note, verifier_key))
    if origin is not None and checkpoint.origin != origin:
        raise NoteFormatError(
            f"checkpoint origin is {checkpoint.origin!r}, not {origin!r}", check="checkpoint.origin"
        )
    return checkpoint
