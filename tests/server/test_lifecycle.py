"""The lifecycle cannot be wedged: close, tally and publish are refused until they can hold."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from batcher.service import LogSigner
from batcher.tally import fold_new_blocks
from referendum_core.ballot import BallotSpec
from referendum_service.settings import Settings
from server.errors import Conflict
from server.referendums import transition
from tests.helpers import VOTER_ID_KEY, operator_headers, running_app
from tests.tally.common import Election, insert_ballots, make_election, seal_all, signer
from tests.tally.trustees import TrusteeBoard

Client = TestClient[web.Request, web.Application]

RID = "life"
CHOICES = {"voter-00000": 1, "voter-00001": 0, "voter-00002": 1}
"""Who votes yes (1) or no (0); voter-00003 abstains."""


@pytest.fixture(scope="module")
def board() -> TrusteeBoard:
    """Three trustees, any two of whom decrypt (one ceremony for the module)."""
    return TrusteeBoard.create(RID, k=2, n=3)


@dataclass
class Life:
    """An open referendum served over HTTP, with the batcher's steps run by hand."""

    client: Client
    auth: dict[str, str]
    conn: asyncpg.Connection
    board: TrusteeBoard
    election: Election
    log_signer: LogSigner

    async def post(self, action: str, body: Any = None) -> Any:
        """POST .../{action} as the operator (with a JSON body when given)."""
        url = f"/v1/referendums/{RID}/{action}"
        if body is None:
            return await self.client.post(url, headers=self.auth)
        return await self.client.post(url, json=body, headers=self.auth)

    async def close_early(self) -> None:
        """Close before closes_at, saying so."""
        response = await self.post("close", {"early": True, "reason": "test"})
        assert response.status == 200, await response.text()

    async def seal(self, *, close: bool = False) -> None:
        """What the batcher does: seal what waits (and, with ``close``, the final block)."""
        await seal_all(self.conn, RID, self.log_signer, close=close)

    async def fold(self) -> None:
        """What the tally follower does: fold every sealed block into the tally."""
        await fold_new_blocks(self.conn, RID)

    async def encrypted_tally(self) -> dict[str, Any]:
        """GET .../tally (200 expected)."""
        response = await self.client.get(f"/v1/referendums/{RID}/tally")
        assert response.status == 200, await response.text()
        tally: dict[str, Any] = await response.json()
        return tally

    async def share(self, index: int) -> int:
        """Trustee ``index`` posts its share of the served tally; the status answered."""
        share = self.board.decrypt(index, await self.encrypted_tally())
        response = await self.client.post(f"/v1/referendums/{RID}/shares", json=share)
        return response.status

    async def state(self) -> str:
        """The referendum's stored state."""
        state: str = await self.conn.fetchval("SELECT state FROM referendums WHERE id = $1", RID)
        return state

    async def snapshot(self) -> tuple[Any, ...]:
        """The referendum row, the audit log's length, the shares and results stored."""
        row = await self.conn.fetchrow("SELECT * FROM referendums WHERE id = $1", RID)
        assert row is not None
        counts = [
            await self.conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            for table in ("audit_log", "decryption_shares", "results")
        ]
        return (tuple(row), *counts)

    async def audit(self, action: str) -> list[dict[str, Any]]:
        """The details of every audit-log row of ``action`` on this referendum."""
        rows = await self.conn.fetch(
            "SELECT details FROM audit_log WHERE referendum_id = $1 AND action = $2 ORDER BY id",
            RID,
            action,
        )
        return [orjson.loads(r["details"]) for r in rows]


def _definition(board: TrusteeBoard, opens_at: datetime, closes_at: datetime) -> dict[str, Any]:
    return {
        "id": RID,
        "question": "Keep the old bridge?",
        "options": ["yes", "no"],
        "min_selections": 1,
        "max_selections": 1,
        "opens_at": opens_at.isoformat(),
        "closes_at": closes_at.isoformat(),
        "revote_policy": "last_counts",
        "threshold_k": board.k,
        "trustees_n": board.n,
        "election_public_key": board.election_public_key.hex(),
    }


@contextlib.asynccontextmanager
async def _open(
    database_url: str,
    tmp_path: Path,
    board: TrusteeBoard,
    opens_at: datetime,
    closes_at: datetime,
    *,
    trustees: bool = True,
) -> AsyncIterator[Life]:
    """Create, load the roll and (with ``trustees``) the trustees' commitments, open; three
    ballots stored and sealed."""
    election = make_election(RID, ("yes", "no"), 4)
    election.spec = BallotSpec(RID, ("yes", "no"), 1, 1, board.election_public_key)
    auth = await operator_headers(database_url)
    conn = await asyncpg.connect(database_url)
    settings = Settings(database_url=database_url, data_dir=tmp_path, voter_id_key=VOTER_ID_KEY)
    try:
        async with running_app(settings, database_url) as client:
            base = f"/v1/referendums/{RID}"
            roll = "".join(f"{v},{keys[1].hex()}\n" for v, keys in election.voters.items())
            responses = [
                await client.post(
                    "/v1/referendums", json=_definition(board, opens_at, closes_at), headers=auth
                ),
                await client.put(
                    f"{base}/roll",
                    data=roll.encode(),
                    headers={**auth, "Content-Type": "text/csv"},
                ),
            ]
            if trustees:
                responses.append(
                    await client.put(f"{base}/trustees", json=board.commitments(), headers=auth)
                )
            responses.append(await client.post(f"{base}/open", headers=auth))
            for response in responses:
                assert response.status < 300, await response.text()
            life = Life(client, auth, conn, board, election, signer())
            await insert_ballots(
                conn,
                election,
                [(v, election.ballot(v, [yes, 1 - yes])[1]) for v, yes in CHOICES.items()],
            )
            await life.seal()
            await life.fold()
            yield life
    finally:
        await conn.close()


@pytest.fixture
async def life(database_url: str, tmp_path: Path, board: TrusteeBoard) -> AsyncIterator[Life]:
    """An open referendum whose window runs from an hour ago to an hour from now."""
    now = datetime.now(UTC)
    window = (now - timedelta(hours=1), now + timedelta(hours=1))
    async with _open(database_url, tmp_path, board, *window) as opened:
        yield opened


@pytest.fixture
async def ended(database_url: str, tmp_path: Path, board: TrusteeBoard) -> AsyncIterator[Life]:
    """An open referendum whose closes_at has passed."""
    now = datetime.now(UTC)
    window = (now - timedelta(hours=2), now - timedelta(minutes=1))
    async with _open(database_url, tmp_path, board, *window) as opened:
        yield opened


@pytest.fixture
async def keyed(database_url: str, tmp_path: Path, board: TrusteeBoard) -> AsyncIterator[Life]:
    """An open referendum with the election key but no trustee commitments stored."""
    now = datetime.now(UTC)
    window = (now - timedelta(hours=1), now + timedelta(hours=1))
    async with _open(database_url, tmp_path, board, *window, trustees=False) as opened:
        yield opened


async def problem(response: Any, status: int, slug: str) -> dict[str, Any]:
    """The response is a problem+json of this status and slug; its body."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/problem+json"
    body: dict[str, Any] = await response.json(content_type=None)
    assert body["type"].endswith("/" + slug), body
    return body


# --- close ---------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, {}, {"early": False}, {"reason": "why not"}])
async def test_close_before_closes_at_is_refused_unless_early(life: Life, body: Any) -> None:
    """Closing before closes_at without {"early": true, ...} is 409 and changes nothing."""
    before = await life.snapshot()
    refused = await problem(await life.post("close", body), 409, "closes-at-not-reached")
    assert datetime.fromisoformat(refused["closes_at"]) > datetime.now(UTC)
    assert await life.snapshot() == before
    assert await life.state() == "open"


@pytest.mark.parametrize(
    ("body", "status", "slug", "field"),
    [
        ({"early": True}, 400, "missing-field", "reason"),
        ({"early": "yes", "reason": "storm"}, 400, "wrong-type", "early"),
        ({"early": True, "reason": 7}, 400, "wrong-type", "reason"),
        ({"early": True, "reason": "storm", "at": "now"}, 400, "unknown-field", "at"),
        ({"early": True, "reason": "   "}, 422, "invalid-value", "reason"),
        ({"early": True, "reason": "x" * 1001}, 422, "invalid-value", "reason"),
        (["early"], 400, "malformed-json", None),
    ],
)
async def test_close_body_is_checked(
    life: Life, body: Any, status: int, slug: str, field: str | None
) -> None:
    """A malformed close body is a 4xx problem naming the field; the referendum stays open."""
    before = await life.snapshot()
    refused = await problem(await life.post("close", body), status, slug)
    assert refused.get("field") == field
    assert await life.snapshot() == before


async def test_close_body_must_be_json(life: Life) -> None:
    """A close body that is not application/json is 415; the referendum stays open."""
    before = await life.snapshot()
    raw = await life.client.post(
        f"/v1/referendums/{RID}/close",
        data=b'{"early": true, "reason": "storm"}',
        headers={**life.auth, "Content-Type": "text/plain"},
    )
    await problem(raw, 415, "unsupported-media-type")
    assert await life.snapshot() == before


async def test_early_close_is_audited_with_its_reason(life: Life) -> None:
    """An early close succeeds and the audit log keeps that it was early, and why."""
    response = await life.post("close", {"early": True, "reason": "flooded polling app"})
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "closed"
    [details] = await life.audit("referendum.closed")
    assert details["early"] is True
    assert details["reason"] == "flooded polling app"
    assert datetime.fromisoformat(details["closes_at"]) > datetime.now(UTC)


async def test_close_after_closes_at_needs_no_body(ended: Life) -> None:
    """Once closes_at has passed, a bare close succeeds and is audited as not early."""
    response = await ended.post("close")
    assert response.status == 200, await response.text()
    [details] = await ended.audit("referendum.closed")
    assert details["early"] is False and "reason" not in details


# --- tally ---------------------------------------------------------------------------------


async def test_tally_waits_for_the_final_block_and_its_fold(life: Life) -> None:
    """POST .../tally is 409 until the final block is sealed and folded, naming what is
    missing, and changes nothing until then."""
    await life.close_early()
    before = await life.snapshot()
    response = await life.post("tally")
    refused = await problem(response, 409, "log-not-final")
    assert refused["missing"] == "final-block" and response.headers["Retry-After"]
    assert await life.snapshot() == before
    await life.seal(close=True)
    refused = await problem(await life.post("tally"), 409, "tally-not-ready")
    assert refused["missing"] == "final-tally"
    assert await life.snapshot() == before
    await life.fold()
    response = await life.post("tally")
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "tallied"
    for action in ("open", "close", "tally"):
        await problem(await life.post(action), 409, "illegal-transition")


# --- publish -------------------------------------------------------------------------------


async def test_tally_then_publish_before_shares_is_not_a_wedge(life: Life) -> None:
    """The issue's wedge: tally, then publish before the shares. Publish is 409 naming the
    missing shares, shares are still taken once tallied, and publishing then works."""
    await life.close_early()
    await life.seal(close=True)
    await life.fold()
    assert (await life.post("tally")).status == 200
    before = await life.snapshot()
    refused = await problem(await life.post("publish"), 409, "not-enough-shares")
    assert (refused["missing"], refused["shares"], refused["needed"]) == (
        "decryption-shares",
        0,
        2,
    )
    assert await life.snapshot() == before
    assert await life.share(1) == 201
    refused = await problem(await life.post("publish"), 409, "not-enough-shares")
    assert refused["shares"] == 1
    assert await life.state() == "tallied"
    assert await life.share(3) == 201
    response = await life.post("publish")
    assert response.status == 200, await response.text()
    assert (await response.json())["state"] == "published"
    response = await life.client.get(f"/v1/referendums/{RID}/result")
    assert response.status == 200, await response.text()
    result = await response.json()
    yes = sum(CHOICES.values())
    assert result["counts"] == [yes, len(CHOICES) - yes]
    assert result["trustees"] == [1, 3]
    for action in ("open", "close", "tally", "publish"):
        await problem(await life.post(action, None), 409, "illegal-transition")


async def test_publish_takes_the_one_legal_step_only(life: Life) -> None:
    """POST .../publish from closed is an illegal transition; POST .../result still takes a
    closed referendum through tallied to published (what the demo does)."""
    await life.close_early()
    await life.seal(close=True)
    await life.fold()
    assert await life.share(1) == 201 and await life.share(2) == 201
    before = await life.snapshot()
    refused = await problem(await life.post("publish"), 409, "illegal-transition")
    assert refused["state"] == "closed"
    assert await life.snapshot() == before
    response = await life.post("result")
    assert response.status == 200, await response.text()
    assert await life.state() == "published"
    stamps = await life.conn.fetchrow(
        "SELECT tallied_at, published_at FROM referendums WHERE id = $1", RID
    )
    assert stamps is not None
    assert stamps["tallied_at"] is not None and stamps["published_at"] is not None


async def test_no_transition_publishes_without_a_result(life: Life) -> None:
    """The domain's publish step itself refuses a referendum with no stored result."""
    await life.close_early()
    await life.seal(close=True)
    await life.fold()
    assert (await life.post("tally")).status == 200
    before = await life.snapshot()
    with pytest.raises(Conflict) as refused:
        await transition(life.conn, RID, "published", "test")
    assert refused.value.slug == "no-result"
    assert refused.value.extra["missing"] == "result"
    assert await life.snapshot() == before


async def test_publish_without_trustee_commitments_names_them(keyed: Life) -> None:
    """A referendum opened with a bare election key takes no shares: publishing is 409
    naming the missing trustee commitments, not a publication without a result."""
    await keyed.close_early()
    await keyed.seal(close=True)
    await keyed.fold()
    assert (await keyed.post("tally")).status == 200
    before = await keyed.snapshot()
    for action in ("publish", "result"):
        refused = await problem(await keyed.post(action), 409, "no-trustees")
        assert refused["missing"] == "trustee-commitments"
    assert await keyed.snapshot() == before
    assert await keyed.state() == "tallied"
