"""The OpenAPI 3.1 document: YAML fragments in ``server/openapi/`` merged at startup.

``base.yaml`` holds ``openapi``, ``info``, shared ``components`` (the Problem schema and the
error responses); every other fragment (``operator.yaml``, ``voter.yaml``, ``public.yaml``)
adds ``paths`` and ``components``. Two fragments defining the same path operation or the
same component name is an error. Served at ``GET /v1/openapi.json``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
import yaml
from aiohttp import web

from server.state import OPENAPI_KEY

__all__ = ["load_document", "setup"]


def _merge_into(target: dict[str, Any], fragment: dict[str, Any], where: str) -> None:
    for key, value in fragment.items():
        if key not in target:
            target[key] = value
        elif isinstance(target[key], dict) and isinstance(value, dict):
            _merge_into(target[key], value, f"{where}.{key}")
        elif target[key] != value:
            raise ValueError(f"OpenAPI fragments disagree on {where}.{key}")


def load_document() -> dict[str, Any]:
    """Merge every ``*.yaml`` fragment, ``base.yaml`` first, the rest in name order."""
    folder = resources.files("server") / "openapi"
    entries = sorted(
        (e for e in folder.iterdir() if e.name.endswith(".yaml")),
        key=lambda e: (e.name != "base.yaml", e.name),
    )
    document: dict[str, Any] = {}
    for entry in entries:
        fragment = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
        if not isinstance(fragment, dict):
            raise ValueError(f"{entry.name}: an OpenAPI fragment is a mapping")
        _merge_into(document, fragment, entry.name)
    document.setdefault("paths", {})
    return document


async def openapi_json(request: web.Request) -> web.Response:
    """The merged OpenAPI 3.1 document."""
    return web.Response(body=request.app[OPENAPI_KEY], content_type="application/json")


def setup(app: web.Application) -> None:
    """Load the document once and serve it at /v1/openapi.json."""
    app[OPENAPI_KEY] = orjson.dumps(load_document())
    app.router.add_get("/v1/openapi.json", openapi_json)
