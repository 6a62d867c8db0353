"""The encrypted tally's rules: folding ballots in and out, and which ballot supersedes which."""

from __future__ import annotations

from referendum_core.elgamal import Ciphertext
from referendum_core.group import Point
from referendum_core.tally import fold, full_tally, sum_explicit, supersessions


def _ct(a: int, b: int) -> Ciphertext:
    return Ciphertext(Point.base_mul(a), Point.base_mul(b))


A, B, C = (bytes([n]) * 32 for n in (1, 2, 3))


def test_supersessions_chain_each_credentials_ballots() -> None:
    """Each ballot of a credential is superseded by its next one; unknown ones are skipped."""
    assert supersessions(enumerate([A, B, A, None, B, A])) == [(0, 2), (1, 4), (2, 5)]
    assert supersessions(enumerate([A, B, C])) == []


def test_supersessions_continue_from_earlier_blocks() -> None:
    """A block's first ballot of a credential supersedes its last ballot before the block."""
    latest = {A: 3, B: 1}
    assert supersessions([(10, A), (11, C), (12, A)], latest) == [(3, 10), (10, 12)]
    assert latest == {A: 12, B: 1, C: 11}


def test_fold_adds_and_takes_out_per_option() -> None:
    """Folding adds the added ballots' option sums and subtracts the removed ones'."""
    ballots = [
        _ct(1, 2).to_bytes() + _ct(3, 4).to_bytes(),
        _ct(5, 6).to_bytes() + _ct(7, 8).to_bytes(),
    ]
    assert sum_explicit(ballots, 2) == [_ct(6, 8), _ct(10, 12)]
    start = [_ct(100, 200), _ct(300, 400)]
    assert fold(start, ballots, ballots[:1]) == [_ct(105, 206), _ct(307, 408)]
    assert fold(start, [], []) == start


def test_full_tally_of_one_ballot_equals_its_implied_ciphertext() -> None:
    """The derived last option over one ballot is the ballot's own (−A, G − B)."""
    tally = full_tally(sum_explicit([_ct(2, 9).to_bytes()], 1), 1, True)
    assert tally == [
        _ct(2, 9),
        Ciphertext(-Point.base_mul(2), Point.base_mul(1) - Point.base_mul(9)),
    ]
