"""The costly invalid ballots of ``referendum bench ingest``'s under-attack rows, made before
timing (the attackers that send them are :mod:`bench.attack`)."""

from __future__ import annotations

import multiprocessing
import secrets
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from referendum_core.ballot import BallotSpec

__all__ = [
    "ATTACK_OPTIONS",
    "ATTACK_REFERENDUM",
    "attack_spec",
    "costly_invalid_ballots",
    "create_attack_referendum",
]

ATTACK_REFERENDUM = "bench-attack"
ATTACK_OPTIONS = 64
"""The most options a referendum may have (``referendum_core.ballot.MAX_OPTIONS``)."""
BASES_PER_VOTER = 4
"""Valid ballots made per attacking voter; the invalid ones recombine their sum proofs."""
DONORS_PER_BASE = 3
"""Invalid variants per valid ballot (each takes the sum proof of another ballot)."""


# --- the costly invalid ballots, made before timing ------------------------------------------


def attack_spec(
    election_public_key: bytes,
    options: int = ATTACK_OPTIONS,
    referendum_id: str = ATTACK_REFERENDUM,
) -> BallotSpec:
    """A multi-select referendum of ``options`` options, 1 to ``options`` selections.

    ``1 <= selections <= k`` is the shape with the largest ballot: k ciphertexts, k 0/1
    proofs and a sum proof of k branches (a range starting at 0 would need none).
    """
    from referendum_core.ballot import BallotSpec

    names = tuple(f"option-{i:02d}" for i in range(options))
    return BallotSpec(referendum_id, names, 1, options, election_public_key)


def _valid_bases(spec: BallotSpec, voter: str, secret: bytes, count: int) -> list[dict[str, Any]]:
    """``count`` valid ballots of ``voter``'s credential (one selection each, at different
    options)."""
    from referendum_core.client import make_ballot

    k = len(spec.options)
    return [
        make_ballot(spec, secret, [1 if j == i % k else 0 for j in range(k)]) for i in range(count)
    ]


def _resigned(body: dict[str, Any], secret: bytes) -> dict[str, Any]:
    """``body`` signed again by ``secret``: its signature verifies whatever it now holds."""
    from nacl.signing import SigningKey

    from referendum_core.ballot import SIGNING_PREFIX
    from referendum_core.ballot_codec import ballot_from_json, encode_body

    signed = SigningKey(secret).sign(SIGNING_PREFIX + encode_body(ballot_from_json(body)))
    return {**body, "signature": bytes(signed.signature).hex()}


def costly_invalid_ballots(
    spec: BallotSpec,
    voters: Sequence[tuple[str, bytes]],
    *,
    bases_per_voter: int = BASES_PER_VOTER,
    processes: int = 1,
) -> list[bytes]:
    """JSON bodies whose signature verifies and whose sum proof is another ballot's.

    ``voters`` are (voter id, secret seed) pairs on the roll of ``spec``'s referendum; the
    result interleaves them (consecutive bodies are of different voters where there are
    several). Requires a ``spec`` with a sum proof (as :func:`attack_spec` makes) and at least
    two ballots in all (``len(voters) * bases_per_voter >= 2``).
    """
    jobs = [(spec, voter, secret, bases_per_voter) for voter, secret in voters]
    if processes > 1 and len(jobs) > 1:
        with multiprocessing.get_context("spawn").Pool(min(processes, len(jobs))) as pool:
            parts = pool.starmap(_valid_bases, jobs)
    else:
        parts = [_valid_bases(*job) for job in jobs]
    bases = [
        (secret, body) for (_, secret), part in zip(voters, parts, strict=True) for body in part
    ]
    if len(bases) < 2:
        raise ValueError("need at least two valid ballots to swap sum proofs between")
    if any(body["sum_proof"] is None for _, body in bases):
        raise ValueError("the referendum's ballots carry no sum proof")
    per_voter: list[list[bytes]] = [[] for _ in voters]
    donors = min(DONORS_PER_BASE, len(bases) - 1)
    for index, (secret, body) in enumerate(bases):
        for step in range(1, donors + 1):
            donor = bases[(index + step) % len(bases)][1]
            forged = _resigned({**body, "sum_proof": donor["sum_proof"]}, secret)
            per_voter[index // bases_per_voter].append(orjson.dumps(forged))
    return [part[i] for i in range(len(per_voter[0])) for part in per_voter]


async def create_attack_referendum(
    conn: Any,
    lines_conn: Any,
    spec: BallotSpec,
    voters: Sequence[tuple[str, bytes]],
    *,
    now: datetime,
) -> None:
    """Create and open ``spec``'s referendum with ``voters`` (id, credential) on its roll,
    their ids kept under a voter-id key made here."""
    from referendum_service.settings import Settings
    from server.referendums import ReferendumDefinition, create_referendum, transition
    from server.roll import import_roll
    from server.roll.voter_keys import VoterIdKeys

    definition = ReferendumDefinition(
        id=spec.referendum_id,
        question="Which of these?",
        options=spec.options,
        min_selections=spec.min_selections,
        max_selections=spec.max_selections,
        opens_at=now,
        closes_at=now + timedelta(days=1),
        revote_policy="forbid",
        threshold_k=1,
        trustees_n=1,
        election_public_key=spec.election_public_key,
    )

    async def roll() -> AsyncIterator[bytes]:
        yield b"".join(f"{voter},{public.hex()}\n".encode() for voter, public in voters)

    await create_referendum(conn, definition, "bench")
    async with conn.transaction():
        await import_roll(
            conn,
            spec.referendum_id,
            roll(),
            "csv",
            lines_conn=lines_conn,
            voter_keys=VoterIdKeys.from_settings(Settings(voter_id_key=secrets.token_hex(32))),
        )
    await transition(conn, spec.referendum_id, "open", "bench")
