"""Inclusion proofs as the log grows: each size gets its own proof, identical to the core's."""

from __future__ import annotations

import hashlib
from pathlib import Path

import asyncpg

from batcher.service import seal_block
from referendum_core.merkle import inclusion_proof, leaf_hash, verify_inclusion
from tests.batcher.logs import insert_ballots, make_signer
from tests.helpers import running_app
from tests.server.test_public_api import BASE, RID, app_settings, build_log, get_json

MORE_BATCHES = (16, 5, 40, 3)  # sealed after the first proofs were served


async def _all_bodies(database_url: str) -> list[bytes]:
    """Every sequenced ballot body in log order."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT b.body FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id"
            " WHERE e.referendum_id = $1 ORDER BY e.log_index",
            RID,
        )
    finally:
        await conn.close()
    return [bytes(r["body"]) for r in rows]


async def test_larger_size_gets_its_own_proof(database_url: str, tmp_path: Path) -> None:
    """After new blocks the latest proof is at the new size; the old size keeps its proof."""
    signer, key_file = make_signer(tmp_path)
    sizes = await build_log(database_url, signer)
    bodies = await _all_bodies(database_url)
    hashes = [hashlib.sha256(b).hexdigest() for b in bodies]
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        old = {}
        for index, ballot_hash in enumerate(hashes):
            old[index] = await get_json(client, f"{BASE}/proof/inclusion/{ballot_hash}")
            expected = inclusion_proof([leaf_hash(b) for b in bodies], index)
            assert [bytes.fromhex(p) for p in old[index]["proof"]] == expected
        assert {b["tree_size"] for b in old.values()} == {sizes[-1]}
        conn = await asyncpg.connect(database_url)
        try:
            # statistics that predate the sequencing, as while voting runs
            await conn.execute("ANALYZE ballots, log_entries")
            for count in MORE_BATCHES:
                await insert_ballots(conn, RID, count)
                assert await seal_block(conn, RID, signer, max_ballots=1000) is not None
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
        assert new_size == sizes[-1] + sum(MORE_BATCHES)
        leaves = [leaf_hash(b) for b in all_bodies]
        for index, body in enumerate(all_bodies):
            ballot_hash = hashlib.sha256(body).hexdigest()
            bundle = await get_json(client, f"{BASE}/proof/inclusion/{ballot_hash}")
            assert (bundle["tree_size"], bundle["leaf_index"]) == (new_size, index)
            proof = [bytes.fromhex(p) for p in bundle["proof"]]
            assert proof == inclusion_proof(leaves, index)
            verify_inclusion(leaves[index], index, new_size, proof, root)
            at_old = f"{BASE}/proof/inclusion/{ballot_hash}?tree_size={sizes[-1]}"
            if index < sizes[-1]:
                assert (await get_json(client, at_old))["proof"] == old[index]["proof"]
            else:
                await get_json(client, at_old, 404)
