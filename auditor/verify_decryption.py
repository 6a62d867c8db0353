"""The decryption part of ``verify-election``: trustees, decryption shares and the result.

From ``trustees.json`` (every trustee's Feldman commitments), ``shares.json`` and
``result.json`` of a record, against the encrypted tally already recomputed from the ballots:

* ``shares``: ``trustees.json`` is the ceremony of this referendum (its id, ``threshold_k`` of
  ``trustees_n``, its election key) and the commitments check out and imply that key; each
  share is of this referendum and this tally, comes from a listed trustee once, in trustee
  order, and every DLEQ proof holds against the trustee's verification key ``X_l``
  (``referendum_core.trustee.verify_decryption_share``);
* ``result``: at least ``threshold_k`` valid shares; the trustees the result names are the
  lowest ``threshold_k`` of them; their Lagrange combination at 0 gives
  ``M_j = b_j − Σ λ_l·D_lj`` and each published count ``c_j`` must satisfy ``c_j·G = M_j``;
  every other member (referendum, options, ``counts_by_option``, ballots counted, block
  height, tree size, tally hash) is what the definition and the recomputed tally say.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from referendum_core.ballot import BallotSpec
from referendum_core.elgamal import Ciphertext
from referendum_core.errors import CoreError
from referendum_core.group import Point
from referendum_core.record import (
    COMMITMENT_MEMBERS,
    RESULT_MEMBERS,
    SHARE_MEMBERS,
    TRUSTEES_MEMBERS,
    member_problems,
    parse_json,
)
from referendum_core.trustee import (
    DealerCommitment,
    DecryptionShare,
    TrusteeParams,
    election_public_key,
    lagrange_coefficient,
    verify_decryption_share,
)

if TYPE_CHECKING:
    from auditor.verify_election.tally import FinalTally

__all__ = ["check_decryption"]

Fail = Callable[[str, str], None]


def _load(root: Path, name: str) -> Any:
    return parse_json((root / name).read_bytes())


def _members(fail: Fail, check: str, where: str, obj: Any, members: Sequence[str]) -> bool:
    """Report each missing or unknown member; whether ``obj`` holds every member."""
    for problem in member_problems(obj, members):
        fail(check, f"{where} {problem}")
    return isinstance(obj, dict) and all(m in obj for m in members)


def _commitments(
    fail: Fail, params: TrusteeParams, ref: dict[str, Any], spec: BallotSpec, root: Path
) -> list[DealerCommitment] | None:
    """``trustees.json`` checked member by member; its commitments, or ``None``."""
    try:
        trustees = _load(root, "trustees.json")
        if not _members(fail, "shares", "trustees.json", trustees, TRUSTEES_MEMBERS):
            return None
        stated = (trustees["referendum"], trustees["threshold"], trustees["trustees"])
        if stated != (params.referendum_id, params.threshold, params.trustees) or not all(
            type(v) is int for v in stated[1:]
        ):
            fail("shares", "trustees.json is the ceremony of another referendum or k of n")
        if trustees["election_public_key"] != ref["election_public_key"]:
            fail("shares", "trustees.json states another election key than the definition")
        rows = trustees["commitments"]
        if not isinstance(rows, list):
            raise TypeError("commitments is not a list")
        for number, row in enumerate(rows, start=1):
            _members(fail, "shares", f"trustees.json commitment {number}", row, COMMITMENT_MEMBERS)
        commitments = [DealerCommitment.from_json(c) for c in rows]
        indexes = [c.index for c in commitments]
        if indexes != sorted(set(indexes)):
            fail("shares", "trustees.json's commitments are not in trustee order")
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
    return commitments


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
    seen: list[int] = []
    for number, row in enumerate(rows, start=1):
        _members(fail, "shares", f"shares.json share {number}", row, SHARE_MEMBERS)
        try:
            share = DecryptionShare.from_json(row)
            if row.get("referendum") != params.referendum_id:
                fail("shares", f"trustee {share.trustee}'s share is of another referendum")
                continue
            if row.get("tally_hash") != tally_hash:
                fail("shares", f"trustee {share.trustee}'s share names another tally")
                continue
            if share.trustee in seen:
                fail("shares", f"trustee {share.trustee} has two shares")
                continue
            if seen and share.trustee < seen[-1]:
                fail("shares", f"trustee {share.trustee}'s share is out of trustee order")
            seen.append(share.trustee)
            verify_decryption_share(params, commitments, tally, share)
        except (CoreError, AttributeError) as exc:
            check = getattr(exc, "check", "format")
            fail("shares", f"{check}: {exc}")
            continue
        valid[share.trustee] = share
    return valid


def _check_result_members(
    fail: Fail, result: dict[str, Any], spec: BallotSpec, tally: FinalTally, counts: list[int]
) -> None:
    """Every member of ``result.json`` but the counts and trustees, against what it must be."""
    if result.get("referendum_id") != spec.referendum_id:
        fail("result", "result.json is the result of another referendum")
    if result.get("options") != list(spec.options):
        fail("result", "result.json lists other options or another order")
    if result.get("counts_by_option") != dict(zip(spec.options, counts, strict=True)):
        fail("result", "counts_by_option disagrees with counts")
    expected = {
        "ballots_counted": tally.ballots_counted,
        "block_height": tally.block_height,
        "tree_size": tally.tree_size,
    }
    for member, value in expected.items():
        stated = result.get(member)
        if type(stated) is not int or (value is not None and stated != value):
            fail("result", f"result.json's {member} {stated!r} is not the log's {value!r}")
    if result.get("tally_hash") != tally.tally_hash:
        fail("result", "result.json names another encrypted tally")


def check_decryption(
    fail: Fail, root: Path, ref: dict[str, Any], spec: BallotSpec, final: FinalTally
) -> list[int] | None:
    """Check trustees, shares and result; return the verified counts (``None`` if unproven)."""
    tally = [Ciphertext.from_bytes(c) for c in final.ciphertexts]
    params = TrusteeParams(spec.referendum_id, int(ref["threshold_k"]), int(ref["trustees_n"]))
    commitments = _commitments(fail, params, ref, spec, root)
    if commitments is None:
        return None
    try:
        rows = _load(root, "shares.json")
    except (OSError, ValueError) as exc:
        fail("shares", f"shares.json: {exc}")
        rows = []
    valid = _valid_shares(fail, params, commitments, tally, final.tally_hash, rows)
    try:
        result = _load(root, "result.json")
        _members(fail, "result", "result.json", result, RESULT_MEMBERS)
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
    _check_result_members(fail, result, spec, final, counts)
    if len(valid) < params.threshold:
        fail("result", f"{len(valid)} valid decryption shares, {params.threshold} needed")
        return None
    # the server combines the lowest k indexes among the shares it holds; any k valid shares
    # give the same plaintext, so naming others would misstate who decrypted, not the counts
    chosen = sorted(valid)[: params.threshold]
    if result.get("trustees") != chosen:
        fail(
            "result",
            f"result.json names trustees {result.get('trustees')!r}, the shares give {chosen}",
        )
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
