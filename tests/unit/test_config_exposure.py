"""A listener beyond loopback without a token is a config error unless allowed explicitly (issue 10, item 8):
`check-config` and `run` say so in one line and exit 2; allowed, the daemon starts and logs a warning. Also the
HTTP token's validation and redaction, and the bus's slow-reader bounds as config keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.procs import flowgauge, free_port, wait_for

from flowgauge.config import ConfigError, load_settings, redacted

BUS_TOKEN = "FLOWGAUGE_BUS__EMBEDDED__TOKEN"
HTTP_TOKEN = "FLOWGAUGE_HTTP__TOKEN"


def _error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ)
    return caught.value


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "flowgauge.internal"])
def test_a_bus_beyond_loopback_without_a_token_is_refused_in_one_line(host: str) -> None:
    error = _error({"FLOWGAUGE_BUS__EMBEDDED__HOST": host})
    assert len(error.problems) == 1
    problem = error.problems[0]
    assert problem.startswith("bus.embedded.host: ")
    assert BUS_TOKEN in problem and "bus.embedded.allow_unauthenticated: true" in problem
    assert "\n" not in str(error)


def test_http_beyond_loopback_without_a_token_is_refused() -> None:
    (problem,) = _error({"FLOWGAUGE_HTTP__HOST": "0.0.0.0"}).problems
    assert problem.startswith("http.host: ")
    assert HTTP_TOKEN in problem and "http.allow_unauthenticated: true" in problem


def test_both_open_is_one_line_naming_both_fixes() -> None:
    (problem,) = _error({"FLOWGAUGE_HTTP__HOST": "0.0.0.0", "FLOWGAUGE_BUS__EMBEDDED__HOST": "0.0.0.0"}).problems
    for fix in (BUS_TOKEN, HTTP_TOKEN, "bus.embedded.allow_unauthenticated: true", "http.allow_unauthenticated: true"):
        assert fix in problem, fix


@pytest.mark.parametrize(
    "environ",
    [
        {"FLOWGAUGE_BUS__EMBEDDED__HOST": "0.0.0.0", BUS_TOKEN: "t"},
        {"FLOWGAUGE_BUS__EMBEDDED__HOST": "0.0.0.0", "FLOWGAUGE_BUS__EMBEDDED__ALLOW_UNAUTHENTICATED": "true"},
        {"FLOWGAUGE_BUS__EMBEDDED__HOST": "0.0.0.0", "FLOWGAUGE_BUS__EMBEDDED__ENABLED": "false"},
        {"FLOWGAUGE_HTTP__HOST": "0.0.0.0", HTTP_TOKEN: "t"},
        {"FLOWGAUGE_HTTP__HOST": "0.0.0.0", "FLOWGAUGE_HTTP__ALLOW_UNAUTHENTICATED": "true"},
        {"FLOWGAUGE_HTTP__HOST": "127.0.0.2", "FLOWGAUGE_BUS__EMBEDDED__HOST": "::1"},
        {"FLOWGAUGE_HTTP__HOST": "localhost", "FLOWGAUGE_BUS__EMBEDDED__HOST": "[::1]"},
    ],
)
def test_loopback_a_token_or_an_explicit_allowance_is_accepted(environ: dict[str, str]) -> None:
    load_settings(None, environ)


def test_http_token_is_validated_and_redacted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('http: {token: ""}\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    (problem,) = caught.value.problems
    assert problem.startswith("http.token: ")
    settings = load_settings(None, {HTTP_TOKEN: "s3cret", BUS_TOKEN: "s3cret2"})
    assert settings.http.token == "s3cret"
    shown = redacted(settings)
    assert shown["http"]["token"] == "***" and shown["bus"]["embedded"]["token"] == "***"


def test_slow_reader_bounds_are_config_keys_with_sane_defaults() -> None:
    embedded = load_settings(None, {}).bus.embedded
    assert embedded.client_queue_bytes == 8 * 1024 * 1024
    assert embedded.client_max_lag_s == 10
    problems = _error(
        {"FLOWGAUGE_BUS__EMBEDDED__CLIENT_QUEUE_BYTES": "10", "FLOWGAUGE_BUS__EMBEDDED__CLIENT_MAX_LAG_S": "0"}
    ).problems
    assert [p.split(":")[0] for p in problems] == ["bus.embedded.client_queue_bytes", "bus.embedded.client_max_lag_s"]


@pytest.mark.parametrize("command", [["check-config"], ["run"]])
def test_check_config_and_run_exit_2_with_one_line(command: list[str]) -> None:
    env = {"PATH": "/usr/bin:/bin", "FLOWGAUGE_BUS__EMBEDDED__HOST": "0.0.0.0", "FLOWGAUGE_HTTP__HOST": "0.0.0.0"}
    result = subprocess.run(
        [sys.executable, "-m", "flowgauge", *command], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert BUS_TOKEN in lines[0] and HTTP_TOKEN in lines[0] and "allow_unauthenticated" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.integration
async def test_an_allowed_open_listener_starts_with_a_warning(tmp_path: Path) -> None:
    env = {
        "FLOWGAUGE_BUS__EMBEDDED__HOST": "0.0.0.0",
        "FLOWGAUGE_BUS__EMBEDDED__ALLOW_UNAUTHENTICATED": "true",
        "FLOWGAUGE_BUS__EMBEDDED__PORT": str(free_port()),
        "FLOWGAUGE_HTTP__PORT": str(free_port()),
    }
    log = tmp_path / "daemon.log"
    with flowgauge(["run", "-c", "offline-demo"], log, env) as proc:
        await wait_for(lambda: b"listener_unauthenticated" in log.read_bytes(), "the warning", 60)
        assert proc.poll() is None
    text = log.read_text()
    assert "bus.embedded" in text and "0.0.0.0" in text
    assert "http listens" not in text  # http stayed on loopback: no warning for it
