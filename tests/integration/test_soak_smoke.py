"""`flowgauge soak` end to end, very short: the simulators and the daemon start as processes of their own, every
payload is checked against the truth under faults, the figures are printed and both children stop.

The real soak (15 minutes and more) is not part of the suite; this only proves the command works.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tests.procs import TIMEOUT_FACTOR, pid_alive, wait_until

pytestmark = pytest.mark.integration


def test_soak_runs_checks_payloads_and_prints_its_figures(tmp_path: Path) -> None:
    # Arrange: 10 books (Bybit's recording once, under new names, plus the other four venues' two each),
    # faults on, 9 s of run after the daemon starts.
    command = [
        sys.executable, "-m", "flowgauge", "soak", "--minutes", "0.15", "--warmup-minutes", "0.05",
        "--replicas", "1", "--speed", "2", "--every", "3", "--dir", str(tmp_path),
    ]  # fmt: skip
    # Act
    done = subprocess.run(command, capture_output=True, text=True, timeout=90 * TIMEOUT_FACTOR, check=False)
    # Assert
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    frames = int(re.search(r"messages processed\s+(\d+) venue frames", out).group(1))  # type: ignore[union-attr]
    checked = int(re.search(r"wrong payloads\s+0 \(of (\d+) VALID", out).group(1))  # type: ignore[union-attr]
    assert frames > 0 and checked > 0
    assert re.search(r"crashes\s+0", out)
    assert re.search(r"RSS\s+start \d+\.\d MiB", out) and "event-loop lag       p99" in out
    assert re.search(r"faults injected\s+[1-9]", out), out
    assert "soak: passed" in out
    assert (tmp_path / "daemon.yaml").exists() and (tmp_path / "daemon.log").exists()
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()


def test_soak_stopped_by_sigterm_prints_its_figures_and_stops_both_children(tmp_path: Path) -> None:
    # Arrange: a 10-minute soak, told to stop once its daemon reports.
    command = [
        sys.executable, "-m", "flowgauge", "soak", "--minutes", "10", "--warmup-minutes", "5",
        "--replicas", "1", "--speed", "2", "--every", "600", "--dir", str(tmp_path),
    ]  # fmt: skip
    soak = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        reports = tmp_path / "reports.jsonl"
        wait_until(lambda: reports.exists() and reports.stat().st_size > 0, "the first report", 90)
        children = [
            int(line.split()[0])
            for line in subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(soak.pid)], capture_output=True,
                                       text=True, check=True).stdout.splitlines()
            if "flowgauge.soak." in line
        ]  # fmt: skip
        assert len(children) == 2
        # Act
        soak.send_signal(signal.SIGTERM)
        out, err = soak.communicate(timeout=60 * TIMEOUT_FACTOR)
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.communicate()
    # Assert: the figures so far, an interrupted run is not a pass, and no child outlives the soak.
    assert soak.returncode == 1, out + err
    assert re.search(r"crashes\s+0", out), out
    assert re.search(r"soak: interrupted after \d+\.\d of 10 min", out), out
    assert "Traceback" not in err
    wait_until(lambda: not any(pid_alive(pid) for pid in children), "the end of both children", 10)
