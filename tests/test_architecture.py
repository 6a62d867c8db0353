"""The import graph: packages import only the layers below them, and no modules form a cycle.

Every ``.py`` of the packages is parsed with :mod:`ast`, and every import counts, at module
level or inside a function (an import moved into a function to dodge a cycle is still the
cycle). Tests are exempt: they may import any part. The layers, bottom up (see
docs/architecture.md, "Packages"):

- ``referendum_core``: pure; the standard library, coincurve, pynacl and orjson only;
- ``referendum_service``: the core and the drivers (asyncpg, structlog, the embedded pgserver);
- ``server`` and ``batcher``: the core and the service layer, never each other;
- ``auditor`` and ``trustee``: the core only (and click, aiohttp, tqdm);
- ``node``: the core, the service layer, ``server`` (its HTTP layer) and ``auditor`` (its client);
- ``loadtest`` and ``bench``: anything above, never each other; nothing below imports them;
- ``referendum_cli``: the top; imported only by ``bench`` (its LazyGroup) and the tests.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "referendum_core",
    "referendum_service",
    "server",
    "batcher",
    "auditor",
    "trustee",
    "node",
    "loadtest",
    "bench",
)
TOP_MODULES = ("referendum_cli",)
FIRST_PARTY = {*PACKAGES, *TOP_MODULES, "tests"}

_CORE = {"referendum_core"}
_SERVICE = _CORE | {"referendum_service"}
_PARTS = _SERVICE | {"server", "batcher", "auditor", "trustee", "node"}
MAY_IMPORT: dict[str, set[str]] = {
    "referendum_core": _CORE,
    "referendum_service": _SERVICE,
    "server": _SERVICE | {"server"},
    "batcher": _SERVICE | {"batcher"},
    "auditor": _CORE | {"auditor"},
    "trustee": _CORE | {"trustee"},
    # a node serves like the server and checks like the auditor
    "node": _SERVICE | {"server", "auditor", "node"},
    "loadtest": _PARTS | {"loadtest"},
    "bench": _PARTS | {"bench", "referendum_cli"},
    "referendum_cli": set(),  # the commands are named as strings and imported lazily
}
"""The first-party packages each package may import (itself included)."""

_CORE_LIBRARIES = {"coincurve", "nacl", "orjson"}
_CLIENT_LIBRARIES = _CORE_LIBRARIES | {"click", "aiohttp", "tqdm"}
THIRD_PARTY: dict[str, set[str]] = {
    "referendum_core": _CORE_LIBRARIES,
    "referendum_service": _CORE_LIBRARIES | {"asyncpg", "structlog", "pgserver"},
    "auditor": _CLIENT_LIBRARIES,
    "trustee": _CLIENT_LIBRARIES,
}
"""Third-party distributions a package may import, where the layer limits them."""

LOAD_TOOLS = {"locust", "gevent", "matplotlib"}
"""Extras for load runs and plots: no production package imports them."""
PRODUCTION = {
    "referendum_core",
    "referendum_service",
    "server",
    "batcher",
    "auditor",
    "trustee",
    "node",
}

KNOWN_CYCLES: dict[frozenset[str], str] = {}
"""Import cycles allowed for now, each with who must remove it (none)."""


@dataclass(frozen=True)
class Import:
    """One import statement's target, as a dotted module name (``name`` within ``module``
    for ``from module import name``)."""

    file: str
    line: int
    module: str
    name: str | None
    in_function: bool

    def __str__(self) -> str:
        what = f"from {self.module} import {self.name}" if self.name else f"import {self.module}"
        where = " (inside a function)" if self.in_function else ""
        return f"{self.file}:{self.line}: {what}{where}"


def module_name(path: Path) -> str:
    """The dotted module name of a file under :data:`ROOT`."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, module: str, *, file: str, is_package: bool = False) -> list[Import]:
    """Every import in ``source`` (the module ``module``), relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend(
                    Import(file, child.lineno, alias.name, None, in_function)
                    for alias in child.names
                )
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - child.level + 1]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                found.extend(
                    Import(file, child.lineno, target, alias.name, in_function)
                    for alias in child.names
                )
            visit(child, inner)

    visit(ast.parse(source, filename=file), False)
    return found


def _sources() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield package, path
    for top in TOP_MODULES:
        yield top, ROOT / f"{top}.py"


def _all_imports() -> list[tuple[str, Import]]:
    out = []
    for package, path in _sources():
        file = str(path.relative_to(ROOT))
        found = imports_in(
            path.read_text(encoding="utf-8"),
            module_name(path),
            file=file,
            is_package=path.name == "__init__.py",
        )
        out.extend((package, imp) for imp in found)
    return out


def _top(module: str) -> str:
    return module.split(".")[0]


def test_the_checker_sees_every_package() -> None:
    """Each package has files and imports to check, so an empty walk cannot pass vacuously."""
    seen = {package for package, _ in _all_imports()}
    assert seen == set(PACKAGES) | set(TOP_MODULES)


def test_packages_import_only_the_layers_below() -> None:
    """No first-party import points up or across the layers (server and batcher included)."""
    wrong = [
        f"{imp}: {package} may not import {_top(imp.module)}"
        for package, imp in _all_imports()
        if _top(imp.module) in FIRST_PARTY and _top(imp.module) not in MAY_IMPORT[package]
    ]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_third_party_imports_fit_the_layer() -> None:
    """The core, the service layer, the auditor and the trustee tools use only their libraries;
    no production package imports the load-test tools."""
    wrong = []
    for package, imp in _all_imports():
        library = _top(imp.module)
        if library in FIRST_PARTY or library in sys.stdlib_module_names or library == "":
            continue
        allowed = THIRD_PARTY.get(package)
        if allowed is not None and library not in allowed:
            wrong.append(f"{imp}: {package} may not import {library}")
        elif package in PRODUCTION and library in LOAD_TOOLS:
            wrong.append(f"{imp}: {library} is a load-test extra, not for {package}")
    assert not wrong, "third-party imports against the layers:\n" + "\n".join(wrong)


def _runtime_libraries() -> set[str]:
    """Top-level modules installed by pyproject's runtime dependencies (no extras), with theirs."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement

    by_distribution: dict[str, set[str]] = {}
    for module, distributions in metadata.packages_distributions().items():
        for distribution in distributions:
            by_distribution.setdefault(distribution.lower().replace("_", "-"), set()).add(module)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(spec).name for spec in project["dependencies"]]
    seen: set[str] = set()
    modules: set[str] = set()
    while wanted:
        name = wanted.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a dependency for another platform
        modules |= by_distribution.get(name, set())
        for spec in requires:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                wanted.append(requirement.name)
    return modules


def test_production_imports_are_runtime_dependencies() -> None:
    """What the production packages import at module level is installed by
    ``pip install referendum`` alone, without any extra: a dev-only library would crash the
    server image at start."""
    allowed = FIRST_PARTY | set(sys.stdlib_module_names) | _runtime_libraries() | {""}
    wrong = [
        f"{imp}: {_top(imp.module)} is not installed by the runtime dependencies"
        for package, imp in _all_imports()
        if package in PRODUCTION and not imp.in_function and _top(imp.module) not in allowed
    ]
    assert not wrong, "production imports outside the runtime dependencies:\n" + "\n".join(wrong)


def _module_graph() -> dict[str, dict[str, Import]]:
    """Module -> the first-party modules it imports, each with one import naming it."""
    modules = {module_name(path) for _, path in _sources()}
    graph: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for _, imp in _all_imports():
        source = module_name(ROOT / imp.file)
        if imp.name is not None and f"{imp.module}.{imp.name}" in modules:
            target = f"{imp.module}.{imp.name}"
        else:
            target = imp.module
            while target and target not in modules:
                target = target.rpartition(".")[0]
        if target and target != source:
            graph[source].setdefault(target, imp)
    return graph


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_no_import_cycles_between_modules() -> None:
    """No set of modules imports itself round (inside a function or not), bar the listed ones."""
    graph = _module_graph()
    report = []
    for component in _cycles(graph):
        if frozenset(component) in KNOWN_CYCLES:
            continue
        members = set(component)
        edges = [
            f"  {imp}" for m in component for t, imp in sorted(graph[m].items()) if t in members
        ]
        report.append(f"cycle {' <-> '.join(component)}:\n" + "\n".join(edges))
    assert not report, "import cycles:\n" + "\n".join(report)


def test_imports_in_finds_function_level_and_relative_imports() -> None:
    """Imports inside functions count, and relative ones resolve against the package."""
    source = "import os\nfrom . import b\ndef f():\n    from ..c import d\n"
    assert [str(i) for i in imports_in(source, "pkg.sub.a", file="pkg/sub/a.py")] == [
        "pkg/sub/a.py:1: import os",
        "pkg/sub/a.py:2: from pkg.sub import b",
        "pkg/sub/a.py:4: from pkg.c import d (inside a function)",
    ]
    init = imports_in("from .x import y", "pkg.sub", file="pkg/sub/__init__.py", is_package=True)
    assert [i.module for i in init] == ["pkg.sub.x"]


def test_the_cycle_finder_finds_a_cycle() -> None:
    """A three-module ring and a self-contained pair are found; a chain is not."""
    imp = Import("x.py", 1, "x", None, False)
    graph = {
        "a": {"b": imp},
        "b": {"c": imp},
        "c": {"a": imp},
        "d": {"e": imp},
        "e": {"d": imp},
        "f": {"a": imp},
    }
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
