"""The voter roll: parsing, key checks, all-or-nothing imports, the commitment and its proofs."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from nacl.bindings import crypto_core_ed25519_add

from referendum_core import merkle
from server.roll import (
    CHUNK_LEAVES,
    RollParser,
    canonical_entry,
    is_valid_credential_key,
    roll_digest,
    roll_leaf_hash,
)
from tests.helpers import database_snapshot, operator_headers, running_app
from tests.server.test_operator_api import (
    assert_problem,
    create,
    put_roll,
    roll_csv,
    settings_for,
    voter_key,
)

Client = TestClient[web.Request, web.Application]

P = 2**255 - 19
SMALL_ORDER_HEX = [
    "0000000000000000000000000000000000000000000000000000000000000000",  # order 4
    "0100000000000000000000000000000000000000000000000000000000000000",  # identity
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # order 2
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
]


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[Client]:
    async with running_app(settings_for(database_url), database_url) as c:
        yield c


@pytest.fixture
async def auth(database_url: str) -> dict[str, str]:
    return await operator_headers(database_url)


def test_canonical_entry_layout() -> None:
    """The committed entry is u16 big-endian length ‖ voter id bytes ‖ 32-byte key."""
    key = bytes(range(32))
    assert canonical_entry("ab", key) == b"\x00\x02ab" + key
    assert canonical_entry("x" * 300, key)[:2] == (300).to_bytes(2, "big")
    assert roll_leaf_hash("ab", key) == merkle.leaf_hash(b"\x00\x02ab" + key)


def test_small_order_points_are_refused() -> None:
    """Every small-order encoding (either sign bit) is refused though it lies on the curve."""
    for text in SMALL_ORDER_HEX:
        raw = bytes.fromhex(text)
        crypto_core_ed25519_add(raw, voter_key(1))  # decodes: it is on the curve
        for key in (raw, raw[:31] + bytes([raw[31] ^ 0x80])):
            assert not is_valid_credential_key(key)


def _torsion_point() -> bytes:
    """A point of order 8: adding it to a valid key leaves the curve's prime-order subgroup."""
    return bytes.fromhex(SMALL_ORDER_HEX[3])


def test_key_check_is_canonical_on_curve_in_group() -> None:
    """Real keys pass; off-curve, non-canonical, wrong-length and mixed-order keys (a valid key
    plus a torsion point: on the curve but outside the group) fail."""
    for i in range(50):
        assert is_valid_credential_key(voter_key(i))
    rng = __import__("random").Random(7)
    decodable = 0
    for _ in range(500):
        key = rng.randbytes(32)
        try:
            crypto_core_ed25519_add(key, voter_key(1))
            decodable += 1
        except Exception:
            assert not is_valid_credential_key(key)  # not on the curve
    assert decodable > 0
    mixed = crypto_core_ed25519_add(voter_key(3), _torsion_point())
    assert not is_valid_credential_key(mixed)
    y = int.from_bytes(voter_key(4), "little") & ((1 << 255) - 1)
    if y + P < 2**255:  # a second, non-canonical encoding of the same point
        sign = voter_key(4)[31] & 0x80
        alias = (y + P).to_bytes(32, "little")
        assert not is_valid_credential_key(alias[:31] + bytes([alias[31] | sign]))
    assert not is_valid_credential_key((P + 1).to_bytes(32, "little"))  # y = 1, non-canonical
    assert not is_valid_credential_key(voter_key(5)[:31])
    assert not is_valid_credential_key(voter_key(5) + b"\x00")


def test_parser_handles_split_chunks_headers_and_crlf() -> None:
    """Lines split across chunks, CRLF endings and the header are parsed like one buffer."""
    data = roll_csv(range(50)).replace(b"\n", b"\r\n")
    for size in (1, 7, 64, len(data)):
        parser = RollParser("csv")
        rows: list[tuple[int, str, bytes]] = []
        for i in range(0, len(data), size):
            rows += parser.feed(data[i : i + size])
        rows += parser.finish()
        assert parser.errors == []
        assert [r[1] for r in rows] == [f"voter-{i:05d}" for i in range(50)]
        assert rows[0][0] == 2 and rows[-1][0] == 51  # line numbers count the header
        assert rows[3][2] == voter_key(3)


def test_parser_reports_syntax_errors_by_line() -> None:
    """Each malformed line is reported with its number and no row is produced for it."""
    key = voter_key(0).hex()
    lines = [
        f"ok-1,{key}",
        "no-comma",
        f"bad id!,{key}",
        f"{'x' * 129},{key}",
        "short-key,abcd",
        f"nonhex,{'zz' * 32}",
        "voter_id,public_key",  # a header is only allowed on line 1
        "",
        f"ok-2,{key.upper()}",
    ]
    parser = RollParser("csv")
    rows = parser.feed(("\n".join(lines) + "\n").encode()) + parser.finish()
    assert [r[1] for r in rows] == ["ok-1", "ok-2"]
    assert [e["line"] for e in parser.errors] == [2, 3, 4, 5, 6, 7, 8]


def test_ndjson_parser() -> None:
    """NDJSON lines need exactly voter_id and public_key as strings."""
    key = voter_key(0).hex()
    lines = [
        orjson.dumps({"voter_id": "a", "public_key": key}),
        b"{not json",
        orjson.dumps({"voter_id": "b"}),
        orjson.dumps({"voter_id": "c", "public_key": key, "x": 1}),
        orjson.dumps({"voter_id": 5, "public_key": key}),
        orjson.dumps(["a", key]),
        orjson.dumps({"voter_id": "d", "public_key": key}),
    ]
    parser = RollParser("ndjson")
    rows = parser.feed(b"\n".join(lines)) + parser.finish()
    assert [r[1] for r in rows] == ["a", "d"]
    assert [e["line"] for e in parser.errors] == [2, 3, 4, 5, 6]


async def test_import_in_parts_then_commitment_and_proofs(
    client: Client, auth: dict[str, str]
) -> None:
    """A roll imported in CSV and NDJSON parts commits to the root over the sorted roll, and
    every served proof verifies against it, across chunk boundaries."""
    await create(client, auth)
    n = 2 * CHUNK_LEAVES + 300
    first = await put_roll(client, auth, roll_csv(range(1500, n)))
    assert (await first.json()) == {"imported": n - 1500, "roll_size": n - 1500,
                                    "lines": n - 1500 + 1}  # fmt: skip
    for start in (0, 500, 1000):  # several NDJSON parts
        ndjson = b"".join(
            orjson.dumps({"voter_id": f"voter-{i:05d}", "public_key": voter_key(i).hex()}) + b"\n"
            for i in range(start, start + 500)
        )
        part = await put_roll(client, auth, ndjson, kind="application/x-ndjson")
        assert (await part.json())["roll_size"] == n - 1500 + start + 500
    opened = await (await client.post("/v1/referendums/ref-1/open", headers=auth)).json()
    expected = roll_digest([(f"voter-{i:05d}", voter_key(i)) for i in range(n)])
    assert opened["roll_root"] == expected.hex()
    commitment = await (await client.get("/v1/referendums/ref-1/roll/commitment")).json()
    assert commitment == {"root": expected.hex(), "size": n}
    for index in (0, 1, CHUNK_LEAVES - 1, CHUNK_LEAVES, 2 * CHUNK_LEAVES, n - 1):
        voter = f"voter-{index:05d}"  # ids sort like their numbers
        proof = await (await client.get(f"/v1/referendums/ref-1/roll/proof/{voter}")).json()
        assert proof["index"] == index and proof["size"] == n
        assert proof["public_key"] == voter_key(index).hex()
        leaf = roll_leaf_hash(voter, voter_key(index))
        merkle.verify_inclusion(
            leaf, index, n, [bytes.fromhex(h) for h in proof["proof"]], expected
        )
    await assert_problem(await client.get("/v1/referendums/ref-1/roll/proof/voter-99999"), 404)
    await assert_problem(await client.get("/v1/referendums/ref-1/roll/proof/bad%20id"), 404)


@pytest.mark.parametrize("size", [1, 3, CHUNK_LEAVES, CHUNK_LEAVES + 1])
async def test_proofs_equal_the_rfc_proofs_over_the_whole_roll(
    client: Client, auth: dict[str, str], size: int
) -> None:
    """The chunked proof is exactly RFC 9162's proof over all leaves, for edge roll sizes."""
    await create(client, auth)
    await put_roll(client, auth, roll_csv(range(size)))
    await client.post("/v1/referendums/ref-1/open", headers=auth)
    leaves = [roll_leaf_hash(f"voter-{i:05d}", voter_key(i)) for i in range(size)]
    for index in {0, size // 2, size - 1}:
        proof = await (
            await client.get(f"/v1/referendums/ref-1/roll/proof/voter-{index:05d}")
        ).json()
        assert proof["proof"] == [h.hex() for h in merkle.inclusion_proof(leaves, index)]
        assert proof["root"] == merkle.root_from_leaf_hashes(leaves).hex()


def _bad_roll() -> tuple[bytes, list[int]]:
    key = voter_key(0).hex()
    off_curve = next(
        k for k in (os.urandom(32) for _ in range(100)) if not is_valid_credential_key(k)
    )
    mixed = crypto_core_ed25519_add(voter_key(11), _torsion_point())
    lines = [
        "voter_id,public_key",            # 1 header
        f"a-1,{key}",                      # 2
        f"a-2,{voter_key(2).hex()}",       # 3
        "a-3",                             # 4 malformed
        f"a-4,{off_curve.hex()}",          # 5 not a point
        f"a-5,{SMALL_ORDER_HEX[3]}",       # 6 small order
        f"a-1,{voter_key(6).hex()}",       # 7 duplicate of line 2
        f"a-7,{key[:-2]}",                 # 8 short key
        f"a-8,{voter_key(8).hex()}",       # 9
        f"earlier,{voter_key(9).hex()}",   # 10 already imported
        f"a-10,{mixed.hex()}",             # 11 on the curve, not in the group
    ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode(), [4, 5, 6, 7, 8, 10, 11]


async def test_bad_roll_imports_nothing_and_names_lines(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """Malformed lines, bad keys and duplicates (in the file or against an earlier part) make
    a 422 naming every bad line by number, and nothing of the file is imported."""
    await create(client, auth)
    earlier = b"earlier," + voter_key(9).hex().encode() + b"\n"
    assert (await put_roll(client, auth, earlier)).status == 200
    before = await database_snapshot(database_url)
    data, bad_lines = _bad_roll()
    body = await assert_problem(await put_roll(client, auth, data), 422, "bad-roll")
    assert [e["line"] for e in body["errors"]] == bad_lines
    assert body["error_count"] == len(bad_lines)
    assert all(isinstance(e["reason"], str) and e["reason"] for e in body["errors"])
    assert await database_snapshot(database_url) == before


async def test_duplicates_alone_are_reported(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """A file whose only fault is a repeated voter id is refused, naming the repeat's line."""
    await create(client, auth)
    before = await database_snapshot(database_url)
    data = roll_csv(range(5)) + f"voter-00002,{voter_key(2).hex()}\n".encode()
    body = await assert_problem(await put_roll(client, auth, data), 422, "bad-roll")
    assert [e["line"] for e in body["errors"]] == [7]
    assert "line 4" in body["errors"][0]["reason"]
    assert await database_snapshot(database_url) == before


async def test_at_most_twenty_bad_lines_are_named(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """With many bad lines the problem names the first 20 and counts them all."""
    await create(client, auth)
    before = await database_snapshot(database_url)
    data = b"".join(b"bad line %d\n" % i for i in range(45))
    body = await assert_problem(await put_roll(client, auth, data), 422, "bad-roll")
    assert [e["line"] for e in body["errors"]] == list(range(1, 21))
    assert body["error_count"] == 45
    assert await database_snapshot(database_url) == before


async def test_roll_upload_limits_and_types(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """A roll part over max_roll_bytes is 413 (declared or streamed), a wrong type 415, an
    empty file 422; none imports anything."""
    await create(client, auth)
    before = await database_snapshot(database_url)
    big = roll_csv(range(4000))  # ~ 300 kB > the 256 KiB test limit
    await assert_problem(await put_roll(client, auth, big), 413, "payload-too-large")

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    await assert_problem(await put_roll(client, auth, stream()), 413)  # type: ignore[arg-type]
    await assert_problem(await put_roll(client, auth, b"x", kind="application/json"), 415)
    await assert_problem(await put_roll(client, auth, b""), 422, "bad-roll")
    await assert_problem(await put_roll(client, auth, b"voter_id,public_key\n"), 422)
    assert await database_snapshot(database_url) == before


async def test_roll_is_frozen_at_open(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """Once open, another roll part is 409 and the roll and its commitment stay as they were."""
    await create(client, auth)
    await put_roll(client, auth, roll_csv(range(5)))
    await client.post("/v1/referendums/ref-1/open", headers=auth)
    before = await database_snapshot(database_url)
    response = await put_roll(client, auth, roll_csv(range(5, 8)))
    body: dict[str, Any] = await assert_problem(response, 409, "roll-frozen")
    assert body["state"] == "open"
    assert await database_snapshot(database_url) == before


async def test_commitment_is_404_before_open(client: Client, auth: dict[str, str]) -> None:
    """A draft has no published roll commitment or proofs yet."""
    await create(client, auth)
    await put_roll(client, auth, roll_csv(range(3)))
    await assert_problem(await client.get("/v1/referendums/ref-1/roll/commitment"), 404,
                         "no-commitment")  # fmt: skip
    await assert_problem(
        await client.get("/v1/referendums/ref-1/roll/proof/voter-00001"), 404, "no-commitment"
    )
