"""The OpenAPI 3.1 document: valid, and covering every route of the app with its errors."""

from __future__ import annotations

import re
from typing import Any

from openapi_spec_validator import validate

from referendum_service.settings import Settings
from server.app import make_app
from server.http import MAX_INT
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


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = document["components"][kind][name]
    return node


def _parameters(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            for parameter in shared + op.get("parameters", []):
                found.append((method, path, _resolve(document, parameter)))
    return found


def test_parameters_are_bounded() -> None:
    """Every integer parameter has a minimum and a maximum the server enforces (at most
    PostgreSQL's bigint), and every string path parameter a pattern."""
    document = load_document()
    for method, path, parameter in _parameters(document):
        schema = parameter["schema"]
        where = (method, path, parameter["name"])
        if schema.get("type") == "integer":
            assert "minimum" in schema and "maximum" in schema, where
            assert schema["maximum"] <= MAX_INT, where
        if parameter["in"] == "path" and schema.get("type") == "string":
            assert "pattern" in schema, where


def test_json_bodies_refuse_unknown_members() -> None:
    """The bodies whose handlers refuse unknown members say so (additionalProperties false),
    and their integer members are bounded."""
    document = load_document()
    schemas = document["components"]["schemas"]
    for name in ("ReferendumDefinition", "Ballot"):
        assert schemas[name]["additionalProperties"] is False, name
    for member, schema in schemas["ReferendumDefinition"]["properties"].items():
        if schema.get("type") == "integer":
            assert {"minimum", "maximum"} <= set(schema), member
    for path, method in (
        ("/v1/referendums/{rid}/election-key", "put"),
        ("/v1/referendums/{rid}/trustees", "put"),
    ):
        body = document["paths"][path][method]["requestBody"]["content"]["application/json"]
        assert _resolve(document, body["schema"])["additionalProperties"] is False, path


def test_problem_status_is_an_error_status() -> None:
    """The Problem schema requires type, title and status, status being 400 to 599."""
    problem = load_document()["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status"}
    assert (
        problem["properties"]["status"]["minimum"],
        problem["properties"]["status"]["maximum"],
    ) == (400, 599)


def test_links_name_real_operations_and_parameters() -> None:
    """Every response link (what stateful testing follows) targets an existing operationId and
    sets only parameters that operation has."""
    document = load_document()
    by_id: dict[str, set[str]] = {}
    for item in document["paths"].values():
        for method, op in item.items():
            if method in HTTP_METHODS:
                names = {
                    _resolve(document, p)["name"]
                    for p in item.get("parameters", []) + op.get("parameters", [])
                }
                by_id[op["operationId"]] = names
    links = [
        link
        for (_method, _path), op in _operations(document).items()
        for response in op["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 4
    for link in links:
        assert link["operationId"] in by_id, link
        assert set(link["parameters"]) <= by_id[link["operationId"]], link
