"""The OpenAPI 3.1 document: valid, and covering every route of the app with its errors."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate

from referendum_service.settings import Settings
from server.app import make_app
from server.openapi import load_document
from tests.helpers import running_app

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def _routes() -> set[tuple[str, str]]:
    app = make_app(Settings())
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.get_info()
        path = info.get("path") or info.get("formatter")
        assert path is not None, info
        # aiohttp's {name:regex} placeholders are plain {name} in OpenAPI
        found.add((route.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)))
    return found


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): op
        for path, item in document["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS
    }


def test_document_is_valid_openapi_31() -> None:
    """The merged fragments form a valid OpenAPI 3.1 document."""
    document = load_document()
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_every_route_is_documented() -> None:
    """Every route the app registers (walking app.router) has an operation in the document,
    and the document describes no route the app lacks."""
    operations = set(_operations(load_document()))
    routes = _routes()
    assert routes - operations == set(), "undocumented routes"
    assert operations - routes == set(), "documented routes the app does not serve"


def test_every_operation_documents_its_errors() -> None:
    """Each operation lists its error responses as problem+json: 405 everywhere, 401 where a
    key is needed, 404 under a referendum, 400/413/415 where it takes a JSON body."""
    document = load_document()
    responses = document["components"]["responses"]
    for (method, path), op in _operations(document).items():
        codes = set(op["responses"])
        errors = {c for c in codes if c.startswith(("4", "5"))}
        assert errors, (method, path)
        if op.get("security"):
            assert "401" in codes, (method, path)
        if "{rid}" in path:
            assert "404" in codes, (method, path)
        body = op.get("requestBody", {}).get("content", {})
        if "application/json" in body:
            assert {"400", "413", "415"} <= codes, (method, path)
        for code in errors:
            response = op["responses"][code]
            if "$ref" in response:
                response = responses[response["$ref"].rsplit("/", 1)[1]]
            assert "application/problem+json" in response["content"], (method, path, code)


async def test_document_is_served(database_url: str) -> None:
    """GET /v1/openapi.json serves the merged document."""
    async with running_app(Settings(database_url=database_url), database_url) as client:
        response = await client.get("/v1/openapi.json")
        assert response.status == 200
        assert await response.json() == load_document()
