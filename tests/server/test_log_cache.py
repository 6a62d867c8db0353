"""Proofs from the per-process node cache (``server/log_cache.py``).

Every proof must equal the core's (``referendum_core.merkle``) and verify against the signed
checkpoint it is served with: across blocks sealed after the cache was filled, for older tree
sizes, without the cache, for concurrent requests that share one query, and never from a
damaged node.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from batcher.service import LogSigner, seal_block
from referendum_core.checkpoint import verify_checkpoint
from referendum_core.merkle import (
    StoredNodeError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    right_edge,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from referendum_service.db import create_pool
from referendum_service.settings import Settings
from server import log_cache
from server.log_cache import LogNodes, LogProofs
from server.state import LOG_PROOFS_KEY
from tests.batcher.logs import LOG_ORIGIN, create_referendum, insert_ballots, make_signer
from tests.helpers import running_app
from tests.server.test_public_api import BASE, RID, app_settings, build_log, get_json, verifier_key

# ---------------------------------------------------------------------------------------------
# The cache alone (its proofs are the core's: tests/core/test_merkle_stored.py)


def test_cache_refuses_a_size_it_never_took_in() -> None:
    """A LogNodes holding the nodes of a larger tree still refuses a size it never checked."""
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(100)]
    log = LogNodes()
    log.size = len(leaves)
    for size in (64, 100):
        log.sizes[size] = right_edge(size, lambda lvl, pos: _perfect(leaves, lvl, pos))
    with pytest.raises(StoredNodeError):
        log.inclusion(3, 80, leaves[0:16])  # a size never taken in
    assert 80 not in log.sizes and log.holds(64) and not log.holds(80)


def _perfect(leaves: list[bytes], level: int, position: int) -> bytes:
    return root_from_leaf_hashes(leaves[position << level : (position + 1) << level])


# ---------------------------------------------------------------------------------------------
# Served proofs


async def _bodies(database_url: str, rid: str = RID) -> list[bytes]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT b.body FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id"
            " WHERE e.referendum_id = $1 ORDER BY e.log_index",
            rid,
        )
    finally:
        await conn.close()
    return [bytes(r["body"]) for r in rows]


async def _seal(database_url: str, signer: LogSigner, count: int, rid: str = RID) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        await insert_ballots(conn, rid, count)
        sealed = await seal_block(conn, rid, signer, max_ballots=1000)
        assert sealed is not None
        return sealed.block.tree_size
    finally:
        await conn.close()


async def _check_bundle(
    client: Any, vkey: str, bodies: list[bytes], index: int, size: int | None, rid: str = RID
) -> None:
    """The served bundle of ballot ``index`` (at ``size`` or the latest) is the core's proof
    and verifies against its signed checkpoint."""
    ballot_hash = hashlib.sha256(bodies[index]).hexdigest()
    query = "" if size is None else f"?tree_size={size}"
    bundle = await get_json(
        client, f"/v1/referendums/{rid}/log/proof/inclusion/{ballot_hash}{query}"
    )
    checkpoint = verify_checkpoint(bundle["checkpoint"], vkey, origin=f"{LOG_ORIGIN}/{rid}")
    n = bundle["tree_size"]
    assert n == checkpoint.size and (size is None or n == size)
    assert bundle["leaf_index"] == index and bytes.fromhex(bundle["body"]) == bodies[index]
    proof = [bytes.fromhex(p) for p in bundle["proof"]]
    leaves = [leaf_hash(b) for b in bodies[:n]]
    assert proof == inclusion_proof(leaves, index)
    verify_inclusion(leaves[index], index, n, proof, checkpoint.root)


async def test_cache_grows_with_new_blocks(database_url: str, tmp_path: Path) -> None:
    """Blocks sealed after the cache was filled extend it in place; proofs at the new and at
    every older size stay the core's."""
    signer, key_file = make_signer(tmp_path)
    sizes = await build_log(database_url, signer)
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        vkey = await verifier_key(client)
        bodies = await _bodies(database_url)
        for index in range(len(bodies)):
            await _check_bundle(client, vkey, bodies, index, None)
        cache = client.app[LOG_PROOFS_KEY].cached(RID)
        assert cache is not None and cache.size == sizes[-1]
        level4 = cache.levels[0]
        # new sizes cross chunk (16) and stored-level (32, 64, 128) boundaries
        for count in (12, 1, 31, 7, 1, 16):
            sizes.append(await _seal(database_url, signer, count))
            bodies = await _bodies(database_url)
            for index in range(len(bodies)):
                await _check_bundle(client, vkey, bodies, index, None)
            for size in sizes[-3:-1]:
                for index in range(0, size, 5):
                    await _check_bundle(client, vkey, bodies, index, size)
            assert cache.size == sizes[-1]
            assert [len(level) // 32 for level in cache.levels] == [
                sizes[-1] >> level for level in range(4, sizes[-1].bit_length())
            ]
        assert cache.levels[0] is level4  # extended, never rebuilt
        assert client.app[LOG_PROOFS_KEY].cached(RID) is cache


async def test_old_sizes_after_their_edges_left_the_cache(
    database_url: str, tmp_path: Path
) -> None:
    """With room for two sizes only, each older size is taken in again, and right."""
    signer, key_file = make_signer(tmp_path)
    sizes = await build_log(database_url, signer)
    bodies = await _bodies(database_url)
    settings = dataclasses.replace(app_settings(key_file, tmp_path), proof_sizes_per_log=2)
    async with running_app(settings, database_url) as client:
        vkey = await verifier_key(client)
        for _ in range(2):
            for size in sizes:
                for index in range(size):
                    await _check_bundle(client, vkey, bodies, index, size)
        cache = client.app[LOG_PROOFS_KEY].cached(RID)
        assert cache is not None and len(cache.sizes) == 2


async def test_without_the_cache_proofs_are_the_same(database_url: str, tmp_path: Path) -> None:
    """A budget too small for the log: every node comes from the database, same proofs."""
    signer, key_file = make_signer(tmp_path)
    sizes = await build_log(database_url, signer)
    bodies = await _bodies(database_url)
    settings = Settings(
        log_key_file=key_file, log_origin=LOG_ORIGIN, data_dir=tmp_path, proof_cache_mb=0
    )
    async with running_app(settings, database_url) as client:
        vkey = await verifier_key(client)
        for size in [None, *sizes]:
            for index in range(size or len(bodies)):
                await _check_bundle(client, vkey, bodies, index, size)
        leaves = [leaf_hash(b) for b in bodies]
        for first in sizes:
            for second in sizes:
                if first > second:
                    continue
                body = await get_json(client, f"{BASE}/proof/consistency?from={first}&to={second}")
                proof = [bytes.fromhex(p) for p in body["proof"]]
                assert proof == consistency_proof(leaves[:second], first)
                verify_consistency(
                    first,
                    second,
                    proof,
                    root_from_leaf_hashes(leaves[:first]),
                    root_from_leaf_hashes(leaves[:second]),
                )
        assert client.app[LOG_PROOFS_KEY].cached(RID) is None


async def test_concurrent_requests_share_queries(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many requests at once (two sizes, unknown ballots, an unknown referendum) are answered
    from shared queries, each with its own ballot's bundle."""
    batches: list[int] = []
    run = log_cache._InclusionReader._run

    async def counting(reader: Any, batch: Any) -> None:
        batches.append(len(batch.hashes))
        await run(reader, batch)

    monkeypatch.setattr(log_cache._InclusionReader, "_run", counting)
    signer, key_file = make_signer(tmp_path)
    sizes = await build_log(database_url, signer)
    bodies = await _bodies(database_url)
    unknown = hashlib.sha256(b"no such ballot").hexdigest()
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        vkey = await verifier_key(client)
        checks = [_check_bundle(client, vkey, bodies, i, None) for i in range(len(bodies))]
        checks += [_check_bundle(client, vkey, bodies, i, sizes[-2]) for i in range(sizes[-2])]
        misses = [
            get_json(client, f"{BASE}/proof/inclusion/{unknown}", 404),
            get_json(client, f"/v1/referendums/nope/log/proof/inclusion/{unknown}", 404),
            get_json(client, f"{BASE}/proof/inclusion/{unknown}?tree_size=7", 400),
        ]
        order = checks + misses
        random.Random(3).shuffle(order)
        results = await asyncio.gather(*order)
    problems = [r for r in results if r is not None]
    assert sorted(p["type"].rsplit("/", 1)[1] for p in problems) == [
        "bad-parameter",
        "not-sequenced",
        "unknown-referendum",
    ]
    assert sum(batches) == len(order) and max(batches) > 1


@pytest.mark.parametrize("position", [1, 4])  # (4, 1) has a parent; (4, 4) gives the root
async def test_a_damaged_node_is_never_served(
    database_url: str, tmp_path: Path, position: int
) -> None:
    """A stored node that is not tied to the signed root fails the request (logged as a
    defect) instead of yielding a proof that cannot verify."""
    signer, key_file = make_signer(tmp_path)
    await build_log(database_url, signer)
    bodies = await _bodies(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("ALTER TABLE log_nodes DISABLE TRIGGER log_nodes_append_only")
        await conn.execute(
            "UPDATE log_nodes SET hash = $2 WHERE referendum_id = $1 AND level = 4"
            " AND position = $3",
            RID,
            bytes(32),
            position,
        )
    finally:
        await conn.close()
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        ballot_hash = hashlib.sha256(bodies[0]).hexdigest()
        problem = await get_json(client, f"{BASE}/proof/inclusion/{ballot_hash}", 500)
        assert problem["type"].endswith("/internal")
        cache = client.app[LOG_PROOFS_KEY].cached(RID)
        assert cache is not None and cache.size == 0  # nothing was taken in


async def test_budget_evicts_the_least_recently_used_log(database_url: str, tmp_path: Path) -> None:
    """Two logs, room for one: each use brings its log back, proofs stay right."""
    signer, _ = make_signer(tmp_path)
    conn = await asyncpg.connect(database_url)
    try:
        for rid in ("r-a", "r-b"):
            await create_referendum(conn, rid)
    finally:
        await conn.close()
    for rid in ("r-a", "r-b"):
        for count in (40, 9):
            await _seal(database_url, signer, count, rid)
    pool = await create_pool(database_url, Settings(db_pool_min=1, db_pool_max=2))
    try:
        one_log = 32 * (49 // 16 + 49 // 32) + log_cache._SIZE_BYTES
        proofs = LogProofs(pool, budget_bytes=one_log + 100)
        for rid in ("r-a", "r-b", "r-a"):
            bodies = await _bodies(database_url, rid)
            leaves = [leaf_hash(b) for b in bodies]
            for index in (0, 17, 48):
                row = await proofs.read_inclusion(rid, hashlib.sha256(bodies[index]).digest(), None)
                assert row is not None and row.log_index == index and row.tree_size == 49
                assert row.root is not None and row.leaves is not None
                proof = await proofs.inclusion(rid, index, 49, row.root, row.leaves)
                assert proof == inclusion_proof(leaves, index)
            other = "r-b" if rid == "r-a" else "r-a"
            assert proofs.cached(rid) is not None and proofs.cached(other) is None
            assert proofs.nbytes() <= one_log + 100
    finally:
        await pool.close()


async def test_a_referendum_id_postgresql_cannot_hold_is_unknown(
    database_url: str, tmp_path: Path
) -> None:
    """A NUL in the id (which a text parameter cannot carry) is a 404, not a driver error."""
    signer, key_file = make_signer(tmp_path)
    await build_log(database_url, signer)
    base = "/v1/referendums/r%00x/log"
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        for path in (
            f"{base}/proof/inclusion/{'0' * 64}",
            f"{base}/proof/inclusion/{'0' * 64}?tree_size=1",
            f"{base}/proof/consistency?from=1&to=1",
            f"{base}/checkpoint",
            f"{base}/blocks/1",
            f"{base}/blocks/1/ballots",
        ):
            problem = await get_json(client, path, 404)
            assert problem["type"].endswith("/unknown-referendum"), path


async def test_knobs_bound_the_inclusion_queries(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With batch_max 2 and one query slot, seven reads at once take four queries of at most
    two ballots, each answered with its own row; a small page reads the same nodes."""
    batches: list[int] = []
    run = log_cache._InclusionReader._run

    async def counting(reader: Any, batch: Any) -> None:
        batches.append(len(batch.hashes))
        await run(reader, batch)

    monkeypatch.setattr(log_cache._InclusionReader, "_run", counting)
    signer, _ = make_signer(tmp_path)
    conn = await asyncpg.connect(database_url)
    try:
        await create_referendum(conn, RID)
    finally:
        await conn.close()
    size = await _seal(database_url, signer, 70)
    bodies = await _bodies(database_url)
    leaves = [leaf_hash(b) for b in bodies]
    pool = await create_pool(database_url, Settings(db_pool_min=1, db_pool_max=2))
    try:
        proofs = LogProofs(pool, 1 << 20, page_nodes=1, query_slots=1, batch_max=2)
        hashes = [hashlib.sha256(bodies[i]).digest() for i in range(7)]
        rows = await asyncio.gather(*(proofs.read_inclusion(RID, h, None) for h in hashes))
        assert sorted(batches) == [1, 2, 2, 2]
        assert [r.log_index if r else None for r in rows] == list(range(7))
        for index, row in enumerate(rows):
            assert row is not None and row.root is not None and row.leaves is not None
            proof = await proofs.inclusion(RID, index, size, row.root, row.leaves)
            assert proof == inclusion_proof(leaves, index)
    finally:
        await pool.close()
