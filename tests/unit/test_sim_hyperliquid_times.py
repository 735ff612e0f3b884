"""The Hyperliquid simulator's push times: its only id, the truth's key and the daemon's `book_seq`.

A unit of the simulator's per-coin state with a real `TapeClock` and `TruthStore` (no sockets): a clock that goes
back must move the served times back, yet never onto a time a truth record still held has, or the comparator
matches a payload with another push's book (a soak under load found three such payloads).
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

from flowgauge.simulate.base import TapeClock
from flowgauge.simulate.hyperliquid import _CoinState, _Served, _Shift
from flowgauge.simulate.truth import TruthStore

ORIGIN_MS = 1_796_491_000_000


def _push(recorded_ms: int, bid: int) -> dict[str, Any]:
    bids = [{"px": str(bid), "sz": "1.5", "n": 1}]
    asks = [{"px": str(bid + 1), "sz": "1.5", "n": 1}]
    return {"coin": "BTC", "time": recorded_ms, "levels": [bids, asks]}


def _served_times(truth: TruthStore, jumps: dict[int, int], pushes: int = 60, step_ms: int = 100) -> list[int]:
    """Serve `pushes` pushes recorded `step_ms` apart, moving the clock by `jumps[i]` ms before push i."""
    state = _CoinState(_Served("BTC", "BTC", 5, 40, Decimal(1000)))
    clock = TapeClock(1.0)
    clock.start_loop(0, ORIGIN_MS, 0)
    shift = _Shift(0, clock, 0)
    times = []
    for i in range(pushes):
        if i in jumps:
            clock.shift(jumps[i])
        times.append(state.book_frame(_push(i * step_ms, 100_000 + i), shift, truth)["time"])
    return times


def test_a_clock_that_goes_back_serves_earlier_times_but_never_one_the_truth_still_holds() -> None:
    truth = TruthStore()
    times = _served_times(truth, {30: -2_000})  # 2 s back: pushes 30..49 land on the times of pushes 10..29
    assert times[30] < times[29]  # the daemon sees the clock go back
    assert len(set(times)) == len(times)
    assert truth.stats()["instruments"]["BTC"]["repeated"] == 0
    # Every push's own book is what its time finds in the truth.
    for i, served in enumerate(times):
        record = truth.get("BTC", served)
        assert record is not None and record.bids[0][0] == 100_000 + i


def test_small_steps_back_keep_times_increasing() -> None:
    truth = TruthStore()
    times = _served_times(truth, {20: -500, 40: -1_000})  # within the tie window: served 1 ms after the last
    assert all(b > a for a, b in itertools.pairwise(times))
    assert truth.stats()["instruments"]["BTC"]["repeated"] == 0


def test_without_truth_times_still_go_back() -> None:
    truth = TruthStore(capacity=0)  # truth disabled: nothing to keep unique against
    times = _served_times(truth, {30: -2_000})
    assert times[30] == times[10]
