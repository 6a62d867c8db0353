"""The shared HTTP layer: parameter parsers, the repeated-member check, and their examples."""

from __future__ import annotations

import doctest
import json
from types import ModuleType

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import server.errors
import server.http
from server.errors import BadRequest
from server.http import MAX_INT, _refuse_duplicate_members, ballot_hash, integer


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


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1, "a": 2}',
        b'{"a": 1, "b": {"c": 1, "c": 1}}',
        b'{"a": [{"x": "1:2"}, {"y": 1, "y": 2}]}',
        b'{"a\\"": ":", "a\\"": 1}',
        b'{"t": "2030-01-01T08:00:00Z", "t": "2030-01-01T08:00:00Z"}',
        b'{"\\u0061": 1, "a": 2}',
    ],
)
def test_repeated_members_are_refused(raw: bytes) -> None:
    """A member name written twice in one object, at any depth or spelling, is a 400."""
    with pytest.raises(BadRequest) as caught:
        _refuse_duplicate_members(raw, orjson.loads(raw))
    assert caught.value.slug == "duplicate-member"


@pytest.mark.parametrize(
    "raw",
    [
        b"{}",
        b'{"a": {"a": {"a": 1}}}',
        b'{"a:b": "c:d", "e": ["::", {"f": "\\":"}]}',
        b'{"a": "\\\\", "b": ":"}',
        b'{"when": "2030-01-01T08:00:00Z", "list": [1, 2, {"x": null}]}',
        b'{"x": ' + b"[" * 900 + b'{"a": "1:2"}' + b"]" * 900 + b"}",
    ],
)
def test_distinct_members_pass(raw: bytes) -> None:
    """Colons inside strings, escapes and deep nesting never pass for repeated members."""
    _refuse_duplicate_members(raw, orjson.loads(raw))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from('a:"\\ é{}[],')),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.sampled_from('k:"\\ é'), max_size=4), inner, max_size=4
        )
    ),
    max_leaves=20,
)


@given(st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=5), st.booleans())
def test_duplicate_check_on_generated_json(value: dict[str, object], pretty: bool) -> None:
    """Generated JSON (compact or indented, colons and escapes in strings) passes; the same
    text with its first member written twice more is refused."""
    raw = json.dumps(value, indent=1 if pretty else None, ensure_ascii=False).encode()
    _refuse_duplicate_members(raw, orjson.loads(raw))
    if value:
        name = next(iter(value))
        doubled = b"{" + json.dumps(name).encode() + b": 0, " + raw[1:]
        with pytest.raises(BadRequest):
            _refuse_duplicate_members(doubled, orjson.loads(doubled))
