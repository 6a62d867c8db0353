"""The voter roll: parsing, key checks, all-or-nothing imports, the commitment and its proofs."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from nacl.bindings import crypto_core_ed25519_add

from referendum_core import merkle
from referendum_core.credential import credential_to_did
from referendum_core.roll import VoterIdHasher, canonical_entry, roll_leaf_hash
from server.roll import CHUNK_LEAVES, ChunkTreeCache, RollParser, import_, roll_digest
from server.roll.partition import partition_name
from tests.core import ed25519_reference as ref
from tests.helpers import VOTER_ID_KEY, database_snapshot, operator_headers, running_app
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
    """The committed entry is the 32-byte credential alone: no voter id is committed."""
    key = bytes(range(32))
    assert canonical_entry(key) == key
    assert roll_leaf_hash(key) == merkle.leaf_hash(key)
    with pytest.raises(ValueError):
        canonical_entry(key + b"\x00")


def _torsion_point() -> bytes:
    """A point of order 8: adding it to a valid key leaves the curve's prime-order subgroup."""
    return bytes.fromhex(SMALL_ORDER_HEX[3])


def _off_curve_key(seed: int = 0) -> bytes:
    """32 bytes that name no point: no x satisfies the curve equation for their y."""
    return next(
        k
        for k in (hashlib.sha256(b"%d:%d" % (seed, i)).digest() for i in range(100))
        if ref.decode(k) is None
    )


NON_CANONICAL_HEX = (P + 2).to_bytes(32, "little").hex()  # y = p + 2: y = 2 written at or above p


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
        f"ok-3,{credential_to_did(voter_key(3))}",
        f"did-bad,{credential_to_did(voter_key(3))[:-1]}",
        "did-other,did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
    ]
    parser = RollParser("csv")
    rows = parser.feed(("\n".join(lines) + "\n").encode()) + parser.finish()
    assert [r[1] for r in rows] == ["ok-1", "ok-2", "ok-3"]
    assert rows[2][2] == voter_key(3)  # a did:key credential is its Ed25519 key
    assert [e["line"] for e in parser.errors] == [2, 3, 4, 5, 6, 7, 8, 11, 12]


def test_ndjson_parser() -> None:
    """NDJSON lines need exactly voter_id and credential as strings."""
    key = voter_key(0).hex()
    lines = [
        orjson.dumps({"voter_id": "a", "credential": key}),
        b"{not json",
        orjson.dumps({"voter_id": "b"}),
        orjson.dumps({"voter_id": "c", "credential": key, "x": 1}),
        orjson.dumps({"voter_id": 5, "credential": key}),
        orjson.dumps(["a", key]),
        orjson.dumps({"voter_id": "d", "credential": credential_to_did(voter_key(0))}),
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
    assert (await first.json()) == {
        "imported": n - 1500,
        "roll_size": n - 1500,
        "lines": n - 1500 + 1,
    }
    for start in (0, 500, 1000):  # several NDJSON parts
        ndjson = b"".join(
            orjson.dumps({"voter_id": f"voter-{i:05d}", "credential": voter_key(i).hex()}) + b"\n"
            for i in range(start, start + 500)
        )
        part = await put_roll(client, auth, ndjson, kind="application/x-ndjson")
        assert (await part.json())["roll_size"] == n - 1500 + start + 500
    opened = await (await client.post("/v1/referendums/ref-1/open", headers=auth)).json()
    keys = sorted(voter_key(i) for i in range(n))
    expected = roll_digest(keys)
    assert opened["roll_root"] == expected.hex()
    commitment = await (await client.get("/v1/referendums/ref-1/roll/commitment")).json()
    assert commitment == {"root": expected.hex(), "size": n}
    for index in (0, 1, CHUNK_LEAVES - 1, CHUNK_LEAVES, 2 * CHUNK_LEAVES, n - 1):
        key = keys[index]
        for spelling in (key.hex(), credential_to_did(key)):
            url = f"/v1/referendums/ref-1/roll/proof/{spelling}"
            proof = await (await client.get(url)).json()
            assert proof["index"] == index and proof["size"] == n
            assert proof["credential"] == key.hex() and proof["did"] == credential_to_did(key)
            assert "voter_id" not in proof
            merkle.verify_inclusion(
                roll_leaf_hash(key), index, n, [bytes.fromhex(h) for h in proof["proof"]], expected
            )
    stranger = voter_key(n + 7).hex()
    await assert_problem(await client.get(f"/v1/referendums/ref-1/roll/proof/{stranger}"), 404)
    # a voter id is no public key to the roll: only the operator looks voters up
    await assert_problem(await client.get("/v1/referendums/ref-1/roll/proof/voter-00001"), 404)
    await assert_problem(await client.get("/v1/referendums/ref-1/roll/proof/bad%20id"), 404)


@pytest.mark.parametrize("size", [1, 3, CHUNK_LEAVES, CHUNK_LEAVES + 1])
async def test_proofs_equal_the_rfc_proofs_over_the_whole_roll(
    client: Client, auth: dict[str, str], size: int
) -> None:
    """The chunked proof is exactly RFC 9162's proof over all leaves, for edge roll sizes."""
    await create(client, auth)
    await put_roll(client, auth, roll_csv(range(size)))
    await client.post("/v1/referendums/ref-1/open", headers=auth)
    keys = sorted(voter_key(i) for i in range(size))
    leaves = [roll_leaf_hash(k) for k in keys]
    for index in {0, size // 2, size - 1}:
        proof = await (
            await client.get(f"/v1/referendums/ref-1/roll/proof/{keys[index].hex()}")
        ).json()
        assert proof["proof"] == [h.hex() for h in merkle.inclusion_proof(leaves, index)]
        assert proof["root"] == merkle.root_from_leaf_hashes(leaves).hex()


def _bad_roll() -> tuple[bytes, list[int]]:
    key = voter_key(0).hex()
    lines = [
        "voter_id,credential",  # 1 header
        f"a-1,{key}",  # 2
        f"a-2,{voter_key(2).hex()}",  # 3
        "a-3",  # 4 malformed
        f"a-4,{_off_curve_key().hex()}",  # 5 not a point
        f"a-5,{SMALL_ORDER_HEX[3]}",  # 6 small order
        f"a-1,{voter_key(6).hex()}",  # 7 duplicate of line 2
        f"a-7,{key[:-2]}",  # 8 short key
        f"a-8,{voter_key(8).hex()}",  # 9
        f"earlier,{voter_key(9).hex()}",  # 10 already imported
        f"a-10,{NON_CANONICAL_HEX}",  # 11 non-canonical encoding
    ]
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
    await assert_problem(await put_roll(client, auth, b"voter_id,credential\n"), 422)
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
    await assert_problem(
        await client.get("/v1/referendums/ref-1/roll/commitment"), 404, "no-commitment"
    )
    await assert_problem(
        await client.get(f"/v1/referendums/ref-1/roll/proof/{voter_key(1).hex()}"),
        404,
        "no-commitment",
    )


def test_parser_keeps_the_lowest_lines() -> None:
    """Bad lines recorded in any order leave the 20 lowest line numbers, in order."""
    parser = RollParser("csv")
    for line in [*range(60, 30, -1), *range(1, 12)]:
        parser.error(line, "bad")
    assert [e["line"] for e in parser.errors] == [*range(1, 12), *range(31, 40)]
    assert parser.error_count == 41


async def test_mixed_order_key_is_imported(client: Client, auth: dict[str, str]) -> None:
    """A key outside the prime-order subgroup is a valid credential key: libsodium verifies
    signatures under it (tests/server/test_roll_keys.py), so the import takes it."""
    await create(client, auth)
    mixed = bytes(crypto_core_ed25519_add(voter_key(3), _torsion_point()))
    response = await put_roll(client, auth, f"mixed,{mixed.hex()}\n".encode())
    assert (await response.json())["imported"] == 1


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> int:
    """Batches of ~1 KiB (a dozen lines), so a small upload crosses many batch boundaries."""
    monkeypatch.setattr(import_, "_BATCH_BYTES", 1024)
    return 1024


async def test_many_batches_import_like_one(
    client: Client, auth: dict[str, str], small_batches: int
) -> None:
    """CRLF lines, a header, upper-case hex and a last line without LF, over many batches and
    HTTP chunks, import every voter, and the commitment is the one over the whole roll."""
    await create(client, auth)
    data = roll_csv(range(300)).replace(b"\n", b"\r\n")[:-2]
    data = re.sub(rb",[0-9a-f]{64}", lambda m: m.group().upper(), data)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 700):
            yield data[i : i + 700]

    response = await put_roll(client, auth, chunks())  # type: ignore[arg-type]
    assert await response.json() == {"imported": 300, "roll_size": 300, "lines": 301}
    opened = await (await client.post("/v1/referendums/ref-1/open", headers=auth)).json()
    expected = roll_digest([voter_key(i) for i in range(300)])
    assert opened["roll_root"] == expected.hex()


def _with_lines(base: bytes, replaced: dict[int, str]) -> bytes:
    """``base`` (CSV, header on line 1) with some lines replaced, by line number."""
    lines = base.decode().split("\n")
    for number, text in replaced.items():
        lines[number - 1] = text
    return "\n".join(lines).encode()


async def test_each_bad_key_class_is_named_after_good_batches(
    client: Client, auth: dict[str, str], database_url: str, small_batches: int
) -> None:
    """Bad keys of every class, after many good batches already stored, are named by line
    (and only they), and nothing of the file stays imported."""
    await create(client, auth)
    before = await database_snapshot(database_url)
    bad = {
        150: f"voter-00148,{_off_curve_key().hex()}",
        160: f"voter-00158,{NON_CANONICAL_HEX}",
        170: f"voter-00168,{SMALL_ORDER_HEX[0]}",
        171: f"voter-00169,{SMALL_ORDER_HEX[1][:62]}80",  # identity, sign bit set (x = 0)
        180: f"voter-00178,{SMALL_ORDER_HEX[2]}",
        190: f"voter-00188,{SMALL_ORDER_HEX[3]}",
        200: f"voter-00198,{SMALL_ORDER_HEX[4]}",
        210: f"voter-00208,{voter_key(208).hex()[:62]}",  # 31 bytes
    }
    data = _with_lines(roll_csv(range(250)), bad)
    body = await assert_problem(await put_roll(client, auth, data), 422, "bad-roll")
    assert [e["line"] for e in body["errors"]] == sorted(bad)
    assert body["error_count"] == len(bad)
    reasons = {e["line"]: e["reason"] for e in body["errors"]}
    assert all("valid Ed25519 public key" in reasons[n] for n in sorted(bad)[:-1])
    assert "64 hex digits" in reasons[210]
    assert await database_snapshot(database_url) == before


async def test_duplicates_across_batches_and_parts(
    client: Client, auth: dict[str, str], database_url: str, small_batches: int
) -> None:
    """A repeat (of a voter id, or of a credential under another voter id) many batches after
    the first occurrence names that line; a voter or credential of an earlier part is named as
    such; a line refused for its key takes no part in duplicates."""
    await create(client, auth)
    earlier = f"voter-00900,{voter_key(900).hex()}\n".encode()
    assert (await put_roll(client, auth, earlier)).status == 200
    before = await database_snapshot(database_url)
    data = _with_lines(
        roll_csv(range(200)),
        {
            150: f"voter-00003,{voter_key(1003).hex()}",  # line 5 is voter-00003
            160: f"another-voter,{voter_key(20).hex()}",  # line 22 holds voter-00020's key
            170: f"voter-00900,{voter_key(901).hex()}",  # the earlier part's voter
            175: f"someone-else,{voter_key(900).hex()}",  # the earlier part's credential
            180: f"voter-00010,{_off_curve_key(1).hex()}",  # bad key; line 12 is voter-00010
        },
    )
    body = await assert_problem(await put_roll(client, auth, data), 422, "bad-roll")
    assert [(e["line"], e["reason"]) for e in body["errors"]] == [
        (150, "duplicate voter_id (also on line 5)"),
        (160, "duplicate credential (also on line 22)"),
        (170, "voter_id already imported in an earlier part"),
        (175, "credential already imported in an earlier part"),
        (180, "credential is not a valid Ed25519 public key"),
    ]
    assert body["error_count"] == 5
    assert await database_snapshot(database_url) == before


async def test_duplicate_of_an_earlier_part_alone(
    client: Client, auth: dict[str, str], database_url: str, small_batches: int
) -> None:
    """A file good but for one voter of an earlier part (several batches in) imports nothing."""
    await create(client, auth)
    assert (await put_roll(client, auth, roll_csv(range(100, 101)))).status == 200
    before = await database_snapshot(database_url)
    body = await assert_problem(await put_roll(client, auth, roll_csv(range(200))), 422)
    assert [(e["line"], e["reason"]) for e in body["errors"]] == [
        (
            102,
            "credential already imported in an earlier part; "
            "voter_id already imported in an earlier part",
        )
    ]
    assert await database_snapshot(database_url) == before


async def test_first_twenty_lines_are_named_whatever_is_found_first(
    client: Client, auth: dict[str, str], small_batches: int
) -> None:
    """Bad keys early in the file are named before syntax errors further on, though the
    later batches are parsed while the early keys are still being checked."""
    await create(client, auth)
    bad_keys = {n: f"voter-{n:05d},{_off_curve_key(n).hex()}" for n in range(10, 35)}
    syntax = {n: f"voter-{n:05d};no comma" for n in range(100, 125)}
    data = _with_lines(roll_csv(range(150)), bad_keys | syntax)
    body = await assert_problem(await put_roll(client, auth, data), 422, "bad-roll")
    assert [e["line"] for e in body["errors"]] == list(range(10, 30))
    assert body["error_count"] == 50


async def test_line_longer_than_a_batch(
    client: Client, auth: dict[str, str], database_url: str, small_batches: int
) -> None:
    """A line longer than a batch is named, and the lines after it keep their numbers."""
    await create(client, auth)
    before = await database_snapshot(database_url)
    data = _with_lines(
        roll_csv(range(60)), {20: "x" * (5 * small_batches), 40: f"v,{_off_curve_key().hex()}"}
    )
    body = await assert_problem(await put_roll(client, auth, data), 422, "bad-roll")
    assert [e["line"] for e in body["errors"]] == [20, 40]
    assert await database_snapshot(database_url) == before


async def test_reader_skips_a_long_line_in_bounded_memory(small_batches: int) -> None:
    """Read in small chunks, a line of many batches is dropped as it arrives (the reader
    never holds much more than a batch), named as too long, and numbering goes on."""
    data = _with_lines(roll_csv(range(30)), {10: "x" * (40 * small_batches)})
    hasher = VoterIdHasher(bytes.fromhex(VOTER_ID_KEY), "ref-1")
    reader = import_._RollReader(_chunked(data, 100), "csv", None, 1, hasher)
    held = []

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in _chunked(data, 100):
            held.append(len(reader._buffer))
            yield chunk

    reader._body = chunks()
    assert await reader.first_line() == 2
    batches = [batch async for batch in reader.batches()]
    assert max(held) <= small_batches + 100
    assert [e["line"] for e in reader.parser.errors] == [10]
    assert "longer than" in reader.parser.errors[0]["reason"]
    lines = b"".join(batch.lines for batch in batches).split(b"\n")[:-1]
    assert all(batch.numbered for batch in batches)  # the long line turned the whole file
    numbers = [int(line.split(b",")[0]) for line in lines]
    assert numbers == [*range(2, 10), *range(11, 32)]
    # line 11 holds voter 9 (header on line 1), kept as the keyed hash of its id
    assert lines[8].startswith(b"11,\\x" + hasher(b"voter-00009").hex().encode() + b",")
    assert b"voter-" not in b"".join(lines)
    assert reader.parser.line == 31


async def _chunked(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_ndjson_over_many_batches(
    client: Client, auth: dict[str, str], database_url: str, small_batches: int
) -> None:
    """NDJSON is parsed line by line over batches: good files import, a bad key is named."""
    await create(client, auth)

    def ndjson(ids: range, bad: int | None = None) -> bytes:
        return b"".join(
            orjson.dumps(
                {
                    "voter_id": f"n-{i}",
                    "credential": (_off_curve_key() if i == bad else voter_key(i)).hex(),
                }
            )
            + b"\n"
            for i in ids
        )

    kind = "application/x-ndjson"
    before = await database_snapshot(database_url)
    body = await assert_problem(await put_roll(client, auth, ndjson(range(80), 66), kind=kind), 422)
    assert [e["line"] for e in body["errors"]] == [67]
    assert await database_snapshot(database_url) == before
    response = await put_roll(client, auth, ndjson(range(80)), kind=kind)
    assert await response.json() == {"imported": 80, "roll_size": 80, "lines": 80}


async def test_concurrent_imports(client: Client, auth: dict[str, str]) -> None:
    """Imports into two referendums at once each take two connections and both complete."""
    await create(client, auth)
    await create(client, auth, id="ref-2")
    first, second = await asyncio.gather(
        put_roll(client, auth, roll_csv(range(0, 1500))),
        put_roll(client, auth, roll_csv(range(1500, 3000)), rid="ref-2"),
    )
    assert (await first.json())["imported"] == 1500, await first.text()
    assert (await second.json())["imported"] == 1500, await second.text()


async def test_import_needs_two_pool_connections(database_url: str) -> None:
    """With a pool of one connection an import is refused (503), not left waiting forever."""
    settings = replace(settings_for(database_url), db_pool_max=1)
    async with running_app(settings, database_url) as small:
        headers = await operator_headers(database_url)
        await create(small, headers)
        await assert_problem(await put_roll(small, headers, roll_csv(range(3))), 503)


class _CountingConn:
    """Answers the chunk-root query with one root per referendum and counts the reads."""

    def __init__(self) -> None:
        self.reads: list[str] = []

    async def fetch(self, query: str, rid: str) -> list[dict[str, bytes]]:
        self.reads.append(rid)
        return [{"root": hashlib.sha256(rid.encode()).digest()}]


async def test_chunk_tree_cache_keeps_the_last_rolls_proved() -> None:
    """The cache reads a roll's chunk roots once and forgets the least recently proved first."""
    conn, trees = _CountingConn(), ChunkTreeCache(kept=2)
    root = b"\x01" * 32
    for rid in ("r-1", "r-2", "r-1", "r-3", "r-1", "r-2"):
        tree = await trees.tree(conn, rid, root)
        assert tree.roots == [hashlib.sha256(rid.encode()).digest()]
    # r-2 was dropped when r-3 came (r-1 was proved after r-2), so it is read again
    assert conn.reads == ["r-1", "r-2", "r-3", "r-2"]
    await trees.tree(conn, "r-1", b"\x02" * 32)  # a new root names another roll
    assert conn.reads[-1] == "r-1"


async def test_first_part_becomes_the_rolls_own_indexed_partition(
    client: Client, auth: dict[str, str], database_url: str
) -> None:
    """The first part is loaded into a partition of its own, attached with both unique
    indexes; a later part goes into it index by index, and a refused first part leaves no
    table behind."""
    await create(client, auth)
    await create(client, auth, id="ref-2")
    await assert_problem(await put_roll(client, auth, roll_csv(range(3)) * 2, rid="ref-2"), 422)
    assert (await put_roll(client, auth, roll_csv(range(10)))).status == 200
    assert (await put_roll(client, auth, roll_csv(range(10, 20)))).status == 200
    conn = await asyncpg.connect(database_url)
    try:
        partitions = await conn.fetch(
            """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'voters'::regclass ORDER BY c.relname"""
        )
        name = partition_name("ref-1")
        indexes = await conn.fetchval(
            "SELECT count(*) FROM pg_index WHERE indrelid = $1::regclass AND indisunique", name
        )
        own = await conn.fetchval(f"SELECT count(*) FROM {name}")  # noqa: S608 (a fixed name)
        default = await conn.fetchval("SELECT count(*) FROM voters_default")
    finally:
        await conn.close()
    assert {(r["relname"], r["bound"]) for r in partitions} == {
        (name, "FOR VALUES IN ('ref-1')"),
        ("voters_default", "DEFAULT"),
    }
    assert indexes == 2 and own == 20 and default == 0
