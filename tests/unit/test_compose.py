"""docker-compose.yml, validated without a Docker engine (none runs on the build machines, and `docker compose
config` needs one): the file is parsed and its interpolation done here as compose does it (`${VAR}`,
`${VAR:-default}`, `${VAR:?message}`, `$$`), then checked: the services the stack needs, the simulator only in
the demo profile, host ports on 127.0.0.1, every secret from the uncommitted .env through `${VAR:?}`, the
daemon's resolved config valid and pointed at the simulators, NATS and Redis, Prometheus scraping it with the
same token through `credentials_file`, and the NATS and Alertmanager configs accepted by the real servers' own
checkers (Debian's nats-server and amtool)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from tests.deploy_files import MissingVariable, example_env, interpolate

from flowgauge.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
def _compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    doc.pop("x-hardened", None), doc.pop("x-third-party", None)
    return interpolate(doc, example_env() if env is None else env)


def _container_file(path: str) -> Path:
    """The repository file a container path of the flowgauge service is mounted from."""
    for prefix, source in (("/etc/flowgauge-compose/", "deploy/compose/"), ("/etc/flowgauge/", "config/")):
        if path.startswith(prefix):
            return ROOT / source / path.removeprefix(prefix)
    raise AssertionError(f"{path} is not mounted from the repository")


def test_the_stack_has_its_services_and_the_demo_profile_adds_the_simulator() -> None:
    services = _compose()["services"]
    assert set(services) == {"flowgauge", "simulator", "nats", "redis", "prometheus", "alertmanager", "grafana"}
    assert {name for name, s in services.items() if s.get("profiles")} == {"simulator"}
    assert services["simulator"]["profiles"] == ["demo"]
    # Both run the image compose builds from the Dockerfile.
    assert services["simulator"]["image"] == services["flowgauge"]["image"]
    assert services["simulator"]["build"] == services["flowgauge"]["build"] == "."
    assert "-js" in services["nats"].get("command", []) or "jetstream" in (ROOT / "deploy/nats/nats.conf").read_text()


def test_host_ports_are_bound_to_loopback_only() -> None:
    for name, service in _compose()["services"].items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), (name, port)


def _without_comments(text: str) -> str:
    return "\n".join(re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())


def test_every_secret_comes_from_the_uncommitted_env_file() -> None:
    text = _without_comments(COMPOSE.read_text())
    required = set(re.findall(r"\$\{(\w+):\?", text))
    assert {"FLOWGAUGE_BUS_TOKEN", "FLOWGAUGE_HTTP_TOKEN", "NATS_TOKEN", "REDIS_PASSWORD",
            "GRAFANA_ADMIN_PASSWORD"} <= required
    used = set(re.findall(r"\$\{(\w+)", text))
    example = (ROOT / ".env.example").read_text()
    for name in used:
        assert re.search(rf"^#? ?{name}=", example, re.M), f"{name} is not in .env.example"
    # .env.example ships no secret value, .env is ignored and not tracked.
    assert all(not value for name, value in re.findall(r"^(\w+)=(.*)$", example, re.M) if name in required)
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True, check=True)
    assert tracked.stdout == ""
    # compose refuses to start without any one of them.
    for name in sorted(required):
        env = example_env()
        del env[name]
        with pytest.raises(MissingVariable, match=name):
            _compose(env)


def test_the_daemon_config_resolves_and_reaches_the_simulators_and_brokers() -> None:
    services = _compose()["services"]
    environment = services["flowgauge"]["environment"]
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = re.findall(r"^ENV (.+)$", dockerfile, re.M)
    image_env = dict(pair.split("=", 1) for line in lines for pair in line.split())
    env = {**image_env, **{k: str(v) for k, v in environment.items()}}
    settings = load_settings(_container_file(env["FLOWGAUGE_CONFIG"]), env)
    assert settings.bus.embedded.token == "test-flowgauge_bus_token"
    assert settings.http.token == "test-flowgauge_http_token"
    assert urlsplit(settings.bus.nats.url or "").hostname == "nats" and settings.bus.nats.jetstream
    assert settings.bus.nats.token == "test-nats_token"
    assert urlsplit(settings.bus.redis.url or "").hostname == "redis"
    assert settings.bus.redis.password == "test-redis_password"
    # The venues are the offline demo's, at the simulator service instead of loopback.
    demo = yaml.safe_load((ROOT / "config" / "offline-demo.yaml").read_text())["venues"]
    assert set(settings.venues) == set(demo)
    for venue, body in demo.items():
        for key in ("ws_url", "rest_url"):
            assert getattr(settings.venues[venue], key) == body[key].replace("127.0.0.1", "simulator"), venue
        assert list(settings.venues[venue].symbols) == body["symbols"], venue  # what the simulators serve
    assert services["simulator"]["command"][:3] == ["simulate", "--venue", "all"]
    assert "0.0.0.0" in services["simulator"]["command"]
    # The live variant loads too (the default venues, the same brokers).
    live = load_settings(ROOT / "deploy" / "compose" / "flowgauge-live.yaml", env)
    assert "bybit" in live.venues and live.bus.nats.url == settings.bus.nats.url
    # The grace period outlasts the daemon's own shutdown deadline.
    assert int(services["flowgauge"]["stop_grace_period"].rstrip("s")) > settings.shutdown_timeout_s


def test_prometheus_scrapes_with_the_token_the_daemon_requires() -> None:
    compose = _compose()
    services = compose["services"]
    prom_config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prom_config["scrape_configs"]
    credentials = Path(job["authorization"]["credentials_file"])
    assert credentials.parent == Path("/run/secrets") and credentials.name in services["prometheus"]["secrets"]
    # The secret is the same .env variable the daemon takes its HTTP token from.
    source = yaml.safe_load(COMPOSE.read_text())["secrets"][credentials.name]["environment"]
    raw_env = yaml.safe_load(COMPOSE.read_text())["services"]["flowgauge"]["environment"]
    assert raw_env["FLOWGAUGE_HTTP__TOKEN"].startswith(f"${{{source}:?")
    (target,) = job["static_configs"][0]["targets"]
    tokens = {"FLOWGAUGE_BUS__EMBEDDED__TOKEN": "a", "FLOWGAUGE_HTTP__TOKEN": "b"}
    settings = load_settings(ROOT / "deploy" / "compose" / "flowgauge-demo.yaml", tokens)
    assert target == f"flowgauge:{settings.http.port}"
    (alertmanagers,) = prom_config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "127.0.0.1:9093:9093" in services["alertmanager"]["ports"]


def test_every_mounted_file_exists_and_grafana_gets_its_provisioning() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), (name, volume)
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/flowgauge.yaml").read_text())
    assert mounts[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    prom_mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert prom_mounts["/etc/prometheus/rules.yaml"] == "./deploy/prometheus/rules.yaml"


def test_nats_and_alertmanager_configs_pass_their_servers_checks() -> None:
    nats = shutil.which("nats-server") or "/usr/sbin/nats-server"
    assert os.access(nats, os.X_OK), "nats-server is required (tools/test.sh installs it)"
    conf = str(ROOT / "deploy" / "nats" / "nats.conf")
    ok = subprocess.run([nats, "-c", conf, "-t"], env={"NATS_TOKEN": "t"}, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # Without the token in its environment NATS refuses the config rather than running open.
    refused = subprocess.run([nats, "-c", conf, "-t"], env={}, capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "NATS_TOKEN" in refused.stdout + refused.stderr
    amtool = shutil.which("amtool")
    assert amtool, "amtool is required (tools/test.sh installs Debian's prometheus-alertmanager)"
    result = subprocess.run([amtool, "check-config", str(ROOT / "deploy" / "alertmanager" / "alertmanager.yml")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_service_not_running_the_daemon_replaces_the_image_health_check() -> None:
    """The image's HEALTHCHECK asks the daemon's /healthz on 9464; the simulator service runs the same image with
    another command and serves no such port, so without its own check it would be reported unhealthy forever."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "HEALTHCHECK" in dockerfile and "9464/healthz" in dockerfile
    services = _compose()["services"]
    image = services["flowgauge"]["image"]
    others = {name: s for name, s in services.items()
              if s.get("image") == image and s.get("command", ["run"])[0] != "run"}
    assert others
    for name, service in others.items():
        check = service.get("healthcheck")
        assert check and (check.get("disable") or "9464" not in " ".join(check.get("test", []))), name

