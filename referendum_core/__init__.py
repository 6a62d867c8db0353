"""Pure core of the referendum backend: ballot cryptography, the RFC 9162 Merkle log,
signed checkpoints and verification.

This package does no I/O and imports none of aiohttp, asyncpg or locust, so an auditor can
use it alone. Services depend on it, never the reverse.
"""
