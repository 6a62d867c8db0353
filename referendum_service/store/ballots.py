"""Stored ballots: the ballot that counts for each credential, and the ingest path's admission.

* :func:`current_ballots`: per credential, the ballot with the highest log index (the tally).
* :func:`admit_ballots`: for a group of submissions, in one statement, the stored receipt of
  a resubmitted ballot, whether its credential is on the roll, and a token of the credential's
  rate limit (the buckets in ``voter_tokens`` are shared by every server process).
* :func:`charge_tokens`: the verification cost of a failed ballot taken from (or a token given
  back to) its credential's bucket.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from referendum_service.db import translated

__all__ = ["Admission", "AdmitRequest", "admit_ballots", "charge_tokens", "current_ballots"]


async def current_ballots(conn: Any, referendum_id: str) -> list[asyncpg.Record]:
    """The ballot that counts for each credential: the one with the highest log index.

    Only sequenced ballots (those with a ``log_entries`` row) are considered: the log order,
    not arrival time at one of several servers, decides which ballot is newest. Under
    ``forbid`` each credential has one ballot, so this returns all of them. Rows carry
    ``credential``, ``ballot_hash``, ``body``, ``log_index`` and ``block_height``, ordered by
    ``log_index``.
    """
    with translated():
        rows: list[asyncpg.Record] = await conn.fetch(
            """SELECT credential, ballot_hash, body, log_index, block_height FROM (
                   SELECT DISTINCT ON (b.credential) b.credential, b.ballot_hash, b.body,
                          e.log_index, e.block_height
                   FROM log_entries AS e JOIN ballots AS b ON b.id = e.ballot_id
                   WHERE e.referendum_id = $1
                   ORDER BY b.credential, e.log_index DESC
               ) AS latest
               ORDER BY log_index""",
            referendum_id,
        )
    return rows


# --- admission: stored ballots, roll membership and the shared per-credential rate limit ------

# In both statements ``least($cap, t.tokens + greatest(0, extract(epoch FROM now() -
# t.updated_at)) * $rate)`` is the bucket refilled since it was last written, by the
# database's clock (never past the capacity; a clock that went back refills nothing). It is
# written out each time: SET has no local variables. Rows are sorted, so two processes'
# statements lock the buckets they share in the same order.

_ADMIT = """
WITH q AS (
    SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bool[]) WITH ORDINALITY
        AS q(referendum_id, credential, ballot_hash, wants, position)
), found AS (
    SELECT q.position, q.referendum_id, q.credential, q.wants,
           (SELECT b.receipt FROM ballots AS b
             WHERE b.referendum_id = q.referendum_id AND b.ballot_hash = q.ballot_hash)
               AS receipt,
           (SELECT v.credential FROM voters AS v
             WHERE v.referendum_id = q.referendum_id AND v.credential = q.credential)
               AS public_key
    FROM q
), wanted AS (
    SELECT referendum_id, credential, count(*) AS n FROM found
    WHERE wants AND receipt IS NULL AND public_key IS NOT NULL
    GROUP BY referendum_id, credential
), taken AS (
    INSERT INTO voter_tokens AS t (referendum_id, credential, tokens, updated_at, granted)
    SELECT referendum_id, credential, $5::float8 - least(n, floor($5::float8)), now(),
           least(n, floor($5::float8))
    FROM wanted ORDER BY referendum_id, credential
    ON CONFLICT (referendum_id, credential) DO UPDATE SET
        -- EXCLUDED.granted = least(n, floor(capacity)), never less than least(n, refilled)
        granted = least(EXCLUDED.granted, greatest(0, floor(least($5::float8,
            t.tokens + greatest(0, extract(epoch FROM now() - t.updated_at)) * $6::float8)))),
        tokens = least($5::float8,
            t.tokens + greatest(0, extract(epoch FROM now() - t.updated_at)) * $6::float8)
                 - least(EXCLUDED.granted, greatest(0, floor(least($5::float8,
            t.tokens + greatest(0, extract(epoch FROM now() - t.updated_at)) * $6::float8)))),
        updated_at = greatest(t.updated_at, now())
    RETURNING t.referendum_id, t.credential, t.tokens, t.granted
)
SELECT f.position, f.wants, f.receipt, f.public_key, k.tokens, k.granted
FROM found AS f
LEFT JOIN taken AS k
       ON k.referendum_id = f.referendum_id AND k.credential = f.credential
ORDER BY f.position
"""

# EXCLUDED.tokens is what a fresh bucket holds after the charge: capacity - charge.
_CHARGE = """
INSERT INTO voter_tokens AS t (referendum_id, credential, tokens, updated_at, granted)
SELECT q.referendum_id, q.credential, $3::float8 - q.charge, now(), 0
FROM unnest($1::text[], $2::bytea[], $5::float8[]) AS q(referendum_id, credential, charge)
ORDER BY q.referendum_id, q.credential
ON CONFLICT (referendum_id, credential) DO UPDATE SET
    tokens = least($3::float8,
                   least($3::float8, t.tokens
                         + greatest(0, extract(epoch FROM now() - t.updated_at)) * $4::float8)
                   - ($3::float8 - EXCLUDED.tokens)),
    updated_at = greatest(t.updated_at, now())
"""


@dataclass(frozen=True)
class AdmitRequest:
    """One submission to admit: ``wants`` a rate token (False: only look for it)."""

    referendum_id: str
    credential: bytes
    ballot_hash: bytes
    wants: bool


@dataclass(frozen=True)
class Admission:
    """What :func:`admit_ballots` found for one submission.

    ``receipt``: the stored receipt of the same ballot (nothing else was done for it).
    Otherwise ``public_key`` is the credential when it is on the roll (None: not on it), and a
    submission
    that wanted a token has ``granted`` it or not, with the bucket's ``tokens`` after the
    statement (to say when the next token comes).
    """

    receipt: bytes | None
    public_key: bytes | None
    granted: bool
    tokens: float


async def admit_ballots(
    conn: Any, requests: Sequence[AdmitRequest], *, capacity: float, per_second: float
) -> list[Admission]:
    """For each request, in one statement: its stored receipt, roll membership, a rate token.

    A request whose ballot is stored (same referendum and hash) gets its receipt and takes no
    token; one whose credential is on the roll and that ``wants`` takes a token from the
    credential's bucket (``capacity`` tokens, refilled at ``per_second``) when one is left,
    the earliest requests of a credential first. Buckets live in ``voter_tokens``, so every
    server process draws on the same ones.
    """
    with translated(unreachable="database unreachable"):
        rows = await conn.fetch(
            _ADMIT,
            [r.referendum_id for r in requests],
            [r.credential for r in requests],
            [r.ballot_hash for r in requests],
            [r.wants for r in requests],
            float(capacity),
            float(per_second),
        )
    left: dict[tuple[str, bytes], int] = {}
    admissions: list[Admission] = []
    for request, row in zip(requests, rows, strict=True):
        receipt, key = row["receipt"], row["public_key"]
        granted = False
        if receipt is None and key is not None and request.wants:
            voter = (request.referendum_id, request.credential)
            remaining = left.setdefault(voter, int(row["granted"]))
            granted = remaining > 0
            left[voter] = remaining - 1
        admissions.append(
            Admission(
                None if receipt is None else bytes(receipt),
                None if key is None else bytes(key),
                granted,
                float(row["tokens"]) if row["tokens"] is not None else capacity,
            )
        )
    return admissions


async def charge_tokens(
    conn: Any,
    charges: Mapping[tuple[str, bytes], float],
    *,
    capacity: float,
    per_second: float,
) -> None:
    """Take ``charge`` more tokens from each (referendum, credential) bucket; negative gives
    back.

    A bucket never rises above ``capacity`` and may fall below zero (the credential then waits
    until it refills past one).
    """
    keys = sorted(charges)
    with translated(unreachable="database unreachable"):
        await conn.execute(
            _CHARGE,
            [k[0] for k in keys],
            [k[1] for k in keys],
            float(capacity),
            float(per_second),
            [float(charges[k]) for k in keys],
        )
