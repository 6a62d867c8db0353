"""Where the imported voter ids went: the demo's check that none left the office's roll file.

The office's roll (``roll.csv`` of a pool, ``voter_id,credential``) is the only place a voter
id may be written. After a referendum :func:`scan_for_voter_ids` looks for every one of them
in what the demo produced: each file of the election record, each line the servers and the
batcher logged, and a dump of the database (every row of every table, as PostgreSQL prints
it). An id is looked for in clear and as the hex of its UTF-8 bytes (how a ``bytea`` column
would print it); the keyed hash the database keeps is neither.

Ids are found by a pattern of the pool's id grammar (``v`` and ten digits) and then checked
against the roll, so the scan reads each byte once however long the roll.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PrivacyScan", "listing_problem", "scan_database", "scan_files", "scan_for_voter_ids"]

LISTED_MEMBERS = frozenset({"index", "ballot_hash", "body", "credential"})
"""The members of a ballot in a block's public listing, and no others."""
_CLEAR = re.compile(rb"v[0-9]{10}")
_HEX = re.compile(rb"76(?:3[0-9]){10}")  # the same ids as hex of their UTF-8 bytes
_ROWS_PER_FETCH = 2000


@dataclass
class PrivacyScan:
    """What was read and which roll voter ids were found where (empty: none leaked)."""

    voter_ids: int = 0
    files: int = 0
    tables: int = 0
    rows: int = 0
    bytes_read: int = 0
    found: dict[str, list[str]] = field(default_factory=dict)
    """Place (file, ``table <name>``) → the roll ids found there (a few of them)."""

    @property
    def clean(self) -> bool:
        return not self.found

    def as_dict(self) -> dict[str, Any]:
        return {
            "voter_ids": self.voter_ids,
            "files": self.files,
            "tables": self.tables,
            "rows": self.rows,
            "bytes_read": self.bytes_read,
            "clean": self.clean,
            "found": self.found,
        }


def read_roll_ids(roll_csv: Path) -> frozenset[bytes]:
    """The voter ids of an office roll file (first column, header skipped), as UTF-8 bytes."""
    with roll_csv.open("rb") as handle:
        handle.readline()
        return frozenset(line.split(b",", 1)[0] for line in handle if line.strip())


def _hits(data: bytes, ids: frozenset[bytes]) -> set[bytes]:
    hits = {m for m in _CLEAR.findall(data) if m in ids}
    hits.update(
        raw for raw in (bytes.fromhex(m.decode()) for m in _HEX.findall(data)) if raw in ids
    )
    return hits


def _note(scan: PrivacyScan, place: str, hits: set[bytes]) -> None:
    if hits:
        listed = scan.found.setdefault(place, [])
        listed.extend(sorted(h.decode() for h in hits)[: max(0, 5 - len(listed))])


def scan_files(scan: PrivacyScan, paths: Iterable[Path], ids: frozenset[bytes]) -> None:
    """Look for ``ids`` in every file of ``paths`` (folders are walked)."""
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            data = file.read_bytes()
            scan.files += 1
            scan.bytes_read += len(data)
            _note(scan, str(file), _hits(data, ids))


async def scan_database(scan: PrivacyScan, dsn: str, ids: frozenset[bytes]) -> None:
    """Look for ``ids`` in every row of every table of the database at ``dsn``."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS name"
            " FROM information_schema.tables WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        )
        for table in tables:
            name = table["name"]
            scan.tables += 1
            hits: set[bytes] = set()
            async with conn.transaction():
                # names come from the catalog, quoted by quote_ident
                cursor = await conn.cursor(f"SELECT t::text AS row FROM {name} AS t")  # noqa: S608
                while True:
                    rows = await cursor.fetch(_ROWS_PER_FETCH)
                    if not rows:
                        break
                    chunk = "\n".join(r["row"] for r in rows).encode()
                    scan.rows += len(rows)
                    scan.bytes_read += len(chunk)
                    hits |= _hits(chunk, ids)
            _note(scan, f"table {name}", hits)
    finally:
        await conn.close()


async def scan_for_voter_ids(
    roll_csv: Path, *, dsn: str | None, paths: Iterable[Path]
) -> PrivacyScan:
    """Every voter id of ``roll_csv`` looked for in ``paths`` and the database at ``dsn``."""
    ids = read_roll_ids(roll_csv)
    scan = PrivacyScan(voter_ids=len(ids))
    scan_files(scan, paths, ids)
    if dsn is not None:
        await scan_database(scan, dsn, ids)
    return scan


def listing_problem(page: Any) -> str | None:
    """What is wrong with a page of a block's ballots (``{"ballots": [...]}``), None when
    nothing: a member beyond the public ones (a voter id, an acceptance time), or a credential
    that is not the one the body names. The load test's auditor asks it of every page.

    >>> listing_problem({"ballots": [{"index": 0, "voter_id": "v1"}]})
    "a listed ballot has members ['index', 'voter_id']"
    """
    from referendum_core.ballot_codec import credential_of
    from referendum_core.errors import CoreError

    for item in page.get("ballots", []) if isinstance(page, dict) else []:
        if not isinstance(item, dict) or set(item) != LISTED_MEMBERS:
            return f"a listed ballot has members {sorted(item) if isinstance(item, dict) else item}"
        try:
            named = credential_of(bytes.fromhex(item["body"])).hex()
        except (CoreError, ValueError, TypeError):
            return f"ballot {item.get('index')} has a malformed body"
        if item["credential"] != named:
            return f"ballot {item.get('index')} is listed under another credential"
    return None
