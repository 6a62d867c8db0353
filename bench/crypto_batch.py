"""The batch-verification rows of ``referendum bench crypto`` (issue 15).

On the same yes/no ballots in the same run: the individual path (``python`` backend: every
proof alone) against ``verify_ballots`` on the ``native`` backend at 64, 256 and 1,024
ballots a batch, and the ratio. Then the credential what-if: Ed25519 (PyNaCl, alone) against
BIP-340 Schnorr on secp256k1, alone (coincurve) and folded into one multi-scalar
multiplication (``R + e·P − s·G = O`` per signature, weighted; ``R`` lifted from its x
coordinate, which costs a field square root). Timed in process CPU time, medians of runs.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from coincurve import PrivateKey, PublicKeyXOnly
from nacl.bindings import crypto_sign_open

from bench.common import median
from referendum_core.ballot import SIGNING_PREFIX, BallotSpec
from referendum_core.ballot_codec import ballot_from_json, encode_body
from referendum_core.batch import NATIVE_AVAILABLE, BallotInput, resolve_backend, verify_ballots
from referendum_core.client import make_ballot, new_voter_key
from referendum_core.group import GENERATOR, ORDER

__all__ = ["BATCH_SIZES", "batch_rows"]

BATCH_SIZES = (64, 256, 1024)
_BIP340_TAG = hashlib.sha256(b"BIP0340/challenge").digest() * 2


def _row(metric: str, value: Any, unit: str, target: str = "", ok: str = "") -> dict[str, Any]:
    return {"metric": metric, "value": value, "unit": unit, "target": target, "ok": ok}


def _cpu(action: Callable[[], object]) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def _inputs(spec: BallotSpec, count: int) -> list[BallotInput]:
    out = []
    for i in range(count):
        secret, _ = new_voter_key()
        record = ballot_from_json(make_ballot(spec, secret, [i % 2, 1 - i % 2]))
        out.append(BallotInput(record, encode_body(record)))
    return out


def _bip340_batch(native: Any, sigs: list[tuple[bytes, bytes, bytes]]) -> bool:
    """Every BIP-340 signature ``(x-only key, message, signature)`` by one weighted MSM."""
    points: list[bytes] = []
    scalars: list[int] = []
    g = 0
    for key, message, sig in sigs:
        r, s = sig[:32], int.from_bytes(sig[32:], "big")
        e = int.from_bytes(hashlib.sha256(_BIP340_TAG + r + key + message).digest(), "big")
        w = int.from_bytes(secrets.token_bytes(16), "big")
        points.append(native.decode_point(b"\x02" + r))
        points.append(native.decode_point(b"\x02" + key))
        scalars.append(w)
        scalars.append(w * e % ORDER)
        g -= w * s
    points.append(GENERATOR.to_uncompressed())
    scalars.append(g % ORDER)
    return bool(
        native.multi_mul_is_identity(
            b"".join(points), b"".join(k.to_bytes(32, "big") for k in scalars)
        )
    )


def batch_rows(runs: int, key: bytes) -> list[dict[str, Any]]:
    """The rows: backend, individual vs batched at each size, credential what-if."""
    rows = [_row("verify backend (auto resolves to)", resolve_backend("auto"), "")]
    if not NATIVE_AVAILABLE:
        rows.append(_row("batched rows skipped: the C extension is not built", "-", ""))
        return rows
    from referendum_core import _secp256k1 as native

    spec = BallotSpec("bench", ("yes", "no"), 1, 1, key)
    ballots = _inputs(spec, max(BATCH_SIZES))
    per_ballot_batched: dict[int, float] = {}
    for size in BATCH_SIZES:
        chunks = [ballots[i : i + size] for i in range(0, len(ballots), size)]
        alone: list[float] = []
        batched: list[float] = []

        def run(backend: str, chunks: list[list[BallotInput]] = chunks) -> float:
            return len(ballots) / _cpu(
                lambda: [verify_ballots(spec, c, backend=backend) for c in chunks]
            )

        for _ in range(runs):  # in turn, so machine noise hits both alike
            alone.append(run("python"))
            batched.append(run("native"))
        ratio = median([b / a for a, b in zip(alone, batched, strict=True)])
        per_ballot_batched[size] = median(batched)
        rows += [
            _row(f"yes/no verify, individual path, {size} a batch", median(alone), "ballots/s"),
            _row(f"yes/no verify, batched, {size} a batch", median(batched), "ballots/s"),
            _row(
                f"batched / individual at {size}, same ballots and run",
                ratio,
                "ratio",
                ">= 3",
                "yes" if ratio >= 3 else "NO",
            ),
        ]

    # credentials: Ed25519 alone vs BIP-340 alone and folded into one MSM
    signed = [
        (b.record.signature + SIGNING_PREFIX + b.body_bytes, b.record.credential) for b in ballots
    ]
    sigs = []
    for i in range(len(ballots)):
        priv = PrivateKey()
        message = hashlib.sha256(b"ballot %d" % i).digest()
        sigs.append((priv.public_key_xonly.format(), message, priv.sign_schnorr(message)))
    xonly = [(PublicKeyXOnly(k), m, s) for k, m, s in sigs]
    ed, bip, folded = [], [], []
    for _ in range(runs):
        ed.append(len(signed) / _cpu(lambda: [crypto_sign_open(m, k) for m, k in signed]))
        bip.append(len(xonly) / _cpu(lambda: [k.verify(s, m) for k, m, s in xonly]))
        folded.append(len(sigs) / _cpu(lambda: _bip340_batch(native, sigs)))
    if not _bip340_batch(native, sigs):
        raise RuntimeError("BIP-340 batch check failed on valid signatures")
    ed_rate, bip_rate, folded_rate = median(ed), median(bip), median(folded)
    best = per_ballot_batched[max(BATCH_SIZES)]
    # what-if: replace the Ed25519 check inside the batched ballot by a folded BIP-340 one
    what_if = 1 / (1 / best - 1 / ed_rate + 1 / folded_rate)
    rows += [
        _row("credential: Ed25519 verify alone (PyNaCl)", ed_rate, "/s"),
        _row("credential: BIP-340 verify alone (coincurve)", bip_rate, "/s"),
        _row(f"credential: BIP-340 folded into one MSM, {len(sigs)} a batch", folded_rate, "/s"),
        _row(
            f"what-if: yes/no batched at {max(BATCH_SIZES)} with BIP-340 folded (estimate)",
            what_if,
            "ballots/s",
        ),
    ]
    return rows
