"""A ballot's signature and proof checks, inline or in a process pool (``verify_workers``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from referendum_core.ballot import BallotSpec, verify_ballot
from referendum_core.errors import CoreError
from server.errors import InvalidBallot

__all__ = ["BallotVerifier", "CheckedBallot"]


@dataclass(frozen=True)
class CheckedBallot:
    """The parts of a verified ballot the write path keeps."""

    referendum_id: str
    voter_id: str
    canonical: bytes
    hash: bytes


def _check(spec: BallotSpec, body: Mapping[str, Any], voter_key: bytes) -> CheckedBallot:
    verified = verify_ballot(spec, body, voter_key)
    return CheckedBallot(
        verified.referendum_id, verified.voter_id, verified.canonical, verified.hash
    )


def _check_in_worker(
    spec: BallotSpec, body: dict[str, Any], voter_key: bytes
) -> CheckedBallot | tuple[str, str]:
    # CoreError's keyword-only ``check`` does not survive pickling: send its parts instead
    try:
        return _check(spec, body, voter_key)
    except CoreError as exc:
        return (str(exc), exc.check)


def _warm_worker() -> None:
    import referendum_core.ballot  # noqa: F401  (import cost paid at start, not per ballot)


class BallotVerifier:
    """Checks signature and proofs: inline (``workers == 0``) or in ``workers`` processes."""

    def __init__(self, workers: int) -> None:
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        if workers > 0:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_warm_worker,
            )

    async def check(
        self, spec: BallotSpec, body: dict[str, Any], voter_key: bytes
    ) -> CheckedBallot:
        """Every check of ``body``; raises InvalidBallot naming the failed check."""
        if self._executor is None:
            try:
                return _check(spec, body, voter_key)
            except CoreError as exc:
                raise InvalidBallot(str(exc), check=exc.check) from exc
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, _check_in_worker, spec, body, voter_key)
        if isinstance(result, tuple):
            raise InvalidBallot(result[0], check=result[1])
        return result

    def close(self) -> None:
        """Stop the worker processes, if any."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=False)
