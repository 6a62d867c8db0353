"""``referendum bench ingest``: fully verified ballots per second through HTTP and the database.

Method:

* Ballots are generated before any timing, in a process pool (one fresh voter and one valid
  yes/no ballot each), stored as ready-to-send JSON bytes; the load client does no
  cryptography. The roll holds every generated voter; each ballot is sent once.
* Servers run as a subprocess (``referendum serve``) on 127.0.0.1 against a fresh database
  on the configured PostgreSQL (``DATABASE_URL``, else the embedded one).
* Saturation runs (1 process inline, 1 process with verify workers, 2 processes) use wrk
  (``bench.loadgen``; the aiohttp client there when wrk is absent, named in the output and
  the JSON meta) with ``--concurrency`` connections for ``--seconds``: each run POSTs its own
  slice of pre-made ballots (each wrk thread a disjoint part, each ballot sent once), and
  only 201 answers count as accepted; any other answer or socket error is reported (and fails
  the row). Latency percentiles are wrk's, over every answer.
* The 80% run keeps the aiohttp open-loop pacer (one uvloop process): stock wrk cannot pace
  at a constant rate nor count latency from each request's scheduled start, which this run
  must (a stall is not hidden). It sends ``0.8 × saturation × --seconds`` ballots.
* The bare verifier's rate (``verify_ballot`` in a loop, one core) is measured in the same run.
* CPU accounting: on a small machine the client and PostgreSQL share the cores with the
  server, so each run reports the server processes' CPU use (from psutil) and the client's
  own; "per server core" divides the rate by the server's CPU fraction.

Each throughput figure is the median of ``--runs`` runs.

Under attack (``--attack``, the default; ``--no-throughput`` runs only this part):

* Honest yes/no ballots are paced at ``--attack-rate`` (a fixed, modest rate, so that an
  attacker, not saturation, is what moves their latency) for ``--attack-seconds``, by the
  same open-loop pacer and with the same p50/p99 (of 201 answers, from each request's
  scheduled start) as the 80% run; every other answer (503 above all) is counted apart.
* Each attack (:data:`ATTACK_CASES`) is one such run while an attacker of
  :mod:`bench.attack` runs in its own process, started ``SETTLE_S`` before it and stopped
  after it, next to a quiet run just before it on the same server (once the server is idle
  again after the previous attack's backlog): costly invalid ballots
  (64 options, a valid voter signature, another ballot's sum proof) on 4 and on 32
  connections, against a server with its default settings; 16 slow-body connections (a
  partial ballot, 2 bytes a second) against one whose ``admission_limit`` is
  ``--slow-admission-limit`` (16: the slow connections can take every place).
* An honest ballot not answered ``--attack-seconds`` after its scheduled start is given up
  and counted as a ``timeout`` failure (so that a server falling behind cannot stretch a
  run without bound); the p50/p99 are of the 201 answers.
* A row is ok when the honest p99 under attack is at most twice the quiet one and every
  honest ballot got 201. The attacker's outcomes (400, 429, 408, closed, open …) are in the
  row and in the JSON, with its CPU use.

One run per figure: the attack part takes 6 to 9 × ``--attack-seconds`` (the attacked runs
wait out their timeouts) plus two server starts. On a machine so loaded that 16 honest
ballots are in progress at once (p50 of ~80 ms at 200/s), the quiet run beside the slow
bodies gets 503s of its own: raise ``--slow-admission-limit`` (and read the row so) there.

The package, along the run's seams: :mod:`bench.ingest.setup` (ballots, database, roll),
:mod:`bench.ingest.servers` (the server processes under test), :mod:`bench.ingest.runs`
(saturation and paced runs, their figures and table rows), :mod:`bench.ingest.attack_rows`
(the under-attack part; the attackers are :mod:`bench.attack`) and
:mod:`bench.ingest.command` (the options, the table, the JSON).
"""

from __future__ import annotations

from bench.ingest.command import ingest

__all__ = ["ingest"]
