"""A deliberately broken build for the chaos suite's own test: acknowledges before any COMMIT.

Run as ``python tests/chaos/broken_serve.py serve ...``. One group-commit batch in
``EVERY`` is answered 201 with its receipts and never written. The patch is at module level:
``referendum serve`` starts its workers with multiprocessing's *spawn*, which imports this
file again (as ``__mp_main__``) in every worker, so each worker runs the broken build.
Only ``tests/chaos/test_chaos.py`` uses it.
"""

from __future__ import annotations

import itertools
from typing import Any

from server.ingest.queue import BallotQueue, StoredBallot

EVERY = 5
_original = BallotQueue._store
_batches = itertools.count()


async def _acknowledge_without_commit(self: BallotQueue, ballots: list[Any]) -> list[Any]:
    if next(_batches) % EVERY == EVERY - 1:
        return [StoredBallot(True, b.receipt) for b in ballots]
    return await _original(self, ballots)


BallotQueue._store = _acknowledge_without_commit  # type: ignore[method-assign]

if __name__ == "__main__":
    from referendum_cli import main

    main()
