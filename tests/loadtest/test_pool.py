"""The ballot pool: real, verifiable ballots, a matching roll, disjoint shards, a known tally."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from loadtest.pool import BallotPool, canonical_bytes, generate_pool, json_body, voter_id
from referendum_core.ballot import verify_canonical
from referendum_core.ballot_codec import ballot_from_json
from referendum_core.client import voter_public_key
from referendum_core.group import GENERATOR, scalar_from_bytes


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> BallotPool:
    """Twenty voters, a quarter of whom vote twice, made by two processes."""
    folder = tmp_path_factory.mktemp("pool")
    generate_pool(folder, 20, revote_ratio=0.25, processes=2, progress=False, seed=7)
    return BallotPool(folder)


def test_every_ballot_verifies_against_the_roll(pool: BallotPool) -> None:
    """Each pooled ballot passes the full check and names its voter's roll credential, and no
    voter id (the ids are in the office's roll file only)."""
    spec = pool.spec()
    with pool.roll_path.open(newline="") as handle:
        roll = list(csv.DictReader(handle))
    assert [r["voter_id"] for r in roll] == [voter_id(i) for i in range(20)]
    ballots = list(pool.ballots())
    assert [i for i, _ in ballots] == list(range(20))
    for (index, canonical), row in zip(ballots, roll, strict=True):
        public = bytes.fromhex(row["credential"])
        assert voter_public_key(pool.secret(index)) == public
        assert verify_canonical(spec, canonical).credential == public
        assert voter_id(index).encode() not in canonical
    revotes = list(pool.revotes())
    assert len(revotes) == pool.meta.revotes == 5
    assert len({i for i, _ in revotes}) == 5
    for index, canonical in revotes:
        public = bytes.fromhex(roll[index]["credential"])
        assert verify_canonical(spec, canonical).credential == public
        assert canonical != ballots[index][1]


def test_json_body_round_trip(pool: BallotPool) -> None:
    """The JSON body rebuilt from canonical bytes encodes back to the same bytes."""
    for _index, canonical in pool.ballots():
        body = orjson.loads(json_body(canonical))
        assert set(body) == {
            "referendum",
            "credential",
            "ciphertexts",
            "proofs",
            "sum_proof",
            "signature",
        }
        assert canonical_bytes(body) == canonical
        assert ballot_from_json(body).referendum_id == pool.meta.referendum_id


def test_shards_are_disjoint_and_complete(pool: BallotPool) -> None:
    """Three shards split the voters with no overlap and no gap."""
    shards = [{i for i, _ in pool.ballots(s, 3)} for s in range(3)]
    assert set().union(*shards) == set(range(20))
    assert sum(len(s) for s in shards) == 20
    with pytest.raises(ValueError):
        next(pool.ballots(3, 3))


def test_expected_tally_matches_decryption(pool: BallotPool) -> None:
    """Decrypting with the test election key gives the tally meta.json predicts (last ballot)."""
    spec = pool.spec()
    x = scalar_from_bytes(bytes.fromhex(pool.meta.election_secret_key))
    with pool.roll_path.open(newline="") as handle:
        keys = [bytes.fromhex(r["credential"]) for r in csv.DictReader(handle)]
    last = dict(pool.ballots())
    last.update(dict(pool.revotes()))  # last_counts: the second ballot replaces the first
    assert pool.meta.revote_policy == "last_counts"
    tally = [0] * len(spec.options)
    for index, canonical in last.items():
        verified = verify_canonical(spec, canonical)
        assert verified.credential == keys[index]
        for option, ct in enumerate(verified.ciphertexts):
            plain = ct.b - ct.a * x  # m·G
            assert plain.is_identity or plain == GENERATOR
            tally[option] += 0 if plain.is_identity else 1
    assert tally == pool.meta.expected_tally
    assert sum(tally) == 20  # exactly one selection per voter


def test_pool_refuses_bad_arguments(tmp_path: Path) -> None:
    """No voters, or a re-vote ratio above one, is refused before any work."""
    with pytest.raises(ValueError):
        generate_pool(tmp_path / "a", 0, progress=False)
    with pytest.raises(ValueError):
        generate_pool(tmp_path / "b", 5, revote_ratio=1.5, progress=False)


def test_partial_turnout_pool(tmp_path: Path) -> None:
    """With ballots < voters the roll is complete but only the first voters have ballots."""
    meta = generate_pool(tmp_path, 12, ballots=5, processes=1, progress=False)
    pool = BallotPool(tmp_path)
    with pool.roll_path.open(newline="") as handle:
        keys = [bytes.fromhex(r["credential"]) for r in csv.DictReader(handle)]
    assert len(keys) == 12 and meta.ballots == 5
    assert [i for i, _ in pool.ballots()] == list(range(5))
    assert voter_public_key(pool.secret(11)) == keys[11]
    for index, canonical in pool.ballots():
        assert verify_canonical(pool.spec(), canonical).credential == keys[index]
    assert sum(meta.expected_tally) == 5
