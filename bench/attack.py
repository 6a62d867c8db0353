"""Attackers for the "under attack" rows of ``referendum bench ingest``.

Two bounded clients, for 127.0.0.1 only, each with a fixed number of connections and a hard
time limit, counting what they got:

* :class:`CostlyAttacker` sends **costly invalid ballots** back to back on each connection
  (closed loop, keep-alive). A ballot of the 64-option referendum of
  :func:`bench.attack_ballots.attack_spec` (1 to 64 selections) carries 64 ciphertexts,
  64 0/1 proofs and a 64-branch sum proof: about a hundred times the proof work of a yes/no
  ballot. Each one is signed by a voter on that referendum's roll, so its signature
  verifies, and its sum proof is another ballot's: well-formed, so the server checks every
  ciphertext and every 0/1 proof, and only the last comparison of the sum proof fails. They
  are made before timing (:func:`bench.attack_ballots.costly_invalid_ballots`) from a few
  valid ballots per voter, by swapping sum proofs and signing again (signing is cheap), so
  every body is distinct.
* :class:`SlowBodyAttacker` holds connections open with **slow bodies**: the request line and
  headers with the Content-Length of a real ballot, a few bytes of it, then ``step_bytes``
  every ``interval_s``. A connection that ends (an answer such as 408, the server closing
  it, a reset) is counted by how it ended and opened again at once; those still open when
  the attacker stops are counted as ``open``.

Both speak HTTP/1.1 on raw asyncio streams with the requests built up front, so the
attacker's own CPU stays small beside the server's (it shares the machine). The benchmark
runs each one in its own process (:class:`AttackProcess`) beside the honest open-loop pacer,
so the two never share an event loop; tests run them in-process with :meth:`run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import queue
import resource
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event as ProcessEvent


__all__ = [
    "SLOW_INTERVAL_S",
    "SLOW_STEP_BYTES",
    "AttackProcess",
    "AttackReport",
    "CostlyAttacker",
    "SlowBodyAttacker",
]

SLOW_INTERVAL_S = 0.5
SLOW_STEP_BYTES = 1
"""A slow body sends ``SLOW_STEP_BYTES`` every ``SLOW_INTERVAL_S`` (2 bytes a second)."""


# --- a little HTTP/1.1 ----------------------------------------------------------------------


class _ClosedEarly(Exception):
    """The server closed the connection before a whole answer arrived."""


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one HTTP/1.1 answer, body included: (status, whether the connection stays open).

    Raises:
        _ClosedEarly: end of stream before the answer was complete.
        ValueError: not an HTTP answer.
    """
    line = await reader.readline()
    if not line.endswith(b"\n"):
        raise _ClosedEarly
    version, _, rest = line.partition(b" ")
    if not version.startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP answer: {line[:40]!r}")
    status = int(rest[:3])
    length, chunked, keep = 0, False, version == b"HTTP/1.1"
    while True:
        header = await reader.readline()
        if not header.endswith(b"\n"):
            raise _ClosedEarly
        if header in (b"\r\n", b"\n"):
            break
        name, _, value = header.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            keep = value == b"keep-alive" or (keep and value != b"close")
    try:
        if chunked:
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
        else:
            await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise _ClosedEarly from exc
    return status, keep


def _request_head(host: str, port: int, path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


async def _close(writer: asyncio.StreamWriter) -> None:
    # a close waits for unsent bytes the server may never read: give it a second, then reset
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout=1.0)
    writer.transport.abort()


# --- the attackers ----------------------------------------------------------------------------


@dataclass
class AttackReport:
    """What one attacker did and what it got.

    ``requests`` counts requests sent (costly) or connections opened (slow bodies);
    ``outcomes`` counts answers by status (``"400"``, ``"429"``, ``"408"`` …) and endings
    without one: ``closed`` (end of stream), ``reset``, ``refused`` (could not connect),
    ``error`` (not an HTTP answer), ``open`` (a slow body still held at the end),
    ``unanswered`` (a costly request still in flight at the end).
    """

    kind: str
    connections: int
    seconds: float
    requests: int
    outcomes: dict[str, int]
    cpu: float = 0.0  # cores used by the attacker's process (0 when run in-process)

    @property
    def rate(self) -> float:
        """Requests (or connections) per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """``400×1234 429×5``: the outcomes, most frequent first."""
        ordered = sorted(self.outcomes.items(), key=lambda kv: (-kv[1], kv[0]))
        return " ".join(f"{name}×{count}" for name, count in ordered if count)

    def as_json(self) -> dict[str, Any]:
        """The report as plain JSON-able values."""
        return {
            "kind": self.kind,
            "connections": self.connections,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "outcomes": dict(sorted(self.outcomes.items())),
            "cpu": round(self.cpu, 3),
        }


async def _until(stop: asyncio.Event, max_seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)


@dataclass
class CostlyAttacker:
    """``connections`` keep-alive connections, each POSTing ``bodies`` in turn, back to back."""

    host: str
    port: int
    path: str
    bodies: list[bytes]
    connections: int
    sent: int = field(default=0, init=False)
    answered: int = field(default=0, init=False)
    outcomes: Counter[str] = field(default_factory=Counter, init=False)
    _started: set[int] = field(default_factory=set, init=False)

    @property
    def ready(self) -> bool:
        """Every connection has sent its first request."""
        return len(self._started) >= self.connections

    async def run(self, stop: asyncio.Event, max_seconds: float) -> AttackReport:
        """Attack until ``stop`` is set or ``max_seconds`` have passed."""
        if not self.bodies:
            raise ValueError("no bodies to send")
        requests = [
            _request_head(self.host, self.port, self.path, len(body)) + body for body in self.bodies
        ]
        started = time.perf_counter()
        tasks = [
            asyncio.create_task(self._connection(i, requests)) for i in range(self.connections)
        ]
        await _until(stop, max_seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        seconds = time.perf_counter() - started
        outcomes = dict(self.outcomes)
        errors = sum(outcomes.get(k, 0) for k in ("closed", "reset", "error"))
        outcomes["unanswered"] = max(0, self.sent - self.answered - errors)
        return AttackReport("costly", self.connections, seconds, self.sent, outcomes)

    async def _connection(self, index: int, requests: list[bytes]) -> None:
        position = index  # connections start at different bodies
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.outcomes["refused"] += 1
                await asyncio.sleep(0.05)
                continue
            try:
                while True:
                    writer.write(requests[position % len(requests)])
                    position += 1
                    self.sent += 1
                    self._started.add(index)
                    await writer.drain()
                    status, keep = await _read_answer(reader)
                    self.answered += 1
                    self.outcomes[str(status)] += 1
                    if not keep:
                        break
            except _ClosedEarly:
                self.outcomes["closed"] += 1
            except OSError:
                self.outcomes["reset"] += 1
            except ValueError:
                self.outcomes["error"] += 1
            finally:
                await _close(writer)


@dataclass
class SlowBodyAttacker:
    """``connections`` connections each sending a ballot's body a few bytes at a time."""

    host: str
    port: int
    path: str
    body: bytes
    connections: int
    interval_s: float = SLOW_INTERVAL_S
    step_bytes: int = SLOW_STEP_BYTES
    first_bytes: int = 16
    opened: int = field(default=0, init=False)
    holding: int = field(default=0, init=False)
    outcomes: Counter[str] = field(default_factory=Counter, init=False)

    @property
    def ready(self) -> bool:
        """Every connection has sent its headers and is holding its request open."""
        return self.holding >= self.connections

    async def run(self, stop: asyncio.Event, max_seconds: float) -> AttackReport:
        """Hold the connections until ``stop`` is set or ``max_seconds`` have passed."""
        started = time.perf_counter()
        tasks = [asyncio.create_task(self._connection()) for _ in range(self.connections)]
        await _until(stop, max_seconds)
        still_open = self.holding
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        seconds = time.perf_counter() - started
        outcomes = {**self.outcomes, "open": still_open}
        return AttackReport("slow-body", self.connections, seconds, self.opened, outcomes)

    async def _connection(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(self.host, self.port)
            except OSError:
                self.outcomes["refused"] += 1
                await asyncio.sleep(self.interval_s)
                continue
            self.opened += 1
            try:
                # counted before any await: a stop then finds each connection counted once
                self.outcomes[await self._hold(reader, writer)] += 1
            finally:
                await _close(writer)
            # a real attacker reconnects at once; the pause only bounds a refusing server
            await asyncio.sleep(min(self.interval_s, 0.05))

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Trickle the body until the connection ends; how it ended."""
        answer = asyncio.create_task(_read_answer(reader))
        head = _request_head(self.host, self.port, self.path, len(self.body))
        sent = min(self.first_bytes, len(self.body))
        self.holding += 1
        try:
            writer.write(head + self.body[:sent])
            while True:
                await writer.drain()
                done, _ = await asyncio.wait([answer], timeout=self.interval_s)
                if done:
                    break
                if sent < len(self.body):
                    writer.write(self.body[sent : sent + self.step_bytes])
                    sent += self.step_bytes
            status, _ = answer.result()
            return str(status)
        except _ClosedEarly:
            return "closed"
        except OSError:
            return "reset"
        except ValueError:
            return "error"
        finally:
            self.holding -= 1
            answer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await answer


# --- an attacker in its own process ---------------------------------------------------------


def _attack_child(
    attacker: CostlyAttacker | SlowBodyAttacker,
    max_seconds: float,
    stop: ProcessEvent,
    ready: ProcessEvent,
    results: Any,
) -> None:
    import uvloop

    async def main() -> AttackReport:
        stopped = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                if attacker.ready:
                    ready.set()
                await asyncio.sleep(0.02)
            stopped.set()

        watcher = asyncio.create_task(watch())
        try:
            return await attacker.run(stopped, max_seconds)
        finally:
            watcher.cancel()

    before = resource.getrusage(resource.RUSAGE_SELF)
    report = uvloop.run(main())
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    report.cpu = used / max(report.seconds, 1e-9)
    results.put(report.as_json())


class AttackProcess:
    """Run an attacker in a child process for the length of a ``with`` block.

    Entering returns once every attacker connection is up (or raises after ``ready_s``);
    leaving stops it and sets :attr:`report`. The attacker also stops by itself after
    ``max_seconds``, whatever the parent does.
    """

    def __init__(
        self,
        attacker: CostlyAttacker | SlowBodyAttacker,
        *,
        max_seconds: float,
        ready_s: float = 30.0,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._ready = context.Event()
        self._results = context.Queue()
        self._ready_s = ready_s
        self._process = context.Process(
            target=_attack_child,
            args=(attacker, max_seconds, self._stop, self._ready, self._results),
            daemon=True,
        )
        self.report: AttackReport | None = None

    def __enter__(self) -> AttackProcess:
        self._process.start()
        if not self._ready.wait(self._ready_s):
            self._stop.set()
            self._reap()
            raise RuntimeError(f"the attacker's connections were not up within {self._ready_s} s")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._finish()

    def _finish(self) -> None:
        self._stop.set()
        try:
            raw = self._results.get(timeout=60)
        except queue.Empty as exc:
            raise RuntimeError("the attacker process gave no report") from exc
        finally:
            self._reap()
        self.report = AttackReport(**raw)

    def _reap(self) -> None:
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
