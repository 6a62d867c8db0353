"""The shared HTTP layer: the parameter parsers every handler uses, and their examples."""

from __future__ import annotations

import doctest
from types import ModuleType

import pytest

import server.errors
import server.http
from server.errors import BadRequest
from server.http import MAX_INT, ballot_hash, integer


@pytest.mark.parametrize("module", [server.http, server.errors])
def test_documented_examples_run(module: ModuleType) -> None:
    """The >>> examples in the HTTP layer's docstrings run and give the output shown."""
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(
    "text", ["²", "٣", "1e3", "+1", " 1", "1 ", "", "0x10", "1" * 20, "--1", "١٢"]
)
def test_integer_refuses_what_is_not_ascii_decimal(text: str) -> None:
    """Anything but ASCII digits with an optional minus is a 400 naming the parameter."""
    with pytest.raises(BadRequest) as caught:
        integer(text, "limit", minimum=-5)
    assert caught.value.slug == "bad-parameter"
    assert caught.value.extra == {"field": "limit"}


def test_integer_bounds_and_default() -> None:
    """Values outside [minimum, maximum] are 400; absent gives the default or a 400."""
    assert integer("0005", "n", minimum=1, maximum=5) == 5
    assert integer(str(MAX_INT), "n", minimum=1) == MAX_INT
    assert integer(None, "n", minimum=0, default=-1) == -1
    for text in ["0", "6", str(MAX_INT + 1)]:
        with pytest.raises(BadRequest, match="between"):
            integer(text, "n", minimum=1, maximum=5)
    with pytest.raises(BadRequest, match="required"):
        integer(None, "n", minimum=1)


def test_ballot_hash_case_and_slug() -> None:
    """Lower-case hex everywhere; upper-case only where the route takes any case; the slug is
    the route's."""
    assert ballot_hash("ab" * 32) == bytes([0xAB] * 32)
    assert ballot_hash("AB" * 32, any_case=True) == bytes([0xAB] * 32)
    for text, any_case in [("AB" * 32, False), ("ab" * 31, True), ("zz" * 32, True)]:
        with pytest.raises(BadRequest) as caught:
            ballot_hash(text, any_case=any_case, slug="malformed-ballot-hash")
        assert caught.value.slug == "malformed-ballot-hash"
