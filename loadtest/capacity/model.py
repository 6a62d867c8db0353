"""The sizing model: from an electorate to server cores, batcher, PostgreSQL and connections.

Everything here is arithmetic on three inputs, each a frozen dataclass:

* :class:`Demand`: who votes and when (eligible voters, turnout, voting window, the share of
  ballots cast in the busiest hour and how bursty that hour is);
* :class:`Rates`: what one core (or one process) was measured to do, read from
  ``bench/results/*.json`` when those files exist (:func:`measured_rates`), else the figures
  of ``/work/shared/DESIGN.md`` with the source said so;
* :class:`Deployment`: planning choices (target CPU utilisation at peak, cores per pod,
  connection pool sizes, ballot row sizes).

:func:`plan` turns them into a :class:`Plan`; :mod:`loadtest.capacity.table` lays it out as a
table whose every line says how it was derived, and :mod:`loadtest.capacity.measured` reads the
rates from the benchmarks' results. The derivations (also in ``docs/capacity.md``)::

    ballots          = voters × turnout × (1 + revote_ratio)
    average rate     = ballots / (window_hours × 3600)
    peak rate        = ballots × peak_hour_share × peak_factor / 3600
    write cores      = peak / (verified ballots/s per core × utilisation)
    read cores       = peak × reads_per_ballot / (reads/s per core × utilisation)
    server cores     = ceil(write cores + read cores);  pods = ceil(cores / cores_per_pod) + spare
    merge delay      ≈ block interval + block / batcher rate
    rows written     = peak × 3   (ballot and queue row at ingest, log entry at sealing)
    database bytes   = ballots × (row + indexes + log entry + log nodes) + voters × voter row
    WAL bytes/s      = peak × wal_factor × (row + indexes + queue + log entry + log nodes)
    connections      = processes × pool_max + batchers × batcher_pool + admin

>>> p = plan(Demand(voters=10_000_000))
>>> round(p.peak_ballots_per_s)
1111
>>> p.server_cores, p.pods
(2, 2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["DEFAULT_RATES", "Demand", "Deployment", "Plan", "Rates", "plan", "province_scenarios"]

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Demand:
    """Who votes and when.

    ``peak_hour_share`` is the fraction of all ballots cast in the busiest hour (at least the
    mean hour's share, ``1 / window_hours``); ``peak_factor`` is how much faster the busiest
    minute runs than that hour's mean (1 = smooth). Their product times ``window_hours`` is
    the peak-to-average ratio.
    """

    voters: int
    turnout: float = 0.80
    window_hours: float = 12.0
    peak_hour_share: float = 0.25
    peak_factor: float = 2.0
    revote_ratio: float = 0.0
    """Extra ballots from voters who vote again, as a fraction of first ballots."""
    reads_per_ballot: float = 3.0
    """Read requests a voter app makes per ballot (status poll, inclusion proof, checkpoint)."""

    def __post_init__(self) -> None:
        if self.voters < 0:
            raise ValueError("voters must be >= 0")
        if not 0.0 <= self.turnout <= 1.0:
            raise ValueError("turnout must be within [0, 1]")
        if self.window_hours <= 0:
            raise ValueError("window_hours must be > 0")
        if not 0.0 < self.peak_hour_share <= 1.0:
            raise ValueError("peak_hour_share must be within (0, 1]")
        # the busiest hour carries at least the mean hour's share (a 1e-9 slack for rounding)
        if self.peak_hour_share + 1e-9 < min(1.0, 1.0 / self.window_hours):
            raise ValueError(
                f"peak_hour_share {self.peak_hour_share} is below the mean hour's share "
                f"{min(1.0, 1.0 / self.window_hours):.4f} for a {self.window_hours} h window"
            )
        if self.peak_factor < 1.0:
            raise ValueError("peak_factor must be >= 1")
        if self.revote_ratio < 0 or self.reads_per_ballot < 0:
            raise ValueError("revote_ratio and reads_per_ballot must be >= 0")


@dataclass(frozen=True)
class Rates:
    """Measured capacity of one core or one process, and where each figure came from."""

    verified_ballots_per_core_s: float = 3400.0
    """The whole write path on one core: signature, proofs, group-committed insert."""
    reads_per_core_s: float = 5000.0
    """Public read requests (status, proof, checkpoint) one server core answers."""
    batcher_ballots_s: float = 50000.0
    """Ballots the single batcher leader sequences per second (tree, block, checkpoint)."""
    db_rows_per_core_s: float = 115000.0
    """Batched rows one PostgreSQL core writes per second."""
    locust_requests_per_process_s: float = 12000.0
    """Requests one Locust FastHttpUser process generates per second."""
    roll_import_rows_s: float = 10000.0
    """Voters imported per second through ``PUT .../roll`` (parse, key checks, COPY)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Field name -> where the figure came from (a bench file and metric, or a default)."""

    def source(self, name: str) -> str:
        return self.sources.get(name, "default (DESIGN.md)")


DEFAULT_RATES = Rates()


@dataclass(frozen=True)
class Deployment:
    """Planning choices: headroom, packaging, connection pools and storage sizes."""

    utilisation: float = 0.5
    """Target CPU utilisation at peak (0.5 = twice the peak capacity provisioned)."""
    cores_per_pod: int = 2
    """Server processes per pod (REFERENDUM_WORKERS), one per core."""
    spare_pods: int = 1
    """Pods beyond the computed need, so losing one pod at peak stays within budget."""
    db_pool_max: int = 10
    """Connections per server process (REFERENDUM_DB_POOL_MAX)."""
    commit_slots: int = 4
    """Concurrent group-commit writes per process (REFERENDUM_COMMIT_SLOTS)."""
    batcher_instances: int = 2
    """One active leader plus standbys (they hold a connection each while waiting)."""
    batcher_pool: int = 4
    admin_connections: int = 10
    """Reserved for the operator, migrations, monitoring and superuser access."""
    max_connections: int = 200
    """PostgreSQL ``max_connections`` planned for the primary."""
    block_max_ms: int = 500
    block_max_ballots: int = 10000
    body_bytes: int = 350
    """Canonical ballot bytes per row: 350 B for a yes/no question (one explicit ciphertext
    of 130 B, its 128 B proof, a 64 B signature and the ids); measured by the ballot pool."""
    receipt_bytes: int = 280
    """The signed JSON receipt stored with the ballot."""
    row_overhead_bytes: int = 160
    """Tuple header, id, referendum and voter ids, hash, timestamps, log index, alignment."""
    index_bytes: int = 180
    """Per ballot across the ballots indexes (pk, hash, revote key, voter)."""
    queue_bytes: int = 130
    """WAL of the ballot's sealing-queue row (``log_pending``: ids, leaf hash, key entry),
    inserted with the ballot and deleted when it is sealed; nothing of it stays stored."""
    log_entry_bytes: int = 120
    """The ballot's ``log_entries`` row (log index, ballot id, block) with its two index
    entries, written once when it is sealed (the ballot row itself never changes)."""
    log_bytes_per_ballot: int = 160
    """Merkle nodes (about two stored per leaf) and the ballot's share of block rows."""
    voter_row_bytes: int = 150
    """One roll row with its primary-key entry."""
    wal_factor: float = 1.3
    """WAL bytes per heap+index byte written (record headers, full-page images)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.utilisation <= 1.0:
            raise ValueError("utilisation must be within (0, 1]")
        if self.cores_per_pod < 1:
            raise ValueError("cores_per_pod must be >= 1")


@dataclass(frozen=True)
class Plan:
    """The sized deployment for one :class:`Demand`."""

    demand: Demand
    rates: Rates
    deployment: Deployment
    ballots: float
    average_ballots_per_s: float
    peak_ballots_per_s: float
    peak_to_average: float
    write_cores: float
    read_requests_per_s: float
    read_cores: float
    server_cores: int
    pods: int
    server_processes: int
    batcher_utilisation: float
    block_interval_s: float
    block_ballots: float
    merge_delay_s: float
    db_rows_per_s: float
    db_cores: int
    ballot_row_bytes: int
    db_ballot_bytes: float
    db_roll_bytes: float
    db_total_bytes: float
    wal_bytes_per_ballot: float
    wal_bytes_per_s: float
    wal_bytes_total: float
    direct_connections: int
    pgbouncer_needed: bool
    backend_pool: int
    load_requests_per_s: float
    locust_workers: int
    roll_import_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan(
    demand: Demand,
    rates: Rates = DEFAULT_RATES,
    deployment: Deployment | None = None,
) -> Plan:
    """Size a deployment for ``demand`` from ``rates`` under ``deployment``'s choices."""
    d = deployment if deployment is not None else Deployment()
    u = d.utilisation
    ballots = demand.voters * demand.turnout * (1.0 + demand.revote_ratio)
    average = ballots / (demand.window_hours * SECONDS_PER_HOUR)
    peak = ballots * demand.peak_hour_share * demand.peak_factor / SECONDS_PER_HOUR
    write_cores = peak / (rates.verified_ballots_per_core_s * u)
    read_rps = peak * demand.reads_per_ballot
    read_cores = read_rps / (rates.reads_per_core_s * u)
    # round away float noise before ceil so 2.0000000001 cores stays 2
    server_cores = max(1, math.ceil(round(write_cores + read_cores, 9)))
    pods = math.ceil(server_cores / d.cores_per_pod) + d.spare_pods
    processes = pods * d.cores_per_pod

    batcher_utilisation = peak / rates.batcher_ballots_s
    # a block closes at block_max_ballots or block_max_ms, whichever comes first
    if peak > 0:
        block_interval = min(d.block_max_ms / 1000.0, d.block_max_ballots / peak)
    else:
        block_interval = d.block_max_ms / 1000.0
    block_ballots = peak * block_interval
    merge_delay = block_interval + block_ballots / rates.batcher_ballots_s

    # the ballot and its queue row at ingest, its log entry at sealing (the queue row's delete
    # is not counted: a few bytes of WAL, no new tuple)
    db_rows = peak * 3.0
    db_cores = max(1, math.ceil(round(db_rows / (rates.db_rows_per_core_s * u), 9)))
    row_bytes = d.body_bytes + d.receipt_bytes + d.row_overhead_bytes
    per_ballot_stored = row_bytes + d.index_bytes + d.log_entry_bytes + d.log_bytes_per_ballot
    db_ballot_bytes = ballots * per_ballot_stored
    db_roll_bytes = demand.voters * d.voter_row_bytes
    # sealing never rewrites the ballot row (migration 022): each byte is written once
    wal_per_ballot = d.wal_factor * (
        row_bytes + d.index_bytes + d.queue_bytes + d.log_entry_bytes + d.log_bytes_per_ballot
    )

    direct = processes * d.db_pool_max + d.batcher_instances * d.batcher_pool + d.admin_connections
    backend_pool = processes * d.commit_slots + d.batcher_pool + d.admin_connections
    load_rps = peak * (1.0 + demand.reads_per_ballot)
    locust_rate = rates.locust_requests_per_process_s * u
    locust_workers = max(1, math.ceil(round(load_rps / locust_rate, 9)))
    return Plan(
        demand=demand,
        rates=rates,
        deployment=d,
        ballots=ballots,
        average_ballots_per_s=average,
        peak_ballots_per_s=peak,
        peak_to_average=(peak / average) if average else 0.0,
        write_cores=write_cores,
        read_requests_per_s=read_rps,
        read_cores=read_cores,
        server_cores=server_cores,
        pods=pods,
        server_processes=processes,
        batcher_utilisation=batcher_utilisation,
        block_interval_s=block_interval,
        block_ballots=block_ballots,
        merge_delay_s=merge_delay,
        db_rows_per_s=db_rows,
        db_cores=db_cores,
        ballot_row_bytes=row_bytes,
        db_ballot_bytes=db_ballot_bytes,
        db_roll_bytes=db_roll_bytes,
        db_total_bytes=db_ballot_bytes + db_roll_bytes,
        wal_bytes_per_ballot=wal_per_ballot,
        wal_bytes_per_s=peak * wal_per_ballot,
        wal_bytes_total=ballots * wal_per_ballot,
        direct_connections=direct,
        pgbouncer_needed=direct > d.max_connections,
        backend_pool=backend_pool,
        load_requests_per_s=load_rps,
        locust_workers=locust_workers,
        roll_import_s=demand.voters / rates.roll_import_rows_s,
    )


def province_scenarios(voters: int = 10_000_000, **overrides: Any) -> dict[str, Demand]:
    """The worked example's scenarios for an electorate of ``voters``.

    * ``day``: 80% turnout over 12 h, a quarter of the ballots in the busiest hour, whose
      busiest minute runs at twice that hour's mean (6× the day's average);
    * ``rush``: the same day with a sharper closing rush (35% in one hour, 3× bursts: 12.6×);
    * ``flash``: the whole roll inside one hour (turnout 100%, smooth).

    ``overrides`` (e.g. ``revote_ratio``) apply to every scenario.
    """
    base = {"voters": voters, **overrides}
    return {
        "day": Demand(**{**base}),
        "rush": Demand(**{**base, "peak_hour_share": 0.35, "peak_factor": 3.0}),
        "flash": Demand(
            **{
                **base,
                "turnout": 1.0,
                "window_hours": 1.0,
                "peak_hour_share": 1.0,
                "peak_factor": 1.0,
            }
        ),
    }
