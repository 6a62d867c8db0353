"""Schemathesis against the served OpenAPI document: no 5xx, problem+json errors, conformance."""

from __future__ import annotations

import asyncio

from tests.fuzz.run_schemathesis import fuzz, iter_report


async def test_schemathesis_finds_nothing(database_url: str) -> None:
    """Positive, negative and stateful examples of every operation get no 5xx, only RFC 9457
    problems as errors, and responses conforming to the document (known findings excluded)."""
    summary = await asyncio.to_thread(fuzz, database_url)
    report = "\n".join(iter_report(summary))
    print(report)  # the summary line the closing note quotes (pytest -s)
    assert summary.operations >= 30, report
    assert summary.requests >= 10 * summary.operations, report
    assert summary.stateful_steps > 0, report
    # the seeding works: some requests found what they asked for
    assert summary.statuses[200] > 0 and summary.statuses[404] > 0, report
    assert (summary.server_errors, summary.problem_failures, summary.conformance_failures) == (
        0,
        0,
        0,
    ), report
