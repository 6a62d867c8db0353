"""Shared pieces of the node tests: a log that signs checkpoints, witness keys, a running node."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nacl.signing
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.app import make_node_app
from node.witness import NodeWitness
from referendum_core import checkpoint as ck
from referendum_core.merkle import consistency_proof, leaf_hash, root_from_leaf_hashes
from referendum_core.witness import AddCheckpointRequest
from referendum_service.keys import ServiceKey
from referendum_service.settings import Settings

LOG_SEED = bytes(range(32))
LOG_NAME = "referendum.example/log"
LOG_PUB = bytes(nacl.signing.SigningKey(LOG_SEED).verify_key)
LOG_VKEY = ck.verifier_key_string(LOG_NAME, LOG_PUB)
RID = "r-1"
ORIGIN = f"{LOG_NAME}/{RID}"


def service_key(seed: bytes) -> ServiceKey:
    """A ServiceKey of a fixed seed."""
    signing = nacl.signing.SigningKey(seed)
    return ServiceKey(signing, bytes(signing.verify_key), "test")


def leaves(n: int, tag: bytes = b"") -> list[bytes]:
    """``n`` leaf hashes of one history (another ``tag``: another history)."""
    return [leaf_hash(tag + i.to_bytes(4, "big")) for i in range(n)]


def signed_note(size: int, tag: bytes = b"", seed: bytes = LOG_SEED) -> str:
    """The log's signed checkpoint of ``size`` leaves of history ``tag``."""
    root = root_from_leaf_hashes(leaves(size, tag))
    return ck.sign_checkpoint(ck.Checkpoint(ORIGIN, size, root), LOG_NAME, seed)


def request_body(old: int, new: int, tag: bytes = b"") -> bytes:
    """A correct add-checkpoint body from ``old`` to ``new`` (history ``tag``)."""
    proof = consistency_proof(leaves(new, tag), old) if 0 < old < new else []
    return AddCheckpointRequest(old, tuple(proof), signed_note(new, tag)).to_bytes()


@contextlib.asynccontextmanager
async def running_node(
    database_url: str, seed: bytes = bytes([7]) * 32, name: str = "w1.example"
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], NodeWitness]]:
    """A node's witness service on ``database_url``, and its NodeWitness."""
    witness = NodeWitness(name, service_key(seed), LOG_VKEY)
    app = make_node_app(Settings(database_url=database_url), witness, database_url=database_url)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    async with client:
        yield client, witness
