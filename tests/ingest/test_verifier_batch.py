"""The ingest verifier's batching: ballots checked in one loop turn form one batch, and each
request still gets its own answer (no database: the verifier alone)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from referendum_core.ballot_codec import decode_canonical, record_to_json
from referendum_core.batch import NATIVE_AVAILABLE
from referendum_core.client import make_ballot
from server.ingest import verifier as verifier_module
from server.ingest.verifier import BallotVerifier, CheckedBallot, RejectedBallot, parse_ballot
from tests.core.test_ballot import ALICE_SECRET, BOB, resign, spec_of

SPEC = spec_of(2, 1, 1)
BACKENDS = ["python", "native"] if NATIVE_AVAILABLE else ["python"]


def _bodies(count: int) -> list[dict[str, object]]:
    return [make_ballot(SPEC, ALICE_SECRET, [i % 2, 1 - i % 2]) for i in range(count)]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_concurrent_checks_batch_and_answer_each(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten checks started together run as batches of at most 4; the two bad ones (a broken
    proof, another credential than the signer's) are refused naming their check, the rest
    pass."""
    sizes: list[int] = []
    real = verifier_module._check_batch

    def counting(spec, items, chosen):  # type: ignore[no-untyped-def]
        sizes.append(len(items))
        return real(spec, items, chosen)

    monkeypatch.setattr(verifier_module, "_check_batch", counting)
    bodies = _bodies(10)
    parsed = [parse_ballot(b) for b in bodies]
    proof = bytearray(parsed[3].record.proofs[0])
    proof[-1] ^= 1  # a response: the challenge still adds up, a group equation fails
    bad = dataclasses.replace(parsed[3].record, proofs=(bytes(proof),))
    resigned = resign(bad)
    parsed[3] = parse_ballot(record_to_json(decode_canonical(resigned)))
    parsed[7] = parse_ballot({**bodies[7], "credential": BOB.hex()})
    verifier = BallotVerifier(0, backend=backend, batch_max=4)
    results = await asyncio.gather(
        *(verifier.check(SPEC, p) for p in parsed),
        return_exceptions=True,
    )
    assert sizes and max(sizes) <= 4 and sum(sizes) == 10 and len(sizes) < 10
    for i, result in enumerate(results):
        if i == 3:
            assert (
                isinstance(result, RejectedBallot)
                and result.error.extra["check"] == "option[0].proof"
            )
            assert result.signed
        elif i == 7:
            assert isinstance(result, RejectedBallot) and result.error.extra["check"] == "signature"
            assert not result.signed
        else:
            assert isinstance(result, CheckedBallot) and result.hash == parsed[i].hash


async def test_batch_of_one_checks_alone() -> None:
    """batch_max = 1 is the unbatched path: a valid ballot passes, one naming another
    credential than its signer's is refused."""
    verifier = BallotVerifier(0, backend="python", batch_max=1)
    body = _bodies(1)[0]
    parsed = parse_ballot(body)
    assert (await verifier.check(SPEC, parsed)).hash == parsed.hash
    foreign = parse_ballot({**body, "credential": BOB.hex()})
    with pytest.raises(RejectedBallot):
        await verifier.check(SPEC, foreign)


def test_unusable_backend_refused_at_start() -> None:
    """An unknown backend name fails when the verifier is built, not on the first ballot."""
    with pytest.raises(ValueError):
        BallotVerifier(0, backend="fast")
