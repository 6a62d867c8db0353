"""The voter roll: streamed import, the Merkle commitment computed at open, inclusion proofs.

Import. An upload is read in chunks and parsed line by line (CSV ``voter_id,public_key_hex``
with an optional header line, or NDJSON ``{"voter_id": ..., "public_key": hex}``); credential
keys are checked on worker threads while the next chunk is parsed; valid rows stream into a
temporary staging table with COPY; then one ``INSERT ... SELECT`` moves them into ``voters``,
where the primary key catches duplicates within the file and against earlier parts. A file
with any bad line imports nothing: :class:`~server.errors.UnprocessableContent` names the
first bad lines (at most 20) by number. Memory stays bounded by the chunk size.

A credential key is valid when it canonically encodes a point of edwards25519's prime-order
subgroup other than the identity (DESIGN: every received element is checked: canonical, on
the curve, in the group).

Commitment. The roll sorted by voter id (bytes) is the leaf sequence of an RFC 9162 Merkle
tree (``referendum_core.merkle``); a voter's leaf is the SHA-256 leaf hash of the canonical
entry ``u16 big-endian length of voter_id (UTF-8) ‖ voter_id ‖ 32-byte public key``. At open
the roll is walked once in order and cut into aligned chunks of 1024 leaves whose subtree
hashes go into ``roll_chunks``; the root is the tree over the chunk hashes. A voter's proof is
the proof inside their chunk (1024 leaves recomputed) followed by the chunk's proof in the
tree of chunk hashes: the same path RFC 9162 gives over the whole roll.
"""

from __future__ import annotations

import asyncio
import binascii
import re
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from nacl._sodium import lib as _sodium  # type: ignore[import-not-found]

from referendum_core import merkle
from server.db import translated
from server.errors import Conflict, NotFound, UnprocessableContent

__all__ = [
    "CHUNK_LEAVES",
    "MAX_REPORTED_ERRORS",
    "InclusionProof",
    "RollFormat",
    "RollParser",
    "canonical_entry",
    "commit_roll",
    "import_roll",
    "is_valid_credential_key",
    "roll_inclusion_proof",
    "roll_leaf_hash",
]

RollFormat = Literal["csv", "ndjson"]

CHUNK_LEAVES = 1024
"""Leaves per stored roll chunk (a power of two, so chunks are subtrees of the roll tree)."""
MAX_REPORTED_ERRORS = 20
"""Bad lines named in a refused upload."""
_CHECK_BATCH = 4096  # keys per worker-thread task

VOTER_ID_PATTERN = r"[A-Za-z0-9._:@-]{1,128}"
_VOTER_ID = re.compile(VOTER_ID_PATTERN.encode())
_VOTER_ID_TEXT = re.compile(VOTER_ID_PATTERN)
_CSV_HEADERS = (b"voter_id,public_key", b"voter_id,public_key_hex")

_BASE = bytes.fromhex("5866666666666666666666666666666666666666666666666666666666666666")


def is_valid_credential_key(key: bytes) -> bool:
    """Whether ``key`` is a valid Ed25519 public key: 32 bytes encoding, canonically, a point
    on the curve, not of small order, in the prime-order subgroup (libsodium's
    ``crypto_core_ed25519_is_valid_point``).

    Called through the cffi library directly: the call drops the GIL, so worker threads
    check keys in parallel (~45 µs a key on one core, the bulk of an import's work).

    >>> is_valid_credential_key(_BASE)
    True
    >>> is_valid_credential_key(bytes(32))  # order 4
    False
    """
    if len(key) != 32:
        return False
    valid: int = _sodium.crypto_core_ed25519_is_valid_point(key)
    return valid == 1


def _bad_key_positions(keys: Sequence[bytes], offset: int) -> list[int]:
    """Indexes (plus ``offset``) of invalid keys; run on worker threads: libsodium drops the GIL."""
    return [offset + i for i, key in enumerate(keys) if not is_valid_credential_key(key)]


def canonical_entry(voter_id: str, public_key: bytes) -> bytes:
    """The committed bytes of one roll entry: ``u16be(len) ‖ voter_id ‖ public_key``.

    >>> canonical_entry("v1", bytes(32)).hex()[:12]
    '000276310000'
    """
    raw = voter_id.encode()
    return len(raw).to_bytes(2, "big") + raw + public_key


def roll_leaf_hash(voter_id: str, public_key: bytes) -> bytes:
    """The Merkle leaf hash of one roll entry."""
    return merkle.leaf_hash(canonical_entry(voter_id, public_key))


@dataclass
class RollParser:
    """Splits an upload into lines and parses them, keeping the first bad lines.

    ``feed`` takes raw chunks in order and returns ``(line, voter_id, public_key)`` rows whose
    syntax is valid (keys are checked separately); ``finish`` returns the last row.
    """

    fmt: RollFormat
    line: int = 0
    error_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    _rest: bytes = b""

    def error(self, line: int, reason: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"line": line, "reason": reason})

    def feed(self, chunk: bytes) -> list[tuple[int, str, bytes]]:
        lines = (self._rest + chunk).split(b"\n")
        self._rest = lines.pop()
        return self._parse(lines)

    def finish(self) -> list[tuple[int, str, bytes]]:
        rest, self._rest = self._rest, b""
        return self._parse([rest]) if rest.strip(b"\r") else []

    def _parse(self, lines: list[bytes]) -> list[tuple[int, str, bytes]]:
        rows: list[tuple[int, str, bytes]] = []
        append = rows.append
        number = self.line
        csv = self.fmt == "csv"
        match = _VOTER_ID.fullmatch
        unhex = binascii.unhexlify
        for raw in lines:
            number += 1
            text = raw[:-1] if raw.endswith(b"\r") else raw
            if csv:
                voter, comma, key_hex = text.partition(b",")
                if not comma:
                    self.error(number, "expected voter_id,public_key")
                    continue
                if number == 1 and text in _CSV_HEADERS:
                    continue
            else:
                parsed = self._ndjson(number, text)
                if parsed is None:
                    continue
                voter, key_hex = parsed
            if match(voter) is None:
                self.error(number, "voter_id must be 1 to 128 of A-Z a-z 0-9 . _ : @ -")
                continue
            if len(key_hex) != 64:
                self.error(number, "public_key must be 64 hex digits (32 bytes)")
                continue
            try:
                key = unhex(key_hex)
            except (binascii.Error, ValueError):
                self.error(number, "public_key must be 64 hex digits (32 bytes)")
                continue
            append((number, voter.decode("ascii"), key))
        self.line = number
        return rows

    def _ndjson(self, number: int, text: bytes) -> tuple[bytes, bytes] | None:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            self.error(number, "malformed JSON")
            return None
        if not isinstance(value, dict) or set(value) != {"voter_id", "public_key"}:
            self.error(number, 'expected {"voter_id": ..., "public_key": ...}')
            return None
        voter, key = value["voter_id"], value["public_key"]
        if not isinstance(voter, str) or not isinstance(key, str):
            self.error(number, "voter_id and public_key must be strings")
            return None
        return voter.encode(), key.encode()


async def _checked_rows(
    body: AsyncIterable[bytes], parser: RollParser, executor: Executor | None, threads: int
) -> AsyncIterator[tuple[int, str, bytes]]:
    """Rows with valid syntax and keys, in order; bad lines are recorded on ``parser``.

    While the worker threads check one chunk's keys, the next chunk is read and parsed.
    """
    loop = asyncio.get_running_loop()

    def submit(rows: list[tuple[int, str, bytes]]) -> asyncio.Future[list[list[int]]]:
        keys = [row[2] for row in rows]
        step = max(_CHECK_BATCH, -(-len(keys) // max(threads, 1)))
        return asyncio.gather(
            *(
                loop.run_in_executor(executor, _bad_key_positions, keys[i : i + step], i)
                for i in range(0, len(keys), step)
            )
        )

    pending: tuple[list[tuple[int, str, bytes]], asyncio.Future[list[list[int]]]] | None = None

    async def drain() -> AsyncIterator[tuple[int, str, bytes]]:
        assert pending is not None
        rows, future = pending
        bad = {i for part in await future for i in part}
        for i, row in enumerate(rows):
            if i in bad:
                parser.error(row[0], "public_key is not a valid Ed25519 point")
            else:
                yield row

    try:
        async for chunk in body:
            rows = parser.feed(chunk)
            if not rows:
                continue
            current = (rows, submit(rows))
            if pending is not None:
                async for row in drain():
                    yield row
            pending = current
        rows = parser.finish()
        if rows:
            current = (rows, submit(rows))
            if pending is not None:
                async for row in drain():
                    yield row
            pending = current
        if pending is not None:
            async for row in drain():
                yield row
            pending = None
    finally:
        if pending is not None:
            pending[1].cancel()


async def _lock_draft(conn: Any, rid: str) -> None:
    state = await conn.fetchval("SELECT state FROM referendums WHERE id = $1 FOR UPDATE", rid)
    if state is None:
        raise NotFound(f"no referendum {rid!r}")
    if state != "draft":
        raise Conflict(
            f"the roll is frozen: referendum {rid!r} is {state}", slug="roll-frozen", state=state
        )


# The first bad lines (LIMIT = MAX_REPORTED_ERRORS) and how many there are in all.
_DUPLICATES_SQL = """
SELECT line, reason, count(*) OVER () AS total FROM (
    SELECT line, 'duplicate voter_id (also on line ' || first_line || ')' AS reason
    FROM (
        SELECT line, min(line) OVER (PARTITION BY voter_id) AS first_line FROM roll_staging
    ) firsts
    WHERE line > first_line
    UNION ALL
    SELECT s.line, 'voter_id already imported in an earlier part' AS reason
    FROM roll_staging s JOIN voters v ON v.referendum_id = $1 AND v.voter_id = s.voter_id
) bad
ORDER BY line LIMIT 20
"""


async def _duplicate_errors(conn: Any, rid: str, parser: RollParser) -> None:
    with translated():
        records = await conn.fetch(_DUPLICATES_SQL, rid)
    for record in records:
        parser.error(record["line"], record["reason"])
    if records:
        parser.error_count += int(records[0]["total"]) - len(records)


async def import_roll(
    conn: Any,
    rid: str,
    body: AsyncIterable[bytes],
    fmt: RollFormat,
    *,
    executor: Executor | None = None,
    threads: int = 1,
) -> dict[str, int]:
    """Import one roll part into draft referendum ``rid``, all or nothing.

    Requires an open transaction on ``conn`` (the referendum row stays locked until it ends,
    so imports and the open transition take turns). Returns ``{"imported", "roll_size"}``.
    Raises NotFound, Conflict (not a draft), UnprocessableContent naming the first bad lines,
    or whatever ``body`` raises (PayloadTooLarge).
    """
    with translated():
        await _lock_draft(conn, rid)
        await conn.execute(
            """CREATE TEMP TABLE roll_staging (
                   line bigint NOT NULL, voter_id text COLLATE "C" NOT NULL,
                   public_key bytea NOT NULL) ON COMMIT DROP"""
        )
    parser = RollParser(fmt)
    rows = _checked_rows(body, parser, executor, threads)
    with translated():
        await conn.copy_records_to_table(
            "roll_staging", records=rows, columns=["line", "voter_id", "public_key"]
        )
    imported = 0
    if parser.error_count == 0:
        try:
            async with conn.transaction():  # a savepoint: a duplicate leaves staging readable
                with translated():
                    status = await conn.execute(
                        """INSERT INTO voters (referendum_id, voter_id, public_key)
                           SELECT $1, voter_id, public_key FROM roll_staging ORDER BY voter_id""",
                        rid,
                    )
                imported = int(status.rsplit(" ", 1)[1])
        except Conflict:
            await _duplicate_errors(conn, rid, parser)
    else:
        await _duplicate_errors(conn, rid, parser)
    if parser.error_count:
        errors = sorted(parser.errors, key=lambda e: e["line"])[:MAX_REPORTED_ERRORS]
        raise UnprocessableContent(
            f"the roll file has {parser.error_count} bad line(s); nothing was imported",
            slug="bad-roll",
            errors=errors,
            error_count=parser.error_count,
        )
    if imported == 0:
        raise UnprocessableContent("the roll file has no voter lines", slug="bad-roll", errors=[])
    with translated():
        roll_size = await conn.fetchval(
            "UPDATE referendums SET roll_size = roll_size + $2 WHERE id = $1 RETURNING roll_size",
            rid,
            imported,
        )
    return {"imported": imported, "roll_size": int(roll_size), "lines": parser.line}


async def commit_roll(conn: Any, rid: str) -> tuple[bytes, int]:
    """Compute and store the roll commitment of ``rid``; return ``(root, size)``.

    Requires a transaction holding the referendum row lock. Walks the roll once in voter-id
    order, keeping one chunk of leaf hashes and the chunk hashes in memory (32 bytes per 1024
    voters).
    """
    chunk_roots: list[bytes] = []
    size = 0
    with translated():
        await conn.execute("DELETE FROM roll_chunks WHERE referendum_id = $1", rid)
        cursor = await conn.cursor(
            "SELECT voter_id, public_key FROM voters WHERE referendum_id = $1 ORDER BY voter_id",
            rid,
        )
        while True:
            records = await cursor.fetch(CHUNK_LEAVES)
            if not records:
                break
            leaves = [roll_leaf_hash(r["voter_id"], bytes(r["public_key"])) for r in records]
            root = merkle.root_from_leaf_hashes(leaves)
            await conn.execute(
                """INSERT INTO roll_chunks
                       (referendum_id, chunk_index, first_voter_id, leaf_count, root)
                   VALUES ($1, $2, $3, $4, $5)""",
                rid,
                len(chunk_roots),
                records[0]["voter_id"],
                len(records),
                root,
            )
            chunk_roots.append(root)
            size += len(records)
            if len(records) < CHUNK_LEAVES:
                break
    return merkle.root_from_leaf_hashes(chunk_roots), size


@dataclass(frozen=True)
class InclusionProof:
    """A voter's entry and its RFC 9162 inclusion proof in the roll commitment."""

    voter_id: str
    public_key: bytes
    index: int
    size: int
    proof: list[bytes]
    root: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "voter_id": self.voter_id,
            "public_key": self.public_key.hex(),
            "index": self.index,
            "size": self.size,
            "proof": [h.hex() for h in self.proof],
            "root": self.root.hex(),
        }


class _ChunkTree:
    """The tree over one roll's chunk hashes, with memoised subtree hashes."""

    def __init__(self, roots: list[bytes]) -> None:
        self.roots = roots
        self._memo: dict[tuple[int, int], bytes] = {}

    def proof(self, index: int) -> list[bytes]:
        out = []
        for begin, end in merkle.inclusion_proof_ranges(index, len(self.roots)):
            value = self._memo.get((begin, end))
            if value is None:
                value = merkle.root_from_leaf_hashes(self.roots[begin:end])
                self._memo[(begin, end)] = value
            out.append(value)
        return out


_TREES: OrderedDict[tuple[str, bytes], _ChunkTree] = OrderedDict()
_TREES_KEPT = 8  # referendums whose chunk trees stay cached in this process


async def _chunk_tree(conn: Any, rid: str, root: bytes) -> _ChunkTree:
    key = (rid, root)  # a committed roll never changes, so (id, root) names it for good
    tree = _TREES.get(key)
    if tree is None:
        with translated():
            rows = await conn.fetch(
                "SELECT root FROM roll_chunks WHERE referendum_id = $1 ORDER BY chunk_index", rid
            )
        tree = _ChunkTree([bytes(r["root"]) for r in rows])
        _TREES[key] = tree
        while len(_TREES) > _TREES_KEPT:
            _TREES.popitem(last=False)
    _TREES.move_to_end(key)
    return tree


async def roll_inclusion_proof(conn: Any, rid: str, voter_id: str) -> InclusionProof:
    """The inclusion proof of ``voter_id`` in the committed roll of ``rid``.

    Raises NotFound when the referendum is unknown, its roll not yet committed (before open),
    or the voter is not on it.
    """
    with translated():
        ref = await conn.fetchrow("SELECT roll_root, roll_size FROM referendums WHERE id = $1", rid)
        if ref is None:
            raise NotFound(f"no referendum {rid!r}")
        if ref["roll_root"] is None:
            raise NotFound("the roll is committed when the referendum opens", slug="no-commitment")
        if _VOTER_ID_TEXT.fullmatch(voter_id) is None:
            raise NotFound("no such voter on the roll", slug="no-voter")
        chunk = await conn.fetchrow(
            """SELECT chunk_index, first_voter_id, leaf_count FROM roll_chunks
               WHERE referendum_id = $1 AND first_voter_id <= $2
               ORDER BY first_voter_id DESC LIMIT 1""",
            rid,
            voter_id,
        )
        if chunk is None:
            raise NotFound("no such voter on the roll", slug="no-voter")
        records = await conn.fetch(
            """SELECT voter_id, public_key FROM voters
               WHERE referendum_id = $1 AND voter_id >= $2 ORDER BY voter_id LIMIT $3""",
            rid,
            chunk["first_voter_id"],
            chunk["leaf_count"],
        )
    position = next((i for i, r in enumerate(records) if r["voter_id"] == voter_id), None)
    if position is None:
        raise NotFound("no such voter on the roll", slug="no-voter")
    leaves = [roll_leaf_hash(r["voter_id"], bytes(r["public_key"])) for r in records]
    root = bytes(ref["roll_root"])
    tree = await _chunk_tree(conn, rid, root)
    index = chunk["chunk_index"] * CHUNK_LEAVES + position
    proof = merkle.inclusion_proof(leaves, position) + tree.proof(chunk["chunk_index"])
    return InclusionProof(
        voter_id,
        bytes(records[position]["public_key"]),
        index,
        int(ref["roll_size"]),
        proof,
        root,
    )


def roll_digest(entries: Sequence[tuple[str, bytes]]) -> bytes:
    """Root over ``entries`` sorted by voter id: the commitment recomputed in memory (tests)."""
    ordered = sorted(entries, key=lambda e: e[0].encode())
    return merkle.root_from_leaf_hashes([roll_leaf_hash(v, k) for v, k in ordered])
