"""The operator API over HTTP: referendums, lifecycle, status, auth, errors as problem+json."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

import asyncpg
import coincurve
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nacl.bindings import crypto_sign_seed_keypair

from referendum_core.errors import ProofError
from referendum_service.settings import Settings
from server.app import make_app
from server.state import POOL_KEY
from tests.helpers import VOTER_ID_KEY, database_snapshot, operator_headers, running_app
from tests.server.raw_http import raw_request

Client = TestClient[web.Request, web.Application]

ELECTION_KEY = coincurve.PrivateKey(b"\x01" * 32).public_key.format(compressed=True).hex()

DEFINITION: dict[str, Any] = {
    "id": "ref-1",
    "question": "Should the bridge be rebuilt?",
    "options": ["yes", "no"],
    "min_selections": 1,
    "max_selections": 1,
    "opens_at": "2030-01-01T08:00:00Z",
    "closes_at": "2030-01-01T20:00:00Z",
    "revote_policy": "last_counts",
    "threshold_k": 2,
    "trustees_n": 3,
    "election_public_key": ELECTION_KEY,
}


def settings_for(database_url: str) -> Settings:
    """Small limits so the oversized-body tests stay small."""
    return Settings(
        database_url=database_url,
        max_body_bytes=4096,
        max_roll_bytes=256 * 1024,
        roll_check_threads=2,
        db_pool_min=1,
        db_pool_max=4,
        voter_id_key=VOTER_ID_KEY,
    )


@lru_cache(maxsize=4096)
def voter_key(i: int) -> bytes:
    """A real Ed25519 public key, derived from a fixed seed."""
    return bytes(crypto_sign_seed_keypair(i.to_bytes(32, "big"))[0])


def roll_csv(ids: range, header: bool = True) -> bytes:
    lines = ["voter_id,credential"] if header else []
    lines += [f"voter-{i:05d},{voter_key(i).hex()}" for i in ids]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    async with running_app(settings_for(database_url), database_url) as c:
        yield c


@pytest.fixture
async def auth(database_url: str) -> dict[str, str]:
    return await operator_headers(database_url)


async def assert_problem(
    response: Any, status: int, slug: str | None = None, field: str | None = None
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status (and slug, field)."""
    assert response.status == status, await response.text()
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["status"] == status
    assert body["type"].startswith("https://referendum.example/problems/")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if slug is not None:
        assert body["type"].endswith("/" + slug), body
    if field is not None:
        assert body["field"] == field, body
    return body


async def create(client: Client, auth: dict[str, str], **changes: Any) -> dict[str, Any]:
    body = {**DEFINITION, **changes}
    response = await client.post("/v1/referendums", json=body, headers=auth)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def put_roll(
    client: Client, auth: dict[str, str], data: bytes, rid: str = "ref-1", kind: str = "text/csv"
) -> Any:
    return await client.put(
        f"/v1/referendums/{rid}/roll", data=data, headers={**auth, "Content-Type": kind}
    )


async def test_create_and_read_referendum(client: Client, auth: dict[str, str]) -> None:
    """A created referendum is a draft, readable without a key, and its creation is audited."""
    created = await create(client, auth)
    assert created["state"] == "draft" and created["roll_root"] is None
    response = await client.get("/v1/referendums/ref-1")
    assert response.status == 200
    public = await response.json()
    for name, value in DEFINITION.items():
        if name in ("opens_at", "closes_at"):
            continue
        assert public[name] == value
    assert public["opens_at"].startswith("2030-01-01T08:00:00")


async def test_audit_log_records_actor_and_action(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """Every state-changing action appends (who, what, which referendum) to the audit log."""
    await create(client, auth)
    await put_roll(client, auth, roll_csv(range(3)))
    await client.post("/v1/referendums/ref-1/open", headers=auth)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT actor, action, referendum_id FROM audit_log ORDER BY id")
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        ("test-operator", "referendum.create", "ref-1"),
        ("test-operator", "roll.import", "ref-1"),
        ("test-operator", "referendum.open", "ref-1"),
    ]


async def test_audit_log_refuses_update_and_delete(database_url: str) -> None:
    """The audit log is append-only: the database refuses UPDATE, DELETE and TRUNCATE."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("INSERT INTO audit_log (actor, action) VALUES ('a', 'b')")
        for statement in (
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
                await conn.execute(statement)
        assert await conn.fetchval("SELECT actor FROM audit_log") == "a"
    finally:
        await conn.close()


async def test_malformed_json_is_refused(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """Malformed JSON and a non-object body are 400 problems and change nothing."""
    before = await database_snapshot(database_url)
    for raw in (b"{not json", b"[1, 2]", b""):
        response = await client.post(
            "/v1/referendums", data=raw, headers={**auth, "Content-Type": "application/json"}
        )
        await assert_problem(response, 400, "malformed-json")
    assert await database_snapshot(database_url) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 5),
        ("question", ["q"]),
        ("options", "yes,no"),
        ("options", ["yes", 2]),
        ("min_selections", True),
        ("max_selections", 1.5),
        ("opens_at", 1700000000),
        ("revote_policy", None),
        ("threshold_k", "2"),
        ("trustees_n", {}),
        ("election_public_key", 7),
    ],
)
async def test_wrong_types_are_refused(
    client: Client, auth: dict[str, str], database_url: str, field: str, value: Any
) -> None:
    """A field of the wrong JSON type is a 400 problem naming the field; nothing is stored."""
    before = await database_snapshot(database_url)
    body = {**DEFINITION, field: value}
    response = await client.post("/v1/referendums", json=body, headers=auth)
    await assert_problem(response, 400, "wrong-type", field)
    assert await database_snapshot(database_url) == before


async def test_unknown_and_missing_fields_are_refused(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """An unknown field or a missing required field is a 400 problem naming it."""
    before = await database_snapshot(database_url)
    response = await client.post(
        "/v1/referendums", json={**DEFINITION, "colour": "red"}, headers=auth
    )
    await assert_problem(response, 400, "unknown-field", "colour")
    missing = copy.deepcopy(DEFINITION)
    del missing["question"]
    response = await client.post("/v1/referendums", json=missing, headers=auth)
    await assert_problem(response, 400, "missing-field", "question")
    assert await database_snapshot(database_url) == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "Ref_1"),
        ("id", "x" * 65),
        ("question", ""),
        ("options", ["only"]),
        ("options", ["yes", "yes"]),
        ("options", [str(i) for i in range(65)]),
        ("min_selections", 3),
        ("max_selections", 0),
        ("max_selections", 3),
        ("opens_at", "tomorrow"),
        ("opens_at", "2030-01-01T08:00:00"),
        ("closes_at", "2030-01-01T07:00:00Z"),
        ("revote_policy", "sometimes"),
        ("threshold_k", 4),
        ("threshold_k", 0),
        ("trustees_n", 0),
        ("election_public_key", "04" + "11" * 32),
        ("election_public_key", "02" + "ff" * 32),
        ("election_public_key", "zz" * 33),
    ],
)
async def test_bad_values_are_refused(
    client: Client, auth: dict[str, str], database_url: str, field: str, value: Any
) -> None:
    """A well-typed value out of range is a 422 problem naming the field; nothing is stored."""
    before = await database_snapshot(database_url)
    response = await client.post("/v1/referendums", json={**DEFINITION, field: value}, headers=auth)
    await assert_problem(response, 422, "invalid-value", field)
    assert await database_snapshot(database_url) == before


async def test_oversized_and_mistyped_bodies_are_refused(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """A JSON body over max_body_bytes is 413 and a non-JSON Content-Type 415."""
    before = await database_snapshot(database_url)
    big = {**DEFINITION, "question": "q" * 5000}
    response = await client.post("/v1/referendums", json=big, headers=auth)
    await assert_problem(response, 413, "payload-too-large")

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        yield b'{"question": "'
        for _ in range(10):
            yield b"q" * 1000
        yield b'"}'

    response = await client.post(
        "/v1/referendums", data=stream(), headers={**auth, "Content-Type": "application/json"}
    )
    await assert_problem(response, 413, "payload-too-large")
    response = await client.post("/v1/referendums", data=b"id=1", headers=auth)
    await assert_problem(response, 415, "unsupported-media-type")
    assert await database_snapshot(database_url) == before


async def test_missing_or_wrong_api_key_is_refused(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """Every operator action needs a valid bearer key: 401 problem otherwise, nothing changed."""
    await create(client, auth)
    before = await database_snapshot(database_url)
    wrong = [
        {},
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": auth["Authorization"] + "x"},
    ]
    for headers in wrong:
        response = await client.post(
            "/v1/referendums", json={**DEFINITION, "id": "r2"}, headers=headers
        )
        body = await assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        token = headers.get("Authorization", "").partition(" ")[2]
        assert not token or token not in str(body)  # the key is never echoed
        for method, path in [
            ("PUT", "/v1/referendums/ref-1/roll"),
            ("POST", "/v1/referendums/ref-1/open"),
            ("GET", "/v1/referendums/ref-1/status"),
            ("PUT", "/v1/referendums/ref-1/election-key"),
        ]:
            response = await client.request(method, path, headers=headers, data=b"")
            await assert_problem(response, 401)
    assert await database_snapshot(database_url) == before


async def test_revoked_key_is_refused(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """A revoked key no longer authenticates."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE api_keys SET revoked_at = now()")
    finally:
        await conn.close()
    response = await client.post("/v1/referendums", json=DEFINITION, headers=auth)
    await assert_problem(response, 401)


async def test_duplicate_referendum_id_conflicts(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """Creating a referendum with a taken id is 409 and leaves the first one untouched."""
    await create(client, auth)
    before = await database_snapshot(database_url)
    response = await client.post(
        "/v1/referendums", json={**DEFINITION, "question": "other?"}, headers=auth
    )
    await assert_problem(response, 409)
    assert await database_snapshot(database_url) == before


EARLY_CLOSE = {"early": True, "reason": "test"}
"""DEFINITION closes in 2030: every close in these tests is early, and says so."""


async def step(client: Client, auth: dict[str, str], action: str) -> Any:
    """POST a lifecycle action (a close with its early-close body)."""
    body = EARLY_CLOSE if action == "close" else None
    return await client.post(f"/v1/referendums/ref-1/{action}", json=body, headers=auth)


async def test_lifecycle_opens_and_closes(client: Client, auth: dict[str, str]) -> None:
    """draft -> open -> closed, each step answered with the new state (tally and publish,
    which need a sealed log and trustees, are in tests/server/test_lifecycle.py)."""
    await create(client, auth)
    assert (await put_roll(client, auth, roll_csv(range(10)))).status == 200
    for action, state in [("open", "open"), ("close", "closed")]:
        response = await step(client, auth, action)
        assert response.status == 200, await response.text()
        assert (await response.json())["state"] == state


@pytest.mark.parametrize(
    ("steps", "illegal"),
    [
        ([], "close"),
        ([], "tally"),
        ([], "publish"),
        (["open"], "open"),
        (["open"], "tally"),
        (["open", "close"], "open"),
        (["open", "close"], "close"),
        (["open", "close"], "publish"),
    ],
)
async def test_illegal_transitions_conflict(
    client: Client, auth: dict[str, str], database_url: str, steps: list[str], illegal: str
) -> None:
    """A step that is not the one legal next step is a 409 problem; the state stays put."""
    await create(client, auth)
    await put_roll(client, auth, roll_csv(range(4)))
    for action in steps:
        assert (await step(client, auth, action)).status == 200
    before = await database_snapshot(database_url)
    response = await step(client, auth, illegal)
    body = await assert_problem(response, 409, "illegal-transition")
    assert body["state"] == before["referendum_rows"][0][1]  # type: ignore[index]
    assert await database_snapshot(database_url) == before


async def test_open_needs_key_and_roll(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """Opening without an election key or without voters is 409; setting the key then works."""
    await create(client, auth, election_public_key=None)
    before = await database_snapshot(database_url)
    await assert_problem(
        await client.post("/v1/referendums/ref-1/open", headers=auth), 409, "no-key"
    )
    response = await client.put(
        "/v1/referendums/ref-1/election-key",
        json={"election_public_key": ELECTION_KEY},
        headers=auth,
    )
    assert response.status == 200 and (await response.json())["election_public_key"]
    await assert_problem(
        await client.post("/v1/referendums/ref-1/open", headers=auth), 409, "empty-roll"
    )
    after = await database_snapshot(database_url)
    assert after["referendum_rows"] != before["referendum_rows"]  # only the key changed
    assert (await put_roll(client, auth, roll_csv(range(2)))).status == 200
    assert (await client.post("/v1/referendums/ref-1/open", headers=auth)).status == 200


async def test_election_key_checks(client: Client, auth: dict[str, str], database_url: str) -> None:
    """A bad election key is 422, an unknown field 400, and once open the key is fixed (409)."""
    await create(client, auth)
    before = await database_snapshot(database_url)
    url = "/v1/referendums/ref-1/election-key"
    bad = await client.put(url, json={"election_public_key": "03" + "00" * 32}, headers=auth)
    await assert_problem(bad, 422, "invalid-value", "election_public_key")
    extra = await client.put(url, json={"election_public_key": ELECTION_KEY, "x": 1}, headers=auth)
    await assert_problem(extra, 400, "unknown-field", "x")
    assert await database_snapshot(database_url) == before
    await put_roll(client, auth, roll_csv(range(2)))
    await client.post("/v1/referendums/ref-1/open", headers=auth)
    before = await database_snapshot(database_url)
    late = await client.put(url, json={"election_public_key": ELECTION_KEY}, headers=auth)
    await assert_problem(late, 409, "not-draft")
    assert await database_snapshot(database_url) == before


async def test_status_counts(client: Client, auth: dict[str, str], database_url: str) -> None:
    """Status reports eligible voters, accepted ballots from the ballots table, block zeros."""
    await create(client, auth)
    await put_roll(client, auth, roll_csv(range(7)))
    response = await client.get("/v1/referendums/ref-1/status", headers=auth)
    status = await response.json()
    assert status["eligible_voters"] == 7 and status["ballots_accepted"] == 0
    assert status["latest_block"] == {"height": 0, "tree_size": 0}
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """INSERT INTO ballots (referendum_id, credential, ballot_hash, body, receipt)
               VALUES ('ref-1', $2, $1, '\\x00', '\\x00')""",
            b"\x07" * 32,
            voter_key(1),
        )
    finally:
        await conn.close()
    status = await (await client.get("/v1/referendums/ref-1/status", headers=auth)).json()
    assert status["ballots_accepted"] == 1


async def test_unknown_referendum_is_404(client: Client, auth: dict[str, str]) -> None:
    """Reads and actions on a referendum that does not exist are 404 problems."""
    for method, path in [
        ("GET", "/v1/referendums/nope"),
        ("GET", "/v1/referendums/nope/status"),
        ("POST", "/v1/referendums/nope/open"),
        ("GET", "/v1/referendums/nope/roll/commitment"),
        ("GET", "/v1/referendums/nope/roll/proof/v1"),
    ]:
        await assert_problem(await client.request(method, path, headers=auth), 404)
    await assert_problem(await put_roll(client, auth, roll_csv(range(2)), rid="nope"), 404)


async def test_unknown_route_and_method_are_problems(client: Client) -> None:
    """An unknown path is a 404 problem and a wrong method a 405 problem with Allow."""
    await assert_problem(await client.get("/v1/nowhere"), 404, "not-found")
    response = await client.delete("/v1/referendums")
    await assert_problem(response, 405, "method-not-allowed")
    assert "POST" in response.headers["Allow"]


async def test_core_errors_become_400_naming_the_check(database_url: str) -> None:
    """A CoreError escaping a handler is rendered as 400 problem+json carrying its check."""

    async def failing(request: web.Request) -> web.Response:
        raise ProofError("proof does not verify", check="option[1].proof")

    app = make_app(settings_for(database_url), database_url=database_url)
    app.router.add_get("/test/core-error", failing)
    async with TestClient(TestServer(app)) as client:
        body = await assert_problem(await client.get("/test/core-error"), 400, "failed-check")
        assert body["check"] == "option[1].proof"


async def test_health_and_metrics(client: Client) -> None:
    """/livez and /readyz answer 200, /metrics exposes the request counter."""
    assert (await client.get("/livez")).status == 200
    assert (await client.get("/readyz")).status == 200
    text = await (await client.get("/metrics")).text()
    assert "referendum_http_requests_total" in text
    assert 'route="/readyz"' in text


async def test_readyz_is_503_when_database_is_gone(client: Client) -> None:
    """With the database unreachable (pool closed), /readyz is a 503 problem with Retry-After."""
    app = client.app
    assert app is not None
    await app[POOL_KEY].close()
    response = await client.get("/readyz")
    await assert_problem(response, 503)
    assert response.headers["Retry-After"] == "1"
    assert (await client.get("/livez")).status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v1/referendums/ref%00x",
        "/v1/referendums/ref%00x/status",
        "/v1/referendums/ref%00x/roll/commitment",
    ],
)
async def test_nul_in_a_path_is_unknown_not_a_crash(
    client: Client, auth: dict[str, str], path: str
) -> None:
    response = await client.get(path, headers=auth)
    await assert_problem(response, 404, "unknown-referendum")


async def test_nul_in_stored_text_is_refused_and_stores_nothing(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    before = await database_snapshot(database_url)
    body = {**DEFINITION, "question": "Rebuild\u0000the bridge?"}
    response = await client.post("/v1/referendums", json=body, headers=auth)
    await assert_problem(response, 400)
    assert await database_snapshot(database_url) == before


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer \xff\xfe\xfd",  # not UTF-8
        "Bearer clé".encode(),  # UTF-8, not ASCII
        "Bearer ٣٣٣".encode(),  # Arabic-Indic digits
        b"Bearer abc\x80def",
    ],
)
async def test_non_ascii_authorization_is_401(client: Client, value: bytes) -> None:
    """A bearer token with bytes outside ASCII is a 401 problem on every operator route."""
    host, port = str(client.server.host), int(client.server.port or 0)
    for method, path in [
        ("GET", "/v1/referendums/ref-1/status"),
        ("POST", "/v1/referendums/ref-1/open"),
        ("POST", "/v1/referendums"),
    ]:
        request = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n".encode()
            + b"Authorization: "
            + value
            + b"\r\nConnection: close\r\n\r\n"
        )
        answer = await raw_request(host, port, request)
        assert answer.status == 401, answer
        assert answer.problem()["type"].endswith("/unauthorized")
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_database_value_error_is_a_fixed_text(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """A value the database refuses is a 400 whose detail is a fixed text, never the driver's
    message; the server's log keeps the real error."""
    before = await database_snapshot(database_url)
    body = {**DEFINITION, "question": "Rebuild\u0000the bridge?"}
    with structlog.testing.capture_logs() as logs:
        response = await client.post("/v1/referendums", json=body, headers=auth)
    problem = await assert_problem(response, 400, "bad-value")
    assert problem["detail"] == (
        "a value was refused by the database (for example a NUL character in text)"
    )
    text = await response.text()
    for driver_word in ("UTF8", "0x00", "byte sequence", "encoding"):
        assert driver_word not in text
    logged = [entry for entry in logs if entry["event"] == "storage_error"]
    assert logged and "0x00" in logged[0]["error"], logs
    assert await database_snapshot(database_url) == before
