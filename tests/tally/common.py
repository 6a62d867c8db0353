"""Helpers of the tally tests: a referendum stored directly, ballots, sealing, decryption."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from batcher.service import LogSigner, seal_block
from referendum_core import merkle
from referendum_core.ballot import BallotSpec, verify_ballot
from referendum_core.ballot_codec import credential_of
from referendum_core.client import make_ballot, new_voter_key
from referendum_core.group import Point, random_scalar
from referendum_core.roll import VoterIdHasher, roll_leaf_hash
from referendum_service.keys import load_or_create_key

__all__ = ["Election", "decrypt_counts", "insert_ballots", "make_election", "seal_all"]

VOTER_ID_KEY = bytes(range(32))
"""The voter-id key the tests' rolls are hashed under (a fixed test value)."""


@dataclass
class Election:
    """A referendum with a single-secret election key (test oracle) and its voters."""

    spec: BallotSpec
    secret: int
    policy: str
    voters: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)

    @property
    def rid(self) -> str:
        return self.spec.referendum_id

    def ballot(self, voter_id: str, selections: list[int]) -> tuple[dict[str, Any], bytes]:
        """A fresh ballot of ``voter_id``'s credential: its JSON body and canonical bytes."""
        secret, public = self.voters[voter_id]
        body = make_ballot(self.spec, secret, selections)
        verified = verify_ballot(self.spec, body)
        assert verified.credential == public
        return body, verified.canonical


def make_election(
    rid: str,
    options: tuple[str, ...],
    voters: int,
    *,
    policy: str = "last_counts",
    min_sel: int = 1,
    max_sel: int = 1,
) -> Election:
    """An election key and ``voters`` fresh voter keys (nothing stored yet)."""
    secret = random_scalar()
    spec = BallotSpec(rid, options, min_sel, max_sel, Point.base_mul(secret).to_compressed())
    election = Election(spec, secret, policy)
    for i in range(voters):
        election.voters[f"voter-{i:05d}"] = new_voter_key()
    return election


async def store_referendum(conn: Any, election: Election, state: str = "open") -> None:
    """Insert the referendum and its roll straight into the tables, in ``state``."""
    now = datetime.now(UTC)
    spec = election.spec
    hasher = VoterIdHasher(VOTER_ID_KEY, spec.referendum_id)
    entries = [(hasher(v.encode()), keys[1]) for v, keys in election.voters.items()]
    root = merkle.root_from_leaf_hashes([roll_leaf_hash(c) for c in sorted(c for _, c in entries)])
    await conn.execute(
        """INSERT INTO referendums (id, question, options, min_selections, max_selections,
               opens_at, closes_at, revote_policy, threshold_k, trustees_n, state,
               election_public_key, roll_root, roll_size)
           VALUES ($1, 'Test?', $2::jsonb, $3, $4, $5, $6, $7, 1, 1, $8, $9, $10, $11)""",
        spec.referendum_id,
        orjson.dumps(list(spec.options)).decode(),
        spec.min_selections,
        spec.max_selections,
        now - timedelta(hours=1),
        now + timedelta(hours=1),
        election.policy,
        state,
        spec.election_public_key,
        root,
        len(entries),
    )
    await conn.copy_records_to_table(
        "voters",
        records=[(spec.referendum_id, c, h) for h, c in entries],
        columns=["referendum_id", "credential", "voter_hash"],
    )


async def insert_ballots(conn: Any, election: Election, ballots: list[tuple[str, bytes]]) -> None:
    """Store accepted ballots (voter id, canonical bytes) as ingestion would, unsequenced: each
    under the credential its bytes name (the voter id only picks the test's voter)."""
    revote = election.policy == "forbid"
    rows = []
    for _, c in ballots:
        credential = credential_of(c)
        digest = hashlib.sha256(c).digest()
        rows.append((election.rid, credential, digest, c, credential if revote else None))
    await conn.executemany(
        "INSERT INTO ballots (referendum_id, credential, ballot_hash, body, receipt, revote_key)"
        " VALUES ($1, $2, $3, $4, '\\x7b7d', $5)",
        rows,
    )


def signer(folder: Path | None = None) -> LogSigner:
    """A log signing key under ``folder`` (a fresh temporary folder by default)."""
    import tempfile

    key = load_or_create_key(None, folder or Path(tempfile.mkdtemp()), "log")
    return LogSigner(key, "test.example/log")


async def seal_all(
    conn: Any, rid: str, log_signer: LogSigner, *, close: bool = False, max_ballots: int = 10_000
) -> int:
    """Seal blocks until nothing waits (and, with ``close``, the final block); return count."""
    sealed = 0
    while True:
        block = await seal_block(conn, rid, log_signer, max_ballots=max_ballots, close=close)
        if block is None:
            return sealed
        sealed += 1
        if block.final:
            return sealed


def decrypt_counts(election: Election, ciphertexts: list[bytes], bound: int) -> list[int]:
    """Decrypt each 130-byte ciphertext with the single election secret (test oracle)."""
    from referendum_core.elgamal import Ciphertext

    counts = []
    for raw in ciphertexts:
        ct = Ciphertext.from_bytes(raw)
        m_point = ct.b - ct.a * election.secret
        for m in range(bound + 1):
            if Point.base_mul(m) == m_point:
                counts.append(m)
                break
        else:
            raise AssertionError("tally does not decrypt to a count within the bound")
    return counts


async def publish_small_election(
    dsn: str,
    out: Path | None,
    *,
    voters: int = 30,
    policy: str = "last_counts",
    revoters: int = 5,
    block: int = 8,
    key_folder: Path | None = None,
) -> tuple[Election, list[int]]:
    """A small election through the domain code (no HTTP): sealed, folded, decrypted by 2 of 3
    trustees (trustee CLI), published and exported to ``out`` (unless None); returns it and
    its counts. ``key_folder`` holds the log key (``keys/log.key``), fresh by default."""
    import asyncpg

    from batcher.tally import fold_new_blocks
    from referendum_service.store.tallies import load_tally
    from server.decryption import accept_share, publish_result, store_trustees
    from server.record import export_record
    from tests.tally.trustees import TrusteeBoard

    rng = random.Random(voters * 7 + revoters)
    rid = f"small-{policy.replace('_', '-')}"
    board = TrusteeBoard.create(rid, k=2, n=3)
    election = make_election(rid, ("yes", "no"), voters, policy=policy)
    election.spec = BallotSpec(rid, ("yes", "no"), 1, 1, board.election_public_key)
    conn = await asyncpg.connect(dsn)
    try:
        await store_referendum(conn, election, state="draft")
        await conn.execute("UPDATE referendums SET threshold_k = 2, trustees_n = 3")
        await store_trustees(conn, rid, board.commitments(), "test")
        await conn.execute("UPDATE referendums SET state = 'open'")
        log_signer = signer(key_folder)
        last: dict[str, int] = {}
        rounds = [list(election.voters), rng.sample(list(election.voters), revoters)]
        for round_voters in rounds if policy == "last_counts" else rounds[:1]:
            batch = []
            for v in round_voters:
                yes = rng.randint(0, 1)
                batch.append((v, election.ballot(v, [yes, 1 - yes])[1]))
                last[v] = yes
            await insert_ballots(conn, election, batch)
            await seal_all(conn, rid, log_signer, max_ballots=block)
            await fold_new_blocks(conn, rid)
        await conn.execute("UPDATE referendums SET state = 'closed'")
        await seal_all(conn, rid, log_signer, close=True, max_ballots=block)
        await fold_new_blocks(conn, rid)
        state = await load_tally(conn, rid)
        assert state is not None and state.final
        for index in (1, 2):
            await accept_share(conn, rid, board.decrypt(index, state.to_json(("yes", "no"))))
        result = await publish_result(conn, rid, "test")
        if out is not None:
            await export_record(conn, rid, out, log_signer.verifier_key())
    finally:
        await conn.close()
    yes_total = sum(last.values())
    assert result["counts"] == [yes_total, len(last) - yes_total]
    return election, result["counts"]
