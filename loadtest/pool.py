"""The ballot pool: real signed, encrypted ballots made before a load test, on every core.

A load client that encrypted and proved ballots itself would measure its own CPU, not the
servers'. So a pool is made once (``referendum loadtest pool``) and replayed: Locust users
only read bytes and send them.

A pool is a folder::

    meta.json     referendum definition, election key, counts, the expected tally
    roll.csv      voter_id,credential (hex): the office's roll to upload (PUT .../roll,
                  text/csv); the server keeps only HMAC(voter id) and the credential
    secrets.bin   32-byte Ed25519 seed per voter, in roll order (to sign fresh ballots later)
    ballots.bin   per voter, in roll order: u16 big-endian length ‖ canonical ballot bytes
    revotes.bin   per re-voter: u32 voter index ‖ u16 length ‖ canonical bytes (a second
                  ballot, which counts under the ``last_counts`` policy)

Canonical bytes (``referendum_core.ballot``) are about half the size of the JSON body;
:func:`json_body` turns them back into what the server accepts with no cryptography.

The election key is a single test key whose secret stays in ``meta.json``: a pool is for load
tests and rehearsals, never for a real election. Voter ``i`` is ``v`` followed by ``i`` in
ten digits (the id only the office's roll file holds; ballots name the voter's credential,
the Ed25519 public key of seed ``i``), so id order and file order agree. Selections are drawn
from a seeded generator per voter, so the expected tally is known in advance.
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from referendum_core.ballot import BallotSpec
from referendum_core.ballot_codec import ballot_from_json, ballot_to_json, encode_body
from referendum_core.client import make_ballot, new_voter_key
from referendum_core.group import Point, random_scalar, scalar_to_bytes

__all__ = [
    "POOL_FORMAT",
    "BallotPool",
    "PoolMeta",
    "ballot_hash",
    "canonical_bytes",
    "generate_pool",
    "json_body",
    "voter_id",
]

POOL_FORMAT = 3
"""3: version-2 ballots, which name their credential instead of a voter id."""
_LEN = struct.Struct(">H")
_REVOTE = struct.Struct(">IH")
CHUNK_VOTERS = 250
"""Voters per task handed to a worker process (big enough to amortise the IPC)."""


def voter_id(index: int) -> str:
    """The roll identifier of voter ``index`` (ids sort in roll order).

    >>> voter_id(42)
    'v0000000042'
    """
    return f"v{index:010d}"


@dataclass(frozen=True)
class PoolMeta:
    """What ``meta.json`` holds."""

    format: int
    referendum_id: str
    question: str
    options: list[str]
    min_selections: int
    max_selections: int
    revote_policy: str
    election_public_key: str
    election_secret_key: str
    """Hex scalar of the test election key (load tests only)."""
    voters: int
    ballots: int
    """Voters ``0 .. ballots-1`` have a pooled ballot; the rest of the roll only a key."""
    revotes: int
    expected_tally: list[int]
    """Per option, the selections of each voter's last ballot."""
    canonical_bytes_mean: float
    json_bytes_mean: float
    seconds: float
    ballots_per_s: float
    processes: int
    seed: int
    threshold_k: int = 1
    trustees_n: int = 1
    """Trustees sharing the election key (1 of 1 for a pool's own test key)."""

    def spec(self) -> BallotSpec:
        return BallotSpec(
            self.referendum_id,
            tuple(self.options),
            self.min_selections,
            self.max_selections,
            bytes.fromhex(self.election_public_key),
        )

    def definition(self, opens_at: str, closes_at: str) -> dict[str, Any]:
        """The body of ``POST /v1/referendums`` creating this pool's referendum."""
        return {
            "id": self.referendum_id,
            "question": self.question,
            "options": list(self.options),
            "min_selections": self.min_selections,
            "max_selections": self.max_selections,
            "opens_at": opens_at,
            "closes_at": closes_at,
            "revote_policy": self.revote_policy,
            "threshold_k": self.threshold_k,
            "trustees_n": self.trustees_n,
            "election_public_key": self.election_public_key,
        }


def _selections(seed: int, index: int, revote: bool, spec: BallotSpec) -> list[int]:
    """Deterministic selections for voter ``index``: one option for exactly-one questions."""
    rng = random.Random(f"{seed}:{index}:{int(revote)}")
    k = len(spec.options)
    count = rng.randint(spec.min_selections, spec.max_selections)
    # a 60/40 lean towards the first option makes a wrong tally visible
    lean = count == 1 and rng.random() < 0.6
    chosen = {0} if lean else set(rng.sample(range(k), count))
    return [1 if i in chosen else 0 for i in range(k)]


def canonical_bytes(body: dict[str, Any]) -> bytes:
    """The canonical bytes of a JSON ballot body (what the log's leaf hash covers)."""
    record = ballot_from_json(body)
    return encode_body(record) + record.signature


def json_body(canonical: bytes) -> bytes:
    """The JSON request body for stored canonical bytes (no cryptography, ~20 µs)."""
    return orjson.dumps(ballot_to_json(canonical))


@dataclass(frozen=True)
class _Chunk:
    first: int
    count: int
    with_ballots: int
    """How many of this chunk's voters (from the first) get a ballot."""
    revoters: tuple[int, ...]
    spec: BallotSpec
    seed: int
    last_counts: bool


@dataclass(frozen=True)
class _ChunkResult:
    first: int
    publics: list[bytes]
    secrets: list[bytes]
    ballots: list[bytes]
    revotes: list[tuple[int, bytes]]
    tally: list[int]
    json_bytes: int


def _make_chunk(chunk: _Chunk) -> _ChunkResult:
    spec = chunk.spec
    k = len(spec.options)
    publics, secrets_, ballots = [], [], []
    revotes: list[tuple[int, bytes]] = []
    tally = [0] * k
    json_bytes = 0
    revoters = set(chunk.revoters)
    for index in range(chunk.first, chunk.first + chunk.count):
        secret, public = new_voter_key()
        if index >= chunk.first + chunk.with_ballots:
            publics.append(public)
            secrets_.append(secret)
            continue
        choice = counted = _selections(chunk.seed, index, False, spec)
        body = make_ballot(spec, secret, choice)
        json_bytes += len(orjson.dumps(body))
        publics.append(public)
        secrets_.append(secret)
        ballots.append(canonical_bytes(body))
        if index in revoters:
            choice = _selections(chunk.seed, index, True, spec)
            revotes.append((index, canonical_bytes(make_ballot(spec, secret, choice))))
            if chunk.last_counts:
                counted = choice
        for i, m in enumerate(counted):
            tally[i] += m
    return _ChunkResult(chunk.first, publics, secrets_, ballots, revotes, tally, json_bytes)


def generate_pool(
    out_dir: Path,
    voters: int,
    *,
    referendum_id: str = "loadtest",
    question: str = "Do you approve the proposal?",
    options: Sequence[str] = ("yes", "no"),
    min_selections: int = 1,
    max_selections: int = 1,
    revote_ratio: float = 0.0,
    revote_policy: str | None = None,
    processes: int | None = None,
    seed: int = 1,
    progress: bool = True,
    ballots: int | None = None,
    election_public_key: bytes | None = None,
    trustees: tuple[int, int] = (1, 1),
) -> PoolMeta:
    """Make ``voters`` keys and one ballot each (plus re-votes) into ``out_dir``.

    Uses ``processes`` worker processes (default: every core). ``revote_ratio`` of the voters
    with a ballot, chosen by ``seed``, also get a second ballot; the policy defaults to
    ``last_counts`` when there are re-votes, else ``forbid``. With ``ballots`` below
    ``voters`` only the first ``ballots`` voters get ballots (a full-size roll with a partial
    turnout, for rehearsals that cannot afford every ballot). Returns the metadata also
    written to ``meta.json``.
    """
    from tqdm import tqdm

    if voters < 1:
        raise ValueError("a pool needs at least one voter")
    if not 0.0 <= revote_ratio <= 1.0:
        raise ValueError("revote_ratio must be within [0, 1]")
    with_ballots = voters if ballots is None else ballots
    if not 0 <= with_ballots <= voters:
        raise ValueError("ballots must be within [0, voters]")
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = processes or os.cpu_count() or 1
    # Without a given key (the trustees' joint key) the pool makes a single test key and keeps
    # its secret in meta.json, so a load test can decrypt its tally without trustees.
    election_secret = random_scalar() if election_public_key is None else 0
    election_public = (
        Point.base_mul(election_secret).to_compressed()
        if election_public_key is None
        else election_public_key
    )
    spec = BallotSpec(
        referendum_id, tuple(options), min_selections, max_selections, election_public
    )
    policy = revote_policy or ("last_counts" if revote_ratio > 0 else "forbid")
    picker = random.Random(seed)
    revoters = sorted(picker.sample(range(with_ballots), round(with_ballots * revote_ratio)))
    chunks = []
    r = 0
    for first in range(0, voters, CHUNK_VOTERS):
        count = min(CHUNK_VOTERS, voters - first)
        mine = []
        while r < len(revoters) and revoters[r] < first + count:
            mine.append(revoters[r])
            r += 1
        chunks.append(
            _Chunk(
                first,
                count,
                max(0, min(count, with_ballots - first)),
                tuple(mine),
                spec,
                seed,
                policy == "last_counts",
            )
        )

    tally = [0] * len(options)
    canonical_total = 0
    json_total = 0
    started = time.perf_counter()
    tmp = {name: out_dir / f"{name}.tmp" for name in ("roll", "secrets", "ballots", "revotes")}
    with (
        tmp["roll"].open("w") as roll,
        tmp["secrets"].open("wb") as secrets_file,
        tmp["ballots"].open("wb") as ballots_file,
        tmp["revotes"].open("wb") as revotes_file,
        tqdm(total=voters, unit="voter", disable=not progress, smoothing=0.1) as bar,
    ):
        roll.write("voter_id,credential\n")

        def write(result: _ChunkResult) -> None:
            nonlocal canonical_total, json_total
            for offset, (public, secret) in enumerate(
                zip(result.publics, result.secrets, strict=True)
            ):
                roll.write(f"{voter_id(result.first + offset)},{public.hex()}\n")
                secrets_file.write(secret)
            for ballot in result.ballots:
                ballots_file.write(_LEN.pack(len(ballot)) + ballot)
                canonical_total += len(ballot)
            for index, ballot in result.revotes:
                revotes_file.write(_REVOTE.pack(index, len(ballot)) + ballot)
            for i, n in enumerate(result.tally):
                tally[i] += n
            json_total += result.json_bytes
            bar.update(len(result.publics))

        if workers == 1:
            for chunk in chunks:
                write(_make_chunk(chunk))
        else:
            with ProcessPoolExecutor(max_workers=workers) as executor:
                for result in executor.map(_make_chunk, chunks, chunksize=1):
                    write(result)
    seconds = time.perf_counter() - started
    for name, path in tmp.items():
        path.replace(out_dir / (f"{name}.csv" if name == "roll" else f"{name}.bin"))
    meta = PoolMeta(
        format=POOL_FORMAT,
        referendum_id=referendum_id,
        question=question,
        options=list(options),
        min_selections=min_selections,
        max_selections=max_selections,
        revote_policy=policy,
        election_public_key=election_public.hex(),
        election_secret_key=scalar_to_bytes(election_secret).hex() if election_secret else "",
        voters=voters,
        ballots=with_ballots,
        revotes=len(revoters),
        expected_tally=tally,
        canonical_bytes_mean=canonical_total / max(1, with_ballots),
        json_bytes_mean=json_total / max(1, with_ballots),
        seconds=seconds,
        ballots_per_s=(with_ballots + len(revoters)) / seconds if seconds > 0 else 0.0,
        processes=workers,
        seed=seed,
        threshold_k=trustees[0],
        trustees_n=trustees[1],
    )
    (out_dir / "meta.json").write_bytes(orjson.dumps(asdict(meta), option=orjson.OPT_INDENT_2))
    return meta


def _read_records(handle: BinaryIO) -> Iterator[bytes]:
    while True:
        head = handle.read(_LEN.size)
        if len(head) < _LEN.size:
            return
        (length,) = _LEN.unpack(head)
        yield handle.read(length)


class BallotPool:
    """A pool made by :func:`generate_pool`, opened for reading.

    ``ballots(shard, shards)`` yields ``(voter index, canonical bytes)`` for every voter whose
    index is ``shard`` modulo ``shards``, so Locust workers replay disjoint parts of the pool.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        raw = orjson.loads((self.folder / "meta.json").read_bytes())
        if raw.get("format") != POOL_FORMAT:
            raise ValueError(f"{folder}: pool format {raw.get('format')!r}, need {POOL_FORMAT}")
        self.meta = PoolMeta(**raw)

    @property
    def roll_path(self) -> Path:
        return self.folder / "roll.csv"

    def spec(self) -> BallotSpec:
        return self.meta.spec()

    def ballots(self, shard: int = 0, shards: int = 1) -> Iterator[tuple[int, bytes]]:
        """``(index, canonical)`` for the voters of one shard, in roll order."""
        if not 0 <= shard < shards:
            raise ValueError("need 0 <= shard < shards")
        with (self.folder / "ballots.bin").open("rb") as handle:
            for index, record in enumerate(_read_records(handle)):
                if index % shards == shard:
                    yield index, record

    def revotes(self, shard: int = 0, shards: int = 1) -> Iterator[tuple[int, bytes]]:
        """``(voter index, canonical)`` of the second ballots of one shard's re-voters."""
        with (self.folder / "revotes.bin").open("rb") as handle:
            while True:
                head = handle.read(_REVOTE.size)
                if len(head) < _REVOTE.size:
                    return
                index, length = _REVOTE.unpack(head)
                record = handle.read(length)
                if index % shards == shard:
                    yield index, record

    def secret(self, index: int) -> bytes:
        """Voter ``index``'s 32-byte Ed25519 seed."""
        with (self.folder / "secrets.bin").open("rb") as handle:
            handle.seek(32 * index)
            seed = handle.read(32)
        if len(seed) != 32:
            raise IndexError(f"no voter {index} in a pool of {self.meta.voters}")
        return seed


def ballot_hash(canonical: bytes) -> str:
    """Hex SHA-256 of the canonical bytes: the id the status and proof endpoints take."""
    return hashlib.sha256(canonical).hexdigest()
