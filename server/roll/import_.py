"""The voter roll's streamed import: parser, reader and store.

An upload is read in batches of whole lines (CSV ``voter_id,credential`` with an optional
header line, or NDJSON ``{"voter_id": ..., "credential": ...}``; a credential is the voter's
Ed25519 public key as 64 hex digits or as a ``did:key``). Of each line the database keeps the
credential and the voter id's keyed hash (:class:`referendum_core.roll.VoterIdHasher`), never
the voter id. A CSV batch whose every line is well formed with a hex credential (one regular
expression over the whole batch) is turned into COPY text line by line with no other parse;
NDJSON batches, ``did:key`` lines and every batch from the first bad one on are parsed line by
line (:class:`RollParser`), bad lines left out. Credential keys are checked on worker threads
(the check drops the GIL) while the next batches are read and parsed. Each checked batch is
stored (:class:`server.roll.store.RollStore`) while the next one is checked: a roll's first
part into its own partition, indexed when it is all in; a later part into ``voters``, whose
unique keys catch a voter id or a credential repeated in the file or imported by an earlier
part. A file with any bad line imports nothing (the caller rolls the transaction back):
:class:`~server.errors.UnprocessableContent` names the first bad lines (at most 20, the lowest
line numbers) and counts them all. Memory stays bounded by a few batches.

A credential key is accepted exactly when libsodium's signature verification can accept a
signature under it: :mod:`referendum_core.credential` says why and how it is checked fast.
"""

from __future__ import annotations

import asyncio
import binascii
import bisect
import contextlib
import operator
import re
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from referendum_core.credential import bad_key_positions, parse_credential
from referendum_core.ids import VOTER_ID_PATTERN
from referendum_core.roll import VoterIdHasher
from referendum_service.db import Unavailable, translated
from server.errors import Conflict, NotFound, UnprocessableContent
from server.roll.partition import new_partition
from server.roll.store import CopyBatch, RollStore
from server.roll.voter_keys import VoterIdKeys

__all__ = ["MAX_REPORTED_ERRORS", "RollFormat", "RollParser", "import_roll"]

RollFormat = Literal["csv", "ndjson"]

MAX_REPORTED_ERRORS = 20
"""Bad lines named in a refused upload."""
_BATCH_BYTES = 1 << 20  # an upload is parsed and copied in batches of whole lines this large
_BATCHES_AHEAD = 3  # batches read ahead while earlier ones are checked and copied
_CHECK_MIN_KEYS = 2048  # fewest keys per worker-thread task

_VOTER_ID = re.compile(VOTER_ID_PATTERN.encode())
_CSV_HEADERS = (b"voter_id,credential", b"voter_id,public_key", b"voter_id,public_key_hex")
# A batch of well-formed CSV lines (line ends already LF): exactly the lines RollParser takes.
_CSV_BATCH = re.compile(b"(?:" + VOTER_ID_PATTERN.encode() + rb",[0-9A-Fa-f]{64}\n)*")
_KEY_REASON = "credential is not a valid Ed25519 public key"
_KEY_FORMAT = "credential must be 64 hex digits or an Ed25519 did:key"
# of a "\\x<64 hex>,\\x<64 hex>" row: the credential's hex digits
_CREDENTIAL_PART = operator.itemgetter(slice(69, None))


def _bad_keys_from(keys: bytes, start: int) -> list[int]:
    """:func:`bad_key_positions` of a slice of a batch's keys, as indexes in the batch."""
    return [start + i for i in bad_key_positions(keys)]


@dataclass
class RollParser:
    """Splits an upload into lines and parses them, keeping the first bad lines.

    ``feed`` takes raw chunks in order and returns ``(line, voter_id, credential)`` rows whose
    syntax is valid (keys are checked separately); ``finish`` returns the last row. ``errors``
    holds the bad lines with the lowest numbers (at most :data:`MAX_REPORTED_ERRORS`, in line
    order), ``error_count`` counts them all.
    """

    fmt: RollFormat
    line: int = 0
    error_count: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    _rest: bytes = b""

    def error(self, line: int, reason: str) -> None:
        self.error_count += 1
        errors = self.errors
        if len(errors) == MAX_REPORTED_ERRORS:
            if line >= errors[-1]["line"]:
                return
            errors.pop()
        bisect.insort(errors, {"line": line, "reason": reason}, key=lambda e: e["line"])

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
                    self.error(number, "expected voter_id,credential")
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
            if len(key_hex) == 64:
                try:
                    key: bytes | None = unhex(key_hex)
                except (binascii.Error, ValueError):
                    key = None
            else:
                try:
                    key = parse_credential(key_hex.decode("ascii"))
                except UnicodeDecodeError:
                    key = None
            if key is None:
                self.error(number, _KEY_FORMAT)
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
        if not isinstance(value, dict) or set(value) != {"voter_id", "credential"}:
            self.error(number, 'expected {"voter_id": ..., "credential": ...}')
            return None
        voter, key = value["voter_id"], value["credential"]
        if not isinstance(voter, str) or not isinstance(key, str):
            self.error(number, "voter_id and credential must be strings")
            return None
        return voter.encode(), key.encode()


def _by_credential(rows: list[bytes]) -> bytes:
    """``\\x<voter hash>,\\x<credential>`` rows as COPY text, ordered by credential: the
    primary key's order, so a batch's inserts walk its index pages once, in order (measured:
    ~1.3x the rate of rows in file order, whose keys are random)."""
    rows.sort(key=_CREDENTIAL_PART)
    return b"".join(rows)


def _fast_csv(
    batch: bytes, hasher: VoterIdHasher, ordered: bool
) -> tuple[bytes, bytes, bytes, int] | None:
    """A batch of whole CSV lines, all well formed with hex credentials, as ``(copy text,
    the same rows ordered by credential when ``ordered`` (else the same text), keys, line
    count)``; None when some line is not (the
    batch is then parsed line by line).

    The COPY text has one ``\\x<voter hash>,\\x<credential>`` line (bytea hex literals, which
    CSV format leaves alone) per line of the batch, in file order (the report table numbers
    them by position); the keys are the decoded keys end to end.
    """
    if b"\r" in batch:
        batch = batch.replace(b"\r\n", b"\n")  # a stray CR is left to fail the match
    if _CSV_BATCH.fullmatch(batch) is None:
        return None
    lines = batch.split(b"\n")
    lines.pop()
    key_hex = [line[-64:] for line in lines]
    rows = [
        b"\\x%s,\\x%s\n" % (hasher(line[:-65]).hex().encode(), k)
        for line, k in zip(lines, key_hex, strict=True)
    ]
    text = b"".join(rows)
    keys = binascii.unhexlify(b"".join(key_hex))
    if not ordered:  # a first part, loaded with no index: its order does not matter
        return text, text, keys, len(lines)
    return text, _by_credential([row.lower() for row in rows]), keys, len(lines)


@dataclass
class _Batch:
    """Parsed lines waiting for their key check: as sent (fast) or as rows (line by line)."""

    first_line: int  # of the fast text's first line
    text: bytes | None  # the COPY text of a well-formed CSV batch, rows numbered by identity
    by_credential: bytes | None  # the same rows ordered by credential, for ``voters``
    rows: list[tuple[int, str, bytes]] | None  # or the parsed rows, with their line numbers
    check: asyncio.Future[list[int]]  # indexes of the bad keys


class _RollReader:
    """Reads an upload in batches, parses them, has their keys checked on worker threads and
    hands out the COPY text of each batch in file order (:meth:`batches`): the batch as sent
    while batches are well formed and their keys valid; after the first bad batch, explicit
    line numbers with the bad lines left out (recorded on :attr:`parser`). A few batches are
    read ahead, so the threads have keys to check while PostgreSQL stores earlier batches.
    """

    def __init__(
        self,
        body: AsyncIterable[bytes],
        fmt: RollFormat,
        executor: Executor | None,
        threads: int,
        hasher: VoterIdHasher,
        ordered: bool = True,
    ) -> None:
        self.parser = RollParser(fmt)
        self._hasher = hasher
        self._ordered = ordered  # rows for an indexed table go in credential order
        self._body = body.__aiter__()
        self._executor = executor
        self._threads = max(threads, 1)
        self._buffer = bytearray()  # read, not parsed yet: less than a batch, or a line's start
        self._eof = False
        self._fast = fmt == "csv"
        self._pending: deque[_Batch] = deque()

    async def first_line(self) -> int:
        """Read up to the end of the first line; return the number of the first voter line
        (2 after a CSV header line, which is consumed; else 1)."""
        while b"\n" not in self._buffer and len(self._buffer) < _BATCH_BYTES and not self._eof:
            await self._read()
        if self.parser.fmt == "csv":
            first = bytes(self._buffer.partition(b"\n")[0])
            if (first[:-1] if first.endswith(b"\r") else first) in _CSV_HEADERS:
                del self._buffer[: len(first) + 1]
                self.parser.line = 1
        return self.parser.line + 1

    async def batches(self) -> AsyncIterator[CopyBatch]:
        """The COPY text of every batch with a good line, in file order, once checked."""
        parser = self.parser
        while True:
            await self._fill()
            if not self._pending:
                return
            batch = self._pending.popleft()
            bad = await batch.check
            if batch.text is not None and self._fast and not bad:
                yield CopyBatch(batch.text, numbered=False, voters=batch.by_credential)
                continue
            self._fast = False  # numbered from here on: the identity no longer follows lines
            if batch.text is not None:
                first = batch.first_line
                rows = batch.text.split(b"\n")[:-1]
                lines = [b"%d,%s\n" % (first + i, row) for i, row in enumerate(rows)]
                for i in bad:
                    parser.error(first + i, _KEY_REASON)
            else:
                assert batch.rows is not None
                hasher = self._hasher
                rows = [
                    b"\\x%s,\\x%s" % (hasher(v.encode()).hex().encode(), k.hex().encode())
                    for _, v, k in batch.rows
                ]
                lines = [b"%d,%s\n" % (r[0], row) for r, row in zip(batch.rows, rows, strict=True)]
                for i in bad:
                    parser.error(batch.rows[i][0], _KEY_REASON)
            for i in reversed(bad):
                del lines[i], rows[i]
            if lines:
                voters = (
                    None if parser.error_count else _by_credential([row + b"\n" for row in rows])
                )
                yield CopyBatch(b"".join(lines), numbered=True, voters=voters)

    def cancel(self) -> None:
        """Drop the key checks still waiting (an import that failed half way)."""
        for batch in self._pending:
            batch.check.cancel()
        self._pending.clear()

    async def _read(self) -> None:
        chunk = await anext(self._body, None)
        if chunk is None:
            self._eof = True
        else:
            self._buffer += chunk

    async def _next_lines(self) -> bytes | None:
        """The next batch of whole lines, each ending in LF (one is added to a last line
        without it), or None at the end of the upload."""
        while True:
            while len(self._buffer) < _BATCH_BYTES and not self._eof:
                await self._read()
            if self._eof or b"\n" in self._buffer:
                break
            await self._skip_long_line()
        if self._eof:
            batch = bytes(self._buffer)
            self._buffer.clear()
            last = batch[batch.rfind(b"\n") + 1 :]
            if last.strip(b"\r"):
                batch += b"\n"
            elif last:
                batch = batch[: -len(last)]  # blank after the last LF: no line
            return batch or None
        end = self._buffer.rfind(b"\n") + 1
        batch = bytes(self._buffer[:end])
        del self._buffer[:end]
        return batch

    async def _skip_long_line(self) -> None:
        """Record the line under way, longer than a batch (no valid line is), as bad and drop
        it up to its LF without holding it in memory."""
        while (end := self._buffer.find(b"\n")) < 0 and not self._eof:
            self._buffer.clear()
            await self._read()
        del self._buffer[: end + 1 if end >= 0 else len(self._buffer)]
        self._fast = False
        self.parser.line += 1
        self.parser.error(self.parser.line, f"line longer than {_BATCH_BYTES} bytes")

    async def _check(self, keys: bytes) -> list[int]:
        """Indexes of the bad keys among ``keys``, checked in up to ``threads`` tasks."""
        loop = asyncio.get_running_loop()
        count = len(keys) // 32
        step = max(_CHECK_MIN_KEYS, -(-count // self._threads))
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._executor, _bad_keys_from, keys[32 * start : 32 * (start + step)], start
                )
                for start in range(0, count, step)
            )
        )
        return [i for part in parts for i in part]

    async def _fill(self) -> None:
        """Read and parse batches until the read-ahead window is full or the upload ends."""
        while len(self._pending) < _BATCHES_AHEAD:
            lines = await self._next_lines()
            if lines is None:
                return
            parser = self.parser
            fast = _fast_csv(lines, self._hasher, self._ordered) if self._fast else None
            if fast is not None:
                text, by_credential, keys, count = fast
                check = asyncio.ensure_future(self._check(keys))
                self._pending.append(_Batch(parser.line + 1, text, by_credential, None, check))
                parser.line += count
            else:
                self._fast = False  # a bad file: the rest goes line by line
                rows = parser.feed(lines)
                check = asyncio.ensure_future(self._check(b"".join([row[2] for row in rows])))
                self._pending.append(_Batch(0, None, None, rows, check))


async def _lock_draft(conn: Any, rid: str) -> str | None:
    """Lock the draft's row; return the voter-id key id its roll was imported under."""
    row = await conn.fetchrow(
        "SELECT state, voter_key_id FROM referendums WHERE id = $1 FOR UPDATE", rid
    )
    if row is None:
        raise NotFound(f"no referendum {rid!r}")
    if row["state"] != "draft":
        raise Conflict(
            f"the roll is frozen: referendum {rid!r} is {row['state']}",
            slug="roll-frozen",
            state=row["state"],
        )
    key_id: str | None = row["voter_key_id"]
    return key_id


async def import_roll(
    conn: Any,
    rid: str,
    body: AsyncIterable[bytes],
    fmt: RollFormat,
    *,
    lines_conn: Any,
    voter_keys: VoterIdKeys,
    executor: Executor | None = None,
    threads: int = 1,
) -> dict[str, int]:
    """Import one roll part into draft referendum ``rid``, all or nothing.

    Requires an open transaction on ``conn``, which a refused part leaves aborted or holding
    rows: the caller rolls it back (the referendum row stays locked until it ends, so imports
    and the open transition take turns). ``lines_conn`` is a second connection, outside any
    transaction, for the lines of a later part's duplicate report
    (:class:`server.roll.store.RollStore`). Keys are checked on ``executor`` (None: the
    loop's default) in up to ``threads`` tasks a batch.
    Returns ``{"imported", "roll_size", "lines"}``. Raises NotFound, Conflict (not a draft),
    UnprocessableContent naming the first bad lines, or whatever ``body`` raises
    (PayloadTooLarge).
    """
    with translated():
        recorded = await _lock_draft(conn, rid)
    key_id, hasher = voter_keys.for_import(rid, recorded)
    with translated():
        table = await new_partition(conn, rid)
    reader = _RollReader(body, fmt, executor, threads, hasher, ordered=table is None)
    parser = reader.parser
    store = RollStore(conn, lines_conn, rid, table)
    lines_transaction = lines_conn.transaction()
    with translated():
        await lines_transaction.start()
    try:
        await store.create(await reader.first_line())
        storing: asyncio.Future[None] | None = None  # the previous batch, stored meanwhile
        try:
            async for batch in reader.batches():
                if storing is not None:
                    await storing
                storing = asyncio.ensure_future(store.store(batch, parser.error_count > 0))
            if storing is not None:
                await storing
            if not parser.error_count:
                await store.finish()
        finally:
            reader.cancel()
            if storing is not None and not storing.done():
                storing.cancel()
                await asyncio.gather(storing, return_exceptions=True)
        if parser.error_count or not store.moving:
            await store.report(parser)
    finally:
        with contextlib.suppress(Unavailable), translated():
            await lines_transaction.rollback()  # the lines are never kept
    if parser.error_count:
        raise UnprocessableContent(
            f"the roll file has {parser.error_count} bad line(s); nothing was imported",
            slug="bad-roll",
            errors=list(parser.errors),
            error_count=parser.error_count,
        )
    if store.imported == 0:
        raise UnprocessableContent("the roll file has no voter lines", slug="bad-roll", errors=[])
    with translated():
        roll_size = await conn.fetchval(
            """UPDATE referendums SET roll_size = roll_size + $2, voter_key_id = $3
               WHERE id = $1 RETURNING roll_size""",
            rid,
            store.imported,
            key_id,
        )
    return {"imported": store.imported, "roll_size": int(roll_size), "lines": parser.line}
