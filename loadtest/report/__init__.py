"""The capacity report: Locust's CSV output (plus server samples) to HTML, Markdown and plots.

Inputs:

* Locust's ``--csv PREFIX`` files: ``PREFIX_stats.csv`` (one row per request name plus
  ``Aggregated``), ``PREFIX_stats_history.csv`` (one ``Aggregated`` row a second; per-name rows
  too with ``--csv-full-history``) and ``PREFIX_failures.csv``;
* optional samples taken by the runner while the load ran, one JSON object a line:
  ``{"t": epoch_s, "ballots": rows, "sequenced": rows, "oldest_unsequenced_s": s,
  "merge_delay_max_s": s}`` (every key but ``t`` optional);
* optional summaries of other runs (``summary.json``) with a different number of server
  processes, for the scaling plot.

Derived figures:

* throughput over time is the difference of Locust's cumulative request count between history
  rows (Locust's own ``Requests/s`` column is a lagging rolling mean);
* offered-load steps are runs of history rows with the same user count; each step's throughput
  and p99 come from its second half, after Locust's 10-second percentile window has caught up;
* the **knee** is the last step before the first whose p99 exceeds ``knee_factor`` (3) times the
  p99 of the lowest step: beyond it latency grows faster than the load.

The parts: :mod:`~loadtest.report.read` (the inputs), :mod:`~loadtest.report.analyse` (the
figures) and :mod:`~loadtest.report.render` (plots, Markdown, HTML).
"""

from loadtest.report.analyse import (
    Knee,
    Objectives,
    Step,
    Summary,
    check_objectives,
    find_knee,
    offered_load_steps,
    summarize,
)
from loadtest.report.read import Endpoint, LocustRun, load_samples, read_locust_csv
from loadtest.report.render import ReportResult, build_report

__all__ = [
    "Endpoint",
    "Knee",
    "LocustRun",
    "Objectives",
    "ReportResult",
    "Step",
    "Summary",
    "build_report",
    "check_objectives",
    "find_knee",
    "load_samples",
    "offered_load_steps",
    "read_locust_csv",
    "summarize",
]
