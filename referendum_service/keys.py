"""Ed25519 signing keys of the services: the receipt key and the log checkpoint key.

A key file holds the 32-byte seed, raw or as 64 hex characters. When no file is configured a
key is generated once under ``data_dir/keys`` (mode 0600) and reused, so a restarted server
keeps signing with the same key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nacl.signing import SigningKey

from referendum_core.receipt import receipt_key_id

__all__ = ["ServiceKey", "load_or_create_key"]


@dataclass(frozen=True)
class ServiceKey:
    """A signing key, its public half and its key id (``receipt.receipt_key_id`` of the core)."""

    signing_key: SigningKey
    public_key: bytes
    key_id: str

    @property
    def seed(self) -> bytes:
        return bytes(self.signing_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return bytes(self.signing_key.sign(message).signature)


def _from_seed(seed: bytes) -> ServiceKey:
    signing_key = SigningKey(seed)
    public = bytes(signing_key.verify_key)
    return ServiceKey(signing_key, public, receipt_key_id(public))


def _read_seed(path: Path) -> bytes:
    raw = path.read_bytes()
    if len(raw) == 32:
        return raw
    text = raw.decode("ascii", errors="replace").strip()
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ValueError(f"{path}: expected a 32-byte Ed25519 seed (raw or 64 hex characters)")
    return seed


def load_or_create_key(path: Path | None, data_dir: Path, name: str) -> ServiceKey:
    """Load the key at ``path``; without one, load or create ``data_dir/keys/NAME.key``."""
    if path is not None:
        return _from_seed(_read_seed(path))
    default = data_dir / "keys" / f"{name}.key"
    if default.exists():
        return _from_seed(_read_seed(default))
    default.parent.mkdir(parents=True, exist_ok=True)
    seed = os.urandom(32)
    # O_EXCL: two processes starting at once must not write two different keys
    try:
        fd = os.open(default, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _from_seed(_read_seed(default))
    with os.fdopen(fd, "w") as handle:
        handle.write(seed.hex())
    return _from_seed(seed)
