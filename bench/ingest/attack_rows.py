"""The under-attack rows of ``bench ingest``: honest paced runs, quiet and under each attack.

The attackers themselves are :mod:`bench.attack`; this module runs them beside the honest
runs and turns both into rows and JSON.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.attack import AttackReport
from bench.ingest.runs import Run, Stats, _row, measure
from bench.ingest.servers import _wait_idle, server
from bench.ingest.setup import BALLOTS_PATH, BallotSupply, _spec

SETTLE_S = 1.0
"""How long an attack runs before the honest run starts: its steady state, not its ramp-up."""


@dataclass(frozen=True)
class _AttackCase:
    """One attack of the table: what kind, on how many connections."""

    label: str
    kind: str  # "costly" or "slow"
    connections: int


ATTACK_CASES = (
    _AttackCase("4 connections of costly invalid ballots", "costly", 4),
    _AttackCase("32 connections of costly invalid ballots", "costly", 32),
    _AttackCase("16 slow-body connections", "slow", 16),
)


@dataclass(frozen=True)
class _AttackPlan:
    """How the attack part is sized (its options)."""

    seconds: float
    rate: float
    voters: int
    slow_admission_limit: int
    port: int
    concurrency: int

    @property
    def honest_count(self) -> int:
        """Honest ballots of one paced run."""
        return max(100, int(self.rate * self.seconds))


@dataclass
class _Attacked:
    """One attack and the quiet run just before it, on the same server."""

    case: _AttackCase
    server: str  # the settings that server ran with, as the table names them
    quiet: Run
    attacked: Run
    report: AttackReport


def _attack_ballots(
    voters: int, processes: int
) -> tuple[list[tuple[str, bytes, bytes]], list[bytes]]:
    """The attacking voters (id, public key, secret) and their costly invalid ballots."""
    from bench.attack_ballots import attack_spec, costly_invalid_ballots
    from referendum_core.client import new_voter_key

    attackers = []
    for i in range(voters):
        secret, public = new_voter_key()
        attackers.append((f"attacker-{i:04d}", public, secret))
    spec = attack_spec(_spec().election_public_key)
    click.echo(
        f"making costly invalid ballots ({len(spec.options)} options) for {voters} attacking "
        "voter(s) …",
        err=True,
    )
    signers = [(voter, secret) for voter, _, secret in attackers]
    return attackers, costly_invalid_ballots(spec, signers, processes=processes)


def _measure_attacks(
    plan: _AttackPlan,
    dsn: str,
    warm_supply: BallotSupply,
    supply: BallotSupply,
    costly: list[bytes],
    data_dir: Path,
) -> list[_Attacked]:
    """Each attack of :data:`ATTACK_CASES` during a paced honest run, after a quiet one.

    The costly attacks go to a server with its default settings; the slow bodies to one
    whose ``admission_limit`` is ``--slow-admission-limit`` (the slow connections can take
    every place: without body deadlines, honest ballots then get 503).
    """
    from bench.attack import AttackProcess, CostlyAttacker, SlowBodyAttacker
    from bench.attack_ballots import ATTACK_REFERENDUM

    host = "127.0.0.1"
    url = f"http://{host}:{plan.port}{BALLOTS_PATH}"
    attack_path = f"/v1/referendums/{ATTACK_REFERENDUM}/ballots"
    slow_body = supply.take(1)[0]  # a real ballot's bytes, never sent in full
    slow_env: dict[str, str] = {}
    slow_server = "server defaults"
    if plan.slow_admission_limit > 0:
        slow_env = {"REFERENDUM_ADMISSION_LIMIT": str(plan.slow_admission_limit)}
        slow_server = f"admission_limit {plan.slow_admission_limit}"
    groups: list[tuple[dict[str, str], str, list[_AttackCase]]] = [
        ({}, "server defaults", [c for c in ATTACK_CASES if c.kind == "costly"]),
        (slow_env, slow_server, [c for c in ATTACK_CASES if c.kind == "slow"]),
    ]

    def honest(label: str, root: int) -> Run:
        run = measure(
            url,
            supply.take(plan.honest_count),
            root,
            concurrency=plan.concurrency,
            rate=plan.rate,
            timeout_s=plan.seconds,  # a server that falls behind must not stretch the run
        )
        failures = Stats.of_run(run).failures
        others = f" non-201 answers {failures}" if failures else ""
        click.echo(
            f"  honest {plan.rate:g}/s, {label}: {run.rate:,.0f}/s p50 "
            f"{run.percentile(0.5):.1f} ms p99 {run.percentile(0.99):.1f} ms server cpu "
            f"{run.server_cpu:.2f}{others}",
            err=True,
        )
        return run

    def attacker(case: _AttackCase) -> CostlyAttacker | SlowBodyAttacker:
        if case.kind == "costly":
            return CostlyAttacker(host, plan.port, attack_path, costly, case.connections)
        return SlowBodyAttacker(host, plan.port, BALLOTS_PATH, slow_body, case.connections)

    results = []
    for env, server_label, cases in groups:
        with server(dsn, plan.port, 1, 0, data_dir, env) as root:
            # closed loop on a few connections: a small admission limit must not refuse it
            measure(url, warm_supply.take(300), root, concurrency=8, rate=None)
            for case in cases:
                _wait_idle(root)  # the previous attack's backlog must not slow the quiet run
                quiet = honest(f"quiet ({server_label})", root)
                process = AttackProcess(
                    attacker(case), max_seconds=SETTLE_S + 3 * plan.seconds + 60
                )
                with process:
                    time.sleep(SETTLE_S)
                    attacked = honest(f"under {case.label} ({server_label})", root)
                assert process.report is not None  # set on leaving the block
                click.echo(
                    f"  attacker, {case.label}: {process.report.rate:,.0f}/s "
                    f"{process.report.summary()} cpu {process.report.cpu:.2f}",
                    err=True,
                )
                results.append(_Attacked(case, server_label, quiet, attacked, process.report))
    return results


def _attack_rows(plan: _AttackPlan, attacked: list[_Attacked]) -> list[dict[str, Any]]:
    """Per attack: the quiet run's rate, then the attacked run's p99 against the quiet one."""
    rows = []
    for a in attacked:
        quiet, under = Stats.of_run(a.quiet), Stats.of_run(a.attacked)
        ratio = under.p99 / quiet.p99 if quiet.p99 > 0 else float("nan")
        before = _row(
            f"honest {plan.rate:g}/s, quiet ({a.server})", quiet.rate, "ballots/s", run=quiet
        )
        during = _row(
            f"honest {plan.rate:g}/s, under {a.case.label} ({a.server})",
            ratio,
            "x quiet p99",
            run=under,
            target="<= 2, no honest 503",
            ok=ratio <= 2 and not under.failures,
        )
        before.update(honest_503=quiet.failures.get("503", 0), attacker="")
        during.update(honest_503=under.failures.get("503", 0), attacker=a.report.summary())
        rows += [before, during]
    return rows


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "accepted": run.accepted,
        "seconds": round(run.seconds, 3),
        "p50_ms": round(run.percentile(0.5), 2),
        "p99_ms": round(run.percentile(0.99), 2),
        "max_ms": round(max(run.latencies_ms), 2) if run.latencies_ms else None,
        "other_statuses": Stats.of_run(run).failures,
        "server_cpu": round(run.server_cpu, 3),
        "client_cpu": round(run.client_cpu, 3),
    }


def _attack_meta(
    plan: _AttackPlan, attacked: list[_Attacked], costly: list[bytes]
) -> dict[str, Any]:
    from bench.attack import SLOW_INTERVAL_S, SLOW_STEP_BYTES
    from bench.attack_ballots import ATTACK_OPTIONS

    return {
        "honest_rate": plan.rate,
        "honest_ballots_per_run": plan.honest_count,
        "honest_client": "aiohttp open-loop pacer (latency from scheduled start), as the 80% run",
        "settle_seconds": SETTLE_S,
        "costly_ballot": {
            "options": ATTACK_OPTIONS,
            "selections": f"1..{ATTACK_OPTIONS}",
            "ciphertexts": ATTACK_OPTIONS,
            "sum_proof_branches": ATTACK_OPTIONS,
            "json_bytes": len(costly[0]) if costly else 0,
            "distinct_bodies": len(costly),
            "attacking_voters": plan.voters,
            "invalid_because": "its sum proof is another ballot's; its signature verifies",
        },
        "slow_body": {
            "interval_s": SLOW_INTERVAL_S,
            "step_bytes": SLOW_STEP_BYTES,
            "admission_limit": plan.slow_admission_limit or "server default",
        },
        "runs": [
            {
                "attack": a.case.label,
                "kind": a.case.kind,
                "connections": a.case.connections,
                "server": a.server,
                "quiet": _run_json(a.quiet),
                "attacked": _run_json(a.attacked),
                "attacker": a.report.as_json(),
            }
            for a in attacked
        ],
    }
