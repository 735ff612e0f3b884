"""Deployment files are validated, not run (no Docker engine here): promtool checks the Prometheus files,
the alert rules' own unit tests pass, every metric they use is one the daemon exports, and the Dockerfile
and compose file keep the lifecycle contract (exec-form entrypoint, SIGTERM, grace period > shutdown)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from flowgauge.config import load_settings
from flowgauge.telemetry.collector import SignalCollector
from flowgauge.telemetry.instruments import Telemetry

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (tools/test.sh installs Debian's prometheus package)"
    return subprocess.run([promtool, *args], cwd=PROM, capture_output=True, text=True, timeout=60)


def test_prometheus_config_and_rules_are_valid_and_their_unit_tests_pass() -> None:
    for args in (
        ("check", "config", "prometheus.yml"),
        ("check", "rules", "rules.yaml"),
        ("test", "rules", "rules_test.yaml"),
    ):
        result = _promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr


class _OneBook:
    def latest_signals(self):
        yield "bybit", "BTC/USDT:USDT", {"depth_imb_10": 0.1, "ts_exchange": 1_700_000_000_000_000_000}

    def book_states(self):
        yield "bybit", "BTC/USDT:USDT", "VALID"


def test_every_metric_the_rules_use_is_exported() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    telemetry.register_venue("bybit")
    telemetry.register_book("bybit", "BTC/USDT:USDT")
    registry.register(SignalCollector(_OneBook()))
    exported = set(re.findall(r"^# TYPE (\w+)", generate_latest(registry).decode(), re.M))
    counters = {name[: -len("_total")] for name in exported if name.endswith("_total")}
    rules = yaml.safe_load((PROM / "rules.yaml").read_text())
    used = {
        m for group in rules["groups"] for rule in group["rules"] for m in re.findall(r"\bflowgauge_\w+", rule["expr"])
    }
    assert used
    for name in used:
        assert name in exported or name.removesuffix("_total") in counters, name


def test_dockerfile_keeps_the_lifecycle_contract() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["python", "-m", "flowgauge"]' in text  # exec form: Python is PID 1 and gets SIGTERM
    assert "STOPSIGNAL SIGTERM" in text
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    settings = load_settings(ROOT / "config" / "default.yaml", {})
    exposed = set(re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split())
    assert {str(settings.http.port), str(settings.bus.embedded.port)} <= exposed
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / source).exists(), source


def test_compose_grace_period_exceeds_the_shutdown_deadline() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service = compose["services"]["flowgauge"]
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > load_settings(ROOT / "config" / "default.yaml", {}).shutdown_timeout_s
    for volume in compose["services"]["prometheus"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume
