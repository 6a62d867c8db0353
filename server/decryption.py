"""The tally's decryption: the trustees' public commitments, their decryption shares, the result.

A share is verified with the core before anything is stored: a failing proof is answered 422
naming the trustee and the check, a second share of the same trustee 409, a share before the
tally is final or after publication 409 (shares are taken while ``closed`` or ``tallied``, so a
referendum the operator marked tallied still gets its shares). Combining needs
``threshold_k`` valid shares; it stores the result and moves the referendum ``closed →
tallied → published`` (or ``tallied → published``) with :func:`server.referendums.transition`
in the same transaction, so no referendum is ever published without a result. The
statements are in :mod:`referendum_service.store.tallies`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from referendum_core.elgamal import Ciphertext
from referendum_core.errors import CoreError, TrusteeError
from referendum_core.trustee import (
    DealerCommitment,
    DecryptionShare,
    TrusteeParams,
    combine_decryption,
    election_public_key,
    verify_decryption_share,
)
from referendum_service.db import RETRY_AFTER_S
from referendum_service.store.tallies import (
    TallyState,
    insert_result,
    insert_share,
    load_result,
    load_shares,
    load_tally,
    load_trustees,
    save_trustees,
)
from server.audit import record_action
from server.errors import BadRequest, Conflict, UnprocessableContent
from server.referendums import (
    Referendum,
    load_draft,
    load_referendum,
    set_election_key,
    transition,
)

__all__ = [
    "accept_share",
    "final_tally",
    "publish_result",
    "published_result",
    "store_trustees",
]


_SHARE_STATES = ("closed", "tallied")
"""The states that take decryption shares (and a result): after close, before publication."""


def _tally_ready(ref: Referendum, tally: TallyState | None) -> TallyState:
    if ref.state in ("draft", "open"):
        raise Conflict(
            f"referendum {ref.id!r} is {ref.state}; the tally follows its close",
            slug="not-closed",
            state=ref.state,
        )
    if tally is None or not tally.final:
        raise Conflict(
            "the final block is not folded into the tally yet",
            slug="tally-not-ready",
            missing="final-tally",
            retry_after=RETRY_AFTER_S,
        )
    return tally


async def final_tally(conn: Any, rid: str) -> tuple[Referendum, TallyState]:
    """The referendum and its final encrypted tally; 409 before the tally is complete."""
    ref = await load_referendum(conn, rid)
    return ref, _tally_ready(ref, await load_tally(conn, rid))


def _params(ref: Referendum) -> TrusteeParams:
    return TrusteeParams(ref.id, ref.threshold_k, ref.trustees_n)


def _commitments(document: Any) -> list[DealerCommitment]:
    return [DealerCommitment.from_json(c) for c in document["commitments"]]


def _tally_ciphertexts(tally: TallyState) -> list[Ciphertext]:
    return [Ciphertext.from_bytes(c) for c in tally.ciphertexts]


# --- trustees -----------------------------------------------------------------------------


async def store_trustees(conn: Any, rid: str, body: dict[str, Any], actor: str) -> dict[str, Any]:
    """Check and store every trustee's public commitments (drafts only).

    ``body["commitments"]`` lists each trustee's ``commitments.json`` of the trustee tools;
    only the public fields are kept. The election key they imply must equal the referendum's
    (which is set from them when still unset). 422 names the failing check.
    """
    items = body.get("commitments")
    if (
        set(body) != {"commitments"}
        or not isinstance(items, list)
        or not all(isinstance(c, dict) for c in items)
    ):
        raise BadRequest(
            'the body is {"commitments": [each trustee\'s commitments]}',
            slug="bad-trustees",
            field="commitments",
        )
    async with conn.transaction():
        ref = await load_draft(conn, rid, "trustees are")
        params = _params(ref)
        try:
            published = [DealerCommitment.from_json(c) for c in items]
            pk = election_public_key(params, published).to_compressed()
        except CoreError as exc:
            raise UnprocessableContent(
                f"trustee commitments fail: {exc}", slug="bad-trustees", check=exc.check
            ) from exc
        if ref.election_public_key is None:
            await set_election_key(conn, rid, pk, actor)
        elif ref.election_public_key != pk:
            raise UnprocessableContent(
                "the trustees' commitments imply another election key",
                slug="election-key-mismatch",
                check="election_public_key",
            )
        document = {
            "referendum": rid,
            "threshold": params.threshold,
            "trustees": params.trustees,
            "election_public_key": pk.hex(),
            "commitments": [c.to_json() for c in sorted(published, key=lambda c: c.index)],
        }
        await save_trustees(conn, rid, document)
        await record_action(conn, actor, "referendum.trustees", rid, {"election_key": pk.hex()})
    return document


# --- decryption shares ---------------------------------------------------------------------


def _verify_share(
    params: TrusteeParams, document: Any, tally: TallyState, body: dict[str, Any]
) -> DecryptionShare:
    """Parse and verify a share (CPU: run off the event loop)."""
    share = DecryptionShare.from_json(body)
    try:
        verify_decryption_share(params, _commitments(document), _tally_ciphertexts(tally), share)
    except TrusteeError as exc:
        raise UnprocessableContent(
            f"decryption share of trustee {share.trustee} refused: {exc}",
            slug="invalid-decryption-share",
            trustee_index=share.trustee,
            check=exc.check,
        ) from exc
    return share


async def accept_share(conn: Any, rid: str, body: dict[str, Any]) -> dict[str, Any]:
    """Verify a trustee's decryption share against the final tally and store it.

    Nothing is stored unless every proof holds: 422 naming trustee and check otherwise; 409
    when the referendum is not ``closed`` or ``tallied`` with its tally final, or the trustee
    sent one before.
    """
    if body.get("referendum", rid) != rid:
        raise UnprocessableContent(
            "share of another referendum", slug="invalid-decryption-share", check="referendum"
        )
    ref = await load_referendum(conn, rid)
    if ref.state not in _SHARE_STATES:
        raise Conflict(
            f"referendum {rid!r} is {ref.state}; shares are taken while closed or tallied",
            slug="wrong-state",
            state=ref.state,
        )
    tally = _tally_ready(ref, await load_tally(conn, rid))
    document = await load_trustees(conn, rid)
    if document is None:
        raise Conflict("no trustee commitments stored for this referendum", slug="no-trustees")
    params = _params(ref)
    loop = asyncio.get_running_loop()
    share = await loop.run_in_executor(None, _verify_share, params, document, tally, body)
    stored = {"referendum": rid, "tally_hash": tally.tally_hash().hex(), **share.to_json()}
    async with conn.transaction():
        locked = await load_referendum(conn, rid, for_update=True)
        if locked.state not in _SHARE_STATES:
            raise Conflict(
                f"referendum {rid!r} is {locked.state}", slug="wrong-state", state=locked.state
            )
        if not await insert_share(conn, rid, share.trustee, tally.tally_hash(), stored):
            raise Conflict(
                f"trustee {share.trustee} already sent a share",
                slug="duplicate-share",
                trustee_index=share.trustee,
            )
    return stored


# --- result ---------------------------------------------------------------------------------


def _combine(
    params: TrusteeParams, document: Any, tally: TallyState, shares: Sequence[Any]
) -> tuple[list[int], list[int]]:
    """Combine the stored shares (verified again by the core) into the counts."""
    parsed = [DecryptionShare.from_json(s) for s in shares]
    try:
        counts = combine_decryption(
            params,
            _commitments(document),
            _tally_ciphertexts(tally),
            parsed,
            max(tally.ballots_counted, 0),
        )
    except CoreError as exc:
        # every stored share was verified at arrival against this same final tally, so this
        # means the stored record was altered: refuse to publish rather than answer a 500
        raise Conflict(
            f"the stored decryption shares do not combine: {exc}",
            slug="shares-do-not-combine",
            check=exc.check,
        ) from exc
    chosen = sorted(s.trustee for s in parsed)[: params.threshold]
    return counts, chosen


def _ready_to_publish(ref: Referendum, from_tallied: bool) -> None:
    if from_tallied and ref.state != "tallied":
        # the lifecycle route takes the one legal step only, like every other transition
        raise Conflict(
            f"referendum {ref.id!r} is {ref.state}; it cannot become published",
            slug="illegal-transition",
            state=ref.state,
        )
    if ref.state not in _SHARE_STATES:
        raise Conflict(
            f"referendum {ref.id!r} is {ref.state}; a result follows its close",
            slug="wrong-state",
            state=ref.state,
        )


async def publish_result(
    conn: Any, rid: str, actor: str, *, from_tallied: bool = False
) -> dict[str, Any]:
    """Combine ``threshold_k`` valid shares, decode, store the result and publish.

    The referendum moves ``closed → tallied → published`` (or ``tallied → published`` if the
    operator already marked it tallied), in the transaction that stores the result; with
    ``from_tallied`` (``POST .../publish``) only from ``tallied``. 409 when the tally is not
    final, fewer than k shares are in (``not-enough-shares``, with ``shares`` and ``needed``)
    or the state is wrong; nothing changes then.
    """
    ref = await load_referendum(conn, rid)
    _ready_to_publish(ref, from_tallied)
    tally = _tally_ready(ref, await load_tally(conn, rid))
    document = await load_trustees(conn, rid)
    shares = await load_shares(conn, rid)
    params = _params(ref)
    if document is None:
        # opened with a bare election key: no share can be verified, so none was taken
        raise Conflict(
            "no trustee commitments stored for this referendum; shares cannot be checked",
            slug="no-trustees",
            missing="trustee-commitments",
        )
    if len(shares) < params.threshold:
        raise Conflict(
            f"{len(shares)} decryption shares in, {params.threshold} needed",
            slug="not-enough-shares",
            missing="decryption-shares",
            shares=len(shares),
            needed=params.threshold,
        )
    loop = asyncio.get_running_loop()
    counts, chosen = await loop.run_in_executor(None, _combine, params, document, tally, shares)
    result = {
        "referendum_id": rid,
        "options": list(ref.options),
        "counts": counts,
        "counts_by_option": dict(zip(ref.options, counts, strict=True)),
        "ballots_counted": tally.ballots_counted,
        "block_height": tally.folded_height,
        "tree_size": tally.folded_size,
        "tally_hash": tally.tally_hash().hex(),
        "trustees": chosen,
    }
    async with conn.transaction():
        # a concurrent publication may have won while the shares were combined
        locked = await load_referendum(conn, rid, for_update=True)
        _ready_to_publish(locked, from_tallied)
        if locked.state == "closed":
            await transition(conn, rid, "tallied", actor)
        await insert_result(conn, rid, counts, result)
        await transition(conn, rid, "published", actor)
    return result


async def published_result(conn: Any, rid: str) -> dict[str, Any]:
    """The published result with the encrypted tally, the trustees, every share and proof.

    409 (``not-published``) before publication.
    """
    ref = await load_referendum(conn, rid)
    result = await load_result(conn, rid)
    if result is None or ref.state != "published":
        raise Conflict(
            f"referendum {rid!r} is {ref.state}; no published result",
            slug="not-published",
            state=ref.state,
        )
    tally = await load_tally(conn, rid)
    assert tally is not None
    return {
        **result,
        "encrypted_tally": tally.to_json(ref.options),
        "trustees_document": await load_trustees(conn, rid),
        "shares": await load_shares(conn, rid),
    }
