"""trustee.ceremony: the in-process k-of-n key ceremony the demo, rehearsal and bench use."""

from __future__ import annotations

import itertools
from pathlib import Path

from referendum_core.elgamal import Ciphertext, aggregate, encrypt
from referendum_core.group import Point, seeded_scalars
from referendum_core.trustee import combine_decryption, verification_key
from trustee.ceremony import Ceremony

RID = "ceremony-ref"


def _tally(key: bytes, yes: int, no: int) -> list[Ciphertext]:
    rng = seeded_scalars(b"tally")
    pk = Point.decode_compressed(key)
    ballots = [(1, 0)] * yes + [(0, 1)] * no
    return [aggregate(encrypt(pk, b[option], rng()) for b in ballots) for option in (0, 1)]


def test_any_k_trustees_decrypt_the_count() -> None:
    """Every 2 of the 3 trustees' proven shares combine to the encrypted counts."""
    ceremony = Ceremony.run(RID, 2, 3, rng=seeded_scalars(b"ceremony"))
    tally = _tally(ceremony.election_key, 4, 3)
    for pair in itertools.combinations((1, 2, 3), 2):
        shares = [ceremony.decrypt(i, tally) for i in pair]
        counts = combine_decryption(ceremony.params, ceremony.commitments, tally, shares, 7)
        assert counts == [4, 3]


def test_shares_match_the_published_verification_keys() -> None:
    """Each trustee's share is the secret behind its verification key; no one holds the key."""
    ceremony = Ceremony.run(RID, 2, 3)
    assert sorted(ceremony.shares) == [1, 2, 3]
    for i, x in ceremony.shares.items():
        assert Point.base_mul(x) == verification_key(ceremony.commitments, i)
        assert Point.base_mul(x).to_compressed() != ceremony.election_key


def test_commitments_json_is_the_trustees_body() -> None:
    """The PUT /trustees body lists one commitment per trustee, in index order."""
    ceremony = Ceremony.run(RID, 1, 2)
    body = ceremony.commitments_json()
    assert [c["index"] for c in body["commitments"]] == [1, 2]


def test_save_and_load_give_the_same_ceremony(tmp_path: Path) -> None:
    """A saved ceremony loads back equal, shares included."""
    ceremony = Ceremony.run(RID, 2, 3)
    ceremony.save(tmp_path / "trustees.json")
    assert Ceremony.load(tmp_path / "trustees.json") == ceremony
