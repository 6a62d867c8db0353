"""A hypothesis corpus of malformed ballots: never a 5xx, always problem+json, nothing stored.

Valid ballots of an open three-option referendum (three ciphertexts and a sum proof each) are
mutated: bit flips in ciphertexts, proofs and signatures, wrong lengths and non-hex text,
invalid curve points, wrong types, huge numbers, missing and extra members, arrays of the
wrong length, another voter's proofs under one's own credential, bodies that are not a JSON
object, wrong content types. Mutations that leave the signature checkable are re-signed by
the voter, so that they reach the proof checks rather than stopping at the signature.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import asyncpg
import hypothesis
import requests
from hypothesis import strategies as st

from referendum_core.client import make_ballot, new_voter_key
from referendum_service.settings import Settings
from tests.fuzz.run_schemathesis import problem_errors
from tests.fuzz.served import ServedApp
from tests.ingest import resign
from tests.tally.common import Election, make_election, store_referendum

RID = "fz-ballots"
EXAMPLES = 200
FIELD_PRIME = 2**256 - 2**32 - 977  # secp256k1's p: an x coordinate that is not reduced

Ballot = dict[str, Any]
Mutation = tuple[str, bytes, str]
"""(what was done, the raw body, the Content-Type sent)."""


def _dumps(value: Any) -> bytes:
    # the stdlib writes any integer (orjson stops at 64 bits) and NaN when asked to
    return json.dumps(value, allow_nan=True).encode()


def _hex_paths(body: Ballot) -> list[tuple[str, int | None]]:
    paths: list[tuple[str, int | None]] = [("signature", None)]
    if isinstance(body.get("sum_proof"), str):
        paths.append(("sum_proof", None))
    paths += [("ciphertexts", i) for i in range(len(body["ciphertexts"]))]
    paths += [("proofs", i) for i in range(len(body["proofs"]))]
    return paths


def _get(body: Ballot, path: tuple[str, int | None]) -> str:
    name, index = path
    value = body[name] if index is None else body[name][index]
    assert isinstance(value, str)
    return value


def _set(body: Ballot, path: tuple[str, int | None], value: Any) -> None:
    name, index = path
    if index is None:
        body[name] = value
    else:
        body[name] = [*body[name][:index], value, *body[name][index + 1 :]]


class Corpus:
    """The valid ballots mutations start from, and the voters' signing keys."""

    def __init__(self, election: Election) -> None:
        self.election = election
        self.secrets = {v: keys[0] for v, keys in election.voters.items()}
        self.ballots: list[tuple[str, Ballot]] = [
            (v, election.ballot(v, selections)[0])
            for v in sorted(election.voters)
            for selections in ([1, 0, 0], [0, 1, 1])
        ]
        # a ballot with no sum proof would make sum_proof = None a no-op, not a mutation
        assert all(isinstance(b["sum_proof"], str) for _, b in self.ballots)
        stranger_secret, _ = new_voter_key()
        self.stranger = make_ballot(election.spec, stranger_secret, [0, 0, 1])
        self.credentials = {v: keys[1].hex() for v, keys in election.voters.items()}

    def signed(self, voter: str, body: Ballot) -> Ballot:
        """``body`` re-signed by ``voter`` when it still parses as a ballot, else unchanged."""
        try:
            return resign(body, self.secrets[voter])
        except Exception:  # a mutation the core's parser refuses cannot be signed: send as is
            return body


def mutations(corpus: Corpus) -> st.SearchStrategy[Mutation]:
    """Every kind of malformed ballot, each built from a valid one."""

    @st.composite
    def bit_flip(draw: st.DrawFn) -> Mutation:
        voter, body = draw(st.sampled_from(corpus.ballots))
        path = draw(st.sampled_from(_hex_paths(body)))
        raw = bytearray(bytes.fromhex(_get(body, path)))
        bit = draw(st.integers(0, 8 * len(raw) - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
        mutated = copy.deepcopy(body)
        _set(mutated, path, raw.hex())
        # re-signing a flipped signature would repair it: only the other fields are re-signed
        if path[0] != "signature" and draw(st.booleans()):
            mutated = corpus.signed(voter, mutated)
        return f"bit {bit} of {path}", _dumps(mutated), "application/json"

    @st.composite
    def wrong_length(draw: st.DrawFn) -> Mutation:
        voter, body = draw(st.sampled_from(corpus.ballots))
        path = draw(st.sampled_from(_hex_paths(body)))
        value = _get(body, path)
        cut = draw(st.integers(1, len(value)))
        extra = draw(st.binary(min_size=1, max_size=40)).hex()
        text = draw(st.sampled_from([value[:-cut], value + extra, value[:-1], ""]))
        mutated = copy.deepcopy(body)
        _set(mutated, path, text)
        if path[0] != "signature":
            mutated = corpus.signed(voter, mutated)
        return f"length {len(text)} of {path}", _dumps(mutated), "application/json"

    @st.composite
    def not_hex(draw: st.DrawFn) -> Mutation:
        _, body = draw(st.sampled_from(corpus.ballots))
        path = draw(st.sampled_from(_hex_paths(body)))
        value = _get(body, path)
        at = draw(st.integers(0, len(value) - 1))
        odd = draw(st.sampled_from(["g", "Z", " ", "\u0660", "é", "\x00", "\ufeff"]))
        upper = value.upper()
        text = draw(
            st.sampled_from(
                [value[:at] + odd + value[at + 1 :], value[:at] + value[at + 1 :]]
                + ([upper] if upper != value else [])
            )
        )
        mutated = copy.deepcopy(body)
        _set(mutated, path, text)
        return f"text {text[at : at + 1]!r} in {path}", _dumps(mutated), "application/json"

    @st.composite
    def bad_point(draw: st.DrawFn) -> Mutation:
        voter, body = draw(st.sampled_from(corpus.ballots))
        index = draw(st.integers(0, len(body["ciphertexts"]) - 1))
        raw = bytearray(bytes.fromhex(body["ciphertexts"][index]))
        half = draw(st.sampled_from([0, 65]))  # a ciphertext is a ‖ b, 65 bytes each
        point = draw(
            st.one_of(
                st.binary(min_size=64, max_size=64).map(lambda xy: b"\x04" + xy),
                st.sampled_from([b"\x00" * 65, b"\xff" * 65]),
                st.sampled_from([0, 2, 3, 5, 6, 7, 0xFF]).map(
                    lambda prefix: bytes([prefix]) + bytes(raw[half + 1 : half + 65])
                ),
                st.just(b"\x04" + FIELD_PRIME.to_bytes(32, "big") + bytes(raw[half + 33 :][:32])),
            )
        )
        raw[half : half + 65] = point
        mutated = copy.deepcopy(body)
        _set(mutated, ("ciphertexts", index), raw.hex())
        return (
            f"point {point[:3].hex()}… at {half} of ciphertext {index}",
            _dumps(corpus.signed(voter, mutated)),
            "application/json",
        )

    json_values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=2**63, max_value=10**40),
        st.integers(min_value=-(10**40), max_value=-(2**63) - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=20),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )

    @st.composite
    def wrong_type(draw: st.DrawFn) -> Mutation:
        _, body = draw(st.sampled_from(corpus.ballots))
        name = draw(st.sampled_from(sorted(body)))
        original = body[name]
        mutated = copy.deepcopy(body)
        if isinstance(original, list) and draw(st.booleans()):
            element = draw(json_values.filter(lambda v: not isinstance(v, str)))
            mutated[name] = [element, *original[1:]]
        else:
            mutated[name] = draw(json_values.filter(lambda v: type(v) is not type(original)))
        return f"{name} = {mutated[name]!r:.40}", _dumps(mutated), "application/json"

    @st.composite
    def huge_number(draw: st.DrawFn) -> Mutation:
        _, body = draw(st.sampled_from(corpus.ballots))
        name = draw(st.sampled_from(sorted(body)))
        digits = draw(st.integers(19, 5000))
        number = draw(st.sampled_from(["", "-"])) + "9" * digits
        number += draw(st.sampled_from(["", ".5", "e999", "E-999"]))
        text = _dumps({**body, name: 0}).replace(
            f'"{name}": 0'.encode(), f'"{name}": {number}'.encode()
        )
        return f"{name} = {len(number)}-character number", text, "application/json"

    @st.composite
    def members(draw: st.DrawFn) -> Mutation:
        _, body = draw(st.sampled_from(corpus.ballots))
        mutated = copy.deepcopy(body)
        if draw(st.booleans()):
            name = draw(st.sampled_from(sorted(body)))
            del mutated[name]
            label = f"without {name}"
        else:
            name = draw(st.text(max_size=20).filter(lambda n: n not in body))
            mutated[name] = draw(json_values)
            label = f"extra member {name!r}"
        return label, _dumps(mutated), "application/json"

    @st.composite
    def array_length(draw: st.DrawFn) -> Mutation:
        voter, body = draw(st.sampled_from(corpus.ballots))
        name = draw(st.sampled_from(["ciphertexts", "proofs"]))
        items = body[name]
        new = draw(
            st.sampled_from(
                [[], items[:-1], items + items[-1:], items[::-1], items * 130, [items[0]] * 2]
            )
        )
        mutated = corpus.signed(voter, {**copy.deepcopy(body), name: new})
        return f"{name} of {len(new)}", _dumps(mutated), "application/json"

    @st.composite
    def borrowed(draw: st.DrawFn) -> Mutation:
        (owner, body), (other, other_body) = draw(
            st.tuples(st.sampled_from(corpus.ballots), st.sampled_from(corpus.ballots)).filter(
                lambda pair: pair[0][1] is not pair[1][1]
            )
        )
        if owner != other:
            # another voter's ciphertexts and proofs, signed under one's own credential
            mutated = corpus.signed(
                other, {**copy.deepcopy(body), "credential": corpus.credentials[other]}
            )
            return f"{owner}'s proofs signed by {other}", _dumps(mutated), "application/json"
        # one's own ciphertexts with the proofs of one's other ballot
        part = draw(st.sampled_from(["proofs", "sum_proof"]))
        mixed = {**copy.deepcopy(body), part: other_body[part]}
        return f"{part} of another ballot", _dumps(corpus.signed(owner, mixed)), "application/json"

    @st.composite
    def identity(draw: st.DrawFn) -> Mutation:
        voter, body = draw(st.sampled_from(corpus.ballots))
        name, value = draw(
            st.sampled_from(
                [
                    ("referendum", "fz-other"),
                    ("referendum", RID.upper()),
                    ("referendum", RID + "\x00"),
                    ("referendum", ""),
                    ("credential", "nobody"),
                    ("credential", voter),
                    ("credential", corpus.credentials[voter].upper()),
                    ("credential", corpus.credentials[voter] + " "),
                    ("credential", corpus.stranger["credential"]),
                    ("voter", voter),
                    ("sum_proof", None),
                ]
            )
        )
        mutated = corpus.signed(voter, {**copy.deepcopy(body), name: value})
        return f"{name} = {value!r:.30}", _dumps(mutated), "application/json"

    @st.composite
    def not_a_ballot(draw: st.DrawFn) -> Mutation:
        _, body = draw(st.sampled_from(corpus.ballots))
        valid = _dumps(body)
        choice = draw(st.integers(0, 7))
        if choice == 0:
            return "a stranger's ballot", _dumps(corpus.stranger), "application/json"
        if choice == 1:
            cut = draw(st.integers(0, len(valid) - 1))
            return f"cut at {cut}", valid[:cut], "application/json"
        if choice == 2:
            at = draw(st.integers(0, len(valid)))
            junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
            return f"byte {junk!r} at {at}", valid[:at] + junk + valid[at:], "application/json"
        if choice == 3:
            depth = draw(st.integers(100, 5000))
            return f"nested {depth} deep", b"[" * depth + b"]" * depth, "application/json"
        if choice == 4:
            top = draw(st.sampled_from([[body], "ballot", 17, None, True, float("nan")]))
            return f"top level {type(top).__name__}", _dumps(top), "application/json"
        if choice == 5:
            kind = draw(
                st.sampled_from(
                    [
                        "text/plain",
                        "application/x-www-form-urlencoded",
                        "multipart/form-data",
                        "application/jsonx",
                        "application/problem+json",
                        "",
                    ]
                )
            )
            return f"content type {kind!r}", valid, kind
        if choice == 6:
            wrong = _dumps({"credential": "00" * 32, "signature": "00" * 64})
            # the wrong members last: refused whichever occurrence a parser keeps
            doubled = valid[:-1] + b", " + wrong[1:]
            if draw(st.booleans()):  # a member named twice (resolved silently before issue 16)
                # the valid members last: a parser keeping the last one would store it
                doubled = wrong[:-1] + b", " + valid[1:]
            return "members twice", doubled, "application/json"
        return "an empty body", b"", "application/json"

    return st.one_of(
        bit_flip(),
        wrong_length(),
        not_hex(),
        bad_point(),
        wrong_type(),
        huge_number(),
        members(),
        array_length(),
        borrowed(),
        identity(),
        not_a_ballot(),
    )


def _always_sent(corpus: Corpus) -> Any:
    """Explicit examples tried on every run whatever hypothesis draws: the kinds of body that
    never reach the ballot checks (content type, parser limits, a stranger)."""
    voter, body = corpus.ballots[0]
    valid = _dumps(body)
    examples: list[Mutation] = [
        (f"content type {kind!r}", valid, kind)
        for kind in ("text/plain", "application/x-www-form-urlencoded", "", "application/jsonx")
    ]
    examples += [
        ("a stranger's ballot", _dumps(corpus.stranger), "application/json"),
        ("nested 5000 deep", b"[" * 5000 + b"]" * 5000, "application/json"),
        ("an empty body", b"", "application/json"),
        ("NaN", _dumps(float("nan")), "application/json"),
        (
            "a 400-digit voter",
            _dumps({**body, "voter": 0}).replace(b'"voter": 0', b'"voter": ' + b"9" * 400),
            "application/json",
        ),
        (
            "another voter's proofs",
            _dumps(corpus.signed(corpus.ballots[-1][0], {**body, "voter": corpus.ballots[-1][0]})),
            "application/json",
        ),
        ("over the body limit", _dumps({**body, "pad": "0" * 70_000}), "application/json"),
    ]

    def decorate(test: Any) -> Any:
        for mutation in examples:
            test = hypothesis.example(mutation=mutation)(test)
        return test

    assert voter != corpus.ballots[-1][0]
    return decorate


def _corpus_run(database_url: str, data_dir: Path) -> int:
    """Serve the app, send the corpus, then one valid ballot a voter; the rows stored."""
    election = make_election(RID, ("a", "b", "c"), 3, policy="forbid", min_sel=1, max_sel=2)
    corpus = Corpus(election)
    settings = Settings(data_dir=data_dir, voter_rate_per_minute=1_000_000)
    with ServedApp(settings, database_url) as served:
        conn: asyncpg.Connection = served.run(asyncpg.connect(database_url))
        try:
            served.run(store_referendum(conn, election, "open"))
            url = f"{served.base_url}/v1/referendums/{RID}/ballots"
            session = requests.Session()

            def stored() -> int:
                return int(served.run(conn.fetchval("SELECT count(*) FROM ballots")))

            @hypothesis.settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(mutation=mutations(corpus))
            @_always_sent(corpus)
            def refused(mutation: Mutation) -> None:
                label, raw, content_type = mutation
                response = session.post(
                    url, data=raw, headers={"Content-Type": content_type}, timeout=30
                )
                assert 400 <= response.status_code < 500, (label, response.status_code)
                content_type = response.headers.get("Content-Type", "")
                errors = problem_errors(response.status_code, content_type, response.content)
                assert errors == [], (label, response.status_code, errors)
                assert stored() == 0, label

            refused()
            # nothing was reserved either: every voter can still cast one valid ballot
            for voter in sorted(election.voters):
                body = next(b for v, b in corpus.ballots if v == voter)
                assert session.post(url, json=body, timeout=30).status_code == 201
            session.close()
            return stored()
        finally:
            served.run(conn.close())


async def test_malformed_ballots_are_refused(database_url: str, tmp_path: Path) -> None:
    """200 mutated ballots each get a 4xx problem+json and store nothing; afterwards every
    voter's valid ballot is still accepted."""
    assert await asyncio.to_thread(_corpus_run, database_url, tmp_path) == 3
