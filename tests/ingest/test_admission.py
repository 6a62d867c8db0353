"""Cost-aware admission: replays answered first, failed proofs charged, one limit for all
processes, places weighted by proof work, and the voting window."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from referendum_core.ballot import BallotSpec
from referendum_core.group import Point
from server.ingest import verification_cost
from server.ingest.verifier import BallotVerifier, CheckedBallot, ParsedBallot
from server.state import BALLOT_BOX_KEY
from tests.helpers import running_app
from tests.ingest import (
    Electorate,
    count_ballots,
    create_referendum,
    ingest_settings,
    resign,
    roll_locked,
    wait_until,
)

PROBLEM = "application/problem+json"
DEADLINE_S = 20.0


def _slug(problem: dict[str, Any]) -> str:
    return str(problem["type"]).rsplit("/", 1)[-1]


def _flip(hex_text: str, byte: int) -> str:
    raw = bytearray(bytes.fromhex(hex_text))
    raw[byte] ^= 0x01
    return raw.hex()


def _signed_bad_proof(e: Electorate, voter: str) -> dict[str, Any]:
    body = e.ballot(voter)
    return resign({**body, "proofs": [_flip(body["proofs"][0], 100)]}, e.secrets[voter])


def _signed_bad_sum_proof(e: Electorate, voter: str) -> dict[str, Any]:
    body = e.ballot(voter)
    return resign({**body, "sum_proof": _flip(body["sum_proof"], 100)}, e.secrets[voter])


async def _execute(dsn: str, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


def test_verification_cost_counts_proof_branches() -> None:
    """A yes/no ballot costs 1; 4 options with no sum proof 4; 64 options of 1..64, 96."""
    key = Point.base_mul(7).to_compressed()

    def spec(k: int, lo: int, hi: int) -> BallotSpec:
        return BallotSpec("r", tuple(f"o{i}" for i in range(k)), lo, hi, key)

    assert verification_cost(spec(2, 1, 1)) == 1
    assert verification_cost(spec(4, 0, 4)) == 4
    assert verification_cost(spec(6, 1, 6)) == 9
    assert verification_cost(spec(64, 1, 64)) == 96


async def test_replays_take_no_token_and_no_proof_check(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replaying a stored ballot far past the rate answers 200 unverified; the re-vote is 201."""
    electorate = await create_referendum(database_url, "ref-replay", policy="last_counts")
    settings = ingest_settings(tmp_path, voter_rate_per_minute=3)
    async with running_app(settings, database_url) as client:
        assert client.app is not None
        checks: list[ParsedBallot] = []
        original = BallotVerifier.check
        verifier = client.app[BALLOT_BOX_KEY].verifier

        async def counted(spec: BallotSpec, parsed: ParsedBallot) -> CheckedBallot:
            checks.append(parsed)
            return await original(verifier, spec, parsed)

        monkeypatch.setattr(verifier, "check", counted)
        public = electorate.ballot("v0")
        first = await client.post(electorate.path, json=public)
        assert first.status == 201
        receipt = await first.read()
        replays = [await client.post(electorate.path, json=public) for _ in range(12)]
        assert [r.status for r in replays] == [200] * 12
        assert all([await r.read() == receipt for r in replays])
        assert len(checks) == 1  # only the first submission was verified
        revote = await client.post(electorate.path, json=electorate.ballot("v0", yes=False))
        assert revote.status == 201
    assert await count_ballots(database_url) == 2


async def test_replay_after_close_still_gets_its_receipt(database_url: str, tmp_path: Path) -> None:
    """A stored ballot resubmitted after the close gets its receipt (200), a new one 409."""
    electorate = await create_referendum(database_url, "ref-late", policy="last_counts")
    settings = ingest_settings(tmp_path, spec_cache_ms=0)
    async with running_app(settings, database_url) as client:
        body = electorate.ballot("v0")
        first = await client.post(electorate.path, json=body)
        assert first.status == 201
        await _execute(database_url, "UPDATE referendums SET state = 'closed'")
        again = await client.post(electorate.path, json=body)
        assert again.status == 200 and await again.read() == await first.read()
        new = await client.post(electorate.path, json=electorate.ballot("v0"))
        assert new.status == 409
        assert _slug(await new.json(content_type=None)) == "referendum-not-open"
    assert await count_ballots(database_url) == 1


async def test_signed_ballot_failing_its_proof_costs_a_token(
    database_url: str, tmp_path: Path
) -> None:
    """A ballot the voter signed whose proof fails spends a token; a forged signature does not."""
    electorate = await create_referendum(database_url, "ref-charge", policy="last_counts")
    settings = ingest_settings(tmp_path, voter_rate_per_minute=3)
    unsigned = {**electorate.ballot("v0"), "signature": _flip("00" * 64, 5)}
    signed_bad = _signed_bad_proof(electorate, "v0")
    valid = [electorate.ballot("v0") for _ in range(3)]
    async with running_app(settings, database_url) as client:
        for _ in range(4):
            refused = await client.post(electorate.path, json=unsigned)
            assert (await refused.json(content_type=None))["check"] == "signature"
        bad = await client.post(electorate.path, json=signed_bad)
        problem = await bad.json(content_type=None)
        assert (bad.status, problem["check"]) == (400, "option[0].proof")
        statuses = [(await client.post(electorate.path, json=b)).status for b in valid]
        assert statuses == [201, 201, 429]
    assert await count_ballots(database_url) == 2


async def test_costly_failed_ballot_costs_its_verification_cost(
    database_url: str, tmp_path: Path
) -> None:
    """A signed 6-option ballot with a wrong sum proof costs 9 tokens of 10, not 1."""
    electorate = await create_referendum(
        database_url,
        "ref-costly",
        policy="last_counts",
        options=tuple(f"o{i}" for i in range(6)),
        selections=(1, 6),
    )
    assert verification_cost(electorate.spec) == 9
    settings = ingest_settings(tmp_path, voter_rate_per_minute=10)
    signed_bad = _signed_bad_sum_proof(electorate, "v0")
    valid = [electorate.ballot("v0") for _ in range(2)]
    async with running_app(settings, database_url) as client:
        bad = await client.post(electorate.path, json=signed_bad)
        problem = await bad.json(content_type=None)
        assert (bad.status, problem["check"]) == (400, "sum_proof")
        first = await client.post(electorate.path, json=valid[0])
        assert first.status == 201
        limited = await client.post(electorate.path, json=valid[1])
        assert limited.status == 429 and limited.content_type == PROBLEM
        # nine tokens at 10 a minute come back in 54 s: the answer says when the next does
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        other = await client.post(electorate.path, json=electorate.ballot("v1"))
        assert other.status == 201
    assert await count_ballots(database_url) == 2


async def test_limit_is_shared_by_two_server_processes(database_url: str, tmp_path: Path) -> None:
    """Two servers on one database together admit exactly the per-voter limit, not twice it."""
    electorate = await create_referendum(database_url, "ref-shared", policy="last_counts")
    settings = ingest_settings(tmp_path, voter_rate_per_minute=4)
    bodies = [orjson.dumps(electorate.ballot("v0", yes=i % 2 == 0)) for i in range(10)]
    async with (
        running_app(settings, database_url) as first,
        running_app(settings, database_url) as second,
    ):
        clients = [first, second]

        async def post(i: int) -> int:
            response = await clients[i % 2].post(
                electorate.path, data=bodies[i], headers={"Content-Type": "application/json"}
            )
            await response.read()
            return response.status

        statuses = await asyncio.gather(*(post(i) for i in range(len(bodies))))
        assert sorted(statuses) == [201] * 4 + [429] * 6, statuses
        # afterwards, on either server: a stored one is replayed (200), a refused one still
        # finds no token, and another voter is unaffected
        assert await post(statuses.index(201)) == 200
        assert await post(statuses.index(429)) == 429
        assert (await second.post(electorate.path, json=electorate.ballot("v1"))).status == 201
    assert await count_ballots(database_url) == 5


async def test_costly_ballots_hold_places_by_their_cost(database_url: str, tmp_path: Path) -> None:
    """Two ballots costing 4 each fill 8 admission places: a yes/no ballot then gets 503."""
    costly = await create_referendum(
        database_url, "ref-heavy", options=("a", "b", "c", "d"), selections=(0, 4)
    )
    assert verification_cost(costly.spec) == 4
    light = await create_referendum(database_url, "ref-light")
    settings = ingest_settings(tmp_path, admission_limit=8)
    async with running_app(settings, database_url) as client, roll_locked(database_url) as tx:
        assert client.app is not None
        box = client.app[BALLOT_BOX_KEY]
        held = [
            asyncio.create_task(client.post(costly.path, json=costly.ballot(v)))
            for v in ("v0", "v1")
        ]
        await wait_until(lambda: box.in_flight >= 8, DEADLINE_S, "8 places taken")
        refused = await client.post(light.path, json=light.ballot("v0"))
        assert refused.status == 503 and refused.content_type == PROBLEM
        assert _slug(await refused.json(content_type=None)) == "queue-full"
        await tx.commit()
        answered = await asyncio.gather(*held)
        assert [r.status for r in answered] == [201, 201]
        assert box.in_flight == 0
    assert await count_ballots(database_url) == 2


@pytest.mark.parametrize(
    ("opens_in_h", "closes_in_h"), [(1, 2), (-2, -1)], ids=["before opens_at", "after closes_at"]
)
async def test_ballot_outside_voting_window_is_refused(
    opens_in_h: int, closes_in_h: int, database_url: str, tmp_path: Path
) -> None:
    """An open referendum refuses ballots before opens_at and after closes_at: 409, none stored."""
    electorate = await create_referendum(database_url, "ref-window")
    await _execute(
        database_url,
        """UPDATE referendums SET opens_at = now() + make_interval(hours => $1),
                                  closes_at = now() + make_interval(hours => $2)""",
        opens_in_h,
        closes_in_h,
    )
    async with running_app(ingest_settings(tmp_path), database_url) as client:
        response = await client.post(electorate.path, json=electorate.ballot("v0"))
        problem = await response.json(content_type=None)
        assert (response.status, _slug(problem)) == (409, "outside-voting-window")
        assert response.content_type == PROBLEM
    assert await count_ballots(database_url) == 0


async def test_window_end_is_enforced_by_the_insert(database_url: str, tmp_path: Path) -> None:
    """With the window cached as open, the insert still refuses a ballot after closes_at."""
    electorate = await create_referendum(database_url, "ref-ending", policy="last_counts")
    settings = ingest_settings(tmp_path, spec_cache_ms=3_600_000)
    async with running_app(settings, database_url) as client:
        body = electorate.ballot("v0")
        assert (await client.post(electorate.path, json=body)).status == 201
        await _execute(database_url, "UPDATE referendums SET closes_at = now()")
        late = await client.post(electorate.path, json=electorate.ballot("v1"))
        problem = await late.json(content_type=None)
        assert (late.status, _slug(problem)) == (409, "outside-voting-window")
        # the one stored in time is still answered with its receipt
        assert (await client.post(electorate.path, json=body)).status == 200
    assert await count_ballots(database_url) == 1


async def test_concurrent_submissions_share_one_admission_statement(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """16 submissions at once, with both statement slots held, go in 3 statements, not 16."""
    import server.ingest.rate_limit

    electorate = await create_referendum(database_url, "ref-batch", voters=16)
    bodies = [electorate.ballot(f"v{i}") for i in range(16)]
    sizes: list[int] = []
    admit = server.ingest.rate_limit.admit_ballots

    async def counted(conn: Any, requests: Any, **kwargs: Any) -> Any:
        sizes.append(len(requests))
        return await admit(conn, requests, **kwargs)

    monkeypatch.setattr(server.ingest.rate_limit, "admit_ballots", counted)
    blocker = await asyncpg.connect(database_url)
    try:
        async with running_app(ingest_settings(tmp_path), database_url) as client:
            assert client.app is not None
            box = client.app[BALLOT_BOX_KEY]
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE voters IN ACCESS EXCLUSIVE MODE")
            first = [asyncio.create_task(client.post(electorate.path, json=b)) for b in bodies[:2]]
            await wait_until(lambda: len(sizes) == 2, DEADLINE_S, "two statements waiting")
            rest = [asyncio.create_task(client.post(electorate.path, json=b)) for b in bodies[2:]]
            await wait_until(lambda: box.rate.waiting == 14, DEADLINE_S, "14 waiting")
            await tx.commit()
            answered = await asyncio.gather(*first, *rest)
            assert [r.status for r in answered] == [201] * 16
    finally:
        await blocker.close()
    assert sorted(sizes) == [1, 1, 14]
    assert await count_ballots(database_url) == 16


async def test_refusal_of_an_owing_credential_is_delayed(database_url: str, tmp_path: Path) -> None:
    """A credential below zero (it signed a failing costly ballot) gets its 429 held for the
    penalty delay; the delay holds no admission place."""
    electorate = await create_referendum(
        database_url,
        "ref-penalty",
        policy="last_counts",
        options=tuple(f"o{i}" for i in range(6)),
        selections=(1, 6),
    )
    settings = ingest_settings(tmp_path, voter_rate_per_minute=3, penalty_delay_ms=400)
    loop = asyncio.get_running_loop()
    async with running_app(settings, database_url) as client:
        assert client.app is not None
        box = client.app[BALLOT_BOX_KEY]
        bad = await client.post(electorate.path, json=_signed_bad_sum_proof(electorate, "v0"))
        assert bad.status == 400  # 9 tokens charged of 3: the bucket is at -6
        started = loop.time()
        pending = asyncio.create_task(client.post(electorate.path, json=electorate.ballot("v0")))
        while not pending.done():
            assert box.in_flight == 0 or loop.time() - started < 0.2, "the delay holds a place"
            await asyncio.sleep(0.02)  # sampling the place count, not synchronising
        limited = pending.result()
        assert limited.status == 429 and limited.content_type == PROBLEM
        assert loop.time() - started >= 0.4
        other = await client.post(electorate.path, json=electorate.ballot("v1"))
        assert other.status == 201


async def test_only_an_owing_credential_is_delayed() -> None:
    """An honest voter over the limit (bucket at zero or above) is refused at once; one below
    zero waits at most the penalty delay, and never longer than its Retry-After."""
    from referendum_service.store.ballots import Admission
    from server.ingest.rate_limit import VoterRateLimit

    limit = VoterRateLimit(None, 10, penalty_delay_s=1.5)  # type: ignore[arg-type]
    key = bytes(32)
    assert limit.refused(Admission(None, key, False, 0.4)).delay_s == 0
    assert limit.refused(Admission(None, key, False, -5.0)).delay_s == 1.5
    short = VoterRateLimit(None, 600, penalty_delay_s=5.0)  # type: ignore[arg-type]
    owing = short.refused(Admission(None, key, False, -0.5))
    assert owing.delay_s == min(5.0, float(owing.retry_after or 0)) == 1.0
