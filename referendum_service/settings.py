"""One settings object for every service, read from the environment.

Each field is declared once, here: its default, its type (which says how the environment
variable is parsed) and its meaning. The variable is ``REFERENDUM_<NAME>`` (``DATABASE_URL``
for the DSN). Every field is documented in the README's settings table; add a field here and
a row there (a test checks both).
"""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["Settings", "env_name"]


def env_name(field_name: str) -> str:
    """The environment variable of a setting.

    >>> env_name("queue_limit"), env_name("database_url")
    ('REFERENDUM_QUEUE_LIMIT', 'DATABASE_URL')
    """
    return "DATABASE_URL" if field_name == "database_url" else "REFERENDUM_" + field_name.upper()


def _parse(name: str, raw: str, kind: Any) -> Any:
    optional = typing.get_origin(kind) in (typing.Union, types.UnionType)
    base = next(a for a in typing.get_args(kind) if a is not type(None)) if optional else kind
    if base is int:
        try:
            return int(raw)
        except ValueError as exc:
            raise ValueError(f"setting {name} must be an integer, got {raw!r}") from exc
    if base is Path:
        return Path(raw)
    return raw


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
    body_timeout_ms: int = 10_000
    """Longest a JSON request body may take to arrive, however steadily; then 408."""
    body_min_bytes_per_s: int = 1024
    """Slowest a JSON body may arrive: one second of credit, plus one per this many bytes."""
    connection_idle_timeout_ms: int = 75_000
    """Longest a connection may wait for its next complete request head, idle or slow."""
    max_roll_bytes: int = 4 * 1024 * 1024 * 1024
    """Largest voter-roll upload accepted in one part."""
    roll_check_threads: int = 0
    """Threads checking credential keys during a roll import; 0 means one per CPU."""
    roll_trees_kept: int = 8
    """Referendums whose roll chunk trees (for roll proofs) stay cached per server process."""
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_acquire_timeout_ms: int = 5000
    """Longest a group-commit write waits for a pooled connection before answering 503."""
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
    admission_limit: int = 5000
    """Ballot submissions one process handles at once, from a received body to the answer."""
    queue_limit: int = 5000
    """Ballots waiting in one process's write queue before new ones are refused with 503."""
    voter_rate_per_minute: int = 10
    """Ballots one credential may submit per minute, counted across every server process."""
    penalty_delay_ms: int = 1000
    """Longest the 429 of a credential owing tokens (after ballots it signed failed) is held."""
    voter_id_key: str = field(default="", repr=False)
    """Secret (64 hex digits) of the HMAC-SHA-256 that stands for voter ids; imports need it."""
    voter_id_retired_keys: str = field(default="", repr=False)
    """Earlier voter-id keys (comma-separated hex) for rolls imported under them."""
    verify_workers: int = 0
    """Processes checking proofs; 0 checks inline on the event loop's thread."""
    spec_cache_ms: int = 500
    """Longest a server process trusts a cached referendum state before re-reading it."""
    spec_cache_entries: int = 1024
    """Referendums whose state and ballot spec one server process caches."""
    proof_cache_mb: int = 256
    """Memory per server process for cached log nodes (about 4 bytes a sealed ballot)."""
    proof_page_nodes: int = 1 << 14
    """Most stored log nodes one query reads when the proof cache is filled or extended."""
    proof_sizes_per_log: int = 256
    """Checkpoint sizes whose right edge the proof cache keeps, per referendum."""
    proof_query_slots: int = 4
    """Inclusion-proof queries in flight at once, per server process."""
    proof_batch_max: int = 256
    """Most ballots one inclusion-proof query reads."""
    block_max_ballots: int = 10000
    """A block closes at this many ballots ..."""
    block_max_ms: int = 500
    """... or after this many milliseconds."""
    standby_poll_ms: int = 500
    """How often a standby batcher tries to take a referendum's leader lock."""
    discovery_poll_ms: int = 2000
    """How often the batcher looks for referendums whose log is not final yet."""
    pending_vacuum_every: int = 100_000
    """Ballots a batcher leader seals between two VACUUMs of its queue table."""
    tally_poll_ms: int = 200
    """How often the tally follower looks for sealed blocks not yet folded."""
    witness_timeout_ms: int = 2000
    """Longest the batcher's publisher waits for one witness to answer add-checkpoint."""
    node_name: str = "witness.example/w1"
    """Cosigner key name of a ``referendum node`` (its cosignature lines carry it)."""
    node_key_file: Path | None = None
    """Ed25519 seed of a node's cosigner key; generated under data_dir if unset."""
    node_log_key: str = ""
    """Verifier key of the operator's log a node trusts; it witnesses origins ``NAME/<id>``."""
    node_follow_poll_ms: int = 1000
    """How often ``referendum node --follow`` fetches the operator's latest checkpoints."""

    @classmethod
    def from_env(cls, environ: typing.Mapping[str, str] | None = None) -> Settings:
        """Read every setting from its variable (``os.environ`` unless ``environ`` is given).

        An unset or empty variable keeps the default.

        >>> Settings.from_env({"REFERENDUM_PORT": "9000"}).port
        9000
        """
        env = os.environ if environ is None else environ
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(env_name(f.name))
            if raw:
                values[f.name] = _parse(env_name(f.name), raw, hints[f.name])
        return cls(**values)

    def names(self) -> list[str]:
        """Field names, for the README table test."""
        return [f.name for f in fields(self)]
