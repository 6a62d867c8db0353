"""The running encrypted tally: block-by-block folding, re-votes, atomicity, the follower."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import batcher.tally as tally_module
from batcher.tally import fold_new_blocks, run_tally_follower
from referendum_core.ballot import BallotSpec
from referendum_service.settings import Settings
from referendum_service.store.tallies import load_tally
from tests.helpers import operator_headers, running_app
from tests.tally.common import (
    decrypt_counts,
    insert_ballots,
    make_election,
    publish_small_election,
    seal_all,
    signer,
    store_referendum,
)
from tests.tally.trustees import TrusteeBoard


def _expected(options: int, last: dict[str, list[int]]) -> list[int]:
    return [sum(sel[i] for sel in last.values()) for i in range(options)]


@pytest.mark.parametrize(
    ("options", "min_sel", "max_sel"),
    [(("yes", "no"), 1, 1), (("a", "b", "c"), 0, 2)],
    ids=["yes-no-implied-last", "three-options-multi"],
)
async def test_fold_counts_the_last_ballot_of_each_voter(
    database_url: str, options: tuple[str, ...], min_sel: int, max_sel: int
) -> None:
    """Re-votes within a block and across blocks: the tally decrypts to the last choices."""
    rng = random.Random(6)
    election = make_election("fold", options, 12, min_sel=min_sel, max_sel=max_sel)
    voters = list(election.voters)
    conn = await asyncpg.connect(database_url)
    try:
        await store_referendum(conn, election)
        log_signer = signer()
        last: dict[str, list[int]] = {}
        plan = [voters[:8], voters[:3] + voters[:2] + voters[8:], voters[5:7]]
        for round_voters in plan:
            batch = []
            for v in round_voters:
                while True:
                    sel = [rng.randint(0, 1) for _ in options]
                    if min_sel <= sum(sel) <= max_sel:
                        break
                _body, canonical = election.ballot(v, sel)
                batch.append((v, canonical))
                last[v] = sel
            await insert_ballots(conn, election, batch)
            await seal_all(conn, election.rid, log_signer)
            assert await fold_new_blocks(conn, election.rid) == 1
        state = await load_tally(conn, election.rid)
        assert state is not None and state.folded_height == 3
        assert state.ballots_counted == len(last)
        assert decrypt_counts(election, list(state.ciphertexts), 40) == _expected(
            len(options), last
        )
        rows = await conn.fetch(
            "SELECT s.superseded_index, s.superseding_index, a.credential AS old_voter,"
            " b.credential AS new_voter FROM supersessions AS s"
            " JOIN log_entries AS ea ON ea.referendum_id = s.referendum_id"
            " AND ea.log_index = s.superseded_index JOIN ballots AS a ON a.id = ea.ballot_id"
            " JOIN log_entries AS eb ON eb.referendum_id = s.referendum_id"
            " AND eb.log_index = s.superseding_index JOIN ballots AS b ON b.id = eb.ballot_id"
            " ORDER BY s.superseded_index"
        )
        ballots = await conn.fetch(
            "SELECT b.credential, e.log_index FROM log_entries AS e"
            " JOIN ballots AS b ON b.id = e.ballot_id ORDER BY e.log_index"
        )
        by_voter: dict[bytes, list[int]] = {}
        for b in ballots:
            by_voter.setdefault(bytes(b["credential"]), []).append(b["log_index"])
        expected = sorted(
            (idx[i], idx[i + 1]) for idx in by_voter.values() for i in range(len(idx) - 1)
        )
        assert [(r["superseded_index"], r["superseding_index"]) for r in rows] == expected
        assert all(r["old_voter"] == r["new_voter"] for r in rows)
    finally:
        await conn.close()


async def test_forbid_policy_adds_every_ballot(database_url: str) -> None:
    """Under 'forbid' each ballot counts once and nothing is listed as superseded."""
    election = make_election("forbid", ("yes", "no"), 6, policy="forbid")
    conn = await asyncpg.connect(database_url)
    try:
        await store_referendum(conn, election)
        choices = {v: [i % 2, 1 - i % 2] for i, v in enumerate(election.voters)}
        await insert_ballots(
            conn, election, [(v, election.ballot(v, s)[1]) for v, s in choices.items()]
        )
        await seal_all(conn, election.rid, signer(), max_ballots=4)
        assert await fold_new_blocks(conn, election.rid) == 2
        state = await load_tally(conn, election.rid)
        assert state is not None
        assert decrypt_counts(election, list(state.ciphertexts), 10) == [3, 3]
        assert await conn.fetchval("SELECT count(*) FROM supersessions") == 0
    finally:
        await conn.close()


async def test_failed_fold_changes_nothing_and_resumes(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash inside a fold rolls it back whole; the next run folds the block exactly once."""
    election = make_election("crash", ("yes", "no"), 4)
    voters = list(election.voters)
    conn = await asyncpg.connect(database_url)
    try:
        await store_referendum(conn, election)
        log_signer = signer()
        await insert_ballots(conn, election, [(v, election.ballot(v, [1, 0])[1]) for v in voters])
        await seal_all(conn, election.rid, log_signer)
        assert await fold_new_blocks(conn, election.rid) == 1
        # voter 0 and 1 change their minds; the fold of that block crashes midway
        await insert_ballots(
            conn, election, [(v, election.ballot(v, [0, 1])[1]) for v in voters[:2]]
        )
        await seal_all(conn, election.rid, log_signer)
        real = tally_module.full_tally

        def crash(*args: object, **kwargs: object) -> object:
            raise RuntimeError("crash in the middle of a fold")

        monkeypatch.setattr(tally_module, "full_tally", crash)
        with pytest.raises(RuntimeError):
            await fold_new_blocks(conn, election.rid)
        state = await load_tally(conn, election.rid)
        assert state is not None and state.folded_height == 1
        assert await conn.fetchval("SELECT count(*) FROM supersessions") == 0
        monkeypatch.setattr(tally_module, "full_tally", real)
        assert await fold_new_blocks(conn, election.rid) == 1
        assert await fold_new_blocks(conn, election.rid) == 0
        state = await load_tally(conn, election.rid)
        assert state is not None and state.folded_height == 2
        assert decrypt_counts(election, list(state.ciphertexts), 10) == [2, 2]
        assert await conn.fetchval("SELECT count(*) FROM supersessions") == 2
    finally:
        await conn.close()


async def test_follower_reaches_the_final_block(database_url: str) -> None:
    """The follower folds blocks as they are sealed and marks the tally final after close."""
    election = make_election("follow", ("yes", "no"), 5)
    conn = await asyncpg.connect(database_url)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    stop = asyncio.Event()
    assert pool is not None
    task = asyncio.create_task(run_tally_follower(pool, stop, poll_s=0.02))
    try:
        await store_referendum(conn, election)
        await insert_ballots(
            conn, election, [(v, election.ballot(v, [0, 1])[1]) for v in election.voters]
        )
        await conn.execute("UPDATE referendums SET state = 'closed'")
        await seal_all(conn, election.rid, signer(), close=True, max_ballots=2)
        deadline = time.monotonic() + 30
        state = await load_tally(conn, election.rid)
        while (state is None or not state.final) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            state = await load_tally(conn, election.rid)
        assert state is not None and state.final
        assert decrypt_counts(election, list(state.ciphertexts), 10) == [0, 5]
    finally:
        stop.set()
        await task
        await pool.close()
        await conn.close()


async def test_tally_api_refuses_bad_requests_with_problems(
    database_url: str, tmp_path: Path
) -> None:
    """Each bad request to the tally API is a 4xx problem+json, and nothing is stored."""
    board = TrusteeBoard.create("api", k=2, n=3)
    other = TrusteeBoard.create("api", k=2, n=3)
    election = make_election("api", ("yes", "no"), 3)
    election.spec = BallotSpec("api", ("yes", "no"), 1, 1, board.election_public_key)
    conn = await asyncpg.connect(database_url)
    auth = await operator_headers(database_url)
    settings = Settings(database_url=database_url, data_dir=tmp_path)
    try:
        await store_referendum(conn, election, state="draft")
        await conn.execute("UPDATE referendums SET threshold_k = 2, trustees_n = 3")
        async with running_app(settings, database_url) as client:
            base = "/v1/referendums/api"

            async def problem(response: Any, status: int) -> dict[str, Any]:
                assert response.status == status, await response.text()
                assert response.content_type == "application/problem+json"
                body: dict[str, Any] = await response.json(content_type=None)
                return body

            await problem(await client.put(f"{base}/trustees", json=board.commitments()), 401)
            await problem(await client.put(f"{base}/trustees", json={"x": 1}, headers=auth), 400)
            mismatch = await problem(
                await client.put(f"{base}/trustees", json=other.commitments(), headers=auth), 422
            )
            assert mismatch["check"] == "election_public_key"
            await problem(await client.get(f"{base}/trustees"), 404)
            r = await client.put(f"{base}/trustees", json=board.commitments(), headers=auth)
            assert r.status == 200, await r.text()
            await conn.execute("UPDATE referendums SET state = 'open'")
            await problem(
                await client.put(f"{base}/trustees", json=board.commitments(), headers=auth), 409
            )
            await problem(await client.get(f"{base}/tally"), 409)
            await problem(await client.get("/v1/referendums/nope/tally"), 404)
            await problem(await client.get(f"{base}/supersessions?cursor=x"), 400)
            await problem(await client.post(f"{base}/result", headers=auth), 409)
            await problem(await client.get(f"{base}/result"), 409)
            await conn.execute("UPDATE referendums SET state = 'closed'")
            await seal_all(conn, "api", signer(), close=True)
            await fold_new_blocks(conn, "api")
            r = await client.get(f"{base}/tally")
            assert r.status == 200
            tally = await r.json()
            assert tally["ballots_counted"] == 0 and tally["final"]
            await problem(
                await client.post(
                    f"{base}/shares", data=b"{", headers={"Content-Type": "application/json"}
                ),
                400,
            )
            await problem(await client.post(f"{base}/shares", json={"trustee": 1}), 400)
            forged = board.forge(2, tally)
            refused = await problem(await client.post(f"{base}/shares", json=forged), 422)
            assert refused["trustee_index"] == 2
            assert refused["check"] == "trustee[2].decryption[0]"
            share = board.decrypt(1, tally)
            assert (await client.post(f"{base}/shares", json=share)).status == 201
            await problem(await client.post(f"{base}/shares", json=share), 409)
            await problem(await client.post(f"{base}/result", headers=auth), 409)
            assert await conn.fetchval("SELECT count(*) FROM decryption_shares") == 1
            assert await conn.fetchval("SELECT count(*) FROM results") == 0
    finally:
        await conn.close()


async def test_record_export_command_writes_a_verifiable_record(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`referendum record export` writes a verifiable record; a non-empty folder is refused."""
    from click.testing import CliRunner

    from auditor.verify_election import verify_election
    from server.record_commands import record

    keys = tmp_path / "data"
    _, counts = await publish_small_election(database_url, None, voters=10, key_folder=keys)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("REFERENDUM_DATA_DIR", str(keys))
    monkeypatch.setenv("REFERENDUM_LOG_ORIGIN", "test.example/log")
    out = tmp_path / "record"
    result = await asyncio.to_thread(
        CliRunner().invoke,
        record,
        ["export", "--referendum", "small-last-counts", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "manifest.json SHA-256" in result.output
    report = verify_election(out, jobs=1)
    assert report.ok, report.failures
    assert report.result == counts
    (out / "notes.txt").write_text("mine")
    again = await asyncio.to_thread(
        CliRunner().invoke,
        record,
        ["export", "--referendum", "small-last-counts", "--out", str(out)],
    )
    assert again.exit_code == 1
    assert "other files" in again.output
