"""The election record: static files from which anyone re-verifies the whole election.

:func:`export_record` writes, into one folder, everything ``referendum audit verify-election``
needs and nothing it must trust (format and meaning of each file: ``docs/record.md``)::

    manifest.json        format, referendum id, SHA-256 and size of every other file
    referendum.json      the public definition, roll commitment included
    roll.csv             credential,did: every credential (hex, and as did:key) in byte order
    ballots.bin          every logged ballot in log order: u32be length ‖ canonical bytes
    blocks.jsonl         every block (read-API JSON plus "final"), in height order
    log_key.txt          the log's C2SP verifier key
    supersessions.jsonl  superseded ballot → superseding ballot (indexes and hashes)
    tally.json           the encrypted tally at the final block
    trustees.json        the trustees' public commitments
    shares.json          every accepted decryption share with its proofs
    result.json          the published result

Large tables are streamed with server-side cursors, so memory stays flat for 10 million
ballots.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import orjson

from referendum_core.credential import credential_to_did
from referendum_core.record import RECORD_FILES, RECORD_FORMAT, digest_chunks
from referendum_service.store.log import LOGGED_BODIES, block_from_row
from referendum_service.store.tallies import load_result, load_shares, load_tally, load_trustees
from server.errors import Conflict
from server.referendums import load_referendum

__all__ = ["RECORD_FILES", "RECORD_FORMAT", "export_record", "write_manifest"]

_FETCH = 10_000


def _sha256_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as handle:
        return digest_chunks(iter(lambda: handle.read(1 << 20), b""))


def write_manifest(folder: Path, referendum_id: str) -> str:
    """(Re)write ``manifest.json`` over the record files in ``folder``; return its SHA-256."""
    files: dict[str, Any] = {}
    for name in RECORD_FILES:
        digest, size = _sha256_file(folder / name)
        files[name] = {"sha256": digest, "bytes": size}
    manifest = {"format": RECORD_FORMAT, "referendum_id": referendum_id, "files": files}
    data = orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n"
    (folder / "manifest.json").write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _write_json(path: Path, value: Any) -> None:
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2) + b"\n")


async def _stream(conn: Any, query: str, *args: Any) -> Any:
    """Rows of ``query`` through a server-side cursor (requires an open transaction)."""
    async for row in conn.cursor(query, *args, prefetch=_FETCH):
        yield row


async def export_record(conn: Any, referendum_id: str, out: Path, log_key: str) -> str:
    """Write the election record of ``referendum_id`` into folder ``out``; return the manifest's
    SHA-256 (publish it: auditors pin it with ``--manifest-sha256``).

    ``log_key`` is the log's verifier key string. Requires a referendum whose tally is
    complete (the final block folded); Conflict otherwise. Shares and result are written as
    they stand (empty before publication, which ``verify-election`` then reports).
    """
    # one snapshot: every file describes the same state of the database
    async with conn.transaction(readonly=True, isolation="repeatable_read"):
        return await _export(conn, referendum_id, out, log_key)


async def _export(conn: Any, referendum_id: str, out: Path, log_key: str) -> str:
    ref = await load_referendum(conn, referendum_id)
    tally = await load_tally(conn, referendum_id)
    if tally is None or not tally.final:
        raise Conflict("the encrypted tally is not complete yet", slug="tally-not-ready")
    out.mkdir(parents=True, exist_ok=True)
    foreign = set(os.listdir(out)) - {*RECORD_FILES, "manifest.json"}
    if foreign:
        raise Conflict(
            f"{out} holds other files ({sorted(foreign)[:3]}); export into an empty folder",
            slug="record-folder-not-empty",
        )
    _write_json(out / "referendum.json", ref.to_json())

    with (out / "roll.csv").open("w", encoding="utf-8") as handle:
        handle.write("credential,did\n")
        async for row in _stream(
            conn,
            "SELECT credential FROM voters WHERE referendum_id = $1 ORDER BY credential",
            referendum_id,
        ):
            key = bytes(row["credential"])
            handle.write(f"{key.hex()},{credential_to_did(key)}\n")

    with (out / "ballots.bin").open("wb") as handle:
        expected = 0
        async for row in _stream(conn, LOGGED_BODIES, referendum_id, tally.folded_size):
            if row["log_index"] != expected:
                raise RuntimeError(f"log index {expected} of {referendum_id} is missing")
            body = bytes(row["body"])
            handle.write(len(body).to_bytes(4, "big") + body)
            expected += 1

    with (out / "blocks.jsonl").open("wb") as handle:
        async for row in _stream(
            conn,
            "SELECT * FROM blocks WHERE referendum_id = $1 AND height <= $2 ORDER BY height",
            referendum_id,
            tally.folded_height,
        ):
            block = block_from_row(referendum_id, row)
            handle.write(orjson.dumps({**block.to_json(), "final": row["final"]}) + b"\n")

    (out / "log_key.txt").write_text(log_key + "\n", encoding="utf-8")

    with (out / "supersessions.jsonl").open("wb") as handle:
        async for row in _stream(
            conn,
            "SELECT * FROM supersessions WHERE referendum_id = $1 ORDER BY superseded_index",
            referendum_id,
        ):
            entry = {
                "superseded_index": row["superseded_index"],
                "superseded_hash": bytes(row["superseded_hash"]).hex(),
                "superseding_index": row["superseding_index"],
                "superseding_hash": bytes(row["superseding_hash"]).hex(),
            }
            handle.write(orjson.dumps(entry) + b"\n")

    _write_json(out / "tally.json", tally.to_json(ref.options))
    _write_json(out / "trustees.json", await load_trustees(conn, referendum_id))
    _write_json(out / "shares.json", await load_shares(conn, referendum_id))
    _write_json(out / "result.json", await load_result(conn, referendum_id))
    return write_manifest(out, referendum_id)
