"""The decryption part of ``verify-election``: trustees, decryption shares and the result.

From ``trustees.json`` (every trustee's Feldman commitments), ``shares.json`` and
``result.json`` of a record, against the encrypted tally already recomputed from the ballots:

* ``shares``: the commitments check out and imply the referendum's election key; each share
  names this tally, comes from a listed trustee once, and every DLEQ proof holds against the
  trustee's verification key ``X_l`` (``referendum_core.trustee.verify_decryption_share``);
* ``result``: at least ``threshold_k`` valid shares; their Lagrange combination at 0 gives
  ``M_j = b_j − Σ λ_l·D_lj`` and each published count ``c_j`` must satisfy ``c_j·G = M_j``;
  the options and ``counts_by_option`` must match the definition.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from referendum_core.ballot import BallotSpec
from referendum_core.elgamal import Ciphertext
from referendum_core.errors import CoreError
from referendum_core.group import Point
from referendum_core.trustee import (
    DealerCommitment,
    DecryptionShare,
    TrusteeParams,
    election_public_key,
    lagrange_coefficient,
    verify_decryption_share,
)

__all__ = ["check_decryption"]

Fail = Callable[[str, str], None]


def _load(root: Path, name: str) -> Any:
    return json.loads((root / name).read_bytes())


def _valid_shares(
    fail: Fail,
    params: TrusteeParams,
    commitments: list[DealerCommitment],
    tally: list[Ciphertext],
    tally_hash: str,
    rows: Any,
) -> dict[int, DecryptionShare]:
    valid: dict[int, DecryptionShare] = {}
    if not isinstance(rows, list):
        fail("shares", "shares.json is not a list")
        return valid
    seen: set[int] = set()
    for row in rows:
        try:
            share = DecryptionShare.from_json(row)
            if row.get("tally_hash") != tally_hash:
                fail("shares", f"trustee {share.trustee}'s share names another tally")
                continue
            if share.trustee in seen:
                fail("shares", f"trustee {share.trustee} has two shares")
                continue
            seen.add(share.trustee)
            verify_decryption_share(params, commitments, tally, share)
        except (CoreError, AttributeError) as exc:
            check = getattr(exc, "check", "format")
            fail("shares", f"{check}: {exc}")
            continue
        valid[share.trustee] = share
    return valid


def check_decryption(
    fail: Fail, root: Path, ref: dict[str, Any], spec: BallotSpec, tally_bytes: Sequence[bytes]
) -> list[int] | None:
    """Check trustees, shares and result; return the verified counts (``None`` if unproven)."""
    tally = [Ciphertext.from_bytes(c) for c in tally_bytes]
    tally_hash = json.loads((root / "tally.json").read_bytes()).get("tally_hash")
    params = TrusteeParams(spec.referendum_id, int(ref["threshold_k"]), int(ref["trustees_n"]))
    try:
        trustees = _load(root, "trustees.json")
        commitments = [DealerCommitment.from_json(c) for c in trustees["commitments"]]
        pk = election_public_key(params, commitments)
        if pk.to_compressed() != spec.election_public_key:
            fail("shares", "the trustees' commitments imply another election key")
            return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail("shares", f"trustees.json: {exc!r}")
        return None
    except CoreError as exc:
        fail("shares", f"trustees.json: {exc.check}: {exc}")
        return None
    try:
        rows = _load(root, "shares.json")
    except (OSError, ValueError) as exc:
        fail("shares", f"shares.json: {exc}")
        rows = []
    valid = _valid_shares(fail, params, commitments, tally, tally_hash, rows)
    try:
        result = _load(root, "result.json")
        counts = result["counts"]
        if (
            not isinstance(counts, list)
            or len(counts) != len(spec.options)
            or not all(type(c) is int and c >= 0 for c in counts)
        ):
            raise TypeError("counts must be one non-negative integer per option")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail("result", f"result.json: {exc!r}")
        return None
    if len(valid) < params.threshold:
        fail("result", f"{len(valid)} valid decryption shares, {params.threshold} needed")
        return None
    if result.get("options") != list(spec.options):
        fail("result", "result.json lists other options or another order")
    if result.get("counts_by_option") != dict(zip(spec.options, counts, strict=True)):
        fail("result", "counts_by_option disagrees with counts")
    chosen = sorted(valid)[: params.threshold]
    lambdas = {i: lagrange_coefficient(i, chosen) for i in chosen}
    ok = True
    for j, (ct, count) in enumerate(zip(tally, counts, strict=True)):
        combined = Point.sum(valid[i].shares[j] * lambdas[i] for i in chosen)
        if ct.b - combined != Point.base_mul(count):
            fail(
                "result",
                f"option {j} ({spec.options[j]!r}): {count} is not the decryption of the tally",
            )
            ok = False
    return list(counts) if ok else None
