"""`flowgauge bench-bus`: the bus benchmark runs every backend against brokers it starts itself, accounts for
every message, and refuses in one line when a broker binary is missing.

Speed is never asserted (the machine is shared); what is asserted is that each figure exists, is positive and
is consistent: every offered message was delivered to the SDK subscriber or counted as dropped, and the
latency percentiles are ordered.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.procs import TIMEOUT_FACTOR, descendants, pid_alive, wait_until

BACKENDS = {"embedded", "nats", "nats_jetstream", "redis", "loopback"}  # loopback: the floor, no broker
RUN_TIMEOUT_S = 180.0 * TIMEOUT_FACTOR


def _bench_bus(args: list[str], env: dict[str, str] | None = None,
               timeout_s: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flowgauge", "bench-bus", *args], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, **(env or {})}, check=False)


def _check_counts(where: str, figures: dict[str, Any], offered: int) -> None:
    assert figures["offered"] == offered, where
    dropped = figures["publisher_dropped"] + figures["sdk_dropped"]
    assert figures["delivered"] == figures["offered"] - dropped, f"{where}: {figures}"
    assert figures["unaccounted"] == 0, f"{where}: {figures}"
    assert figures["interruptions"] == 0, f"{where}: {figures}"


def test_quick_run_measures_every_backend_and_accounts_for_every_message() -> None:
    done = _bench_bus(["--quick", "--json"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["schema"] == "flowgauge.bench_bus.v1"
    assert summary["mode"] == "quick"
    rounds = summary["rounds"]
    assert rounds >= 1
    # Today's real payloads (the Bybit sample through the engine), not a stand-in of another size.
    assert summary["payloads"]["distinct"] > 100
    assert 800 < summary["payloads"]["mean_bytes"] < 4096
    assert summary["gaps"] == []
    assert set(summary["backends"]) == BACKENDS
    per_rate_round = summary["rate_method"]["messages_per_round"]
    per_latency_round = summary["latency_method"]["messages_per_round"]
    for name, backend in summary["backends"].items():
        rate, latency = backend["rate"], backend["latency"]
        assert len(rate["rounds"]) == rounds and len(latency["rounds"]) == rounds, name
        for i, figures in enumerate(rate["rounds"]):
            _check_counts(f"{name} rate round {i}", figures, per_rate_round)
            assert figures["offered_msgs_per_s"] > 0 and figures["delivered_msgs_per_s"] > 0, name
        _check_counts(f"{name} rate total", rate, per_rate_round * rounds)
        assert rate["offered_msgs_per_s"]["median"] > 0 and rate["delivered_msgs_per_s"]["median"] > 0, name
        for i, figures in enumerate(latency["rounds"]):
            where = f"{name} latency round {i}"
            _check_counts(where, figures, per_latency_round)
            assert figures["samples"] == figures["delivered"], where
            assert 0 < figures["p50_us"] <= figures["p99_us"] <= figures["max_us"], f"{where}: {figures}"
        for key in ("p50_us", "p99_us", "max_us"):
            spread = latency[key]
            assert 0 < spread["min"] <= spread["median"] <= spread["max"], f"{name} {key}: {spread}"
        assert latency["p50_us"]["median"] <= latency["p99_us"]["median"] <= latency["max_us"]["median"], name
        # The table names the backend with its figures.
        assert any(line.startswith(backend["label"]) for line in lines[:-1]), name


def test_missing_broker_binaries_are_one_line_and_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = _bench_bus(["--quick"], env={"PATH": str(empty), "FLOWGAUGE_BENCH_SBIN": str(empty)}, timeout_s=60)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "nats-server and redis-server not found" in lines[0]
    assert "install Debian's nats-server redis-server" in lines[0]


def test_one_missing_broker_is_named_alone(tmp_path: Path) -> None:
    nats = shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin")
    assert nats is not None, "nats-server is not installed: run tools/test.sh (it installs it with apt-get)"
    only_nats = tmp_path / "bin"
    only_nats.mkdir()
    (only_nats / "nats-server").symlink_to(nats)
    done = _bench_bus(["--quick"], env={"PATH": str(only_nats), "FLOWGAUGE_BENCH_SBIN": ""}, timeout_s=60)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bench-bus: redis-server not found in PATH:"), lines[0]
    assert "nats-server" not in lines[0]


def test_interrupt_exits_130_in_one_line_and_stops_brokers_and_subscribers(tmp_path: Path) -> None:
    stderr_path = tmp_path / "stderr"
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "flowgauge", "bench-bus", "--quick"], stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
    try:
        wait_until(lambda: "subscribers ready" in stderr_path.read_text(), "the subscribers to be ready", 120)
        started = descendants(proc.pid)
        assert len(started) >= 8, started  # three brokers, five subscribers (and spawn's resource tracker)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60 * TIMEOUT_FACTOR)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr_path.read_text()[-3000:]
    text = stderr_path.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert text.strip().splitlines()[-1].startswith("bench-bus: interrupted after "), text[-1000:]
    assert out == ""
    wait_until(lambda: not any(pid_alive(pid) for pid in started), "the bench's children to stop", 30)
