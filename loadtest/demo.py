"""``referendum demo``: a small referendum end to end, under Locust load, on this machine.

Phases (each timed and printed):

1. database: ``DATABASE_URL``, else an embedded throwaway PostgreSQL; a fresh database;
2. trustees: three trustees run the 2-of-3 key ceremony; their joint key is the election key;
3. ballot pool: voter keys for the roll and real encrypted, signed ballots for the voters who
   will vote, made before the load so Locust spends no CPU on cryptography;
4. servers (``referendum serve``, several processes on one port) and the batcher (which also
   keeps the encrypted tally folded block by block) start as child processes;
5. the operator creates the referendum, registers the trustees, imports the roll; three
   stakeholder witness nodes (two parties, an observer group; each its own database) start and
   the 2-of-3 witness policy is set; the referendum opens (the roll commitment is printed);
6. ballots under distributed Locust load (voters, re-voters, an auditor, an operator), until
   the pool is used or the time is up; every ballot sealed into the log;
7. close: final checkpoint; the encrypted tally is ready; trustees 1 and 3 decrypt with
   proofs; the result is published;
8. the election record is exported and ``verify-election`` recomputes everything from it;
   the final checkpoint is witnessed by at least 2 of the 3 nodes, and each node's split-view
   evidence is read (none expected);
9. privacy: every voter id of the office's roll file is looked for in the record, the
   processes' logs and a dump of the database (:mod:`loadtest.privacy`); none may be there;
10. the capacity report (HTML + Markdown) is written.

The demo makes its own voter-id key (``REFERENDUM_VOTER_ID_KEY``, the HMAC key the servers
hash voter ids with) for its servers, and keeps it in memory only: a real office keeps its
key in a secret store (``docs/ingest.md``, "Privacy").

Everything is sent to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import click

from loadtest.pool import BallotPool, generate_pool
from loadtest.privacy import scan_for_voter_ids
from loadtest.report import Objectives
from loadtest.runner import LoadConfig, PhaseTimer, run_load
from loadtest.runner.database import admin_dsn
from loadtest.witnesses import DemoWitnesses
from referendum_core.elgamal import Ciphertext
from trustee.ceremony import Ceremony

__all__ = ["decryption_share", "demo", "register_trustees", "run_demo", "tally_and_record"]

TALLY_TIMEOUT_S = 120.0


class DemoError(click.ClickException):
    """A demo phase that did not give what it should."""


async def _json(response: aiohttp.ClientResponse, expected: int, what: str) -> Any:
    body = await response.json(content_type=None)
    if response.status != expected:
        raise DemoError(f"{what}: HTTP {response.status}: {body}")
    return body


async def register_trustees(session: aiohttp.ClientSession, rid: str, trustees: Ceremony) -> None:
    """The operator publishes the trustees' commitments while the referendum is a draft."""
    body = trustees.commitments_json()
    async with session.put(f"/v1/referendums/{rid}/trustees", json=body) as response:
        await _json(response, 200, "register trustees")
    click.echo(
        f"trustees: {trustees.params.threshold}-of-{trustees.params.trustees} commitments"
        f" published; election key {trustees.election_key.hex()[:20]}…"
    )


def decryption_share(trustees: Ceremony, index: int, tally: dict[str, Any]) -> dict[str, Any]:
    """What trustee ``index`` uploads: its partial decryption with Chaum–Pedersen proofs."""
    cts = [Ciphertext.from_bytes(bytes.fromhex(c)) for c in tally["ciphertexts"]]
    return trustees.decrypt(index, cts).to_json()


async def tally_and_record(
    config: LoadConfig,
    trustees: Ceremony,
    pool: BallotPool,
    record_dir: Path,
    facts: dict[str, Any],
    base_url: str,
    api_key: str,
    timer: PhaseTimer,
) -> None:
    """After close: tally, trustee decryption, publication, record export, verify-election."""
    from auditor.verify_election import verify_election
    from server.record import export_record

    rid = pool.meta.referendum_id
    headers = {"Authorization": f"Bearer {api_key}"}
    async with aiohttp.ClientSession(base_url) as session:
        with timer.phase("encrypted tally ready"):
            deadline = time.monotonic() + TALLY_TIMEOUT_S
            while True:
                async with session.get(f"/v1/referendums/{rid}/tally") as response:
                    if response.status == 200:
                        tally = await response.json()
                        break
                if time.monotonic() > deadline:
                    raise DemoError("the encrypted tally was not ready in time")
                await asyncio.sleep(0.2)
        click.echo(f"tally: encrypted tally over {tally['ballots_counted']:,} voters is ready")
        with timer.phase("trustee decryption + publish"):
            for index in (1, 3):
                share = decryption_share(trustees, index, tally)
                async with session.post(f"/v1/referendums/{rid}/shares", json=share) as response:
                    await _json(response, 201, f"share of trustee {index}")
            async with session.post(f"/v1/referendums/{rid}/result", headers=headers) as response:
                result = await _json(response, 200, "publish result")
        facts["result"] = result["counts_by_option"]
        async with session.get("/v1/keys/log") as response:
            log_key = (await _json(response, 200, "log key"))["verifier_key"]
    with timer.phase("export election record"):
        assert config.active_dsn is not None
        conn = await asyncpg.connect(config.active_dsn)
        try:
            digest = await export_record(conn, rid, record_dir, log_key)
        finally:
            await conn.close()
    facts["record"] = str(record_dir)
    facts["manifest_sha256"] = digest
    with timer.phase("verify-election"):
        report = await asyncio.to_thread(
            verify_election, record_dir, log_key=log_key, manifest_sha256=digest, progress=True
        )
    facts["verify_ok"] = report.ok
    facts["verify_ballots"] = report.ballots
    facts["verify_seconds"] = report.seconds
    facts["verify_failures"] = [f"{f.check}: {f.detail}" for f in report.failures]
    with timer.phase("privacy scan (record, logs, database)"):
        scan = await scan_for_voter_ids(
            pool.roll_path,
            dsn=config.active_dsn,
            paths=[record_dir, config.report_dir / "logs"],
        )
    facts["privacy"] = scan.as_dict()


async def run_demo(
    voters: int,
    ballots: int,
    duration_s: float,
    servers: int,
    users: int,
    report_dir: Path,
) -> dict[str, Any]:
    """Run the demo; return the facts it printed (for tests and the closing summary)."""
    timer = PhaseTimer()
    rid = f"demo-{secrets.token_hex(4)}"
    with timer.phase("trustee key ceremony"):
        trustees = Ceremony.run(rid)
    pool_dir = report_dir / "pool"
    with timer.phase(f"ballot pool ({voters:,} voters, {ballots:,} ballots)"):
        meta = generate_pool(
            pool_dir,
            voters,
            referendum_id=rid,
            question="Should the city build the new bridge?",
            options=("yes", "no"),
            ballots=ballots,
            revote_ratio=0.05,
            election_public_key=trustees.election_key,
            trustees=(trustees.params.threshold, trustees.params.trustees),
        )
    click.echo(
        f"pool: {meta.voters:,} voter keys, {meta.ballots:,} ballots and {meta.revotes:,} "
        f"re-votes made in {meta.seconds:.1f} s ({meta.ballots_per_s:,.0f} ballots/s)"
    )
    pool = BallotPool(pool_dir)
    facts: dict[str, Any] = {"referendum": rid}
    record_dir = report_dir / "record"
    witnesses = DemoWitnesses(report_dir, admin_dsn(None))

    async def before_open(session: aiohttp.ClientSession, rid: str) -> None:
        await register_trustees(session, rid, trustees)
        with timer.phase("witness nodes (2 of 3 policy)"):
            await witnesses.register(session, rid)

    async def after_close(base_url: str, api_key: str, t: PhaseTimer) -> None:
        await tally_and_record(config, trustees, pool, record_dir, facts, base_url, api_key, t)
        with t.phase("final checkpoint witnessed"):
            facts["witnessed"] = await witnesses.facts(base_url, rid)

    config = LoadConfig(
        report_dir=report_dir,
        voters=voters,
        pool_dir=pool_dir,
        duration_s=duration_s,
        servers=servers,
        locust_workers=1,
        users=users,
        spawn_rate=float(users),
        user_classes=("Voter", "ReVoter", "Auditor", "Operator"),
        objectives=Objectives(max_error_ratio=0.0, max_merge_delay_s=5.0),
        title="Demo referendum under load",
        stop_when_pool_used=True,
        close_after=True,
        before_open=before_open,
        after_close=after_close,
        timer=timer,
        server_env={"REFERENDUM_VOTER_ID_KEY": secrets.token_hex(32)},
    )
    async with witnesses:
        summary = await run_load(config)
    facts["summary"] = summary.as_dict()
    facts["expected_if_all_cast"] = dict(zip(meta.options, meta.expected_tally, strict=True))
    return facts


def _print_outcome(facts: dict[str, Any], report_dir: Path) -> bool:
    summary = facts["summary"]
    click.echo("")
    click.echo("== what happened ==")
    click.echo(f"referendum       {facts['referendum']}")
    click.echo(
        f"load             {summary['requests']:,} requests, {summary['failures']:,} failures, "
        f"{summary['ballots_per_s']:,.0f} ballots/s, p50 {summary['p50_ms']:.0f} ms, "
        f"p99 {summary['p99_ms']:.0f} ms"
    )
    click.echo(f"ballots stored   {summary.get('ballots_stored') or 0:,}")
    delay = summary.get("max_merge_delay_s")
    click.echo(f"merge delay max  {'n/a' if delay is None else f'{delay:.2f} s'}")
    click.echo(f"result           {facts.get('result')}")
    click.echo(f"if all cast      {facts['expected_if_all_cast']}")
    verified = facts.get("verify_ok")
    click.echo(
        f"verify-election  {'OK' if verified else 'FAILED'}: {facts.get('verify_ballots', 0):,}"
        f" ballots re-verified in {facts.get('verify_seconds', 0.0):.1f} s"
    )
    for failure in facts.get("verify_failures", []):
        click.echo(f"  FAILED {failure}")
    click.echo(f"record           {facts.get('record')} (manifest {facts.get('manifest_sha256')})")
    w = facts.get("witnessed") or {}
    met = len(w.get("cosigners", [])) >= w.get("threshold", 1) and w.get("witnessed_size") == w.get(
        "final_size"
    )
    click.echo(
        f"witnessed        {'OK' if met else 'FAILED'}: final checkpoint (tree size "
        f"{w.get('final_size')}) cosigned by {', '.join(w.get('final_cosigners', [])) or 'none'}"
        f" ({w.get('threshold')} of {w.get('witnesses')} needed)"
    )
    evidence = w.get("evidence", {})
    click.echo(
        "split views      "
        + ", ".join(f"{name.split('.')[0]} {count}" for name, count in evidence.items())
        + " evidence (checkpoint-only witnesses: no replica or per-node result yet)"
    )
    privacy = facts.get("privacy") or {}
    clean = bool(privacy.get("clean"))
    if clean:
        click.echo(
            f"privacy          OK: none of {privacy.get('voter_ids', 0):,} voter ids in"
            f" {privacy.get('files', 0):,} record and log files or {privacy.get('rows', 0):,}"
            f" rows of {privacy.get('tables', 0)} tables"
        )
    else:
        click.echo(f"privacy          FAILED: voter ids in {sorted(privacy.get('found', {}))}")
    click.echo(f"report           {report_dir / 'report.html'}, {report_dir / 'report.md'}")
    return bool(verified) and clean and summary["failures"] == 0 and met


@click.command()
@click.option(
    "--voters",
    type=click.IntRange(2, 10_000_000),
    default=100_000,
    show_default=True,
    help="Voters on the roll.",
)
@click.option(
    "--ballots",
    type=click.IntRange(1, 10_000_000),
    default=10_000,
    show_default=True,
    help="Voters who vote (ballots made in the pool).",
)
@click.option(
    "--duration",
    "duration_s",
    type=click.FloatRange(5, 3600),
    default=30.0,
    show_default=True,
    help="Longest Locust run, seconds.",
)
@click.option("--servers", type=click.IntRange(1, 64), default=2, show_default=True)
@click.option("--users", type=click.IntRange(1, 10_000), default=32, show_default=True)
@click.option(
    "--report-dir", type=click.Path(path_type=Path), default=Path("reports/demo"), show_default=True
)
def demo(
    voters: int, ballots: int, duration_s: float, servers: int, users: int, report_dir: Path
) -> None:
    """Run a small referendum end to end under Locust load and print what happened."""
    if ballots > voters:
        raise click.BadParameter("cannot exceed --voters", param_hint="--ballots")
    started = time.perf_counter()
    facts = asyncio.run(run_demo(voters, ballots, duration_s, servers, users, report_dir))
    ok = _print_outcome(facts, report_dir)
    click.echo(f"demo: {'done' if ok else 'FAILED'} in {time.perf_counter() - started:.0f} s")
    if not ok:
        raise SystemExit(1)
