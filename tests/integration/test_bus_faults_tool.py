"""`python -m flowgauge.bench.bus_faults` (the README's bus-fault figures) still runs end to end: a short run
of three faults against the real stack it starts, and its phase summary on made-up arrivals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowgauge.bench.bus_faults import summarize_phase

pytestmark = pytest.mark.integration


def test_summarize_phase_counts_only_the_window() -> None:
    ms = 1_000_000
    arrivals = [0, 10 * ms, 20 * ms, 70 * ms, 80 * ms, 2000 * ms]  # the last one is outside the window
    latencies = [1 * ms, 2 * ms, 3 * ms, 4 * ms, -1, 9 * ms]  # -1: a payload without ts_publish
    figures = summarize_phase(arrivals, latencies, 0, 1000 * ms)
    assert figures["delivered_per_s"] == pytest.approx(5.0)
    assert figures["gap_max_ms"] == pytest.approx(50.0)
    assert figures["gap_p99_ms"] == pytest.approx(50.0)
    assert figures["latency_p99_ms"] == pytest.approx(4.0)


def test_a_short_run_reports_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowgauge.bench.bus_faults",
            "--rounds",
            "1",
            "--phase-s",
            "2",
            "--warmup-s",
            "0",
            "--outage-s",
            "0.5",
            "--faults",
            "baseline,oversized,redis_restart",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["schema"] == "flowgauge.bench_bus_faults.v1"
    phases = {p["fault"]: p for p in result["phases"]}
    assert set(phases) == {"baseline", "oversized", "redis_restart"}
    for phase in phases.values():
        assert phase["payloads_per_s"] > 50 and phase["healthy"]["delivered_per_s"] > 50, phase
    assert phases["oversized"]["fault_stats"]["closed_1009"] > 0
    assert phases["oversized"]["counters"]["rejected_limit"] >= phases["oversized"]["fault_stats"]["closed_1009"]
    assert phases["redis_restart"]["fault_stats"]["resumed_after_s"] < 20
    assert "oversized" in done.stdout and "median (min-max)" in done.stdout


def test_an_unknown_fault_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flowgauge.bench.bus_faults", "--faults", "baseline,nope"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "nope" in done.stderr
