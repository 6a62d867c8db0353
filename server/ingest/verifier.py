"""A ballot's cheap parse, its verification cost, and its signature and proof checks.

:func:`parse_ballot` turns the JSON body into canonical bytes and their hash (hex decoding and
one SHA-256, no curve arithmetic), so a stored ballot is recognised before anything costly.
:func:`verification_cost` says what the full check of a referendum's ballot costs, in yes/no
ballots. :class:`BallotVerifier` runs the full check inline or in a process pool
(``verify_workers``); a failure says whether the voter's signature verified, i.e. whether the
failed ballot can be held against the voter's credential.

Batching (``verify_backend``, ``verify_batch_max``): the ballots that reach their check in one
turn of the event loop are checked as one batch (``referendum_core.batch.verify_ballots``)
on the loop's next turn, or at once when ``verify_batch_max`` of one referendum wait. A
ballot thus waits at most one loop turn for its batch, never for a timer, and less than for
its group commit, which takes a write slot and a database round trip after it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import multiprocessing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from referendum_core.ballot import SIGNING_PREFIX, BallotSpec, plan, verify_record
from referendum_core.ballot_codec import BallotRecord, ballot_from_json, encode_body
from referendum_core.batch import BallotInput, resolve_backend, verify_ballots
from referendum_core.errors import CoreError, SignatureError
from server.errors import InvalidBallot

__all__ = [
    "BallotVerifier",
    "CheckedBallot",
    "ParsedBallot",
    "RejectedBallot",
    "parse_ballot",
    "verification_cost",
]


@dataclass(frozen=True)
class ParsedBallot:
    """A ballot body in canonical form; nothing cryptographic is checked yet."""

    record: BallotRecord
    body_bytes: bytes
    canonical: bytes
    hash: bytes

    @property
    def referendum_id(self) -> str:
        return self.record.referendum_id

    @property
    def credential(self) -> bytes:
        return self.record.credential


@dataclass(frozen=True)
class CheckedBallot:
    """The parts of a verified ballot the write path keeps."""

    referendum_id: str
    credential: bytes
    canonical: bytes
    hash: bytes


class RejectedBallot(Exception):
    """A ballot that failed a check: ``error`` is the answer, ``signed`` says whether the
    voter's signature over it verified (so the voter made it and it may cost them)."""

    def __init__(self, error: InvalidBallot, *, signed: bool) -> None:
        super().__init__(error.detail)
        self.error = error
        self.signed = signed


def parse_ballot(body: Mapping[str, Any]) -> ParsedBallot:
    """The canonical bytes and hash of a JSON ballot body (strict shape, hex and lengths).

    Raises InvalidBallot naming the failed check (``body.fields``, ``credential``,
    ``proofs[0]``…).
    """
    try:
        record = ballot_from_json(body)
        body_bytes = encode_body(record)
    except CoreError as exc:
        raise InvalidBallot(str(exc), check=exc.check) from exc
    canonical = body_bytes + record.signature
    return ParsedBallot(record, body_bytes, canonical, hashlib.sha256(canonical).digest())


def verification_cost(spec: BallotSpec) -> int:
    """What checking one ballot of ``spec`` costs, in yes/no ballots (at least 1).

    The proofs are the cost: one 0/1 proof (two branches) per explicit ciphertext, and a sum
    proof of one branch per allowed total; a branch costs about the same whatever the proof.
    A yes/no ballot has one 0/1 proof and no sum proof: 1. A 64-option ballot with 1 to 64
    selections: 64 + ⌈64 / 2⌉ = 96.
    """
    shape = plan(spec)
    branches = 2 * shape.explicit
    if shape.sum_range is not None:
        branches += shape.sum_range[1] - shape.sum_range[0] + 1
    return max(1, -(-branches // 2))


def _signature_verifies(parsed: ParsedBallot) -> bool:
    # Asked only after a check failed, and only when the failure was not the signature's:
    # then it says whether the voter signed what failed, whatever check came first.
    try:
        crypto_sign_open(
            parsed.record.signature + SIGNING_PREFIX + parsed.body_bytes, parsed.credential
        )
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def _check(spec: BallotSpec, parsed: ParsedBallot) -> CheckedBallot | tuple[str, str, bool]:
    # A failure travels as plain parts: CoreError's keyword-only ``check`` does not survive
    # pickling out of a worker process.
    try:
        verified = verify_record(spec, parsed.record, parsed.body_bytes)
    except CoreError as exc:
        signed = not isinstance(exc, SignatureError) and _signature_verifies(parsed)
        return (str(exc), exc.check, signed)
    return CheckedBallot(
        verified.referendum_id, verified.credential, verified.canonical, verified.hash
    )


_Result = CheckedBallot | tuple[str, str, bool]


def _check_batch(spec: BallotSpec, items: list[ParsedBallot], backend: str) -> list[_Result]:
    # One verdict per ballot, each what _check gives it alone (verify_ballots' contract).
    verdicts = verify_ballots(
        spec, [BallotInput(p.record, p.body_bytes) for p in items], backend=backend
    )
    out: list[_Result] = []
    for parsed, verdict in zip(items, verdicts, strict=True):
        if isinstance(verdict, CoreError):
            signed = not isinstance(verdict, SignatureError) and _signature_verifies(parsed)
            out.append((str(verdict), verdict.check, signed))
        else:
            out.append(
                CheckedBallot(
                    verdict.referendum_id, verdict.credential, verdict.canonical, verdict.hash
                )
            )
    return out


def _warm_worker() -> None:
    import referendum_core.ballot  # noqa: F401  (import cost paid at start, not per ballot)


_Waiting = list[tuple[ParsedBallot, "asyncio.Future[_Result]"]]


class BallotVerifier:
    """Checks signature and proofs: inline (``workers == 0``) or in ``workers`` processes,
    in batches of up to ``batch_max`` ballots of one referendum (``backend`` as in
    :func:`referendum_core.batch.resolve_backend`).

    Raises ValueError at construction for an unusable ``backend``.
    """

    def __init__(self, workers: int, *, backend: str = "auto", batch_max: int = 1) -> None:
        self.backend = resolve_backend(backend)
        self._batch_max = max(1, batch_max)
        self._waiting: dict[BallotSpec, _Waiting] = {}
        self._flush_scheduled = False
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        if workers > 0:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_warm_worker,
            )

    async def check(self, spec: BallotSpec, parsed: ParsedBallot) -> CheckedBallot:
        """Every check of ``parsed`` (its signature under the credential it names, which the
        caller found on the roll); raises RejectedBallot naming the failed check."""
        loop = asyncio.get_running_loop()
        if self._batch_max == 1:
            if self._executor is None:
                result = _check(spec, parsed)
            else:
                result = await loop.run_in_executor(self._executor, _check, spec, parsed)
        else:
            future: asyncio.Future[_Result] = loop.create_future()
            waiting = self._waiting.setdefault(spec, [])
            waiting.append((parsed, future))
            if len(waiting) >= self._batch_max:
                self._flush(spec)
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_soon(self._flush_all)
            result = await future
        if isinstance(result, tuple):
            detail, check, signed = result
            raise RejectedBallot(InvalidBallot(detail, check=check), signed=signed)
        return result

    def _flush_all(self) -> None:
        self._flush_scheduled = False
        for spec in list(self._waiting):
            self._flush(spec)

    def _flush(self, spec: BallotSpec) -> None:
        batch = self._waiting.pop(spec, [])
        if not batch:
            return
        items = [parsed for parsed, _ in batch]
        futures = [future for _, future in batch]
        if self._executor is None:
            try:
                results = _check_batch(spec, items, self.backend)
            except Exception as exc:  # a bug: every waiting request gets it, none hangs
                _settle(futures, exc)
            else:
                _settle(futures, results)
            return
        done = asyncio.get_running_loop().run_in_executor(
            self._executor, _check_batch, spec, items, self.backend
        )
        done.add_done_callback(lambda f: _settle(futures, _outcome(f)))

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)


def _outcome(done: asyncio.Future[list[_Result]]) -> list[_Result] | BaseException:
    if done.cancelled():
        return asyncio.CancelledError()
    return done.exception() or done.result()


def _settle(futures: list[asyncio.Future[_Result]], outcome: list[_Result] | BaseException) -> None:
    for i, future in enumerate(futures):
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome[i])
