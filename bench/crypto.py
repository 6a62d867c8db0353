"""``referendum bench crypto``: ballot verification and creation, aggregation, tally decoding.

Single process, timed in process CPU time, so every figure is per core and not distorted by
other processes sharing the machine. Each figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

import click
from nacl.bindings import crypto_sign_open

from bench.common import median, write_results
from bench.crypto_batch import batch_rows
from referendum_core.ballot import (
    SIGNING_PREFIX,
    TAG_PROOF01,
    BallotSpec,
    ballot_context,
    verify_ballot,
)
from referendum_core.ballot_codec import ballot_from_json, encode_body
from referendum_core.client import make_ballot, new_voter_key
from referendum_core.elgamal import Ciphertext, aggregate_encoded, encrypt
from referendum_core.group import Point, random_scalar
from referendum_core.proofs import DisjunctiveProof, verify_zero_one
from referendum_core.trustee import (
    TrusteeParams,
    _baby_steps,
    combine_decryption,
    dealer_commitment,
    decrypt_share,
    election_public_key,
    new_dealer,
    share_for,
    trustee_share,
)

__all__ = ["crypto"]

#: The DESIGN.md reference machine's rates for the two primitives of a yes/no ballot check
#: (one core): Ed25519 verify (PyNaCl) and one disjunctive 0/1 proof verify (secp256k1).
REFERENCE_ED25519_PER_S = 26_000.0
REFERENCE_PROOF01_PER_S = 5_200.0


def _rate(runs: int, count: int, action: Callable[[], None]) -> float:
    """Median over ``runs`` of ``count / seconds`` for one call of ``action``."""
    rates = []
    for _ in range(runs):
        start = time.process_time()
        action()
        rates.append(count / (time.process_time() - start))
    return median(rates)


def _info(metric: str, value: float, unit: str) -> dict[str, Any]:
    return {"metric": metric, "value": value, "unit": unit, "target": "", "ok": ""}


def _seconds(runs: int, action: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        start = time.process_time()
        action()
        times.append(time.process_time() - start)
    return median(times)


def _ballots(
    spec: BallotSpec, count: int, choices: list[list[int]]
) -> list[tuple[dict[str, Any], bytes]]:
    out = []
    for i in range(count):
        secret, public = new_voter_key()
        out.append((make_ballot(spec, secret, choices[i % len(choices)]), public))
    return out


def _primitive_baselines(
    runs: int, spec: BallotSpec, sample: list[tuple[dict[str, Any], bytes]]
) -> tuple[float, float, float]:
    """The yes/no check and the bare primitives it is made of, on the same ballots, timed in
    turn within each run so machine noise hits all three alike: (ballot checks/s, Ed25519
    signature checks/s, 0/1 proof checks/s), each the median of ``runs``."""
    signed: list[tuple[bytes, bytes]] = []
    proofs: list[tuple[bytes, Ciphertext, DisjunctiveProof]] = []
    for body, public in sample:
        record = ballot_from_json(body)
        signed.append((record.signature + SIGNING_PREFIX + encode_body(record), public))
        raw = record.ciphertexts[0]
        ct = Ciphertext(Point.decode_uncompressed(raw[:65]), Point.decode_uncompressed(raw[65:]))
        context = ballot_context(spec, public, record.ciphertexts)
        proofs.append((context, ct, DisjunctiveProof.from_bytes(record.proofs[0], 2)))
    pk = Point.decode_compressed(spec.election_public_key)
    label = (0).to_bytes(4, "big")

    def signatures() -> None:
        for message, public in signed:
            crypto_sign_open(message, public)

    def zero_one() -> None:
        for context, ct, proof in proofs:
            verify_zero_one(TAG_PROOF01, context, label, pk, ct, proof)

    def ballots() -> None:
        for body, _public in sample:
            verify_ballot(spec, body)

    rates: list[list[float]] = [[], [], []]
    for _ in range(runs):
        for slot, action in enumerate((ballots, signatures, zero_one)):
            rates[slot].append(_rate(1, len(sample), action))
    return median(rates[0]), median(rates[1]), median(rates[2])


@click.command()
@click.option("--runs", default=5, show_default=True, help="Runs per figure (median quoted).")
@click.option("--ballots", default=300, show_default=True, help="Ballots per verify run.")
@click.option(
    "--aggregate",
    "aggregate_count",
    default=1_000_000,
    show_default=True,
    help="Ciphertexts summed per aggregation run.",
)
@click.option("--voters", default=10_000_000, show_default=True, help="Decoding bound.")
def crypto(runs: int, ballots: int, aggregate_count: int, voters: int) -> None:
    """Ballot verify/create rates, aggregation and tally decryption, per core."""
    pk_point = Point.base_mul(random_scalar())
    key = pk_point.to_compressed()
    specs = {
        "yes/no (implied 'no', 1 ciphertext)": (
            BallotSpec("bench", ("yes", "no"), 1, 1, key),
            [[1, 0], [0, 1]],
        ),
        "yes/no (explicit, 2 ciphertexts + sum)": (
            BallotSpec("bench", ("yes", "no"), 1, 1, key, imply_last=False),
            [[1, 0], [0, 1]],
        ),
        "5-option exactly-one (implied, 4 ct)": (
            BallotSpec("bench", tuple("abcde"), 1, 1, key),
            [[int(i == j) for i in range(5)] for j in range(5)],
        ),
        "5-option exactly-one (explicit, 5 ct)": (
            BallotSpec("bench", tuple("abcde"), 1, 1, key, imply_last=False),
            [[int(i == j) for i in range(5)] for j in range(5)],
        ),
        "5-option choose 1..3": (
            BallotSpec("bench", tuple("abcde"), 1, 3, key),
            [[1, 0, 1, 0, 0], [0, 0, 0, 0, 1], [1, 1, 1, 0, 0]],
        ),
    }
    rows: list[dict[str, Any]] = []
    yes_no_sample: tuple[BallotSpec, list[tuple[dict[str, Any], bytes]]] | None = None
    for name, (spec, choices) in specs.items():
        n = ballots if "yes/no" in name else max(ballots // 4, 20)
        sample = _ballots(spec, n, choices)

        def verify_all(spec: BallotSpec = spec, sample: list[Any] = sample) -> None:
            for body, _public in sample:
                verify_ballot(spec, body)

        rate = _rate(runs, n, verify_all)
        target = ">= 3000" if name.startswith("yes/no (implied") else ""
        if target:
            yes_no_sample = (spec, sample)
        rows.append(
            {
                "metric": f"verify {name}, signature included",
                "value": rate,
                "unit": "ballots/s",
                "target": target,
                "ok": ("yes" if rate >= 3000 else "NO") if target else "",
            }
        )

        def create_all(
            spec: BallotSpec = spec, n: int = n, choices: list[list[int]] = choices
        ) -> None:
            secret, _ = new_voter_key()
            for _i, choice in zip(range(n), itertools.cycle(choices), strict=False):
                make_ballot(spec, secret, choice)

        rows.append(
            {
                "metric": f"create {name}",
                "value": _rate(runs, n, create_all),
                "unit": "ballots/s",
                "target": "",
                "ok": "",
            }
        )

    # Same-run baseline: the machine's speed at the two primitives a yes/no check is made of,
    # against DESIGN.md's reference machine, so figures from different machines compare.
    assert yes_no_sample is not None
    paired_rate, ed_rate, proof_rate = _primitive_baselines(runs, *yes_no_sample)
    floor = 1 / (1 / ed_rate + 1 / proof_rate)
    reference_floor = 1 / (1 / REFERENCE_ED25519_PER_S + 1 / REFERENCE_PROOF01_PER_S)
    speed = floor / reference_floor
    rows.extend(
        [
            _info("baseline: Ed25519 signature verify (PyNaCl), same run", ed_rate, "/s"),
            _info("baseline: 0/1 proof verify alone, same run", proof_rate, "/s"),
            _info("primitive floor of a yes/no check (signature + proof)", floor, "ballots/s"),
            _info("yes/no verify, timed in turn with the two above", paired_rate, "ballots/s"),
            _info("yes/no verify as a share of that floor", paired_rate / floor, "ratio"),
            _info("this machine vs DESIGN.md's reference (same primitives)", speed, "ratio"),
            _info("yes/no verify scaled to the reference", paired_rate / speed, "ballots/s"),
        ]
    )

    rows.extend(batch_rows(runs, key))

    distinct = [encrypt(pk_point, i % 2, random_scalar()).to_bytes() for i in range(2000)]
    stream = [distinct[i % len(distinct)] for i in range(aggregate_count)]

    def sum_stream() -> None:
        aggregate_encoded(stream)

    agg_rate = _rate(max(3, runs // 2), aggregate_count, sum_stream)
    rows.append(
        {
            "metric": f"aggregate {aggregate_count:,} ciphertexts (from bytes)",
            "value": agg_rate,
            "unit": "ciphertexts/s",
            "target": ">= 300000",
            "ok": "yes" if agg_rate >= 300_000 else "NO",
        }
    )

    params = TrusteeParams("bench", 3, 5)
    dealers = [new_dealer(params, i) for i in range(1, 6)]
    commitments = [dealer_commitment(params, d) for d in dealers]
    tally_key = election_public_key(params, commitments)
    shares = {
        t: trustee_share(params, commitments, t, {d.index: share_for(d, t) for d in dealers})
        for t in (1, 3, 5)
    }
    # Worst case for the search: counts near the bound, one per option of a yes/no question.
    counts = [voters - 1, voters // 2 + min(12345, voters // 4)]
    tally = [encrypt(tally_key, count, random_scalar()) for count in counts]
    partials = [decrypt_share(params, t, shares[t], tally) for t in shares]

    def decrypt_and_decode() -> None:
        _baby_steps.cache_clear()  # cold: include building the baby-step table
        partial = [decrypt_share(params, t, shares[t], tally) for t in shares]
        decoded = combine_decryption(params, commitments, tally, partial, voters)
        if decoded != counts:
            raise click.ClickException("tally decoded wrongly")

    seconds = _seconds(runs, decrypt_and_decode)
    rows.append(
        {
            "metric": f"decrypt (3 of 5) + verify + decode 2 counts, bound {voters:,}",
            "value": seconds,
            "unit": "s",
            "target": "< 1",
            "ok": "yes" if seconds < 1 else "NO",
        }
    )
    write_results(
        "crypto",
        rows,
        meta={
            "runs": runs,
            "ballots": ballots,
            "aggregate": aggregate_count,
            "voters": voters,
            "partials": len(partials),
            "clock": "process CPU time",
            "load_average_1m": os.getloadavg()[0],
        },
    )
