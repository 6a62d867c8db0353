"""Locust scenarios: voters, re-voters, an auditor following the log, an operator.

Run by ``referendum loadtest run`` (master + workers), or by hand::

    REFERENDUM_LOADTEST_POOL=pool/ locust -f loadtest/locustfile.py -H http://127.0.0.1:8080

Users replay ballots from a pool made by ``referendum loadtest pool``, so they spend no CPU
on cryptography. Worker ``i`` of ``REFERENDUM_LOADTEST_SHARDS`` replays the voters whose
index is ``i`` modulo the shard count, so workers never send the same ballot.

Environment (all optional but the pool):

==================================== ========================================================
``REFERENDUM_LOADTEST_POOL``         the pool folder
``REFERENDUM_LOADTEST_SHARDS``       Locust workers sharing the pool (default 1)
``REFERENDUM_LOADTEST_API_KEY``      operator bearer key, for the Operator user
``REFERENDUM_LOADTEST_LOG_KEY``      checkpoint verifier key; when set, notes are verified
``REFERENDUM_LOADTEST_VERIFY_SHARE`` share of voters who wait for sequencing and verify their
                                     inclusion proof (default 0.1; the others leave at once)
``REFERENDUM_LOADTEST_RETRY_SHARE``  share of submissions sent twice, as a client whose
                                     answer was lost would (default 0; the retry storm sets it)
``REFERENDUM_LOADTEST_VOTER_RATE``   ballots/s per voter user (default: as fast as answered)
``REFERENDUM_LOADTEST_PROOF_WAIT_S`` longest a voter waits for its ballot to be sequenced
                                     before counting a failure (default 10)
``REFERENDUM_LOADTEST_ON_EMPTY``     ``stop`` (default) stops a user when its shard of the
                                     pool is used up; ``resubmit`` starts over (answers 200)
==================================== ========================================================

Request names (the rows of Locust's statistics): ``referendum``, ``submit ballot``,
``resubmit ballot``, ``ballot status``, ``inclusion proof``, ``checkpoint``, ``block``,
``block ballots``, ``operator status``.
"""

from __future__ import annotations

import locust  # first: gevent monkey-patches the standard library

# isort: split

import hashlib
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import orjson
from locust import FastHttpUser, between, constant, constant_throughput, events, task
from locust.exception import StopUser

from loadtest.pool import BallotPool, json_body
from loadtest.privacy import listing_problem
from referendum_core import checkpoint as checkpoints
from referendum_core.errors import CoreError
from referendum_core.merkle import leaf_hash, verify_inclusion

__all__ = ["Auditor", "Operator", "ReVoter", "Voter"]

_ = locust  # the import above exists for its side effect
JSON = {"Content-Type": "application/json", "Accept": "application/json"}


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


class _Feed:
    """This process's share of the pool: first ballots, and (first, second) for re-voters."""

    def __init__(self, pool: BallotPool, shard: int, shards: int) -> None:
        self.pool = pool
        self.shard, self.shards = shard, shards
        self.revotes = dict(pool.revotes(shard, shards))
        self._lock = threading.Lock()
        self._voters: Iterator[tuple[int, bytes]] = self._first_ballots()
        self._revoters: Iterator[tuple[int, bytes, bytes]] = self._revote_pairs()
        self.resubmit = os.environ.get("REFERENDUM_LOADTEST_ON_EMPTY", "stop") == "resubmit"

    def _first_ballots(self) -> Iterator[tuple[int, bytes]]:
        for index, canonical in self.pool.ballots(self.shard, self.shards):
            if index not in self.revotes:
                yield index, canonical

    def _revote_pairs(self) -> Iterator[tuple[int, bytes, bytes]]:
        for index, canonical in self.pool.ballots(self.shard, self.shards):
            second = self.revotes.get(index)
            if second is not None:
                yield index, canonical, second

    def next_voter(self) -> tuple[int, bytes] | None:
        with self._lock:
            item = next(self._voters, None)
            if item is None and self.resubmit:
                self._voters = self._first_ballots()
                item = next(self._voters, None)
            return item

    def next_revoter(self) -> tuple[int, bytes, bytes] | None:
        with self._lock:
            item = next(self._revoters, None)
            if item is None and self.resubmit:
                self._revoters = self._revote_pairs()
                item = next(self._revoters, None)
            return item


_feed: _Feed | None = None
_feed_lock = threading.Lock()


def feed(environment: Any) -> _Feed:
    """The process-wide feed, opened on first use (after the master gave this worker its index)."""
    global _feed
    with _feed_lock:
        if _feed is None:
            folder = os.environ.get("REFERENDUM_LOADTEST_POOL")
            if not folder:
                raise RuntimeError("set REFERENDUM_LOADTEST_POOL to a ballot pool folder")
            shards = int(os.environ.get("REFERENDUM_LOADTEST_SHARDS", "1"))
            index = int(getattr(environment.runner, "worker_index", 0) or 0)
            _feed = _Feed(BallotPool(Path(folder)), max(index, 0) % shards, shards)
        return _feed


def _checkpoint_root(note: str) -> tuple[int, bytes]:
    """(size, root) of a checkpoint note, its signature checked when a log key is given."""
    key = os.environ.get("REFERENDUM_LOADTEST_LOG_KEY")
    if key:
        cp = checkpoints.verify_checkpoint(note, key)
    else:
        cp, _sigs = checkpoints.parse_note(note)
    return cp.size, cp.root


class _BallotSender(FastHttpUser):
    """Shared submit / poll / verify steps."""

    abstract = True
    verify_share = _env_float("REFERENDUM_LOADTEST_VERIFY_SHARE", 0.1)
    retry_share = _env_float("REFERENDUM_LOADTEST_RETRY_SHARE", 0.0)
    proof_wait_s = _env_float("REFERENDUM_LOADTEST_PROOF_WAIT_S", 10.0)

    def on_start(self) -> None:
        self.feed = feed(self.environment)
        self.rid = self.feed.pool.meta.referendum_id
        self.base = f"/v1/referendums/{self.rid}"

    def fetch_referendum(self) -> None:
        with self.client.get(
            self.base, name="referendum", headers=JSON, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"referendum: HTTP {response.status_code}")

    def submit(
        self, canonical: bytes, *, name: str = "submit ballot", expect: tuple[int, ...] = (201, 200)
    ) -> bool:
        """POST one ballot; True when the answer is one of ``expect``."""
        body = json_body(canonical)
        want = hashlib.sha256(canonical).hexdigest()
        with self.client.post(
            f"{self.base}/ballots", data=body.decode(), headers=JSON, name=name, catch_response=True
        ) as response:
            if response.status_code not in expect:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
                return False
            if response.status_code in (200, 201):
                try:
                    receipt = orjson.loads(response.content or b"")
                except orjson.JSONDecodeError:
                    response.failure("receipt is not JSON")
                    return False
                if receipt.get("ballot_hash") != want:
                    response.failure("receipt names another ballot")
                    return False
            response.success()
            return True

    def follow(self, canonical: bytes) -> None:
        """Poll the ballot's status until sequenced, then fetch and verify its inclusion proof."""
        ballot_hash = hashlib.sha256(canonical).hexdigest()
        deadline = time.monotonic() + self.proof_wait_s
        sequenced = False
        while not sequenced:
            with self.client.get(
                f"{self.base}/ballots/{ballot_hash}",
                name="ballot status",
                headers=JSON,
                catch_response=True,
            ) as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}")
                    return
                sequenced = orjson.loads(response.content or b"{}").get("status") == "sequenced"
            if not sequenced:
                if time.monotonic() > deadline:
                    # the ballot missed the merge delay the client was willing to wait
                    events.request.fire(  # type: ignore[no-untyped-call]
                        request_type="WAIT",
                        name="sequenced within wait",
                        response_time=0,
                        response_length=0,
                        exception=TimeoutError(ballot_hash),
                        context={},
                    )
                    return
                gevent.sleep(0.25)  # a voter app's polling interval, not synchronisation
        with self.client.get(
            f"{self.base}/log/proof/inclusion/{ballot_hash}",
            name="inclusion proof",
            headers=JSON,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            try:
                bundle = orjson.loads(response.content or b"{}")
                size, root = _checkpoint_root(bundle["checkpoint"])
                if size != bundle["tree_size"]:
                    raise ValueError("checkpoint size differs from the proof's tree size")
                verify_inclusion(
                    leaf_hash(canonical),
                    bundle["leaf_index"],
                    size,
                    [bytes.fromhex(h) for h in bundle["proof"]],
                    root,
                )
            except (CoreError, KeyError, TypeError, ValueError) as exc:
                response.failure(f"inclusion proof does not verify: {exc!r}")

    def cast_twice(self, *, fallback: bool = False) -> None:
        """A re-voter's two ballots; with ``fallback`` a first-time voter's when none is left."""
        item = self.feed.next_revoter()
        if item is None:
            single = self.feed.next_voter() if fallback else None
            if single is None:
                raise StopUser()
            self.fetch_referendum()
            if self.vote(single[1]) and random.random() < self.verify_share:
                self.follow(single[1])
            return
        _index, first, second = item
        self.fetch_referendum()
        if not self.vote(first):
            return
        forbid = self.feed.pool.meta.revote_policy == "forbid"
        self.vote(second, name="submit revote", expect=(409,) if forbid else (201, 200))
        if random.random() < self.verify_share and not forbid:
            self.follow(second)

    def vote(
        self, canonical: bytes, *, name: str = "submit ballot", expect: tuple[int, ...] = (201, 200)
    ) -> bool:
        ok = self.submit(canonical, name=name, expect=expect)
        if ok and random.random() < self.retry_share:
            self.submit(canonical, name="resubmit ballot", expect=(200,))
        return ok


def _voter_wait() -> Any:
    rate = _env_float("REFERENDUM_LOADTEST_VOTER_RATE", 0.0)
    return constant_throughput(rate) if rate > 0 else constant(0)


class Voter(_BallotSender):
    """A voter: fetch the referendum, submit a pooled ballot, sometimes verify its inclusion.

    Once its share of first-time voters is used up it takes re-voters, so the whole pool is
    cast whatever the mix of users Locust spawned.
    """

    weight = 20
    wait_time = _voter_wait()

    @task
    def cast(self) -> None:
        item = self.feed.next_voter()
        if item is None:
            self.cast_twice()
            return
        _index, canonical = item
        self.fetch_referendum()
        if self.vote(canonical) and random.random() < self.verify_share:
            self.follow(canonical)


class ReVoter(_BallotSender):
    """A voter who votes twice: the second ballot counts (``last_counts``) or gets 409.

    Once the re-voters are used up it casts first-time voters' ballots.
    """

    weight = 2
    wait_time = _voter_wait()

    @task
    def revote(self) -> None:
        self.cast_twice(fallback=True)


class Auditor(FastHttpUser):
    """An observer following the log: each new checkpoint, then the blocks up to it."""

    fixed_count = 1  # one per run whatever the user count: observers are few
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        rid = feed(self.environment).pool.meta.referendum_id
        self.base = f"/v1/referendums/{rid}/log"
        self.height = 0
        self.prev_hash: str | None = None

    @task
    def follow_log(self) -> None:
        with self.client.get(
            f"{self.base}/checkpoint", name="checkpoint", headers=JSON, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            head = orjson.loads(response.content or b"{}")
            if head.get("note"):
                try:
                    size, _root = _checkpoint_root(head["note"])
                except CoreError as exc:
                    response.failure(f"checkpoint does not verify: {exc!r}")
                    return
                if size != head.get("tree_size"):
                    response.failure("checkpoint note and tree_size differ")
                    return
        latest = int(head.get("height") or 0)
        # at most a few blocks a round, so one auditor never monopolises its worker
        for height in range(self.height + 1, min(latest, self.height + 5) + 1):
            with self.client.get(
                f"{self.base}/blocks/{height}", name="block", headers=JSON, catch_response=True
            ) as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}")
                    return
                block = orjson.loads(response.content or b"{}")
                if self.prev_hash is not None and block.get("prev_hash") != self.prev_hash:
                    response.failure(f"block {height} does not link to block {height - 1}")
                    return
            with self.client.get(
                f"{self.base}/blocks/{height}/ballots?limit=100",
                name="block ballots",
                headers=JSON,
                catch_response=True,
            ) as response:
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}")
                    return
                problem = listing_problem(orjson.loads(response.content or b"{}"))
                if problem is not None:
                    response.failure(f"block {height}: {problem}")
                    return
            self.prev_hash = block.get("block_hash")
            self.height = height


class Operator(FastHttpUser):
    """The election office's dashboard polling the referendum's status."""

    fixed_count = 1
    wait_time = between(1.0, 2.0)

    def on_start(self) -> None:
        rid = feed(self.environment).pool.meta.referendum_id
        self.path = f"/v1/referendums/{rid}/status"
        key = os.environ.get("REFERENDUM_LOADTEST_API_KEY", "")
        self.headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}

    @task
    def status(self) -> None:
        with self.client.get(
            self.path, name="operator status", headers=self.headers, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            if "ballots_accepted" not in orjson.loads(response.content or b"{}"):
                response.failure("status without ballots_accepted")
