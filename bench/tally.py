"""``referendum bench tally``: close → encrypted tally ready, and ``verify-election`` throughput.

Method (a fresh database per size on the configured PostgreSQL, dropped afterwards):

* **Close → tally ready** for each ``--sizes`` N: N voters cast one ballot each and
  ``--revote`` of them (5%) a second one, in random order. The ballot rows reuse the bodies of
  ``--pool`` distinct real yes/no ballots (generating a million real ballots takes an hour on
  two cores); each row has its own credential (the column the fold groups re-votes by) and
  hash, and the fold does the same work for every row (slice the ciphertexts, parse the
  points, add them), nothing is cached. Blocks are sealed
  by :func:`batcher.service.seal_block` (``--block`` ballots each) and folded by
  :func:`batcher.tally.fold_new_blocks` after each block, as the tally follower does while
  voting runs; the last full block is still waiting when the referendum closes. Measured: from
  the state change to ``closed`` until the final block is sealed and folded (tally ready), the
  fold time per block, and a *cold* re-fold of the whole log from an empty tally (the worst
  case: the follower was down all day). The tally is decrypted with the bench's single secret
  and checked against the counts the bench kept.
* **verify-election throughput**: ``--verify-ballots`` real, distinct ballots (every one with
  its own credential, encryption, proofs and signature; 10% re-votes) go through the real
  pipeline (stored, sealed, folded, decrypted by 2-of-3 trustees, exported) and the record is
  verified with 1 and with 2 processes. Reported: wall-clock ballots/s and ballots per
  CPU-second of the worker processes (per core), and the time N ballots would take at the
  measured rate.

Figures on a shared 2-core machine are noisy: the CPU-second rates are the stable ones.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import resource
import secrets
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import click
import orjson

from bench.common import create_bench_database, drop_bench_database, median, write_results

_COPY_CHUNK = 50_000


# --- real ballots, made in parallel ------------------------------------------------------


def _make_ballots(
    args: tuple[str, bytes, int, int, int, int],
) -> tuple[list[tuple[str, bytes, bytes, int]], list[tuple[str, bytes, bytes, int]]]:
    """Real yes/no ballots of voters ``start .. start+count``: (voter id, credential,
    canonical, yes); every ``revote_every``-th voter also casts a second ballot (second
    list)."""
    from referendum_core.ballot import BallotSpec, verify_ballot
    from referendum_core.client import make_ballot, new_voter_key

    rid, key, start, count, seed, revote_every = args
    spec = BallotSpec(rid, ("yes", "no"), 1, 1, key)
    rng = random.Random(seed)
    firsts: list[tuple[str, bytes, bytes, int]] = []
    seconds: list[tuple[str, bytes, bytes, int]] = []
    for i in range(start, start + count):
        secret, public = new_voter_key()
        voter = f"v{i:08d}"
        rounds = 2 if revote_every and i % revote_every == 0 else 1
        for r in range(rounds):
            yes = rng.randint(0, 1)
            body = make_ballot(spec, secret, [yes, 1 - yes])
            item = (voter, public, verify_ballot(spec, body).canonical, yes)
            (firsts if r == 0 else seconds).append(item)
    return firsts, seconds


def real_ballots(
    rid: str, election_key: bytes, count: int, jobs: int = 2, seed: int = 6, revote_every: int = 0
) -> tuple[list[tuple[str, bytes, bytes, int]], list[tuple[str, bytes, bytes, int]]]:
    """``count`` real ballots of distinct voters (and re-votes), made by ``jobs`` processes."""
    step = 500
    tasks = [
        (rid, election_key, s, min(step, count - s), seed + s, revote_every)
        for s in range(0, count, step)
    ]
    firsts: list[tuple[str, bytes, bytes, int]] = []
    seconds: list[tuple[str, bytes, bytes, int]] = []
    with ProcessPoolExecutor(jobs) as pool:
        for a, b in pool.map(_make_ballots, tasks):
            firsts.extend(a)
            seconds.extend(b)
    return firsts, seconds


async def _store_referendum(
    conn: Any,
    rid: str,
    key: bytes,
    policy: str,
    voters: list[tuple[str, bytes]],
    root: bytes | None,
    state: str = "open",
) -> None:
    """A 2-of-3 yes/no referendum with its roll of (voter id, credential), written in bulk (a
    million voters in seconds; each id kept as its HMAC under a key made here).

    ``state`` "open" skips the roll commitment (``root`` stands in for it); "draft" leaves the
    opening to :func:`server.referendums.transition`, which computes it.
    """
    from referendum_core.roll import VoterIdHasher

    hasher = VoterIdHasher(secrets.token_bytes(32), rid)
    now = datetime.now(UTC)
    await conn.execute(
        """INSERT INTO referendums (id, question, options, min_selections, max_selections,
               opens_at, closes_at, revote_policy, threshold_k, trustees_n, state,
               election_public_key, roll_root, roll_size)
           VALUES ($1, 'Bench?', '["yes", "no"]', 1, 1, $2, $3, $4, 2, 3, $8, $5, $6, $7)""",
        rid,
        now - timedelta(hours=1),
        now + timedelta(hours=1),
        policy,
        key,
        root,
        len(voters),
        state,
    )
    for start in range(0, len(voters), _COPY_CHUNK):
        await conn.copy_records_to_table(
            "voters",
            records=[(rid, k, hasher(v.encode())) for v, k in voters[start : start + _COPY_CHUNK]],
            columns=["referendum_id", "credential", "voter_hash"],
        )


async def _copy_ballots(conn: Any, rid: str, rows: list[tuple[bytes, bytes, bytes]]) -> None:
    """Store (credential, ballot hash, body) rows as accepted ballots, unsequenced."""
    for start in range(0, len(rows), _COPY_CHUNK):
        await conn.copy_records_to_table(
            "ballots",
            records=[(rid, c, h, b, b"{}") for c, h, b in rows[start : start + _COPY_CHUNK]],
            columns=["referendum_id", "credential", "ballot_hash", "body", "receipt"],
        )


def _bench_credential(i: int) -> bytes:
    """A distinct 32-byte stand-in credential for row voter ``i`` (never verified)."""
    return hashlib.sha256(b"bench-credential:%d" % i).digest()


def _decrypt(ct_hex: str, secret: int, bound: int) -> int:
    from referendum_core.elgamal import Ciphertext
    from referendum_core.trustee import decode

    ct = Ciphertext.from_bytes(bytes.fromhex(ct_hex))
    return decode(ct.b - ct.a * secret, bound)


# --- close → tally ready -----------------------------------------------------------------


async def _tally_run(
    admin_dsn: str,
    size: int,
    pool: list[tuple[str, bytes, bytes, int]],
    secret: int,
    key: bytes,
    revote: float,
    block: int,
    seed: int,
) -> dict[str, Any]:
    from batcher.service import LogSigner, seal_block
    from batcher.tally import fold_new_blocks
    from referendum_service.keys import load_or_create_key
    from referendum_service.store.tallies import load_tally
    from server.referendums import transition

    rid = "bench-tally"
    rng = random.Random(seed)
    dsn = await create_bench_database(admin_dsn, "tally")
    conn = await asyncpg.connect(dsn)
    try:
        voters = [(f"v{i:08d}", _bench_credential(i)) for i in range(size)]
        await _store_referendum(conn, rid, key, "last_counts", voters, bytes(32))
        sequence = list(range(size)) + rng.sample(range(size), int(size * revote))
        rng.shuffle(sequence)
        rows = []
        choice: dict[int, int] = {}
        for n, v in enumerate(sequence):
            item = pool[rng.randrange(len(pool))]
            body = item[2]
            rows.append((voters[v][1], hashlib.sha256(body + n.to_bytes(8, "big")).digest(), body))
            choice[v] = item[3]  # the later ballot of a voter overwrites: last counts
        t = time.perf_counter()
        await _copy_ballots(conn, rid, rows)
        copy_s = time.perf_counter() - t
        del rows
        signer = LogSigner(
            load_or_create_key(None, Path(tempfile.mkdtemp()), "log"), "bench.example/log"
        )
        total = len(sequence)
        fold_times: list[float] = []
        sealed = 0
        t = time.perf_counter()
        while total - sealed > block:  # voting runs: seal and fold block by block
            done = await seal_block(conn, rid, signer, max_ballots=block)
            assert done is not None
            sealed += done.ballots
            f = time.perf_counter()
            await fold_new_blocks(conn, rid)
            fold_times.append(time.perf_counter() - f)
        voting_s = time.perf_counter() - t
        # close: the last block's ballots are still waiting
        t_close = time.perf_counter()
        await transition(conn, rid, "closed", "bench", early=True, reason="benchmark")
        while True:
            done = await seal_block(conn, rid, signer, max_ballots=block, close=True)
            if done is None or done.final:
                break
        t_sealed = time.perf_counter()
        await fold_new_blocks(conn, rid)
        t_ready = time.perf_counter()
        state = await load_tally(conn, rid)
        assert state is not None and state.final
        counts = [_decrypt(c, secret, size) for c in state.to_json(("yes", "no"))["ciphertexts"]]
        expected_yes = sum(choice.values())
        correct = counts == [expected_yes, size - expected_yes]
        # cold: fold the whole log again from an empty tally
        await conn.execute("DELETE FROM supersessions WHERE referendum_id = $1", rid)
        await conn.execute("DELETE FROM tallies WHERE referendum_id = $1", rid)
        t = time.perf_counter()
        await fold_new_blocks(conn, rid)
        cold_s = time.perf_counter() - t
        cold = await load_tally(conn, rid)
        assert cold is not None
        correct = correct and cold.ciphertexts == state.ciphertexts
        fold_times.sort()
        return {
            "ballots": total,
            "copy_s": copy_s,
            "voting_seal_fold_s": voting_s,
            "close_to_sealed_s": t_sealed - t_close,
            "close_to_ready_s": t_ready - t_close,
            "fold_p50_s": fold_times[len(fold_times) // 2] if fold_times else 0.0,
            "fold_max_s": fold_times[-1] if fold_times else 0.0,
            "cold_fold_s": cold_s,
            "correct": correct,
        }
    finally:
        await conn.close()
        await drop_bench_database(admin_dsn, dsn)


# --- verify-election -----------------------------------------------------------------------


async def _verify_record(admin_dsn: str, count: int, out: Path) -> dict[str, Any]:
    """Real ballots through the real pipeline into an exported record in ``out``.

    2-of-3 trustees (Joint-Feldman with the core), ``count`` voters, every 10th re-votes;
    stored as ingestion stores them, sealed and folded block by block, closed, decrypted by
    trustees 1 and 2, published and exported.
    """
    from batcher.service import LogSigner, seal_block
    from batcher.tally import fold_new_blocks
    from referendum_service.keys import load_or_create_key
    from referendum_service.store.tallies import load_tally
    from server.decryption import accept_share, publish_result, store_trustees
    from server.record import export_record
    from server.referendums import transition
    from server.roll import roll_digest
    from trustee.ceremony import Ceremony

    rid = "bench-record"
    trustees = Ceremony.run(rid, 2, 3)
    key = trustees.election_key
    t = time.perf_counter()
    firsts, seconds = real_ballots(rid, key, count, revote_every=10)
    made_s = time.perf_counter() - t
    dsn = await create_bench_database(admin_dsn, "tally")
    conn = await asyncpg.connect(dsn)
    try:
        voters = [(v, k) for v, k, _, _ in firsts]
        await _store_referendum(conn, rid, key, "last_counts", voters, None, state="draft")
        await store_trustees(conn, rid, trustees.commitments_json(), "b")
        opened = await transition(conn, rid, "open", "bench")
        assert opened.roll_root == roll_digest([k for _, k in voters])
        rows = [(k, hashlib.sha256(c).digest(), c) for _, k, c, _ in [*firsts, *seconds]]
        await _copy_ballots(conn, rid, rows)
        signer = LogSigner(
            load_or_create_key(None, Path(tempfile.mkdtemp()), "log"), "bench.example/log"
        )
        while await seal_block(conn, rid, signer, max_ballots=10_000) is not None:
            await fold_new_blocks(conn, rid)
        await transition(conn, rid, "closed", "bench", early=True, reason="benchmark")
        await seal_block(conn, rid, signer, max_ballots=10_000, close=True)
        await fold_new_blocks(conn, rid)
        state = await load_tally(conn, rid)
        assert state is not None and state.final
        from referendum_core.elgamal import Ciphertext

        tally = [Ciphertext.from_bytes(c) for c in state.ciphertexts]
        for i in (1, 2):
            share = trustees.decrypt(i, tally).to_json()
            await accept_share(conn, rid, {"referendum": rid, **share})
        result = await publish_result(conn, rid, "bench")
        await export_record(conn, rid, out, signer.verifier_key())
    finally:
        await conn.close()
        await drop_bench_database(admin_dsn, dsn)
    last = {v: yes for v, _, _, yes in [*firsts, *seconds]}
    yes_total = sum(last.values())
    return {
        "ballots": len(rows),
        "voters": len(firsts),
        "generation_s": made_s,
        "result_correct": result["counts"] == [yes_total, len(last) - yes_total],
    }


def _bare_rate(out: Path, limit: int = 2000) -> float:
    """verify_canonical alone on one core (CPU time), over the record's first ballots."""
    from auditor.verify_election import read_roll
    from referendum_core.ballot import BallotSpec, verify_canonical
    from referendum_core.ballot_codec import credential_of

    ref = orjson.loads((out / "referendum.json").read_bytes())
    spec = BallotSpec.from_definition(ref)
    roll = frozenset(read_roll(out / "roll.csv"))
    data = (out / "ballots.bin").read_bytes()
    ballots: list[bytes] = []
    pos = 0
    while pos < len(data) and len(ballots) < limit:
        n = int.from_bytes(data[pos : pos + 4], "big")
        ballots.append(data[pos + 4 : pos + 4 + n])
        pos += 4 + n
    t = time.process_time()
    for canonical in ballots:  # the roll lookup and the verification verify-election does
        assert credential_of(canonical) in roll
        verify_canonical(spec, canonical)
    return len(ballots) / (time.process_time() - t)


def _backend_rows(out: Path, verify_info: dict[str, Any]) -> list[dict[str, Any]]:
    """verify-election with one process on the python backend (every proof alone) and the
    native one (a chunk's proofs as one batch), in turn, same record: ballots per CPU-second."""
    from referendum_core.batch import NATIVE_AVAILABLE

    if not NATIVE_AVAILABLE:
        return []
    n = verify_info["record"]["ballots"]
    per_cpu: dict[str, float] = {}
    for backend in ("python", "native"):
        _, cpu, ok, failed = _verify(out, 1, backend)
        if not ok:
            raise click.ClickException(f"verify-election ({backend}) failed: {failed}")
        per_cpu[backend] = n / cpu if cpu else 0.0
        verify_info[f"1-{backend}"] = {"worker_cpu_s": cpu}
    ratio = per_cpu["native"] / per_cpu["python"] if per_cpu["python"] else 0.0
    return [
        {
            "metric": f"verify-election, 1 process, {backend} backend",
            "value": per_cpu[backend],
            "unit": "ballots/CPU-s",
            "target": "",
            "ok": "",
        }
        for backend in ("python", "native")
    ] + [
        {
            "metric": "verify-election native / python backend, same record",
            "value": ratio,
            "unit": "ratio",
            "target": ">= 3",
            "ok": ratio >= 3,
        }
    ]


def _verify(out: Path, jobs: int, backend: str = "auto") -> tuple[float, float, bool, list[str]]:
    from auditor.verify_election import verify_election

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    report = verify_election(out, jobs=jobs, backend=backend)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall, cpu, report.ok, report.failed_checks


@click.command()
@click.option("--sizes", default="100000,1000000", help="Ballot counts, comma-separated")
@click.option("--pool", "pool_size", default=4096, help="Distinct real ballots reused by rows")
@click.option("--revote", default=0.05, help="Share of voters casting a second ballot")
@click.option("--block", default=10_000, help="Ballots per block")
@click.option("--verify-ballots", default=20_000, help="Real ballots in the verified record")
@click.option("--jobs", "jobs_list", default="1,2", help="verify-election process counts")
@click.option("--runs", default=1, help="Runs per size (median reported)")
def tally(
    sizes: str,
    pool_size: int,
    revote: float,
    block: int,
    verify_ballots: int,
    jobs_list: str,
    runs: int,
) -> None:
    """Close → encrypted tally ready, and verify-election throughput (issue 6 targets)."""
    from referendum_core.group import Point, random_scalar
    from referendum_service.db import resolve_database_url
    from referendum_service.settings import Settings

    admin_dsn = resolve_database_url(Settings.from_env())
    size_list = [int(s) for s in sizes.split(",") if s.strip()]
    secret = random_scalar()
    key = Point.base_mul(secret).to_compressed()
    t = time.perf_counter()
    pool, _ = real_ballots("bench-tally", key, pool_size)
    pool_s = time.perf_counter() - t
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    for size in size_list:
        results = [
            asyncio.run(_tally_run(admin_dsn, size, pool, secret, key, revote, block, 6 + r))
            for r in range(runs)
        ]
        details[str(size)] = results
        ready = median([r["close_to_ready_s"] for r in results])
        rows.append(
            {
                "metric": f"close -> tally ready, {size:,} voters",
                "value": ready,
                "unit": "s",
                "target": "<= 10",
                "ok": ready <= 10,
            }
        )
        rows.append(
            {
                "metric": f"  fold per block ({block:,}) p50",
                "unit": "s",
                "value": median([r["fold_p50_s"] for r in results]),
                "target": "",
                "ok": "",
            }
        )
        cold = median([r["cold_fold_s"] for r in results])
        rows.append(
            {
                "metric": f"  cold re-fold of {results[0]['ballots']:,} ballots",
                "value": cold,
                "unit": "s",
                "target": "",
                "ok": "",
            }
        )
        rows.append(
            {
                "metric": "  tally decrypts to the kept counts",
                "value": str(all(r["correct"] for r in results)),
                "unit": "",
                "target": "True",
                "ok": all(r["correct"] for r in results),
            }
        )
    verify_info: dict[str, Any] = {}
    rates: dict[int, float] = {}
    out = Path(tempfile.mkdtemp(prefix="bench-tally-record-")) / "record"
    if verify_ballots > 0:
        verify_info["record"] = asyncio.run(_verify_record(admin_dsn, verify_ballots, out))
    for jobs in [int(j) for j in jobs_list.split(",") if j.strip() and verify_ballots > 0]:
        wall, cpu, ok, failed = _verify(out, jobs)
        n = verify_info["record"]["ballots"]
        rates[jobs] = n / wall
        per_core = n / cpu if cpu else 0.0
        verify_info[str(jobs)] = {"wall_s": wall, "worker_cpu_s": cpu, "ok": ok, "failed": failed}
        rows.append(
            {
                "metric": f"verify-election, {jobs} process(es), {n:,} ballots",
                "value": rates[jobs],
                "unit": "ballots/s (wall)",
                "target": "",
                "ok": ok,
            }
        )
        rows.append(
            {
                "metric": f"  per core ({jobs} process(es))",
                "value": per_core,
                "unit": "ballots/CPU-s",
                "target": ">= 2500",
                "ok": per_core >= 2500,
            }
        )
        for size in size_list:
            rows.append(
                {
                    "metric": f"  -> {size:,} ballots at this rate",
                    "unit": "s",
                    "value": size / rates[jobs],
                    "target": "",
                    "ok": "",
                }
            )
    if verify_ballots > 0:
        rows.extend(_backend_rows(out, verify_info))
        bare = _bare_rate(out)
        verify_info["bare_verify_canonical_per_cpu_s"] = bare
        rows.append(
            {
                "metric": "bare verify_canonical, one core (reference)",
                "value": bare,
                "unit": "ballots/CPU-s",
                "target": "",
                "ok": "",
            }
        )
    if 1 in rates and 2 in rates:
        rows.append(
            {
                "metric": "verify-election scaling 2 vs 1 process",
                "unit": "x",
                "value": rates[2] / rates[1],
                "target": "> 1",
                "ok": rates[2] > rates[1],
            }
        )
    write_results(
        "tally",
        rows,
        meta={
            "sizes": size_list,
            "pool_real_ballots": pool_size,
            "pool_generation_s": pool_s,
            "revote_share": revote,
            "block_ballots": block,
            "reuse": (
                "tally rows reuse the bodies of the pool's real ballots under distinct voter "
                "ids and hashes; the fold does full work per row. verify-election runs on "
                f"{verify_ballots:,} real distinct ballots; larger sizes are extrapolated "
                "at the measured rate"
            ),
            "details": details,
            "verify": verify_info,
        },
    )
