"""Deployment files are validated, not run (no Docker engine here): promtool checks the Prometheus files,
the alert rules' own unit tests pass, every metric they use is one the daemon exports, and the Dockerfile
keeps the lifecycle contract (exec-form entrypoint, SIGTERM). docker-compose.yml: tests/unit/test_compose.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from flowgauge.config import ConfigError, load_settings
from flowgauge.telemetry.collector import ClockOffsetCollector, SignalCollector
from flowgauge.telemetry.instruments import Telemetry

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"


def _promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (tools/test.sh installs Debian's prometheus package)"
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_prometheus_config_and_rules_are_valid_and_their_unit_tests_pass(tmp_path: Path) -> None:
    for args in (("check", "rules", "rules.yaml"), ("test", "rules", "rules_test.yaml")):
        result = _promtool(*args)
        assert result.returncode == 0, result.stdout + result.stderr
    # promtool insists the credentials_file exists: check a copy whose secret path is a file here.
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["authorization"]["credentials_file"] == "/run/secrets/http_token"
    job["authorization"]["credentials_file"] = str(tmp_path / "http_token")
    (tmp_path / "http_token").write_text("token\n")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(PROM / "rules.yaml", tmp_path / "rules.yaml")
    result = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


class _OneBook:
    def latest_signals(self):
        yield "bybit", "BTC/USDT:USDT", {"depth_imb_10": 0.1, "ts_exchange": 1_700_000_000_000_000_000, "oi": 1.0}

    def book_states(self):
        yield "bybit", "BTC/USDT:USDT", "VALID"

    def clock_offsets(self):
        yield "bybit", 0.01


def test_every_metric_the_rules_use_is_exported() -> None:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry)
    telemetry.register_venue("bybit")
    telemetry.register_book("bybit", "BTC/USDT:USDT")
    registry.register(SignalCollector(_OneBook()))
    registry.register(ClockOffsetCollector(_OneBook()))
    # Sample names as they appear on /metrics (counters with _total, histograms with _bucket/_sum/_count).
    exported = set(re.findall(r"^(flowgauge_\w+)", generate_latest(registry).decode(), re.M))
    rules = yaml.safe_load((PROM / "rules.yaml").read_text())
    used = {
        m for group in rules["groups"] for rule in group["rules"] for m in re.findall(r"\bflowgauge_\w+", rule["expr"])
    }
    assert used
    for name in used:
        assert name in exported, name


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    """rules_test.yaml checks each alert at least once with alerts expected and once with none expected."""
    rules = yaml.safe_load((PROM / "rules.yaml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    cases = yaml.safe_load((PROM / "rules_test.yaml").read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    fires = {check["alertname"] for check in checks if check.get("exp_alerts")}
    silent = {check["alertname"] for check in checks if not check.get("exp_alerts")}
    assert len(alerts) >= 12
    assert alerts <= fires, alerts - fires
    assert alerts <= silent, alerts - silent
    required = {"FlowgaugeDown", "FlowgaugeAbsent", "FlowgaugeVenueDisconnected", "FlowgaugeBookNotValid",
                "FlowgaugeResyncStorm", "FlowgaugePublishDrops", "FlowgaugeEventLagOverSLO",
                "FlowgaugeOpenInterestStale", "FlowgaugeClockSkew"}
    assert required <= alerts, required - alerts


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


def _dockerfile_env() -> dict[str, str]:
    """The ENV instruction(s) of the Dockerfile as a mapping (continuation lines joined)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        env.update(pair.split("=", 1) for pair in line.split())
    return env


def test_the_image_fails_closed_with_one_line_naming_both_fixes() -> None:
    """The image binds both listeners to 0.0.0.0; with no token and no explicit allowance its config is refused
    in one problem line that names the token variables and allow_unauthenticated (issue 10, item 8)."""
    env = _dockerfile_env()
    assert env["FLOWGAUGE_BUS__EMBEDDED__HOST"] == "0.0.0.0" and env["FLOWGAUGE_HTTP__HOST"] == "0.0.0.0"
    config = ROOT / "config" / Path(env["FLOWGAUGE_CONFIG"]).name  # the file COPY'd to /etc/flowgauge
    try:
        load_settings(config, env)
    except ConfigError as exc:
        (problem,) = exc.problems
        assert "\n" not in str(exc)
        for fix in ("FLOWGAUGE_BUS__EMBEDDED__TOKEN", "FLOWGAUGE_HTTP__TOKEN", "allow_unauthenticated: true"):
            assert fix in problem, fix
    else:
        raise AssertionError("the image's default configuration runs open")
    load_settings(config, {**env, "FLOWGAUGE_BUS__EMBEDDED__TOKEN": "a", "FLOWGAUGE_HTTP__TOKEN": "b"})


def test_every_test_file_the_deployment_files_name_exists() -> None:
    """The deployment files say which test checks them; a renamed or never-written test must not be cited."""
    sources = [ROOT / "Dockerfile", ROOT / "docker-compose.yml", ROOT / ".env.example", ROOT / "README.md",
               *(p for p in (ROOT / "deploy").rglob("*") if p.is_file()), *(ROOT / "tools").glob("*.sh")]
    cited = {(src.relative_to(ROOT), path) for src in sources
             for path in re.findall(r"\btests/[\w/]+\.py\b", src.read_text(errors="replace"))}
    assert cited
    assert not [(str(src), path) for src, path in cited if not (ROOT / path).is_file()]
