"""Per-instrument state stays bounded over long runs (issue 10 item 5), on a synthetic exchange clock.

The offline demo's RSS kept rising ~0.43 MB/min after its windows had filled: Hyperliquid's open-interest feed
went quiet while its trades kept coming, and `OpenInterestFlow` kept every trade since the last observation
(one tuple each, ~27/s per book at 20x, up to a cap of 100k per book). These tests drive many simulated minutes
through the structures and assert on their sizes, never on RSS or wall time.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import linear_instrument

from flowgauge import core
from flowgauge.engine import Engine
from flowgauge.metrics.open_interest import OpenInterestFlow
from flowgauge.metrics.windows import LATE_HORIZON_NS
from flowgauge.types import BookDelta, BookSnapshot, OpenInterest, Trade

S = 1_000_000_000
MIN = 60 * S
SYM = "BTC/USDT:USDT"


def test_trades_waiting_for_a_silent_oi_feed_are_bounded_by_the_late_horizon() -> None:
    """20 minutes of trades at 50/s after one OI observation: at most the horizon's worth wait one by one, and
    the next observation still gets their exact volume."""
    flow = OpenInterestFlow(5 * MIN)
    flow.on_open_interest(0, 1000.0)
    rate = 50
    step = S // rate
    trades = 20 * 60 * rate
    largest = 0
    for i in range(1, trades + 1):
        flow.on_trade(i * step, 0.5)
        largest = max(largest, len(flow._pending))
    assert largest <= LATE_HORIZON_NS // step + 1  # was 60,000: every trade since the observation
    flow.on_open_interest(trades * step, 1100.0)
    assert flow.volume_in_window() == trades * 0.5  # nothing lost: the folded volume joined this interval
    assert not flow._pending


def test_trades_stamped_ahead_of_every_oi_observation_stay_bounded() -> None:
    """The issue's case: the venue's trade clock ran ahead of the OI observations (stamped with the receive
    time), so no observation ever closed the trades' interval. Observations keep coming, 60 s behind."""
    flow = OpenInterestFlow(5 * MIN)
    step = S // 30
    largest = 0
    for i in range(1, 15 * 60 * 30 + 1):
        t = i * step
        flow.on_trade(t + MIN, 0.1)
        if i % 30 == 0:
            flow.on_open_interest(t, 1000.0 + i)
        largest = max(largest, len(flow._pending))
    assert largest <= LATE_HORIZON_NS // step + 1  # was 27,000 and rising: every trade of the run


def test_folded_trades_join_the_interval_of_their_newest_trade() -> None:
    """A fold keeps the interval rule for observations stamped within the horizon: trades after an
    observation wait for the next one, those before it count in it."""
    flow = OpenInterestFlow(5 * MIN)
    flow.on_open_interest(0, 100.0)
    for i in range(1, 61):  # one trade a second for a minute: all but the last ~5 s are folded
        flow.on_trade(i * S, 1.0)
    assert len(flow._pending) <= 6
    flow.on_open_interest(58 * S, 150.0)  # 2 s behind the newest trade: exact
    assert flow.volume_in_window() == 58.0
    flow.on_open_interest(61 * S, 150.0)
    assert flow.volume_in_window() == 60.0


def _sizes(engine: Engine) -> dict[str, int]:
    """The length of every per-instrument buffer the metrics keep (windows, decayed sums, OI history)."""
    sizes: dict[str, int] = {}
    for state in engine.states():
        metrics: Any = state.metrics
        for cls in type(metrics).__mro__:
            for name in getattr(cls, "__slots__", ()):
                value = getattr(metrics, name, None)
                inner = getattr(value, "_flow", value)  # TradeFlowImbalance wraps a SlidingFlow
                if inner is not None and hasattr(inner, "__len__") and not isinstance(inner, str | dict | set):
                    sizes[name] = len(inner)
        oi = metrics._oi
        sizes["oi_observations"] = len(oi._obs)
        sizes["oi_pending_trades"] = len(oi._pending)
    return sizes


@pytest.mark.parametrize("core_name", core.CORES)
def test_engine_state_stops_growing_once_its_windows_are_full(core_name: str) -> None:
    """Twelve simulated minutes of one book at a steady rate (10 book messages and 10 trades a second, OI
    once at the start, then silent like the demo's Hyperliquid feed): every buffer is as large at the end
    as after six minutes (windows and the 5-minute OI window full), give or take one second of items."""
    engine = Engine(lambda topic, payload: None, clock=lambda: 0, core_name=core_name)
    engine.add_instrument(linear_instrument())
    t0 = 1_800_000_000 * S
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0), (99.9, 1.0)), ((100.1, 3.0),), 1, t0, t0))
    engine.handle(OpenInterest("bybit", SYM, 1000.0, t0, t0))
    step = S // 10
    warm: dict[str, int] | None = None
    for i in range(1, 12 * 60 * 10 + 1):
        t = t0 + i * step
        engine.handle(BookDelta("bybit", SYM, ((100.0, 5.0 + i % 3),), (), 1 + i, None, t, t))
        engine.handle(Trade("bybit", SYM, 100.05, 0.01, 1 if i % 2 else -1, str(i), False, t, t))
        if i == 6 * 60 * 10:
            warm = _sizes(engine)
    assert warm is not None
    end = _sizes(engine)
    assert engine.state("bybit", SYM).sync.valid  # type: ignore[union-attr]
    assert set(end) == set(warm)
    grown = {name: (warm[name], end[name]) for name in end if end[name] > warm[name] + 10}
    assert not grown, f"still growing after the windows filled (size at 6 min, at 12 min): {grown}"
    assert end["oi_pending_trades"] <= LATE_HORIZON_NS // step + 1


@pytest.mark.parametrize("kind", ["SlidingSum", "SlidingFlow", "DecayedSum"])
def test_compiled_windows_give_a_burst_back(kind: str) -> None:
    """A 60 s window through a 20,000/s burst, then a 10/s trickle: the compiled window's arrays grow for the
    burst and shrink again once it has left the window (they kept the largest burst's size for good, which the
    soak saw as RSS creeping up), while the sums stay those of the pure-Python window item for item."""
    compiled = core.compiled_module()
    from flowgauge.metrics import windows

    def make(module: Any) -> Any:
        if kind == "DecayedSum":
            return module.DecayedSum.for_window(60.0)
        return getattr(module, kind)(60 * S)

    fast, reference = make(compiled), make(windows)
    query = "evaluate" if kind == "SlidingFlow" else "value"
    t = 0

    def feed(count: int, step: int) -> None:
        nonlocal t
        for i in range(count):
            t += step
            args = (t, 1.0, 0.5) if kind == "SlidingFlow" else (t, float(i % 7) - 3.0)
            fast.add(*args)
            reference.add(*args)
            if i % 97 == 0:  # queries slide the window (and compact it)
                assert getattr(fast, query)(t) == getattr(reference, query)(t)

    feed(100_000, S // 20_000)  # 5 s of burst
    burst_capacity = fast.cap
    assert burst_capacity >= 100_000
    feed(3_000, S // 10)  # 300 s of trickle: the burst left the window long ago
    assert getattr(fast, query)(t) == getattr(reference, query)(t)
    assert fast.cap <= 4096, f"capacity {fast.cap} after the burst left (was {burst_capacity})"


@pytest.mark.parametrize("kind", ["SlidingSum", "SlidingFlow"])
def test_compiled_window_room_follows_what_it_holds_within_a_step(kind: str) -> None:
    """A 60 s window at 600 events/s, then at 300/s: once the faster events have left, the arrays hold room for
    about twice the items in the window (what a steady rate needs between two compactions) plus at most two
    8192-item steps. Powers of two left them at 65536 items for 39,000 needed, and where a rate settled between
    two of them decided the soak's RSS by megabytes."""
    compiled = core.compiled_module()
    window = getattr(compiled, kind)(60 * S)
    t = 0

    def feed(seconds: int, rate: int) -> None:
        nonlocal t
        for i in range(seconds * rate):
            t += S // rate
            if kind == "SlidingFlow":
                window.add(t, 1.0, 0.5)
                if i % 50 == 0:
                    window.evaluate(t)
            else:
                window.add(t, 1.0)
                if i % 50 == 0:
                    window.value(t)

    feed(130, 600)
    fast_room = window.cap
    feed(200, 300)
    live = len(window)
    assert 19_000 <= live <= 2 * 20_000  # 65 s (window and late horizon) at 300/s, before compaction up to twice
    assert window.cap < fast_room
    assert window.cap <= 2 * 19_500 + 2 * 8192, f"room {window.cap} for {live} items"
