"""The write path behind ``POST /v1/referendums/{rid}/ballots``: group commit and its helpers.

* :mod:`server.ingest.queue`: :class:`BallotQueue`, the adaptive group commit (one insert per
  batch, each request answered after its COMMIT, bounded by ``queue_limit``).
* :mod:`server.ingest.directory`: :class:`ReferendumDirectory`, a per-process cache of
  referendum specs and voting windows (the row re-read at most every ``spec_cache_ms``).
* :mod:`server.ingest.rate_limit`: :class:`VoterRateLimit`, a token bucket per credential in
  PostgreSQL shared by every process; its one batched statement per group of submissions
  also finds stored ballots (a resubmission is answered before any token or proof check) and
  checks the ballot's credential is on the roll.
* :mod:`server.ingest.verifier`: :func:`parse_ballot` (canonical bytes and hash, cheap),
  :func:`verification_cost`, and :class:`BallotVerifier`, the signature and proof checks
  inline or in a process pool (``verify_workers``).
* :mod:`server.ingest.box`: :class:`BallotBox`, every check of a submission, then the queue
  and the receipt; admission places (``admission_limit``) are held in proportion to a
  ballot's verification cost.

The ballot that counts for each credential is a tally query:
:func:`referendum_service.store.ballots.current_ballots`. The write path never sees a voter
id: ballots name their credential only.
"""

from server.ingest.box import BALLOTS_ACCEPTED, BALLOTS_REJECTED, BallotBox
from server.ingest.directory import ReferendumDirectory, ReferendumInfo
from server.ingest.queue import BallotQueue, PendingBallot, StoredBallot
from server.ingest.rate_limit import VoterRateLimit
from server.ingest.verifier import (
    BallotVerifier,
    CheckedBallot,
    ParsedBallot,
    RejectedBallot,
    parse_ballot,
    verification_cost,
)

__all__ = [
    "BALLOTS_ACCEPTED",
    "BALLOTS_REJECTED",
    "BallotBox",
    "BallotQueue",
    "BallotVerifier",
    "CheckedBallot",
    "ParsedBallot",
    "PendingBallot",
    "ReferendumDirectory",
    "ReferendumInfo",
    "RejectedBallot",
    "StoredBallot",
    "VoterRateLimit",
    "parse_ballot",
    "verification_cost",
]
