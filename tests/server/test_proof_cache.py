"""The read API's per-process cache of Merkle nodes: same proofs as computed from scratch."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from batcher.service import seal_block
from referendum_core.merkle import inclusion_proof, leaf_hash, verify_inclusion
from server import public_api
from tests.batcher import create_referendum, insert_ballots, make_signer
from tests.helpers import running_app
from tests.server.test_public_api import BASE, RID, app_settings, build_log, get_json

BATCH_SIZES = (16, 5, 40, 3)  # the second part of the log, after build_log's blocks


async def _all_bodies(database_url: str) -> list[bytes]:
    """Every sequenced ballot body in log order."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT body FROM ballots WHERE referendum_id = $1 AND log_index IS NOT NULL"
            " ORDER BY log_index",
            RID,
        )
    finally:
        await conn.close()
    return [bytes(r["body"]) for r in rows]


def _counting_extend(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the tree size of every cache extension (each is a database query)."""
    sizes: list[int] = []
    original = public_api.LogNodeCache.extend

    async def extend(self: public_api.LogNodeCache, pool: Any, rid: str, size: int) -> Any:
        sizes.append(size)
        return await original(self, pool, rid, size)

    monkeypatch.setattr(public_api.LogNodeCache, "extend", extend)
    return sizes


@pytest.mark.parametrize("cached_level", [4, 5])
async def test_cached_proofs_equal_uncached(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cached_level: int
) -> None:
    """Every proof served cold and again from the warm cache is byte-identical and correct."""
    monkeypatch.setattr(public_api, "CACHED_MIN_LEVEL", cached_level)
    extensions = _counting_extend(monkeypatch)
    signer, key_file = make_signer(tmp_path)
    sizes = await build_log(database_url, signer)
    leaves = [leaf_hash(b) for b in await _all_bodies(database_url)]
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        bodies = await _all_bodies(database_url)
        for size in [None, *sizes]:
            tree_size = size or sizes[-1]
            query = "" if size is None else f"?tree_size={size}"
            for index in range(tree_size):
                path = f"{BASE}/proof/inclusion/{hashlib.sha256(bodies[index]).hexdigest()}{query}"
                first = await client.get(path)
                assert first.status == 200
                again = await client.get(path)
                assert await again.read() == await first.read()
                bundle = await first.json()
                expected = inclusion_proof(leaves[:tree_size], index)
                assert bundle["tree_size"] == tree_size and bundle["leaf_index"] == index
                assert [bytes.fromhex(p) for p in bundle["proof"]] == expected
        caches = client.app[public_api.LOG_NODE_CACHE_KEY]
        assert caches[RID].top, "the upper nodes were cached"
    # one extension per distinct tree size: later requests were served from the cache
    assert sorted(extensions) == sorted(set(sizes))


async def test_larger_size_not_served_from_smaller_entry(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After new blocks the latest proof is at the new size; an old size still gets its own."""
    monkeypatch.setattr(public_api, "CACHED_MIN_LEVEL", 4)
    signer, key_file = make_signer(tmp_path)
    sizes = await build_log(database_url, signer)
    bodies = await _all_bodies(database_url)
    hashes = [hashlib.sha256(b).hexdigest() for b in bodies]
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        old = {
            i: await get_json(client, f"{BASE}/proof/inclusion/{h}") for i, h in enumerate(hashes)
        }
        assert {b["tree_size"] for b in old.values()} == {sizes[-1]}
        conn = await asyncpg.connect(database_url)
        try:
            for count in BATCH_SIZES:
                await insert_ballots(conn, RID, count)
                sealed = await seal_block(conn, RID, signer, max_ballots=1000)
                assert sealed is not None
            root = bytes(
                await conn.fetchval(
                    "SELECT root FROM blocks WHERE referendum_id = $1 ORDER BY height DESC LIMIT 1",
                    RID,
                )
            )
        finally:
            await conn.close()
        all_bodies = await _all_bodies(database_url)
        new_size = len(all_bodies)
        assert new_size == sizes[-1] + sum(BATCH_SIZES)
        leaves = [leaf_hash(b) for b in all_bodies]
        for index, ballot_hash in enumerate(hashes):
            bundle = await get_json(client, f"{BASE}/proof/inclusion/{ballot_hash}")
            assert bundle["tree_size"] == new_size
            proof = [bytes.fromhex(p) for p in bundle["proof"]]
            assert proof == inclusion_proof(leaves, index)
            verify_inclusion(leaves[index], index, new_size, proof, root)
            at_old = await get_json(
                client, f"{BASE}/proof/inclusion/{ballot_hash}?tree_size={sizes[-1]}"
            )
            assert at_old["proof"] == old[index]["proof"]
        # ballots of the new blocks have proofs at the new size only
        newest = hashlib.sha256(all_bodies[-1]).hexdigest()
        await get_json(client, f"{BASE}/proof/inclusion/{newest}?tree_size={sizes[-1]}", 404)


async def test_empty_log_caches_nothing(database_url: str, tmp_path: Path) -> None:
    """A proof request on an empty log answers 404 and extends no cache."""
    _, key_file = make_signer(tmp_path)
    conn = await asyncpg.connect(database_url)
    await create_referendum(conn, RID)
    await conn.close()
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        problem = await get_json(client, f"{BASE}/proof/inclusion/{'0' * 64}", 404)
        assert problem["type"].endswith("/not-sequenced")
        assert client.app[public_api.LOG_NODE_CACHE_KEY][RID].size == 0
