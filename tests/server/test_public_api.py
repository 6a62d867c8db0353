"""The public read API of the log: checkpoints, blocks, ballot pages, proofs, errors, caching."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from batcher.service import LogSigner, seal_block
from referendum_core.block import Block, check_link
from referendum_core.checkpoint import verify_checkpoint
from referendum_core.merkle import EMPTY_ROOT, leaf_hash, verify_consistency, verify_inclusion
from referendum_service.settings import Settings
from tests.batcher.logs import LOG_ORIGIN, create_referendum, insert_ballots, make_signer
from tests.helpers import running_app

RID = "r-public"
BASE = f"/v1/referendums/{RID}/log"
BATCHES = (1, 5, 16, 3, 40, 17, 2)  # sizes cross the 16-leaf chunks and stored node levels


async def build_log(database_url: str, signer: LogSigner) -> list[int]:
    """Seal one block per batch of BATCHES; return the tree size after each block."""
    conn = await asyncpg.connect(database_url)
    sizes = []
    try:
        await create_referendum(conn, RID)
        for count in BATCHES:
            await insert_ballots(conn, RID, count)
            sealed = await seal_block(conn, RID, signer, max_ballots=1000)
            assert sealed is not None
            sizes.append(sealed.block.tree_size)
    finally:
        await conn.close()
    return sizes


def app_settings(key_file: Path, folder: Path) -> Settings:
    """Settings whose log key is the signer's."""
    return Settings(log_key_file=key_file, log_origin=LOG_ORIGIN, data_dir=folder)


@pytest.fixture
async def log_client(database_url: str, tmp_path: Path) -> Any:
    """A test client over a database holding a sealed log of sum(BATCHES) ballots."""
    signer, key_file = make_signer(tmp_path)
    sizes = await build_log(database_url, signer)
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        client.sizes = sizes
        yield client


async def get_json(client: Any, path: str, status: int = 200) -> Any:
    """GET ``path`` and return its JSON body, asserting the status."""
    response = await client.get(path)
    assert response.status == status, await response.text()
    return await response.json(content_type=None)


async def verifier_key(client: Any) -> str:
    """The log's verifier key as the API publishes it."""
    return str((await get_json(client, "/v1/keys/log"))["verifier_key"])


async def test_checkpoint_is_latest_and_signed(log_client: Any) -> None:
    """The latest checkpoint states the last block's size and verifies with /v1/keys/log."""
    body = await get_json(log_client, f"{BASE}/checkpoint")
    assert body["tree_size"] == sum(BATCHES) and body["height"] == len(BATCHES)
    checkpoint = verify_checkpoint(
        body["note"], await verifier_key(log_client), origin=f"{LOG_ORIGIN}/{RID}"
    )
    assert (checkpoint.size, checkpoint.root.hex()) == (body["tree_size"], body["root"])
    response = await log_client.get(f"{BASE}/checkpoint")
    assert response.headers["Cache-Control"] == "no-cache"


async def test_empty_log_checkpoint(database_url: str, tmp_path: Path) -> None:
    """Before the first block the checkpoint is the empty tree without a note."""
    _, key_file = make_signer(tmp_path)
    conn = await asyncpg.connect(database_url)
    await create_referendum(conn, RID)
    await conn.close()
    async with running_app(app_settings(key_file, tmp_path), database_url) as client:
        body = await get_json(client, f"{BASE}/checkpoint")
        assert body == {
            "tree_size": 0,
            "root": EMPTY_ROOT.hex(),
            "note": None,
            "height": 0,
            "cosigners": [],
        }
        await get_json(client, f"{BASE}/blocks/1", 404)


async def test_blocks_link_and_are_immutable(log_client: Any) -> None:
    """Every block parses, links to the previous one, verifies and is cacheable forever."""
    vkey = await verifier_key(log_client)
    prev = None
    for height in range(1, len(BATCHES) + 1):
        response = await log_client.get(f"{BASE}/blocks/{height}")
        assert response.status == 200
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        block = Block.from_json(await response.json(), RID)
        check_link(prev, block)
        block.verify_checkpoint(vkey, origin=f"{LOG_ORIGIN}/{RID}")
        assert block.tree_size == log_client.sizes[height - 1]
        again = await log_client.get(
            f"{BASE}/blocks/{height}", headers={"If-None-Match": response.headers["ETag"]}
        )
        assert again.status == 304 and again.headers["ETag"] == response.headers["ETag"]
        prev = block


async def test_ballot_pages_cover_each_block(log_client: Any) -> None:
    """Cursor pages of a block list exactly its ballots in log order, bodies matching hashes."""
    for height in range(1, len(BATCHES) + 1):
        block = await get_json(log_client, f"{BASE}/blocks/{height}")
        seen: list[int] = []
        cursor = ""
        for _ in range(100):
            page = await get_json(
                log_client, f"{BASE}/blocks/{height}/ballots?limit=7&cursor={cursor}"
            )
            for ballot in page["ballots"]:
                body = bytes.fromhex(ballot["body"])
                assert hashlib.sha256(body).hexdigest() == ballot["ballot_hash"]
                seen.append(ballot["index"])
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        assert seen == list(range(block["first_index"], block["end_index"]))


async def test_every_inclusion_proof_verifies(log_client: Any) -> None:
    """Each ballot's proof verifies against the latest and against every later sealed size."""
    vkey = await verifier_key(log_client)
    origin = f"{LOG_ORIGIN}/{RID}"
    ballots = []
    for height in range(1, len(BATCHES) + 1):
        page = await get_json(log_client, f"{BASE}/blocks/{height}/ballots?limit=10000")
        ballots.extend(page["ballots"])
    for ballot in ballots:
        for size in [None, *log_client.sizes]:
            if size is not None and size <= ballot["index"]:
                continue
            query = "" if size is None else f"?tree_size={size}"
            bundle = await get_json(
                log_client, f"{BASE}/proof/inclusion/{ballot['ballot_hash']}{query}"
            )
            checkpoint = verify_checkpoint(bundle["checkpoint"], vkey, origin=origin)
            assert bundle["tree_size"] == checkpoint.size == (size or sum(BATCHES))
            assert bundle["leaf_index"] == ballot["index"] and bundle["body"] == ballot["body"]
            verify_inclusion(
                leaf_hash(bytes.fromhex(bundle["body"])),
                bundle["leaf_index"],
                bundle["tree_size"],
                [bytes.fromhex(p) for p in bundle["proof"]],
                checkpoint.root,
            )


async def test_every_consistency_proof_verifies(log_client: Any) -> None:
    """Consistency proofs between all pairs of sealed sizes verify against their roots."""
    roots = {}
    for height in range(1, len(BATCHES) + 1):
        block = await get_json(log_client, f"{BASE}/blocks/{height}")
        roots[block["tree_size"]] = bytes.fromhex(block["root"])
    for first, second in itertools.combinations_with_replacement(sorted(roots), 2):
        body = await get_json(log_client, f"{BASE}/proof/consistency?from={first}&to={second}")
        assert (body["from"], body["to"]) == (first, second)
        proof = [bytes.fromhex(p) for p in body["proof"]]
        verify_consistency(first, second, proof, roots[first], roots[second])


async def test_unsequenced_ballot_has_no_proof(log_client: Any, database_url: str) -> None:
    """An accepted ballot not sealed yet answers 404 until a block holds it."""
    conn = await asyncpg.connect(database_url)
    try:
        (body,) = await insert_ballots(conn, RID, 1)
    finally:
        await conn.close()
    ballot_hash = hashlib.sha256(body).hexdigest()
    problem = await get_json(log_client, f"{BASE}/proof/inclusion/{ballot_hash}", 404)
    assert problem["type"].endswith("/not-sequenced")


_LAST = sum(BATCHES)
BAD_REQUESTS = [
    (f"{BASE}/blocks/0", 400),
    (f"{BASE}/blocks/-1", 400),
    (f"{BASE}/blocks/abc", 400),
    (f"{BASE}/blocks/99999999999999999999", 400),
    (f"{BASE}/blocks/9223372036854775808", 400),
    (f"{BASE}/blocks/9223372036854775807", 404),
    (f"{BASE}/blocks/{len(BATCHES) + 1}", 404),
    (f"{BASE}/blocks/1/ballots?limit=0", 400),
    (f"{BASE}/blocks/1/ballots?limit=10001", 400),
    (f"{BASE}/blocks/1/ballots?limit=x", 400),
    (f"{BASE}/blocks/1/ballots?cursor=abc", 400),
    (f"{BASE}/blocks/1/ballots?cursor=5", 400),
    (f"{BASE}/blocks/2/ballots?cursor=-2", 400),
    (f"{BASE}/blocks/99/ballots", 404),
    (f"{BASE}/proof/inclusion/zz{'0' * 62}", 400),
    (f"{BASE}/proof/inclusion/{'0' * 63}", 400),
    (f"{BASE}/proof/inclusion/{'0' * 64}", 404),
    (f"{BASE}/proof/inclusion/{'0' * 64}?tree_size=0", 400),
    (f"{BASE}/proof/inclusion/{'0' * 64}?tree_size=-3", 400),
    (f"{BASE}/proof/inclusion/{'0' * 64}?tree_size={_LAST + 1}", 400),
    (f"{BASE}/proof/inclusion/{'0' * 64}?tree_size=2", 400),
    (f"{BASE}/proof/consistency?from=5&to=3", 400),
    (f"{BASE}/proof/consistency?from=0&to=3", 400),
    (f"{BASE}/proof/consistency?from=1&to={_LAST + 1}", 400),
    (f"{BASE}/proof/consistency?to=3", 400),
    (f"{BASE}/proof/consistency?from=1&to=1e3", 400),
    ("/v1/referendums/nope/log/checkpoint", 404),
    ("/v1/referendums/nope/log/blocks/1", 404),
    (f"/v1/referendums/nope/log/proof/inclusion/{'0' * 64}", 404),
    ("/v1/referendums/nope/log/proof/consistency?from=1&to=1", 404),
]


async def test_bad_parameters_are_problems(log_client: Any) -> None:
    """Every bad or unknown parameter gets a 4xx problem+json, never a 500."""
    wrong = []
    for path, status in BAD_REQUESTS:
        response = await log_client.get(path)
        problem = await response.json(content_type=None)
        if (
            response.status != status
            or response.content_type != "application/problem+json"
            or problem.get("status") != status
            or not problem.get("detail")
        ):
            wrong.append((path, response.status, problem))
    assert wrong == []


_PATH_VALUES = {
    "rid": RID,
    "height": "1",
    "ballot_hash": "0" * 64,
    "voter_id": "v-1",
    "credential": "0" * 64,
    "tree_size": "1",
}
_QUERY_NAMES = st.sampled_from(["cursor", "limit", "from", "to", "tree_size"]) | st.text()
# str.isdigit() holds for "²" and "٣", which int() refuses or reads: numbers of every script
_QUERY_VALUES = st.text() | st.text(st.characters(categories=("Nd", "No")), min_size=1)


def _get_routes(client: Any) -> list[str]:
    """Every GET route of the app's router, its path variables filled in."""
    paths = []
    for route in client.app.router.routes():
        if route.method == "GET":
            paths.append(route.resource.canonical.format_map(_PATH_VALUES))
    return sorted(set(paths))


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(query=st.dictionaries(_QUERY_NAMES, _QUERY_VALUES, max_size=4))
@example(query={"limit": "\u00b2"})
@example(query={"cursor": "\u0663"})
async def test_arbitrary_query_values_never_answer_5xx(
    log_client: Any, query: dict[str, str]
) -> None:
    """Arbitrary Unicode query values on every GET route: no 5xx, and a 4xx is problem+json."""
    routes = _get_routes(log_client)
    assert f"/v1/referendums/{RID}/supersessions" in routes
    for path in routes:
        response = await log_client.get(path, params=query)
        await response.read()
        assert response.status < 500, (path, query, await response.text())
        if response.status >= 400:
            assert response.content_type == "application/problem+json", (path, query)
