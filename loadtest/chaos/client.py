"""The chaos run's voters: a bounded load client that records every acknowledged receipt.

Each of ``concurrency`` workers takes the next pooled ballot (canonical bytes from
:class:`~loadtest.pool.BallotPool`, sent as the JSON the server takes) and submits it until it
is acknowledged (201, or 200 with the same receipt for a ballot already stored). After a
connection error, a timeout, a 503, a 429 or any 5xx it sends the *same bytes* again (ballots
are idempotent: same bytes, same receipt), after the ``Retry-After`` it was given or a short
pause. A ballot whose request timed out may have been committed without its answer: it is
remembered as *uncertain* until a later attempt is acknowledged.

A burst (:meth:`VoterLoad.burst`) sends many ballots at once, far above capacity, through the
same path (so every burst ballot is counted like the rest).

Every answer is stamped with the wall-clock time it came, so the verdict can attribute
statuses to fault windows and find the first acknowledgement after each fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp

from loadtest.pool import json_body

__all__ = ["Answer", "VoterLoad"]

REQUEST_TIMEOUT_S = 5.0
RETRY_PAUSE_S = 0.1
MAX_RETRY_PAUSE_S = 1.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Answer:
    """One response (``status``) or failure (``status`` 0: connection, -1: timeout)."""

    at: float
    status: int


@dataclass
class VoterLoad:
    """Submits pooled ballots to ``base_url``/v1/referendums/``referendum_id``/ballots."""

    base_url: str
    referendum_id: str
    ballots: Iterator[tuple[int, bytes]]
    concurrency: int = 8
    rate_per_s: float = 50.0
    acked: dict[str, bytes] = field(default_factory=dict)
    """ballot hash (hex) -> the receipt acknowledged for it."""
    acked_at: dict[str, float] = field(default_factory=dict)
    ack_times: list[float] = field(default_factory=list)
    """Wall-clock time of each first acknowledgement, in order (for bisecting)."""
    submitted: set[str] = field(default_factory=set)
    uncertain: set[str] = field(default_factory=set)
    """Ballots whose request timed out and that were never acknowledged since."""
    answers: list[Answer] = field(default_factory=list)
    receipt_mismatches: int = 0
    """Acknowledgements of an acked ballot with a different receipt (must stay 0)."""
    refused: dict[int, int] = field(default_factory=dict)
    """Final 4xx answers (not retried) by status: must stay empty."""
    exhausted: bool = False

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._path = f"/v1/referendums/{self.referendum_id}/ballots"
        self._next_send = time.monotonic()

    def stop(self) -> None:
        """Let every worker finish the ballot in hand and stop."""
        self._stop.set()

    async def run(self, deadline_s: float) -> None:
        """Run until :meth:`stop`, the pool is used, or ``deadline_s`` passes."""
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(
            self.base_url, connector=connector, timeout=timeout
        ) as session:
            self._session = session
            end = time.monotonic() + deadline_s
            workers = [
                asyncio.create_task(self._worker(end, paced=True)) for _ in range(self.concurrency)
            ]
            try:
                await asyncio.gather(*workers)
            finally:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)

    async def burst(self, ballots: int, concurrency: int, deadline_s: float) -> int:
        """Send ``ballots`` pooled ballots with ``concurrency`` unpaced workers; how many went."""
        end = time.monotonic() + deadline_s
        budget = [ballots]

        async def one() -> None:
            while budget[0] > 0 and time.monotonic() < end and not self._stop.is_set():
                budget[0] -= 1
                item = next(self.ballots, None)
                if item is None:
                    self.exhausted = True
                    return
                await self._submit(item[1], end)

        tasks = [asyncio.create_task(one()) for _ in range(concurrency)]
        await asyncio.gather(*tasks, return_exceptions=True)
        return ballots - max(0, budget[0])

    async def _worker(self, end: float, *, paced: bool) -> None:
        while not self._stop.is_set() and time.monotonic() < end:
            if paced:
                await self._pace()
            item = next(self.ballots, None)
            if item is None:
                self.exhausted = True
                return
            await self._submit(item[1], end)

    async def _pace(self) -> None:
        # one send every 1/rate seconds across the workers (open loop while they keep up)
        now = time.monotonic()
        self._next_send = max(self._next_send + 1.0 / self.rate_per_s, now - 1.0)
        if self._next_send > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._next_send - now)

    async def _submit(self, canonical: bytes, end: float) -> None:
        """Send one ballot until acknowledged, refused for good, or ``end`` (then uncertain)."""
        digest = hashlib.sha256(canonical).hexdigest()
        body = json_body(canonical)
        self.submitted.add(digest)
        pause = RETRY_PAUSE_S
        # after stop(), a ballot in hand may still be retried for a while: its fate must be known
        while time.monotonic() < end + 30.0:
            retry_after: float | None = None
            try:
                async with self._session.post(
                    self._path, data=body, headers={"Content-Type": "application/json"}
                ) as response:
                    payload = await response.read()
                    self.answers.append(Answer(time.time(), response.status))
                    if response.status in (200, 201):
                        self._acknowledged(digest, payload)
                        return
                    if response.status not in RETRY_STATUSES:
                        self.refused[response.status] = self.refused.get(response.status, 0) + 1
                        return
                    header = response.headers.get("Retry-After")
                    with contextlib.suppress(ValueError, TypeError):
                        retry_after = float(header) if header is not None else None
            except TimeoutError:
                self.answers.append(Answer(time.time(), -1))
                self.uncertain.add(digest)
            except (aiohttp.ClientError, OSError):
                self.answers.append(Answer(time.time(), 0))
            wait = min(MAX_RETRY_PAUSE_S, retry_after if retry_after is not None else pause)
            pause = min(MAX_RETRY_PAUSE_S, pause * 2)
            await asyncio.sleep(wait)  # the server asked for a pause: not a synchronisation
        self.uncertain.add(digest)

    def _acknowledged(self, digest: str, receipt: bytes) -> None:
        known = self.acked.get(digest)
        if known is not None and known != receipt:
            self.receipt_mismatches += 1
        if known is None:
            now = time.time()
            self.acked[digest] = receipt
            self.acked_at[digest] = now
            self.ack_times.append(max(now, self.ack_times[-1]) if self.ack_times else now)
        self.uncertain.discard(digest)
