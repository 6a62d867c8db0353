"""The voter API: submit a ballot, follow its status, fetch the receipt key.

* ``POST /v1/referendums/{rid}/ballots`` → 201 and the signed receipt (the ballot is
  committed); 200 and the same receipt, byte for byte, when the ballot was stored before.
  ``Location`` names the ballot's status resource.
* ``GET /v1/referendums/{rid}/ballots/{ballot_hash_hex}`` → ``accepted`` or ``sequenced``.
* ``GET /v1/keys/receipts`` → the Ed25519 public key that signs receipts.

Handlers only parse and serialize; :class:`server.ingest.BallotBox` does the work. The
ingest contract (what a 201 promises, the receipt format, every error) is ``docs/ingest.md``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from referendum_service.keys import load_or_create_key
from server.errors import TooManyRequests, UnsupportedMediaType
from server.http import ballot_hash as parse_ballot_hash
from server.http import json_response, read_json_object
from server.ingest import BallotBox
from server.receipts import receipt_key_document
from server.state import BALLOT_BOX_KEY, POOL_KEY, SETTINGS_KEY

__all__ = ["setup"]


async def submit_ballot(request: web.Request) -> web.Response:
    """Check, store and acknowledge one ballot."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"a ballot is application/json, got {request.content_type!r}")
    box = request.app[BALLOT_BOX_KEY]
    with box.receiving():
        body = await read_json_object(request)
    try:
        with box.admission():
            ballot_hash, stored = await box.cast(request.match_info["rid"], body)
    except TooManyRequests as exc:
        if exc.delay_s > 0:  # the penalty delay, held outside the admission place
            await asyncio.sleep(exc.delay_s)
        raise
    rid = request.match_info["rid"]
    return web.Response(
        body=stored.receipt,
        status=201 if stored.created else 200,
        content_type="application/json",
        headers={"Location": f"/v1/referendums/{rid}/ballots/{ballot_hash.hex()}"},
    )


async def ballot_status(request: web.Request) -> web.Response:
    """Where a ballot is: accepted (committed) or sequenced into the log."""
    ballot_hash = parse_ballot_hash(request.match_info["ballot_hash"], slug="malformed-ballot-hash")
    status = await request.app[BALLOT_BOX_KEY].status(request.match_info["rid"], ballot_hash)
    cache = "no-store" if status["status"] == "accepted" else "public, max-age=31536000"
    return json_response(status, headers={"Cache-Control": cache})


async def receipt_key(request: web.Request) -> web.Response:
    """The public key verifying receipts."""
    document = receipt_key_document(request.app[BALLOT_BOX_KEY].receipt_key)
    return json_response(document, headers={"Cache-Control": "public, max-age=300"})


async def _ballot_box_ctx(app: web.Application) -> AsyncIterator[None]:
    # registered after the pool's context: starts after it, and drains before it closes
    settings = app[SETTINGS_KEY]
    key = load_or_create_key(settings.server_key_file, settings.data_dir, "receipt")
    box = BallotBox(app[POOL_KEY], settings, key)
    app[BALLOT_BOX_KEY] = box
    try:
        yield
    finally:
        await box.close()


def setup(app: web.Application) -> None:
    """Add the voter routes and the ballot box's lifetime to ``app``."""
    app.cleanup_ctx.append(_ballot_box_ctx)
    app.router.add_post("/v1/referendums/{rid}/ballots", submit_ballot)
    app.router.add_get("/v1/referendums/{rid}/ballots/{ballot_hash}", ballot_status)
    app.router.add_get("/v1/keys/receipts", receipt_key)
