"""The two long cases of `flowgauge bench`, which `--quick` skips, on short windows with real processes.

* `demo_mix`: real `flowgauge simulate --venue all` and `flowgauge run` subprocesses on free loopback ports;
  the daemon's CPU (from /proc) per payload it published (from its /metrics).
* `instruments_per_core`: the feeder process pacing frames over a loopback websocket into the pipeline; the
  search's answer follows the conditions it is given (a bound nothing can fail, one nothing can pass).
No figures are asserted beyond being produced and consistent: a short run on a shared machine measures little.
"""

from __future__ import annotations

import math

import pytest

from flowgauge.bench.demo_mix import DEMO_VENUES, measure_demo_mix
from flowgauge.bench.feeder import Feeder, instruments_per_core

pytestmark = pytest.mark.integration


def test_demo_mix_measures_the_daemon_cpu_per_payload_of_five_venues() -> None:
    result = measure_demo_mix(speed=20.0, window_s=2.0, settle_s=0.5)

    assert result["payloads"] > 0
    assert result["cpu_us_per_payload"] is not None and math.isfinite(result["cpu_us_per_payload"])
    assert result["cpu_us_per_payload"] > 0
    # CPU per payload is the window's daemon CPU over its payloads, and the share is of one core.
    cpu_seconds = result["cpu_us_per_payload"] * result["payloads"] / 1e6
    assert cpu_seconds == pytest.approx(result["daemon_cpu_share"] * result["window_s"], rel=1e-6)
    assert 0 < result["daemon_cpu_share"] <= 2.0  # at most both cores of the machine
    assert result["venues"] == list(DEMO_VENUES) and result["books"] == 10
    assert result["ready_at_end"] is True


def test_books_per_core_search_follows_its_conditions() -> None:
    with Feeder() as feeder:
        # Conditions nothing can fail: the doubling runs to the ceiling, which is the answer.
        loose = instruments_per_core(
            feeder.url, seconds=0.2, start=2, ceiling=4, cpu_limit=1e9, p99_limit_us=1e12
        )
        # A CPU bound nothing can meet: the first trial fails and the answer is 0.
        impossible = instruments_per_core(feeder.url, seconds=0.2, start=2, ceiling=4, cpu_limit=0.0)

    assert loose["instruments"] == 4 and loose["instruments_cpu_only"] == 4 and loose["capped"] is True
    assert [trial["books"] for trial in loose["trials"]] == [2, 4]
    assert all(trial["passed"] and trial["invalid_books"] == 0 for trial in loose["trials"])
    assert [trial["rate"] for trial in loose["trials"]] == [40.0, 80.0]  # 20 msg/s per book
    assert impossible["instruments"] == 0 and impossible["instruments_cpu_only"] == 0
    assert impossible["trials"][0]["passed"] is False and impossible["capped"] is False
