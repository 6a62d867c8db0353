"""One settings object for every service, read from the environment.

Every field is documented in the README's settings table; add a field here and a row there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = ["Settings"]


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"setting {name} must be an integer, got {raw!r}") from exc


def _str(name: str, default: str) -> str:
    raw = os.environ.get(name)
    return default if raw is None or raw == "" else raw


def _optional(name: str) -> str | None:
    raw = os.environ.get(name)
    return raw if raw else None


@dataclass(frozen=True)
class Settings:
    """Configuration of servers, batcher and tools. Build it with :meth:`from_env`."""

    database_url: str | None = None
    """PostgreSQL DSN; when unset an embedded throwaway server under ``data_dir`` is used."""
    data_dir: Path = Path("data")
    """Folder for the embedded PostgreSQL cluster, generated keys and local state."""
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    """Server processes started by ``referendum serve`` on one port (SO_REUSEPORT)."""
    log_level: str = "info"
    max_body_bytes: int = 64 * 1024
    """Largest JSON request body accepted (ballots, referendum definitions)."""
    max_roll_bytes: int = 4 * 1024 * 1024 * 1024
    """Largest voter-roll upload accepted in one part."""
    roll_check_threads: int = 0
    """Threads checking credential keys during a roll import; 0 means one per CPU."""
    db_pool_min: int = 2
    db_pool_max: int = 10
    server_key_file: Path | None = None
    """Ed25519 seed (raw or hex) signing receipts; generated under data_dir if unset."""
    log_key_file: Path | None = None
    """Ed25519 seed signing log checkpoints; generated under data_dir if unset."""
    log_origin: str = "referendum.example/log"
    """Prefix of the checkpoint origin line; the referendum id is appended."""
    merge_delay_ms: int = 2000
    """Maximum merge delay promised in receipts."""
    commit_batch_max: int = 500
    """Most ballots stored by one group-commit insert."""
    commit_slots: int = 4
    """Concurrent group-commit writes per process."""
    queue_limit: int = 5000
    """Ballots waiting in one process before new ones are refused with 503."""
    voter_rate_per_minute: int = 10
    """Submissions one voter may make per minute on one process before 429."""
    verify_workers: int = 0
    """Processes checking proofs; 0 checks inline on the event loop's thread."""
    spec_cache_ms: int = 500
    """Longest a server process trusts a cached referendum state before re-reading it."""
    voter_cache_size: int = 100_000
    """Voter public keys cached per server process (LRU; the roll is frozen once open)."""
    proof_cache_mb: int = 256
    """Memory per server process for cached log nodes (about 4 bytes a sealed ballot)."""
    block_max_ballots: int = 10000
    """A block closes at this many ballots ..."""
    block_max_ms: int = 500
    """... or after this many milliseconds."""
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> Settings:
        """Read every setting from ``REFERENDUM_*`` variables (and ``DATABASE_URL``)."""
        key = _optional("REFERENDUM_SERVER_KEY_FILE")
        log_key = _optional("REFERENDUM_LOG_KEY_FILE")
        return cls(
            database_url=_optional("DATABASE_URL"),
            data_dir=Path(_str("REFERENDUM_DATA_DIR", "data")),
            host=_str("REFERENDUM_HOST", "127.0.0.1"),
            port=_int("REFERENDUM_PORT", 8080),
            workers=_int("REFERENDUM_WORKERS", 1),
            log_level=_str("REFERENDUM_LOG_LEVEL", "info"),
            max_body_bytes=_int("REFERENDUM_MAX_BODY_BYTES", 64 * 1024),
            max_roll_bytes=_int("REFERENDUM_MAX_ROLL_BYTES", 4 * 1024 * 1024 * 1024),
            roll_check_threads=_int("REFERENDUM_ROLL_CHECK_THREADS", 0),
            db_pool_min=_int("REFERENDUM_DB_POOL_MIN", 2),
            db_pool_max=_int("REFERENDUM_DB_POOL_MAX", 10),
            server_key_file=Path(key) if key else None,
            log_key_file=Path(log_key) if log_key else None,
            log_origin=_str("REFERENDUM_LOG_ORIGIN", "referendum.example/log"),
            merge_delay_ms=_int("REFERENDUM_MERGE_DELAY_MS", 2000),
            commit_batch_max=_int("REFERENDUM_COMMIT_BATCH_MAX", 500),
            commit_slots=_int("REFERENDUM_COMMIT_SLOTS", 4),
            queue_limit=_int("REFERENDUM_QUEUE_LIMIT", 5000),
            voter_rate_per_minute=_int("REFERENDUM_VOTER_RATE_PER_MINUTE", 10),
            verify_workers=_int("REFERENDUM_VERIFY_WORKERS", 0),
            spec_cache_ms=_int("REFERENDUM_SPEC_CACHE_MS", 500),
            voter_cache_size=_int("REFERENDUM_VOTER_CACHE_SIZE", 100_000),
            proof_cache_mb=_int("REFERENDUM_PROOF_CACHE_MB", 256),
            block_max_ballots=_int("REFERENDUM_BLOCK_MAX_BALLOTS", 10000),
            block_max_ms=_int("REFERENDUM_BLOCK_MAX_MS", 500),
        )

    def names(self) -> list[str]:
        """Field names, for the README table test."""
        return [f.name for f in fields(self) if f.name != "extra"]
