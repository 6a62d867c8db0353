"""Operator authentication: bearer API keys, of which only the SHA-256 is stored.

A key is 32 random bytes, URL-safe base64 encoded, shown once by ``referendum
create-api-key``. Requests carry it as ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from aiohttp import web

from referendum_service.db import acquire, translated
from server.errors import Unauthorized
from server.state import POOL_KEY

__all__ = ["authenticate", "create_api_key", "hash_key"]

_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def hash_key(token: str) -> bytes:
    """The stored form of a key: SHA-256 of its UTF-8 text."""
    return hashlib.sha256(token.encode()).digest()


async def create_api_key(conn: Any, name: str) -> str:
    """Create a key called ``name`` and return its token (stored only hashed).

    Requires ``1 <= len(name) <= 128``; raises Duplicate when the name is taken.
    """
    if not 1 <= len(name) <= 128:
        raise ValueError("a key name has 1 to 128 characters")
    token = secrets.token_urlsafe(32)
    with translated():
        await conn.execute(
            "INSERT INTO api_keys (name, key_hash) VALUES ($1, $2)", name, hash_key(token)
        )
    return token


async def authenticate(request: web.Request) -> str:
    """The name of the operator whose key the request carries; Unauthorized otherwise."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("an operator API key is required (Authorization: Bearer <key>)")
    # RFC 6750's token68 alphabet only: aiohttp hands on other header bytes as surrogates,
    # which no key holds (keys are URL-safe base64) and which would not even encode
    if len(token) > 256 or not _TOKEN.fullmatch(token):
        raise Unauthorized("unknown or revoked API key")
    digest = hash_key(token)
    async with acquire(request.app[POOL_KEY]) as conn:
        row = await conn.fetchrow(
            "SELECT name, key_hash FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
            digest,
        )
    # the lookup is by hash, so timing reveals nothing about the key; compare anyway
    if row is None or not hmac.compare_digest(bytes(row["key_hash"]), digest):
        raise Unauthorized("unknown or revoked API key")
    name: str = row["name"]
    return name
