"""The operator's voter-id keys: the secret that turns voter ids into what the database keeps.

``Settings.voter_id_key`` is the current key (64 hex digits); ``voter_id_retired_keys``
the earlier ones, kept after a rotation. A referendum records the id of the key its roll was
imported under (:func:`referendum_core.roll.voter_id_key_id`, stored in
``referendums.voter_key_id``); every later roll part and every operator lookup of that
referendum uses the same key, found among the configured ones by that id.
"""

from __future__ import annotations

from dataclasses import dataclass

from referendum_core.roll import VOTER_ID_KEY_BYTES, VoterIdHasher, voter_id_key_id
from referendum_service.settings import Settings, env_name
from server.errors import Conflict, ServiceUnavailable

__all__ = ["VoterIdKeys"]


def _parse_key(text: str, setting: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        key = b""
    if len(key) != VOTER_ID_KEY_BYTES:
        raise ValueError(f"{env_name(setting)} must hold {2 * VOTER_ID_KEY_BYTES} hex digits")
    return key


@dataclass(frozen=True)
class VoterIdKeys:
    """The configured keys by key id; ``current`` is the id new rolls are imported under."""

    current: str | None
    keys: dict[str, bytes]

    @classmethod
    def from_settings(cls, settings: Settings) -> VoterIdKeys:
        """Parse the keys (a malformed one stops the server at start, with its variable).

        >>> VoterIdKeys.from_settings(Settings()).current is None
        True
        """
        keys: dict[str, bytes] = {}
        current = None
        if settings.voter_id_key:
            key = _parse_key(settings.voter_id_key, "voter_id_key")
            current = voter_id_key_id(key)
            keys[current] = key
        for text in filter(None, settings.voter_id_retired_keys.split(",")):
            key = _parse_key(text, "voter_id_retired_keys")
            keys.setdefault(voter_id_key_id(key), key)
        return cls(current, keys)

    def for_import(self, referendum_id: str, recorded: str | None) -> tuple[str, VoterIdHasher]:
        """The key id and hasher a roll part of ``referendum_id`` is imported with: the key
        its earlier parts used (``recorded``), else the current one.

        Raises:
            ServiceUnavailable: no voter-id key is configured (the import is refused).
            Conflict: the roll's key is not among the configured ones.
        """
        if recorded is None:
            if self.current is None:
                raise ServiceUnavailable(
                    "no voter-id key is configured: set "
                    f"{env_name('voter_id_key')} (64 hex digits) before importing a roll",
                    slug="voter-id-key-missing",
                )
            recorded = self.current
        return recorded, self.hasher(referendum_id, recorded)

    def hasher(self, referendum_id: str, key_id: str | None) -> VoterIdHasher:
        """The hasher of the key ``key_id`` (a referendum's recorded one).

        Raises:
            ServiceUnavailable: no key is configured at all.
            Conflict: that key is not configured (current or retired).
        """
        if not self.keys:
            raise ServiceUnavailable(
                f"no voter-id key is configured: set {env_name('voter_id_key')}",
                slug="voter-id-key-missing",
            )
        key = self.keys.get(key_id or "")
        if key is None:
            raise Conflict(
                f"the roll of {referendum_id!r} was imported under voter-id key {key_id}, "
                f"which is not configured (add it to {env_name('voter_id_retired_keys')})",
                slug="voter-id-key-unknown",
                key_id=key_id,
            )
        return VoterIdHasher(key, referendum_id)
