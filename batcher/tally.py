"""The running encrypted tally: every sealed block folded in as soon as it exists.

The rules (the homomorphic sum, the implied last option, which ballot supersedes which) are
:mod:`referendum_core.tally`'s; this module keeps them up to date in the database. Under
``last_counts`` the ballot that counts for a credential (the signer's key a ballot names) is
its ballot with the highest log index (the log order decides, as in
``referendum_service.store.ballots.current_ballots``). Under ``forbid`` each credential has one
ballot.

One fold (:func:`fold_block`) is one transaction: lock the ``tallies`` row, read block
``folded_height + 1`` and its ballots, subtract the ballots they supersede, add the ones that
now count, list the supersessions, and move ``folded_height`` on. A crash rolls it all back and
the next run resumes at the same block; nothing is ever counted twice.

For an exactly-one question only the explicit tallies and the number of ballots counted are
kept up to date; the last option is derived (:func:`referendum_core.tally.full_tally`).

Wiring: :func:`run_tally_follower` polls every referendum whose tally is not final; the
batcher may instead call :func:`fold_new_blocks` right after each sealed block.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from referendum_core.ballot import BallotSpec, plan
from referendum_core.ballot_codec import ciphertext_bytes
from referendum_core.elgamal import Ciphertext
from referendum_core.group import Point
from referendum_core.tally import fold, full_tally, split_ciphertexts, supersessions
from referendum_service.settings import Settings

__all__ = [
    "FoldedBlock",
    "fold_block",
    "fold_new_blocks",
    "run_tally_follower",
]

log = structlog.get_logger("batcher.tally")

_ERROR_BACKOFF_S = 1.0


@dataclass(frozen=True)
class FoldedBlock:
    """What one fold did."""

    height: int
    ballots: int
    superseded: int
    final: bool


_BLOCK_BALLOTS = """
SELECT e.log_index, b.credential, b.ballot_hash, b.body
FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id
WHERE e.referendum_id = $1 AND e.log_index >= $2 AND e.log_index < $3
ORDER BY e.log_index
"""

_PREVIOUS = """
SELECT DISTINCT ON (b.credential) b.credential, e.log_index, b.ballot_hash, b.body
FROM ballots AS b JOIN log_entries AS e ON e.ballot_id = b.id
WHERE b.referendum_id = $1 AND b.credential = ANY($2::bytea[]) AND e.log_index < $3
ORDER BY b.credential, e.log_index DESC
"""


async def fold_block(conn: Any, referendum_id: str) -> FoldedBlock | None:
    """Fold the next sealed block into the tally, in one transaction; ``None`` when none waits.

    Requires no transaction open on ``conn`` and a referendum with an election key.
    """
    async with conn.transaction():
        # Joins of ballots with log_entries stay nested loops of index lookups: given a hash
        # join, _PREVIOUS scanned the whole log_entries table for every block (0.15 s a block
        # at 1,000,000 ballots, growing with the log).
        await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
        ref = await conn.fetchrow(
            "SELECT id, options, min_selections, max_selections, election_public_key,"
            " revote_policy FROM referendums WHERE id = $1",
            referendum_id,
        )
        if ref is None or ref["election_public_key"] is None:
            return None
        spec = BallotSpec.from_row(referendum_id, ref)
        shape = plan(spec)
        explicit_n = shape.explicit
        empty = Ciphertext(Point.base_mul(0), Point.base_mul(0)).to_bytes()
        options_n = len(spec.options)
        await conn.execute(
            "INSERT INTO tallies (referendum_id, ciphertexts) VALUES ($1, $2)"
            " ON CONFLICT (referendum_id) DO NOTHING",
            referendum_id,
            empty * options_n,
        )
        row = await conn.fetchrow(
            "SELECT folded_height, folded_size, ballots_counted, ciphertexts FROM tallies"
            " WHERE referendum_id = $1 FOR UPDATE",
            referendum_id,
        )
        assert row is not None
        height = int(row["folded_height"]) + 1
        block = await conn.fetchrow(
            "SELECT first_index, end_index, final FROM blocks"
            " WHERE referendum_id = $1 AND height = $2",
            referendum_id,
            height,
        )
        if block is None:
            return None
        first, end = int(block["first_index"]), int(block["end_index"])
        if first != int(row["folded_size"]):
            raise RuntimeError(
                f"block {height} of {referendum_id} starts at {first}, "
                f"the tally at {row['folded_size']}"
            )
        rows = await conn.fetch(_BLOCK_BALLOTS, referendum_id, first, end)
        if len(rows) != end - first:
            raise RuntimeError(f"block {height} of {referendum_id} lacks ballots")
        added, removed, supersessions, delta = await _block_changes(
            conn, referendum_id, ref["revote_policy"], rows, first, height
        )
        stored = split_ciphertexts(bytes(row["ciphertexts"]))
        explicit = [Ciphertext.from_bytes(c) for c in stored[:explicit_n]]
        explicit = fold(explicit, added, removed)
        counted = int(row["ballots_counted"]) + delta
        tally = full_tally(explicit, counted, shape.implied)
        if supersessions:
            await conn.copy_records_to_table(
                "supersessions",
                records=supersessions,
                columns=[
                    "referendum_id",
                    "superseded_index",
                    "superseded_hash",
                    "superseding_index",
                    "superseding_hash",
                    "block_height",
                ],
            )
        await conn.execute(
            "UPDATE tallies SET folded_height = $2, folded_size = $3, ballots_counted = $4,"
            " ciphertexts = $5, updated_at = now() WHERE referendum_id = $1",
            referendum_id,
            height,
            end,
            counted,
            b"".join(ct.to_bytes() for ct in tally),
        )
    return FoldedBlock(height, end - first, len(supersessions), bool(block["final"]))


async def _block_changes(
    conn: Any,
    referendum_id: str,
    policy: str,
    rows: Sequence[Any],
    first: int,
    height: int,
) -> tuple[list[bytes], list[bytes], list[tuple[Any, ...]], int]:
    """Ciphertexts to add and to remove, supersession rows, and the change in credentials
    counted."""
    if policy != "last_counts":
        return [ciphertext_bytes(r["body"]) for r in rows], [], [], len(rows)
    voters = list(dict.fromkeys(bytes(r["credential"]) for r in rows))
    previous = await conn.fetch(_PREVIOUS, referendum_id, voters, first)
    by_index = {int(r["log_index"]): r for r in (*previous, *rows)}
    latest = {bytes(p["credential"]): int(p["log_index"]) for p in previous}
    pairs = supersessions(((int(r["log_index"]), bytes(r["credential"])) for r in rows), latest)
    rows_sup = [
        _supersession(referendum_id, by_index[old], by_index[new], height) for old, new in pairs
    ]
    removed = [ciphertext_bytes(p["body"]) for p in previous]
    added = [ciphertext_bytes(by_index[latest[v]]["body"]) for v in voters]
    return added, removed, rows_sup, len(voters) - len(previous)


def _supersession(rid: str, old: Any, new: Any, height: int) -> tuple[Any, ...]:
    return (
        rid,
        int(old["log_index"]),
        bytes(old["ballot_hash"]),
        int(new["log_index"]),
        bytes(new["ballot_hash"]),
        height,
    )


async def fold_new_blocks(conn: Any, referendum_id: str) -> int:
    """Fold every sealed block not yet in the tally, one transaction each; return how many.

    Safe to call from several processes at once: the ``tallies`` row lock serialises them.
    """
    folded = 0
    while True:
        result = await fold_block(conn, referendum_id)
        if result is None:
            return folded
        folded += 1
        log.info(
            "tally_folded",
            referendum_id=referendum_id,
            height=result.height,
            ballots=result.ballots,
            superseded=result.superseded,
            final=result.final,
        )
        if result.final:
            return folded


_UNFINISHED = """
SELECT r.id FROM referendums AS r
LEFT JOIN tallies AS t ON t.referendum_id = r.id
LEFT JOIN blocks AS b ON b.referendum_id = r.id AND b.height = t.folded_height
WHERE r.state <> 'draft' AND r.election_public_key IS NOT NULL
  AND NOT coalesce(b.final, false)
"""


async def run_tally_follower(
    pool: asyncpg.Pool,
    stop_event: asyncio.Event,
    *,
    poll_s: float = Settings.tally_poll_ms / 1000,
) -> None:
    """Keep every open or closing referendum's tally folded up to its last sealed block.

    Polls every ``poll_s`` seconds (``Settings.tally_poll_ms``) until ``stop_event`` is set;
    errors (database down) are logged and retried after a pause.
    """
    while not stop_event.is_set():
        pause = poll_s
        try:
            async with pool.acquire() as conn:
                ids = [r["id"] for r in await conn.fetch(_UNFINISHED)]
                for rid in ids:
                    await fold_new_blocks(conn, rid)
        except Exception as exc:  # database down or a refused fold: try again later
            log.warning("tally_follow_failed", error=repr(exc))
            pause = _ERROR_BACKOFF_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), timeout=pause)
