"""Every key of the application's state (``web.AppKey``), in one module below the handlers.

The API modules, the health checks and authentication read the pool and the settings from the
application; keeping the keys here (and not in ``server.app``, which imports those modules)
leaves the imports pointing one way.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import asyncpg
from aiohttp import web

from referendum_service.settings import Settings
from server.ingest import BallotBox
from server.log_cache import LogProofs
from server.roll import ChunkTreeCache
from server.roll.voter_keys import VoterIdKeys

__all__ = [
    "BALLOT_BOX_KEY",
    "LOG_PROOFS_KEY",
    "LOG_VERIFIER_KEY",
    "OPENAPI_KEY",
    "POOL_KEY",
    "ROLL_CONNECTIONS_LOCK_KEY",
    "ROLL_EXECUTOR_KEY",
    "ROLL_TREES_KEY",
    "SETTINGS_KEY",
    "VOTER_ID_KEYS_KEY",
]

POOL_KEY = web.AppKey("pool", asyncpg.Pool)
"""The connection pool, opened and closed by the application's ``cleanup_ctx``."""

SETTINGS_KEY = web.AppKey("settings", Settings)

BALLOT_BOX_KEY = web.AppKey("ballot_box", BallotBox)
"""This process's write path of ballots (:class:`server.ingest.BallotBox`)."""

LOG_VERIFIER_KEY = web.AppKey("log_verifier_key", str)
"""The C2SP verifier key of the log's checkpoints."""

LOG_PROOFS_KEY = web.AppKey("log_proofs", LogProofs)
"""This process's cache of stored log nodes (:class:`server.log_cache.LogProofs`)."""

ROLL_EXECUTOR_KEY = web.AppKey("roll_executor", ThreadPoolExecutor)
"""Worker threads checking credential keys during roll imports."""

ROLL_CONNECTIONS_LOCK_KEY = web.AppKey("roll_connections_lock", asyncio.Lock)
"""Taken while a roll import acquires its two connections (see ``server.api.operator``)."""

ROLL_TREES_KEY = web.AppKey("roll_trees", ChunkTreeCache)
"""The roll chunk trees kept for roll proofs (:class:`server.roll.ChunkTreeCache`)."""

VOTER_ID_KEYS_KEY = web.AppKey("voter_id_keys", VoterIdKeys)
"""The operator's voter-id keys (:class:`server.roll.voter_keys.VoterIdKeys`)."""

OPENAPI_KEY = web.AppKey("openapi", bytes)
"""The OpenAPI document, serialised once at start."""
