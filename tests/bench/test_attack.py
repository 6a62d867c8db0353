"""The attackers of ``referendum bench ingest``'s under-attack rows, at toy sizes, in-process."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest

from bench.attack import AttackProcess, AttackReport, CostlyAttacker, SlowBodyAttacker
from bench.attack_ballots import attack_spec, costly_invalid_ballots, create_attack_referendum
from bench.ingest.attack_rows import ATTACK_CASES, _attack_rows, _Attacked, _AttackPlan
from bench.ingest.runs import SOCKET_ERROR, TIMED_OUT, Run, _open_loop
from referendum_core.ballot import BallotSpec, verify_ballot
from referendum_core.client import new_voter_key
from referendum_core.errors import ProofError
from referendum_core.group import Point
from referendum_core.proofs import BRANCH_BYTES
from tests.helpers import running_app
from tests.ingest import count_ballots, create_referendum, ingest_settings, wait_until

KEY = Point.base_mul(0xA77AC).to_compressed()
# what an attacker may be answered: statuses, and endings without an answer
ENDINGS = {"closed", "reset", "error", "refused", "open", "unanswered"}


def _small_spec(referendum_id: str = "attack-small") -> BallotSpec:
    return attack_spec(KEY, options=4, referendum_id=referendum_id)


async def _attack_referendum(dsn: str, spec: BallotSpec) -> list[tuple[str, bytes]]:
    """Open ``spec``'s referendum with two voters; their (id, secret) pairs."""
    keys = [("mallory", new_voter_key()), ("trudy", new_voter_key())]
    conn = await asyncpg.connect(dsn)
    lines_conn = await asyncpg.connect(dsn)
    try:
        roll = [(voter, public) for voter, (_, public) in keys]
        await create_attack_referendum(conn, lines_conn, spec, roll, now=datetime.now(UTC))
    finally:
        await lines_conn.close()
        await conn.close()
    return [(voter, secret) for voter, (secret, _) in keys]


def test_costly_ballots_pass_the_signature_and_fail_only_the_sum_proof() -> None:
    """Every body is distinct, verifies up to the sum proof, and fails there."""
    spec = _small_spec()
    voters = [("mallory", new_voter_key()), ("trudy", new_voter_key())]
    bodies = costly_invalid_ballots(spec, [(v, secret) for v, (secret, _) in voters])
    mallory, trudy = (public.hex() for _, (_, public) in voters)
    assert len(bodies) == len(set(bodies)) == 2 * 4 * 3  # 4 bases a voter, 3 variants each
    owners = [orjson.loads(body)["credential"] for body in bodies]
    assert owners[:4] == [mallory, trudy, mallory, trudy]  # interleaved
    for body in bodies:
        parsed = orjson.loads(body)
        assert (
            len(parsed["ciphertexts"]) == 4
            and len(bytes.fromhex(parsed["sum_proof"])) == 4 * BRANCH_BYTES
        )
        with pytest.raises(ProofError) as failed:
            verify_ballot(spec, parsed)
        assert failed.value.check == "sum_proof"


def test_costly_ballots_need_a_sum_proof_to_swap() -> None:
    """A referendum whose ballots carry no sum proof cannot give costly invalid ballots."""
    yes_no = BallotSpec("attack-yes-no", ("yes", "no"), 1, 1, KEY)
    with pytest.raises(ValueError, match="no sum proof"):
        costly_invalid_ballots(yes_no, [("mallory", new_voter_key()[0])])


async def test_costly_attacker_gets_only_4xx_and_stores_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """Costly invalid ballots on two connections are each answered 4xx; none is stored."""
    spec = _small_spec()
    voters = await _attack_referendum(database_url, spec)
    bodies = costly_invalid_ballots(spec, voters, bases_per_voter=2)
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        attacker = CostlyAttacker(
            client.server.host,
            client.server.port,
            f"/v1/referendums/{spec.referendum_id}/ballots",
            bodies,
            connections=2,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(attacker.run(stop, max_seconds=120))
        await wait_until(lambda: attacker.answered >= 12, 60, "twelve answers")
        stop.set()
        report = await task
    statuses = {k: v for k, v in report.outcomes.items() if k not in ENDINGS}
    assert set(report.outcomes) - set(statuses) <= {"unanswered"}  # nothing failed
    assert statuses and all(400 <= int(status) < 500 for status in statuses)
    assert sum(statuses.values()) == attacker.answered >= 12
    assert report.requests == attacker.answered + report.outcomes["unanswered"]
    assert report.kind == "costly" and report.connections == 2
    assert await count_ballots(database_url) == 0


async def test_slow_bodies_hold_their_connections_and_are_all_accounted_for(
    database_url: str, tmp_path: Path
) -> None:
    """Every slow connection opened ends exactly once: an answer (never 5xx), a close or open."""
    electorate = await create_referendum(database_url, "ref-slow")
    body = orjson.dumps(electorate.ballot("v0"))
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        attacker = SlowBodyAttacker(
            client.server.host,
            client.server.port,
            electorate.path,
            body,
            connections=3,
            interval_s=0.05,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(attacker.run(stop, max_seconds=120))
        await wait_until(lambda: attacker.ready, 30, "three slow bodies held at once")
        stop.set()
        report = await task
    assert report.kind == "slow-body" and report.connections == 3
    assert report.requests == attacker.opened >= 3
    assert sum(n for k, n in report.outcomes.items() if k != "refused") == report.requests
    statuses = [k for k in report.outcomes if k not in ENDINGS]
    assert all(400 <= int(status) < 500 for status in statuses)
    assert await count_ballots(database_url) == 0  # no body was ever finished


async def test_attack_process_reports_from_its_own_process(
    database_url: str, tmp_path: Path
) -> None:
    """An attacker in a child process is up on entry and reports on exit, with its CPU."""
    electorate = await create_referendum(database_url, "ref-slow-process")
    body = orjson.dumps(electorate.ballot("v0"))
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        attacker = SlowBodyAttacker(
            client.server.host, client.server.port, electorate.path, body, connections=2
        )

        def up_then_down() -> AttackReport | None:
            process = AttackProcess(attacker, max_seconds=120)
            with process:
                pass
            return process.report

        # the app serves on this loop: the blocking start and stop wait in a thread
        report = await asyncio.to_thread(up_then_down)
    assert report is not None
    assert report.kind == "slow-body" and report.requests >= 2
    assert sum(n for k, n in report.outcomes.items() if k != "refused") == report.requests
    assert report.cpu >= 0.0 and report.seconds > 0


async def test_paced_run_counts_a_refused_connection_instead_of_failing() -> None:
    """The honest pacer counts socket errors (status 0) rather than dying on the first."""
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    accepted, _, latencies, others = await _open_loop(
        f"http://127.0.0.1:{port}/v1/referendums/r/ballots", [b"{}"] * 3, rate=1000.0
    )
    assert (accepted, latencies, others) == (0, [], {SOCKET_ERROR: 3})


def _run(p99_ms: float, others: dict[int, int] | None = None) -> Run:
    latencies = [p99_ms / 2] * 98 + [p99_ms] * 2
    return Run(len(latencies), 1.0, latencies, others or {}, 0.5, 0.1)


def test_attack_rows_hold_p99_to_twice_quiet_and_refuse_any_honest_failure() -> None:
    """A row is ok only with p99 at most 2x the quiet run's and no non-201 honest answer."""
    plan = _AttackPlan(
        seconds=1.0, rate=100.0, voters=1, slow_admission_limit=16, port=1, concurrency=8
    )
    report = AttackReport("costly", 4, 1.0, 50, {"400": 50})
    case = ATTACK_CASES[0]
    attacked = [
        _Attacked(case, "server defaults", _run(10.0), _run(19.0), report),
        _Attacked(case, "server defaults", _run(10.0), _run(25.0), report),
        _Attacked(case, "server defaults", _run(10.0), _run(11.0, {503: 1}), report),
    ]
    rows = _attack_rows(plan, attacked)
    during = rows[1::2]
    assert [row["ok"] for row in during] == [True, False, False]
    assert [row["honest_503"] for row in during] == [0, 0, 1]
    assert during[0]["value"] == 1.9 and during[0]["attacker"] == "400×50"
    assert all(row["ok"] == "" and row["unit"] == "ballots/s" for row in rows[0::2])


async def test_paced_run_gives_up_on_a_server_that_never_answers() -> None:
    """A paced request unanswered past its timeout is counted as timed out, not waited for."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        accepted, _, latencies, others = await _open_loop(
            f"http://127.0.0.1:{port}/v1/referendums/r/ballots",
            [b"{}"] * 2,
            rate=100.0,
            timeout_s=0.2,
        )
    finally:
        server.close()
        await server.wait_closed()
    assert (accepted, latencies, others) == (0, [], {TIMED_OUT: 2})
