"""Demo phases of the tally: trustees before open; close, tally, publish and verify at the end.

Wiring in ``server.demo.PHASES``: :func:`phase_trustees` right before ``phase_open`` (the
trustees' key replaces the demo's stand-in election key while the referendum is a draft), and
:func:`phase_close_and_tally` then :func:`phase_record` last, after the ballots are cast.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import click

if TYPE_CHECKING:
    from server.demo import Demo

__all__ = ["phase_close_and_tally", "phase_record", "phase_trustees"]

_DEADLINE_S = 300.0


def _say(text: str) -> None:
    click.echo(text)


async def _check(response: Any, expected: int) -> Any:
    body = await response.json(content_type=None)
    if response.status != expected:
        raise click.ClickException(f"{response.method} {response.url}: {response.status} {body}")
    return body


async def phase_trustees(demo: Demo) -> None:
    """Three trustees run the 2-of-3 key ceremony; the operator stores their commitments."""
    from referendum_core.trustee import (
        TrusteeParams,
        dealer_commitment,
        election_public_key,
        new_dealer,
        share_for,
        trustee_share,
    )

    rid = demo.referendum_id
    params = TrusteeParams(rid, 2, 3)
    dealers = [new_dealer(params, i) for i in (1, 2, 3)]
    published = [dealer_commitment(params, d) for d in dealers]
    key = election_public_key(params, published).to_compressed()
    demo.facts["trustee_params"] = params
    demo.facts["trustee_secrets"] = {
        i: trustee_share(params, published, i, {d.index: share_for(d, i) for d in dealers})
        for i in (1, 2, 3)
    }
    http = demo.http()
    base = f"/v1/referendums/{rid}"
    await _check(await http.put(f"{base}/election-key", json={"election_public_key": key.hex()},
                                headers=demo.headers), 200)  # fmt: skip
    body = {"commitments": [c.to_json() for c in published]}
    await _check(await http.put(f"{base}/trustees", json=body, headers=demo.headers), 200)
    _say(f"trustees: 2-of-3 key ceremony done, election key {key.hex()[:16]}…")


async def phase_close_and_tally(demo: Demo) -> None:
    """Close; the log is sealed and the tally folded; trustees 1 and 3 decrypt; publish."""
    from batcher.service import LogSigner, run_batcher
    from batcher.tally import fold_new_blocks, load_tally
    from referendum_core.elgamal import Ciphertext
    from referendum_core.trustee import decrypt_share
    from server.keys import load_or_create_key

    rid = demo.referendum_id
    http = demo.http()
    base = f"/v1/referendums/{rid}"
    settings = demo.settings
    started = time.perf_counter()
    await _check(await http.post(f"{base}/close", headers=demo.headers), 200)
    signer = LogSigner(load_or_create_key(settings.log_key_file, settings.data_dir, "log"),
                       settings.log_origin)  # fmt: skip
    # seals what is left and the final block (or waits for the batcher that leads)
    stop = asyncio.Event()
    await asyncio.wait_for(run_batcher(demo.database_url, settings, signer, stop, rid),
                           _DEADLINE_S)  # fmt: skip
    conn = await asyncpg.connect(demo.database_url)
    try:
        deadline = time.monotonic() + _DEADLINE_S
        while True:
            await fold_new_blocks(conn, rid)
            state = await load_tally(conn, rid)
            if state is not None and state.final:
                break
            if time.monotonic() > deadline:
                raise click.ClickException("the tally did not reach the final block in time")
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    tally = await _check(await http.get(f"{base}/tally"), 200)
    _say(f"tally: encrypted tally of {tally['ballots_counted']:,} voters ready "
         f"{time.perf_counter() - started:.1f} s after close")  # fmt: skip
    params = demo.facts["trustee_params"]
    cts = [Ciphertext.from_bytes(bytes.fromhex(c)) for c in tally["ciphertexts"]]
    for index in (1, 3):
        share = decrypt_share(params, index, demo.facts["trustee_secrets"][index], cts)
        await _check(await http.post(f"{base}/shares", json=share.to_json()), 201)
    result = await _check(await http.post(f"{base}/result", headers=demo.headers), 200)
    demo.facts["result"] = result
    counts = ", ".join(f"{o}: {n:,}" for o, n in result["counts_by_option"].items())
    _say(f"result: published, decrypted by trustees 1 and 3 — {counts}")


async def phase_record(demo: Demo) -> None:
    """Export the election record and verify it with every core, as an auditor would."""
    from auditor.verify_election import verify_election
    from referendum_core.checkpoint import verifier_key_string
    from server.keys import load_or_create_key
    from server.record import export_record

    settings = demo.settings
    out = Path(settings.data_dir) / "records" / demo.referendum_id
    key = load_or_create_key(settings.log_key_file, settings.data_dir, "log")
    conn = await asyncpg.connect(demo.database_url)
    try:
        digest = await export_record(
            conn, demo.referendum_id, out, verifier_key_string(settings.log_origin, key.public_key)
        )
    finally:
        await conn.close()
    _say(f"record: exported to {out} (manifest SHA-256 {digest[:16]}…)")
    report = await asyncio.to_thread(verify_election, out, progress=True,
                                     manifest_sha256=digest)  # fmt: skip
    if not report.ok:
        for failure in report.failures:
            _say(f"FAILED {failure.check}: {failure.detail}")
        raise click.ClickException("verify-election failed")
    _say(
        f"verify-election: OK, {report.ballots:,} ballots re-verified in "
        f"{report.seconds:.1f} s with {report.jobs} processes; result {report.result}"
    )
