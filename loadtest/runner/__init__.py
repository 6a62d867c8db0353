"""The load runner: PostgreSQL, N server processes, the batcher and distributed Locust.

:func:`run_load` (``referendum loadtest run``) does, in order and with every phase timed:

1. open the ballot pool (or make one: ``referendum loadtest pool``);
2. reuse PostgreSQL at ``DATABASE_URL`` or start the embedded one, create a fresh database
   (the pool's referendum id must be new), migrate it and create an operator API key;
3. start ``referendum serve`` with P workers and ``referendum batcher`` as child processes on
   127.0.0.1, each in its own process group, and wait for ``/readyz``;
4. create the pool's referendum, upload its roll and open it, over the operator API;
5. run Locust: one ``--master --headless`` and M ``--worker`` processes, bounded by
   ``--run-time`` (or a load shape), writing ``--csv``, ``--json-file`` and ``--html``; while
   it runs, sample the database each second (ballots, sequenced, oldest unsequenced ballot);
6. wait (bounded) for the batcher to sequence every ballot, measure each ballot's merge delay
   (block ``sealed_at`` minus ``accepted_at``), scrape the servers' ``/metrics``;
7. write the capacity report and return its summary, whose ``ok`` says whether the stated
   objectives (rate, p99, error ratio, merge delay) were met.

Every child is stopped in a ``finally`` block: SIGTERM to its process group, then SIGKILL
after a grace period; no run outlives its bounds. Nothing is sent anywhere but 127.0.0.1.

The parts: :mod:`~loadtest.runner.processes` (children, phases, readiness),
:mod:`~loadtest.runner.database`, :mod:`~loadtest.runner.locust`,
:mod:`~loadtest.runner.sampler` (steps 5-6) and :mod:`~loadtest.runner.run` (the whole run).
"""

from loadtest.runner.database import create_operator_key
from loadtest.runner.locust import LocustOutcome, run_locust
from loadtest.runner.processes import (
    ChildProcesses,
    PhaseTimer,
    free_port,
    referendum_argv,
    wait_ready,
)
from loadtest.runner.run import (
    LoadConfig,
    demo_load,
    run_load,
    run_small_load,
    setup_referendum,
)

__all__ = [
    "ChildProcesses",
    "LoadConfig",
    "LocustOutcome",
    "PhaseTimer",
    "create_operator_key",
    "demo_load",
    "free_port",
    "referendum_argv",
    "run_load",
    "run_locust",
    "run_small_load",
    "setup_referendum",
    "wait_ready",
]
