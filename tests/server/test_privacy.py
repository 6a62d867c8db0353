"""Privacy of the roll (issue 13): voter ids are kept only as keyed hashes, looked up only by
the operator, and never appear in the database, a public response, a log line or a metric."""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import structlog
from aiohttp.test_utils import TestClient

from referendum_core import merkle
from referendum_core.ballot import BallotSpec
from referendum_core.client import make_ballot, new_voter_key
from referendum_core.credential import credential_to_did
from referendum_core.roll import VoterIdHasher, roll_leaf_hash, voter_id_key_id
from referendum_service.settings import Settings
from tests.helpers import VOTER_ID_KEY, database_snapshot, operator_headers, running_app
from tests.server.test_operator_api import DEFINITION, assert_problem, create, put_roll

Client = TestClient[Any, Any]

# What election offices use as voter ids: e-mail addresses, 13-digit resident numbers, phones.
VOTER_IDS = [
    "anna.meier@example.org",
    "8501011234567",
    "9912319876543",
    "0041.79.555.01.02",
    "b.ng@city.example",
]


def _settings(database_url: str, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "db_pool_min": 1,
        "db_pool_max": 4,
        "voter_id_key": VOTER_ID_KEY,
        "voter_rate_per_minute": 1000,
    }
    values.update(changes)
    return Settings(**values)


@pytest.fixture
def electorate() -> dict[str, tuple[bytes, bytes]]:
    """Each voter id's credential: (secret seed, public key)."""
    return {voter: new_voter_key() for voter in VOTER_IDS}


def _roll(electorate: dict[str, tuple[bytes, bytes]], did_every: int = 2) -> bytes:
    lines = ["voter_id,credential"]
    for i, (voter, (_, public)) in enumerate(electorate.items()):
        spelled = credential_to_did(public) if i % did_every == 0 else public.hex()
        lines.append(f"{voter},{spelled}")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    async with running_app(_settings(database_url), database_url) as c:
        yield c


@pytest.fixture
async def auth(database_url: str) -> dict[str, str]:
    return await operator_headers(database_url)


async def _open_now(client: Client, auth: dict[str, str], database_url: str) -> BallotSpec:
    """Move ref-1's window to now and open it; its ballot spec."""
    conn = await asyncpg.connect(database_url)
    try:
        now = datetime.now(UTC)
        await conn.execute(
            "UPDATE referendums SET opens_at = $1, closes_at = $2 WHERE id = 'ref-1'",
            now - timedelta(minutes=5),
            now + timedelta(hours=1),
        )
    finally:
        await conn.close()
    opened = await client.post("/v1/referendums/ref-1/open", headers=auth)
    assert opened.status == 200, await opened.text()
    definition = await opened.json()
    return BallotSpec.from_definition(definition)


async def test_import_is_refused_without_a_voter_id_key(database_url: str) -> None:
    """No key configured: the import is a 503 naming the setting, and nothing is stored."""
    auth = await operator_headers(database_url)
    async with running_app(_settings(database_url, voter_id_key=""), database_url) as client:
        await create(client, auth)
        before = await database_snapshot(database_url)
        roll = b"anna@example.org," + new_voter_key()[1].hex().encode() + b"\n"
        problem = await assert_problem(
            await put_roll(client, auth, roll), 503, "voter-id-key-missing"
        )
        assert "REFERENDUM_VOTER_ID_KEY" in problem["detail"]
        assert await database_snapshot(database_url) == before


async def test_a_malformed_voter_id_key_stops_the_server() -> None:
    """A key that is not 64 hex digits is a start-up error naming its variable."""
    from server.roll.voter_keys import VoterIdKeys

    with pytest.raises(ValueError, match="REFERENDUM_VOTER_ID_KEY"):
        VoterIdKeys.from_settings(Settings(voter_id_key="abcd"))
    with pytest.raises(ValueError, match="REFERENDUM_VOTER_ID_RETIRED_KEYS"):
        VoterIdKeys.from_settings(Settings(voter_id_key=VOTER_ID_KEY, voter_id_retired_keys="zz"))


async def test_the_database_keeps_no_voter_id(
    client: Client,
    auth: dict[str, str],
    database_url: str,
    electorate: dict[str, tuple[bytes, bytes]],
) -> None:
    """After an import and ballots, a dump of every table holds no imported voter id, in any
    case; the roll rows are the credentials and the keyed hashes of the ids."""
    await create(client, auth, revote_policy="last_counts")
    assert (await put_roll(client, auth, _roll(electorate))).status == 200
    spec = await _open_now(client, auth, database_url)
    for secret, _ in electorate.values():
        ballot = make_ballot(spec, secret, [1, 0])
        assert (await client.post("/v1/referendums/ref-1/ballots", json=ballot)).status == 201
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            """SELECT table_name FROM information_schema.tables
               WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"""
        )
        dump = io.StringIO()
        for row in tables:
            copied = io.BytesIO()
            query = f'SELECT * FROM "{row["table_name"]}"'  # noqa: S608 (catalog names)
            await conn.copy_from_query(query, output=copied, format="text")
            dump.write(copied.getvalue().decode("utf-8", "replace"))
        rows = await conn.fetch("SELECT credential, voter_hash FROM voters ORDER BY credential")
        key_id = await conn.fetchval("SELECT voter_key_id FROM referendums WHERE id = 'ref-1'")
    finally:
        await conn.close()
    text = dump.getvalue().lower()
    assert "ref-1" in text  # the dump did read the tables
    for voter in VOTER_IDS:
        assert voter.lower() not in text, voter
        assert voter.encode().hex() not in text, voter  # nor as bytea hex
    hasher = VoterIdHasher(bytes.fromhex(VOTER_ID_KEY), "ref-1")
    assert {(bytes(r["credential"]), bytes(r["voter_hash"])) for r in rows} == {
        (public, hasher(voter.encode())) for voter, (_, public) in electorate.items()
    }
    assert key_id == voter_id_key_id(bytes.fromhex(VOTER_ID_KEY))


async def test_operator_lookup_by_voter_id(
    client: Client,
    auth: dict[str, str],
    database_url: str,
    electorate: dict[str, tuple[bytes, bytes]],
) -> None:
    """Only the operator learns, by voter id, whether a voter is registered, their credential
    and whether it voted; anyone proves a credential's membership, never a voter id's."""
    await create(client, auth)
    voter = VOTER_IDS[1]  # a 13-digit resident number
    url = f"/v1/referendums/ref-1/voters/{voter}"
    await assert_problem(await client.get(url), 401)
    draft = await (await client.get(url, headers=auth)).json()
    assert draft == {"voter_id": voter, "registered": False}  # no roll yet
    assert (await put_roll(client, auth, _roll(electorate))).status == 200
    secret, public = electorate[voter]
    before_open = await (await client.get(url, headers=auth)).json()
    assert before_open["registered"] and before_open["roll_proof"] is None
    spec = await _open_now(client, auth, database_url)
    found = await (await client.get(url, headers=auth)).json()
    assert found["credential"] == public.hex() and found["did"] == credential_to_did(public)
    assert found["voted"] is False
    proof = found["roll_proof"]
    root = bytes.fromhex(proof["root"])
    merkle.verify_inclusion(
        roll_leaf_hash(public),
        proof["index"],
        proof["size"],
        [bytes.fromhex(h) for h in proof["proof"]],
        root,
    )
    public_proof = await client.get(f"/v1/referendums/ref-1/roll/proof/{public.hex()}")
    assert (await public_proof.json()) == proof  # the same proof, for anyone, by credential
    ballot = make_ballot(spec, secret, [0, 1])
    assert (await client.post("/v1/referendums/ref-1/ballots", json=ballot)).status == 201
    assert (await (await client.get(url, headers=auth)).json())["voted"] is True
    stranger = await (await client.get(f"{url}0", headers=auth)).json()
    assert stranger == {"voter_id": f"{voter}0", "registered": False}
    await assert_problem(
        await client.get("/v1/referendums/ref-1/voters/bad%20id", headers=auth),
        400,
        "bad-parameter",
    )
    await assert_problem(await client.get(f"/v1/referendums/ref-1/roll/proof/{voter}"), 404)


async def test_rotated_key_still_serves_the_rolls_imported_under_the_old_one(
    database_url: str, electorate: dict[str, tuple[bytes, bytes]]
) -> None:
    """After a rotation (new key current, old one retired) a roll imported under the old key
    is still looked up, and its later parts still use the old key; without the old key the
    lookup is a 409 naming the missing key."""
    auth = await operator_headers(database_url)
    voters = list(electorate.items())
    first = "".join(f"{v},{k.hex()}\n" for v, (_, k) in voters[:3]).encode()
    later = "".join(f"{v},{k.hex()}\n" for v, (_, k) in voters[3:]).encode()
    async with running_app(_settings(database_url), database_url) as client:
        await create(client, auth)
        assert (await put_roll(client, auth, first)).status == 200
    new_key = "c3" * 32
    rotated = _settings(database_url, voter_id_key=new_key, voter_id_retired_keys=VOTER_ID_KEY)
    async with running_app(rotated, database_url) as client:
        assert (await put_roll(client, auth, later)).status == 200
        for voter, (_, public) in voters:
            found = await client.get(f"/v1/referendums/ref-1/voters/{voter}", headers=auth)
            assert (await found.json())["credential"] == public.hex()
        # a repeat of an old-key voter in a new part is still caught (same key, same hash)
        again = f"{voters[0][0]},{new_voter_key()[1].hex()}\n".encode()
        await assert_problem(await put_roll(client, auth, again), 422, "bad-roll")
    forgotten = _settings(database_url, voter_id_key=new_key)
    async with running_app(forgotten, database_url) as client:
        response = await client.get(f"/v1/referendums/ref-1/voters/{voters[0][0]}", headers=auth)
        await assert_problem(response, 409, "voter-id-key-unknown")


async def test_no_voter_id_in_logs_metrics_or_public_answers(
    database_url: str,
    electorate: dict[str, tuple[bytes, bytes]],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A roll import, a refused one, ballots, and every public read of the referendum: no
    voter id in any response body or header, any log line, or the metrics."""
    auth = await operator_headers(database_url)
    caplog.set_level(logging.DEBUG)
    seen = io.StringIO()
    async with running_app(_settings(database_url), database_url) as client:

        async def read(method: str, path: str, **kwargs: Any) -> Any:
            response = await client.request(method, path, **kwargs)
            seen.write(f"{response.status} {dict(response.headers)} {await response.text()}\n")
            return response

        await create(client, auth, revote_policy="last_counts")
        bad = _roll(electorate) + f"{VOTER_IDS[0]},{'zz' * 32}\n".encode()
        await read("PUT", "/v1/referendums/ref-1/roll", data=bad,
                   headers={**auth, "Content-Type": "text/csv"})  # fmt: skip
        await read("PUT", "/v1/referendums/ref-1/roll", data=_roll(electorate),
                   headers={**auth, "Content-Type": "text/csv"})  # fmt: skip
        spec = await _open_now(client, auth, database_url)
        hashes = []
        for secret, public in electorate.values():
            ballot = make_ballot(spec, secret, [1, 0])
            response = await read("POST", "/v1/referendums/ref-1/ballots", json=ballot)
            hashes.append((await response.json())["ballot_hash"])
            await read("GET", f"/v1/referendums/ref-1/roll/proof/{credential_to_did(public)}")
        for ballot_hash in hashes:
            await read("GET", f"/v1/referendums/ref-1/ballots/{ballot_hash}")
        for path in ("", "/roll/commitment", "/log/checkpoint", "/tally", "/supersessions"):
            await read("GET", f"/v1/referendums/ref-1{path}")
        await read("GET", "/metrics")
    status_bodies = seen.getvalue()
    assert "accepted_at" not in status_bodies.split("/ballots/")[-1]
    captured = capsys.readouterr()
    everything = (status_bodies + captured.out + captured.err + caplog.text).lower()
    assert "ref-1" in everything
    for voter in VOTER_IDS:
        assert voter.lower() not in everything, voter


def test_settings_never_print_the_key() -> None:
    """The settings' repr (what a crash or a debug line would show) leaves the keys out."""
    settings = dataclasses.replace(
        Settings(), voter_id_key=VOTER_ID_KEY, voter_id_retired_keys="c3" * 32
    )
    assert VOTER_ID_KEY not in repr(settings) and "c3" * 32 not in repr(settings)
    assert structlog is not None and DEFINITION["id"] == "ref-1"
