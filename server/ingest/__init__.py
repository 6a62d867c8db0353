"""The write path behind ``POST /v1/referendums/{rid}/ballots``: group commit and its helpers.

* :mod:`server.ingest.queue`: :class:`BallotQueue`, the adaptive group commit (one insert per
  batch, each request answered after its COMMIT, bounded by ``queue_limit``).
* :mod:`server.ingest.directory`: :class:`ReferendumDirectory` and :class:`VoterRoll`,
  per-process caches of referendum specs (state re-read at most every ``spec_cache_ms``) and
  voters' public keys; misses are fetched in batches.
* :mod:`server.ingest.rate_limit`: :class:`VoterRateLimit`, a token bucket per voter and process.
* :mod:`server.ingest.verifier`: :class:`BallotVerifier`, proof checks inline or in a process
  pool (``verify_workers``).
* :mod:`server.ingest.box`: :class:`BallotBox`, every check of a submission, then the queue
  and the receipt; admission is bounded by ``admission_limit``.

The ballot that counts for each voter is a tally query:
:func:`referendum_service.store.ballots.current_ballots`. No log line or metric label here
carries a voter id.
"""

from server.ingest.box import BALLOTS_ACCEPTED, BALLOTS_REJECTED, BallotBox
from server.ingest.directory import ReferendumDirectory, ReferendumInfo, VoterRoll
from server.ingest.queue import BallotQueue, PendingBallot, StoredBallot
from server.ingest.rate_limit import VoterRateLimit
from server.ingest.verifier import BallotVerifier, CheckedBallot

__all__ = [
    "BALLOTS_ACCEPTED",
    "BALLOTS_REJECTED",
    "BallotBox",
    "BallotQueue",
    "BallotVerifier",
    "CheckedBallot",
    "PendingBallot",
    "ReferendumDirectory",
    "ReferendumInfo",
    "StoredBallot",
    "VoterRateLimit",
    "VoterRoll",
]
