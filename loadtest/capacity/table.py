"""The sizing table: a :class:`~loadtest.capacity.model.Plan` laid out line by line, each line
with the formula that produced it (the derivations are in the model's docstring)."""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.capacity.model import Plan

__all__ = ["PlanRow", "format_table", "plan_rows"]


@dataclass(frozen=True)
class PlanRow:
    """One line of the sizing table."""

    group: str
    quantity: str
    value: str
    derivation: str


def _num(value: float, unit: str = "") -> str:
    if abs(value) >= 100 or value == int(value):
        text = f"{value:,.0f}"
    elif abs(value) >= 1:
        text = f"{value:,.2f}"
    else:
        text = f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def _bytes(value: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:,.2f} {unit}"
    return f"{value:,.0f} B"


def plan_rows(p: Plan) -> list[PlanRow]:
    """The plan as a table: every row with the formula that produced it."""
    dm, r, d = p.demand, p.rates, p.deployment
    u = d.utilisation
    rows = [
        PlanRow("demand", "eligible voters", _num(dm.voters), "input"),
        PlanRow(
            "demand",
            "roll import",
            f"{p.roll_import_s / 60:,.1f} min",
            f"voters / {_num(r.roll_import_rows_s)} rows/s [{r.source('roll_import_rows_s')}]",
        ),
        PlanRow(
            "demand",
            "ballots",
            _num(p.ballots),
            f"voters × turnout {dm.turnout:g} × (1 + revotes {dm.revote_ratio:g})",
        ),
        PlanRow(
            "demand",
            "average rate",
            _num(p.average_ballots_per_s, "ballots/s"),
            f"ballots / ({dm.window_hours:g} h × 3600)",
        ),
        PlanRow(
            "demand",
            "peak rate",
            _num(p.peak_ballots_per_s, "ballots/s"),
            f"ballots × peak-hour share {dm.peak_hour_share:g} × peak factor "
            f"{dm.peak_factor:g} / 3600 ({p.peak_to_average:.1f}× average)",
        ),
        PlanRow(
            "servers",
            "write cores",
            _num(p.write_cores),
            f"peak / ({_num(r.verified_ballots_per_core_s)} ballots/s/core × utilisation {u:g})"
            f" [{r.source('verified_ballots_per_core_s')}]",
        ),
        PlanRow(
            "servers",
            "read cores",
            _num(p.read_cores),
            f"peak × {dm.reads_per_ballot:g} reads / ({_num(r.reads_per_core_s)} reads/s/core"
            f" × {u:g}) [{r.source('reads_per_core_s')}]",
        ),
        PlanRow("servers", "server cores", _num(p.server_cores), "ceil(write + read cores)"),
        PlanRow(
            "servers",
            "pods",
            _num(p.pods),
            f"ceil(cores / {d.cores_per_pod} per pod) + {d.spare_pods} spare",
        ),
        PlanRow(
            "servers",
            "server processes",
            _num(p.server_processes),
            f"pods × {d.cores_per_pod} (REFERENDUM_WORKERS)",
        ),
        PlanRow(
            "batcher",
            "leader utilisation",
            f"{p.batcher_utilisation:.1%}",
            f"peak / {_num(r.batcher_ballots_s)} ballots/s [{r.source('batcher_ballots_s')}]; "
            f"{d.batcher_instances} instances (1 leader + standby)",
        ),
        PlanRow(
            "batcher",
            "block",
            f"{_num(p.block_ballots)} ballots / {p.block_interval_s:.3g} s",
            f"closes at {d.block_max_ballots} ballots or {d.block_max_ms} ms",
        ),
        PlanRow(
            "batcher",
            "merge delay (model)",
            f"{p.merge_delay_s:.3g} s",
            "block interval + block / batcher rate (target <= 2 s)",
        ),
        PlanRow(
            "postgresql",
            "rows written",
            _num(p.db_rows_per_s, "rows/s"),
            "peak × 3 (ballot + queue row, log entry)",
        ),
        PlanRow(
            "postgresql",
            "cores for writes",
            _num(p.db_cores),
            f"ceil(rows/s / ({_num(r.db_rows_per_core_s)} rows/s/core × {u:g}))"
            f" [{r.source('db_rows_per_core_s')}]",
        ),
        PlanRow(
            "postgresql",
            "ballot row",
            _bytes(p.ballot_row_bytes),
            f"body {d.body_bytes} + receipt {d.receipt_bytes} + overhead {d.row_overhead_bytes}",
        ),
        PlanRow(
            "postgresql",
            "ballots + log",
            _bytes(p.db_ballot_bytes),
            f"ballots × (row + indexes {d.index_bytes} + entry {d.log_entry_bytes}"
            f" + log {d.log_bytes_per_ballot})",
        ),
        PlanRow(
            "postgresql",
            "roll",
            _bytes(p.db_roll_bytes),
            f"voters × {d.voter_row_bytes} B",
        ),
        PlanRow("postgresql", "database size", _bytes(p.db_total_bytes), "ballots + log + roll"),
        PlanRow(
            "postgresql",
            "WAL at peak",
            _bytes(p.wal_bytes_per_s) + "/s",
            f"peak × {d.wal_factor:g} × (row + indexes + queue + entry + log) = "
            f"{_bytes(p.wal_bytes_per_ballot)}/ballot",
        ),
        PlanRow("postgresql", "WAL whole vote", _bytes(p.wal_bytes_total), "ballots × WAL/ballot"),
        PlanRow(
            "connections",
            "direct",
            _num(p.direct_connections),
            f"processes × pool {d.db_pool_max} + {d.batcher_instances} batchers × "
            f"{d.batcher_pool} + {d.admin_connections} admin",
        ),
        PlanRow(
            "connections",
            "PgBouncer",
            ("needed" if p.pgbouncer_needed else "not needed")
            + f" (max_connections {d.max_connections})",
            "direct > max_connections",
        ),
        PlanRow(
            "connections",
            "backend pool",
            _num(p.backend_pool),
            f"processes × {d.commit_slots} commit slots + batcher + admin "
            "(most transactions active at once)",
        ),
        PlanRow(
            "load test",
            "requests at peak",
            _num(p.load_requests_per_s, "req/s"),
            f"peak × (1 submit + {dm.reads_per_ballot:g} reads)",
        ),
        PlanRow(
            "load test",
            "Locust workers",
            _num(p.locust_workers),
            f"ceil(req/s / ({_num(r.locust_requests_per_process_s)} req/s/process × {u:g}))"
            f" [{r.source('locust_requests_per_process_s')}]",
        ),
    ]
    return rows


def format_table(plans: dict[str, Plan], *, markdown: bool = False) -> str:
    """Several plans side by side: one column per scenario, then the derivation."""
    names = list(plans)
    per_plan = [plan_rows(plans[n]) for n in names]
    header = ["group", "quantity", *names, "derivation (first scenario)"]
    body = []
    for i, row in enumerate(per_plan[0]):
        body.append(
            [row.group, row.quantity, *(rows[i].value for rows in per_plan), row.derivation]
        )
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])  # the derivation column is left ragged
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() for cells in body
    ]
    return "\n".join(lines)
