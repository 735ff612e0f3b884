"""`shard.index: from_hostname`: a StatefulSet pod takes its shard from the ordinal ending its name (HOSTNAME), so
one pod template serves every shard (deploy/kubernetes). Through the config loader and through the CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flowgauge.config import ConfigError, load_settings, parse_settings

VENUES = {"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}}}


@pytest.mark.parametrize(("hostname", "index"), [("flowgauge-0", 0), ("flowgauge-a-3", 3), ("fg-b-12", 12)])
def test_the_ordinal_ending_the_hostname_is_the_shard_index(hostname: str, index: int) -> None:
    env = {"FLOWGAUGE_SHARD__INDEX": "from_hostname", "FLOWGAUGE_SHARD__COUNT": "16", "HOSTNAME": hostname}
    assert load_settings("offline-demo", env).shard.index == index


def test_from_hostname_in_the_config_file_too() -> None:
    settings = parse_settings({**VENUES, "shard": {"index": "from_hostname", "count": 2}}, {"HOSTNAME": "x-1"})
    assert (settings.shard.index, settings.shard.count) == (1, 2)


@pytest.mark.parametrize(("hostname", "why"), [
    ("flowgauge", "HOSTNAME is 'flowgauge'"),
    (None, "HOSTNAME is unset"),
    ("flowgauge-5", "must be between 0 and 1 (shard.count is 2) (got 5)"),
])
def test_a_hostname_without_a_usable_ordinal_is_one_problem_line(hostname: str | None, why: str) -> None:
    env = {"FLOWGAUGE_SHARD__INDEX": "from_hostname", "FLOWGAUGE_SHARD__COUNT": "2"}
    if hostname is not None:
        env["HOSTNAME"] = hostname
    with pytest.raises(ConfigError) as caught:
        load_settings("offline-demo", env)
    (problem,) = caught.value.problems
    assert problem.startswith("shard.index: ") and why in problem, problem
    if hostname:  # the operator sees which host name the index came from (a StatefulSet scaled past the count)
        assert f"HOSTNAME={hostname}" in problem, problem


def test_a_bad_hostname_stops_the_daemon_with_one_line_and_no_traceback() -> None:
    env = {"FLOWGAUGE_SHARD__INDEX": "from_hostname", "FLOWGAUGE_SHARD__COUNT": "3", "HOSTNAME": "flowgauge-a-3",
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "flowgauge", "run", "-c", "offline-demo"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert "shard.index: must be between 0 and 2 (shard.count is 3) (got 3)" in line, line
    assert "HOSTNAME=flowgauge-a-3" in line and "Traceback" not in result.stdout + result.stderr, line


def test_check_config_names_the_shard_taken_from_the_hostname() -> None:
    env = {"FLOWGAUGE_SHARD__INDEX": "from_hostname", "FLOWGAUGE_SHARD__COUNT": "2", "HOSTNAME": "flowgauge-a-1",
           "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "flowgauge", "check-config", "-c", "offline-demo"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "shard 1 of 2" in result.stdout, result.stdout
