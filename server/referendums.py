"""Referendums: the definition and its validation, loading, the lifecycle, status.

Lifecycle::

    draft --open--> open --close--> closed --tally--> tallied --publish--> published

:func:`transition` is the one place a state changes: it locks the referendum row, refuses an
illegal step with 409, checks the step's preconditions (409 naming what is missing), commits
the roll at open (which freezes it) and records the action in the audit log. The
preconditions, so that no sequence of operator calls can leave a referendum stuck:

- ``open``: an election public key and a non-empty roll;
- ``close``: ``closes_at`` reached, or an explicit early close with the operator's reason
  (``early`` and ``reason``, both kept in the audit log); nothing closes a referendum by
  itself at ``closes_at``: closing stays an operator action, and ingestion refuses ballots
  outside ``[opens_at, closes_at]`` on its own (:mod:`server.ingest`);
- ``tally``: the log's final block sealed (``log_heads.final``, written by the batcher once the
  referendum is closed) and the encrypted tally folded up to it;
- ``publish``: a stored result, which :func:`server.decryption.publish_result` combines from
  ``threshold_k`` valid decryption shares in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import coincurve
import orjson

from referendum_core.ids import is_referendum_id
from referendum_service.db import RETRY_AFTER_S, translated
from referendum_service.store.progress import log_final
from referendum_service.store.tallies import load_result, load_tally
from server.audit import record_action
from server.errors import BadRequest, Conflict, NotFound, UnprocessableContent
from server.roll import commit_roll

__all__ = [
    "NEXT_STATE",
    "STATES",
    "Referendum",
    "ReferendumDefinition",
    "check_fields",
    "create_referendum",
    "load_draft",
    "load_referendum",
    "parse_close",
    "parse_definition",
    "parse_election_key",
    "referendum_status",
    "set_election_key",
    "transition",
]

STATES = ("draft", "open", "closed", "tallied", "published")
NEXT_STATE = {"draft": "open", "open": "closed", "closed": "tallied", "tallied": "published"}
"""The one legal step out of each state."""
_STAMP = {
    "open": "opened_at",
    "closed": "closed_at",
    "tallied": "tallied_at",
    "published": "published_at",
}

_MAX_OPTIONS = 64
_MAX_TEXT = 1000
_MAX_TRUSTEES = 100


@dataclass(frozen=True)
class ReferendumDefinition:
    """What an operator supplies to create a referendum (already validated)."""

    id: str
    question: str
    options: tuple[str, ...]
    min_selections: int
    max_selections: int
    opens_at: datetime
    closes_at: datetime
    revote_policy: str
    threshold_k: int
    trustees_n: int
    election_public_key: bytes | None


@dataclass(frozen=True)
class Referendum(ReferendumDefinition):
    """A stored referendum: its definition, state and roll commitment."""

    state: str
    roll_root: bytes | None
    roll_size: int
    created_at: datetime

    @classmethod
    def from_record(cls, r: Any) -> Referendum:
        key = r["election_public_key"]
        root = r["roll_root"]
        return cls(
            id=r["id"],
            question=r["question"],
            options=tuple(orjson.loads(r["options"])),
            min_selections=r["min_selections"],
            max_selections=r["max_selections"],
            opens_at=r["opens_at"],
            closes_at=r["closes_at"],
            revote_policy=r["revote_policy"],
            threshold_k=r["threshold_k"],
            trustees_n=r["trustees_n"],
            election_public_key=None if key is None else bytes(key),
            state=r["state"],
            roll_root=None if root is None else bytes(root),
            roll_size=r["roll_size"],
            created_at=r["created_at"],
        )

    def to_json(self) -> dict[str, Any]:
        """The public definition voters and auditors need."""
        key, root = self.election_public_key, self.roll_root
        return {
            "id": self.id,
            "question": self.question,
            "options": list(self.options),
            "min_selections": self.min_selections,
            "max_selections": self.max_selections,
            "opens_at": self.opens_at.isoformat(),
            "closes_at": self.closes_at.isoformat(),
            "revote_policy": self.revote_policy,
            "threshold_k": self.threshold_k,
            "trustees_n": self.trustees_n,
            "state": self.state,
            "election_public_key": None if key is None else key.hex(),
            "roll_root": None if root is None else root.hex(),
            "roll_size": self.roll_size,
            "created_at": self.created_at.isoformat(),
        }


_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "question": str,
    "options": list,
    "min_selections": int,
    "max_selections": int,
    "opens_at": str,
    "closes_at": str,
    "revote_policy": str,
    "threshold_k": int,
    "trustees_n": int,
    "election_public_key": (str, type(None)),
}
_OPTIONAL = {"election_public_key"}


def _invalid(field: str, detail: str) -> UnprocessableContent:
    return UnprocessableContent(f"{field}: {detail}", slug="invalid-value", field=field)


def check_fields(
    body: dict[str, Any], fields: dict[str, type | tuple[type, ...]], optional: set[str]
) -> None:
    """Unknown, missing or mistyped fields -> 400 naming the first such field."""
    for name in body:
        if name not in fields:
            raise BadRequest(f"unknown field {name!r}", slug="unknown-field", field=name)
    for name, kind in fields.items():
        if name not in body:
            if name in optional:
                continue
            raise BadRequest(f"missing field {name!r}", slug="missing-field", field=name)
        value = body[name]
        # bool is an int subclass; JSON true is not a count
        if isinstance(value, bool) or not isinstance(value, kind):
            raise BadRequest(f"field {name!r} has the wrong type", slug="wrong-type", field=name)


def _timestamp(field: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _invalid(field, "must be an RFC 3339 timestamp") from exc
    if value.tzinfo is None:
        raise _invalid(field, "must carry a time zone offset (e.g. Z)")
    return value


def parse_election_key(value: str, field: str = "election_public_key") -> bytes:
    """A compressed secp256k1 point given as 66 hex digits; 422 naming ``field`` otherwise."""
    try:
        raw = bytes.fromhex(value) if len(value) == 66 else b""
    except ValueError:
        raw = b""
    if len(raw) != 33 or raw[0] not in (2, 3):
        raise _invalid(field, "must be a compressed secp256k1 point (66 hex digits, 02/03...)")
    try:
        coincurve.PublicKey(raw)
    except ValueError as exc:
        raise _invalid(field, "is not a point on secp256k1") from exc
    return raw


def parse_definition(body: dict[str, Any]) -> ReferendumDefinition:
    """Validate a create request: 400 for unknown/missing/mistyped fields, 422 for values."""
    check_fields(body, _FIELDS, _OPTIONAL)
    if not is_referendum_id(body["id"]):
        raise _invalid("id", "must be 1 to 64 of a-z 0-9 -")
    question = body["question"]
    if not 1 <= len(question) <= _MAX_TEXT:
        raise _invalid("question", f"must have 1 to {_MAX_TEXT} characters")
    options = body["options"]
    if not 2 <= len(options) <= _MAX_OPTIONS:
        raise _invalid("options", f"must list 2 to {_MAX_OPTIONS} options")
    for option in options:
        if not isinstance(option, str):
            raise BadRequest("options must be strings", slug="wrong-type", field="options")
        if not 1 <= len(option) <= _MAX_TEXT:
            raise _invalid("options", f"each option has 1 to {_MAX_TEXT} characters")
    if len(set(options)) != len(options):
        raise _invalid("options", "must be distinct")
    low, high = body["min_selections"], body["max_selections"]
    if not 0 <= low <= len(options):
        raise _invalid("min_selections", "must be between 0 and the number of options")
    if not max(low, 1) <= high <= len(options):
        raise _invalid("max_selections", "must be between min_selections (>= 1) and options")
    opens_at = _timestamp("opens_at", body["opens_at"])
    closes_at = _timestamp("closes_at", body["closes_at"])
    if closes_at <= opens_at:
        raise _invalid("closes_at", "must be after opens_at")
    if body["revote_policy"] not in ("forbid", "last_counts"):
        raise _invalid("revote_policy", "must be 'forbid' or 'last_counts'")
    k, n = body["threshold_k"], body["trustees_n"]
    if not 1 <= n <= _MAX_TRUSTEES:
        raise _invalid("trustees_n", f"must be between 1 and {_MAX_TRUSTEES}")
    if not 1 <= k <= n:
        raise _invalid("threshold_k", "must be between 1 and trustees_n")
    key = body.get("election_public_key")
    return ReferendumDefinition(
        id=body["id"],
        question=question,
        options=tuple(options),
        min_selections=low,
        max_selections=high,
        opens_at=opens_at,
        closes_at=closes_at,
        revote_policy=body["revote_policy"],
        threshold_k=k,
        trustees_n=n,
        election_public_key=None if key is None else parse_election_key(key),
    )


async def create_referendum(conn: Any, definition: ReferendumDefinition, actor: str) -> Referendum:
    """Store a new draft referendum; Conflict when the id is taken."""
    d = definition
    async with conn.transaction():
        with translated():
            record = await conn.fetchrow(
                """INSERT INTO referendums (id, question, options, min_selections,
                       max_selections, opens_at, closes_at, revote_policy, threshold_k,
                       trustees_n, election_public_key)
                   VALUES ($1, $2, $3::jsonb, $4, $5, $6, $7, $8, $9, $10, $11)
                   RETURNING *""",
                d.id,
                d.question,
                _json_list(d.options),
                d.min_selections,
                d.max_selections,
                d.opens_at,
                d.closes_at,
                d.revote_policy,
                d.threshold_k,
                d.trustees_n,
                d.election_public_key,
            )
        await record_action(conn, actor, "referendum.create", d.id, {"state": "draft"})
    return Referendum.from_record(record)


def _json_list(values: tuple[str, ...]) -> str:
    return orjson.dumps(list(values)).decode()


_SELECT = "SELECT * FROM referendums WHERE id = $1"
_SELECT_FOR_UPDATE = "SELECT * FROM referendums WHERE id = $1 FOR UPDATE"


async def load_referendum(conn: Any, rid: str, *, for_update: bool = False) -> Referendum:
    """The referendum ``rid``; NotFound when there is none.

    ``for_update`` locks the row until the caller's transaction ends.
    """
    query = _SELECT_FOR_UPDATE if for_update else _SELECT
    with translated():
        record = await conn.fetchrow(query, rid)
    if record is None:
        raise NotFound(f"no referendum {rid!r}", slug="no-referendum")
    return Referendum.from_record(record)


async def load_draft(conn: Any, rid: str, fixed: str) -> Referendum:
    """The referendum, locked for update, if it is still a draft; ``Conflict`` (``not-draft``)
    saying that ``fixed`` (what the caller would change) is fixed at open otherwise.

    Requires an open transaction on ``conn``.
    """
    ref = await load_referendum(conn, rid, for_update=True)
    if ref.state != "draft":
        raise Conflict(
            f"referendum {rid!r} is {ref.state}; {fixed} fixed at open",
            slug="not-draft",
            state=ref.state,
        )
    return ref


async def set_election_key(conn: Any, rid: str, key: bytes, actor: str) -> Referendum:
    """Set the election public key of a draft; Conflict once it has opened."""
    async with conn.transaction():
        await load_draft(conn, rid, "the key is")
        with translated():
            record = await conn.fetchrow(
                "UPDATE referendums SET election_public_key = $2 WHERE id = $1 RETURNING *",
                rid,
                key,
            )
        await record_action(conn, actor, "referendum.election-key", rid, {"key": key.hex()})
    return Referendum.from_record(record)


def parse_close(body: dict[str, Any] | None) -> tuple[bool, str | None]:
    """The optional body of a close, ``{"early": true, "reason": "..."}``: (early, reason).

    No body is ``(False, None)``. 400 for an unknown or mistyped field and for an early close
    without a reason; 422 for a blank or over-long reason.
    """
    if body is None:
        return False, None
    for name in body:
        if name not in ("early", "reason"):
            raise BadRequest(f"unknown field {name!r}", slug="unknown-field", field=name)
    early = body.get("early", False)
    if not isinstance(early, bool):
        raise BadRequest("field 'early' must be true or false", slug="wrong-type", field="early")
    reason = body.get("reason")
    if reason is None:
        if early:
            raise BadRequest(
                "an early close needs a 'reason'", slug="missing-field", field="reason"
            )
        return early, None
    if not isinstance(reason, str):
        raise BadRequest("field 'reason' must be a string", slug="wrong-type", field="reason")
    if not reason.strip() or len(reason) > _MAX_TEXT:
        raise _invalid("reason", f"must have 1 to {_MAX_TEXT} characters, not only spaces")
    return early, reason


async def _check_close(
    conn: Any, ref: Referendum, early: bool, reason: str | None
) -> dict[str, Any]:
    """Closing before ``closes_at`` needs ``early`` and a reason; the audit details."""
    with translated():
        now = await conn.fetchval("SELECT now()")
    before = now < ref.closes_at
    if before and not (early and reason):
        raise Conflict(
            f"referendum {ref.id!r} closes at {ref.closes_at.isoformat()}; closing it before "
            'then is an explicit decision: send {"early": true, "reason": "..."}',
            slug="closes-at-not-reached",
            closes_at=ref.closes_at.isoformat(),
        )
    details: dict[str, Any] = {"closes_at": ref.closes_at.isoformat(), "early": before}
    if reason is not None:
        details["reason"] = reason
    return details


async def _check_tally(conn: Any, rid: str) -> None:
    """The log is final and the encrypted tally folded up to its final block."""
    with translated():
        final = await log_final(conn, rid)
        tally = await load_tally(conn, rid) if final else None
    if not final:
        raise Conflict(
            "the log's final block is not sealed yet (the batcher seals it after close)",
            slug="log-not-final",
            missing="final-block",
            retry_after=RETRY_AFTER_S,
        )
    if tally is None or not tally.final:
        raise Conflict(
            "the final block is not folded into the tally yet",
            slug="tally-not-ready",
            missing="final-tally",
            retry_after=RETRY_AFTER_S,
        )


async def _check_publish(conn: Any, rid: str) -> None:
    """A result is stored (combined from threshold_k valid decryption shares)."""
    with translated():
        result = await load_result(conn, rid)
    if result is None:
        raise Conflict(
            "no result yet: it is combined from threshold_k valid decryption shares",
            slug="no-result",
            missing="result",
        )


async def transition(
    conn: Any,
    rid: str,
    to_state: str,
    actor: str,
    *,
    early: bool = False,
    reason: str | None = None,
) -> Referendum:
    """Move ``rid`` to ``to_state`` if that is its one legal next step; 409 otherwise.

    Opening requires an election public key and a non-empty roll; it computes and stores the
    roll commitment in the same transaction, so the roll is frozen from then on. Closing
    before ``closes_at`` requires ``early`` and a ``reason`` (recorded in the audit log);
    tallying requires the final block sealed and folded into the tally; publishing requires a
    stored result. Each refusal is a 409 naming what is missing, and changes nothing.
    """
    if to_state not in STATES:
        raise ValueError(f"no state {to_state!r}")
    async with conn.transaction():
        ref = await load_referendum(conn, rid, for_update=True)
        if NEXT_STATE.get(ref.state) != to_state:
            raise Conflict(
                f"referendum {rid!r} is {ref.state}; it cannot become {to_state}",
                slug="illegal-transition",
                state=ref.state,
            )
        details: dict[str, Any] = {"from": ref.state, "to": to_state}
        root, size = ref.roll_root, ref.roll_size
        if to_state == "open":
            if ref.election_public_key is None:
                raise Conflict("set the election public key before opening", slug="no-key")
            if ref.roll_size == 0:
                raise Conflict("import a voter roll before opening", slug="empty-roll")
            root, size = await commit_roll(conn, rid)
            details.update(roll_root=root.hex(), roll_size=size)
        elif to_state == "closed":
            details.update(await _check_close(conn, ref, early, reason))
        elif to_state == "tallied":
            await _check_tally(conn, rid)
        elif to_state == "published":
            await _check_publish(conn, rid)
        with translated():
            record = await conn.fetchrow(
                f"""UPDATE referendums SET state = $2, roll_root = $3, roll_size = $4,
                        {_STAMP[to_state]} = now()
                    WHERE id = $1 RETURNING *""",  # noqa: S608 - column name from a fixed map
                rid,
                to_state,
                root,
                size,
            )
        await record_action(conn, actor, f"referendum.{to_state}", rid, details)
    return Referendum.from_record(record)


async def referendum_status(conn: Any, rid: str) -> dict[str, Any]:
    """Eligible voters, ballots accepted and the latest block (zeros before the log exists)."""
    ref = await load_referendum(conn, rid)
    with translated():
        # Sequenced ballots are the tree size (indexes are contiguous); only the unsequenced
        # rest is counted, in the batcher's queue (log_pending): a full count(*) of ballots
        # would scan millions of rows on every poll. One statement, one snapshot: the batcher
        # moves ballots from the queue to the log in a single transaction.
        row = await conn.fetchrow(
            """SELECT h.height, h.tree_size,
                      coalesce(h.tree_size, 0)
                      + (SELECT count(*) FROM log_pending WHERE referendum_id = $1) AS accepted
               FROM (SELECT 1) AS one
               LEFT JOIN log_heads AS h ON h.referendum_id = $1""",
            rid,
        )
    head = None if row["height"] is None else row
    accepted = row["accepted"]
    return {
        "id": ref.id,
        "state": ref.state,
        "eligible_voters": ref.roll_size,
        "ballots_accepted": int(accepted),
        "latest_block": {
            "height": 0 if head is None else int(head["height"]),
            "tree_size": 0 if head is None else int(head["tree_size"]),
        },
        "roll_root": None if ref.roll_root is None else ref.roll_root.hex(),
    }
