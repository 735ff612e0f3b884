"""Clock bars on flowgauge.v1.bars.<venue>.<slug> and the fragility / ew / risk families, through a real Engine.

Bars: closed by the next book state (empty ones too) and by the daemon's timer; validated against bars.v1.json.
Families: every key present, values in range, and both cores publish the same payloads.
"""

from __future__ import annotations

import json
import random

import jsonschema
import orjson
from tests.conftest import linear_instrument

import flowgauge
from flowgauge import core
from flowgauge.engine import Engine
from flowgauge.metrics.bar_feed import BarSpec
from flowgauge.metrics.families import FAMILIES
from flowgauge.sdk.payloads import BarPayload, decode
from flowgauge.types import BookDelta, BookSnapshot, Trade

SYM = "BTC/USDT:USDT"
BOOK_TOPIC = "flowgauge.v1.bybit.BTC-USDT-USDT"
BARS_TOPIC = "flowgauge.v1.bars.bybit.BTC-USDT-USDT"
S = 1_000_000_000
T0 = 1_700_000_000 * S
BARS_SCHEMA = json.loads(flowgauge.schema_path("bars").read_text())
PAYLOAD_SCHEMA = json.loads(flowgauge.schema_path("payload").read_text())
MINE = ("fragility", "ew", "risk")


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, orjson.loads(payload)))

    def on(self, topic: str) -> list[dict]:
        return [p for t, p in self.messages if t == topic]


def _snapshot(seq: int, t: int, rng: random.Random) -> BookSnapshot:
    bids = tuple((round(100.0 - 0.1 * i, 1), rng.uniform(1.0, 40.0)) for i in range(150))
    asks = tuple((round(100.1 + 0.1 * i, 1), rng.uniform(1.0, 40.0)) for i in range(150))
    return BookSnapshot("bybit", SYM, bids, asks, seq, t, t)


def _delta(seq: int, t: int, rng: random.Random) -> BookDelta:
    bid = (round(100.0 - 0.1 * rng.randrange(0, 4), 1), rng.choice((0.0, rng.uniform(0.5, 40.0))))
    ask = (round(100.1 + 0.1 * rng.randrange(0, 4), 1), rng.choice((0.0, rng.uniform(0.5, 40.0))))
    return BookDelta("bybit", SYM, (bid,), (ask,), seq, None, t, t)


ONE_SECOND_BARS = BarSpec(1.0)


def _engine(
    core_name: str, bars: BarSpec | None = ONE_SECOND_BARS, families: tuple[str, ...] = ("core", *MINE)
) -> tuple[Engine, Recorder]:
    out = Recorder()
    engine = Engine(out, clock=lambda: 7, core_name=core_name, families=families, bars=bars)
    engine.add_instrument(linear_instrument())
    return engine, out


def test_bars_are_published_closed_by_the_next_state_empty_ones_too() -> None:
    rng = random.Random(1)
    engine, out = _engine(core.PYTHON)
    engine.handle(_snapshot(1, T0 + 100, rng))
    engine.handle(_delta(2, T0 + 200, rng))
    engine.handle(Trade("bybit", SYM, 100.1, 0.5, 1, "t1", False, T0 + 300, T0 + 300))
    engine.handle(Trade("bybit", SYM, 100.0, 2.0, -1, "t2", True, T0 + 400, T0 + 400))  # not taker flow
    assert out.on(BARS_TOPIC) == []
    engine.handle(_delta(3, T0 + 3 * S + 1, rng))
    bars = out.on(BARS_TOPIC)
    assert [b["t_start"] for b in bars] == [T0, T0 + S, T0 + 2 * S]
    assert [b["seq"] for b in bars] == [1, 2, 3]
    assert [b["n_events"] for b in bars] == [2, 0, 0]
    assert bars[0]["n_trades"] == 1 and bars[0]["buy_volume"] == 0.5 and bars[0]["sell_volume"] == 0.0
    assert bars[1]["mid_close"] == bars[2]["mid_open"] == bars[0]["mid_close"]  # state carried forward
    for bar in bars:
        jsonschema.validate(bar, BARS_SCHEMA)
        assert isinstance(decode(BARS_TOPIC, orjson.dumps(bar)), BarPayload)
    # the bars a state closes are published before that state's payload
    topics = [t for t, _ in out.messages]
    assert topics.index(BARS_TOPIC) < len(topics) - 1 and topics[-1] == BOOK_TOPIC


def test_the_timer_closes_bars_no_event_closed() -> None:
    rng = random.Random(2)
    engine, out = _engine(core.PYTHON)
    engine.handle(_snapshot(1, T0 + 100, rng))
    assert engine.close_bars(T0 + 2 * S, 2 * S) == 0  # the bar ended less than the delay ago
    assert engine.close_bars(T0 + 5 * S, 2 * S) == 3  # bars 0, 1, 2 ended at least 2 s before
    assert [b["n_events"] for b in out.on(BARS_TOPIC)] == [1, 0, 0]
    engine.handle(Trade("bybit", SYM, 100.1, 1.0, 1, "late", False, T0 + 2 * S + 5, T0 + 5 * S))  # its bar is out
    engine.handle(_delta(2, T0 + 4 * S, rng))
    assert out.on(BARS_TOPIC)[-1]["t_start"] == T0 + 3 * S and out.on(BARS_TOPIC)[-1]["n_trades"] == 0


def test_bars_off_publish_nothing() -> None:
    rng = random.Random(3)
    engine, out = _engine(core.PYTHON, bars=None)
    engine.handle(_snapshot(1, T0, rng))
    engine.handle(_delta(2, T0 + 5 * S, rng))
    assert engine.close_bars(T0 + 60 * S, 0) == 0
    assert out.on(BARS_TOPIC) == []


def _run(core_name: str) -> Recorder:
    rng = random.Random(4)
    engine, out = _engine(core_name, families=("core", "microprice", *MINE))
    engine.handle(_snapshot(1, T0, rng))
    for k in range(2, 1500):
        engine.handle(_delta(k, T0 + k * 150_000_000, rng))
        if k % 7 == 0:
            engine.handle(Trade("bybit", SYM, 100.1, rng.uniform(0.1, 3.0), rng.choice((1, -1)), str(k), False,
                                T0 + k * 150_000_000, T0 + k * 150_000_000))  # fmt: skip
    return out


def test_both_cores_publish_the_same_payloads_and_bars() -> None:
    python, compiled = _run(core.PYTHON), _run(core.COMPILED)
    assert len(python.messages) == len(compiled.messages)
    assert python.messages == compiled.messages


def test_family_keys_are_published_with_values_in_range() -> None:
    payloads = _run(core.PYTHON).on(BOOK_TOPIC)
    last = payloads[-1]
    for family in MINE:
        for key in FAMILIES[family]:
            assert key in last, key
    for key in (k for family in MINE for k in FAMILIES[family]):
        assert key in PAYLOAD_SCHEMA["properties"], key
    for p in payloads[::100]:  # jsonschema is slow on this schema: a sample across the run
        jsonschema.validate(p, PAYLOAD_SCHEMA)
    for p in payloads:
        assert ("PARTIAL_WINDOW" in p["quality"]) == bool(p["coverage"])  # the project's rule, our entries too
        assert p["risk_scale"] is None or 0.0 < p["risk_scale"] <= 1.0
        assert p["hedge_urgency"] is None or 0.0 <= p["hedge_urgency"] <= 1.0
        assert p["fragility_index"] is None or -1.0 <= p["fragility_index"] <= 1.0
        for key in ("impact_cost_bps_10k_buy", "impact_cost_bps_10k_sell"):
            assert p[key] is None or p[key] > 0.0
    assert last["vol_1m"] is not None and last["vol_1m"] >= 0.0 and "vol_1m" not in last["coverage"]  # past ~180 s
    young = payloads[200]  # 30 s in: published, marked as younger than its warm-up
    assert young["vol_1m"] is not None and young["coverage"]["vol_1m"] == "PARTIAL"
    assert payloads[40]["vol_1m"] is None  # 6 s in: fewer than 10 one-second returns
    assert last["impact_cost_bps_10k_buy"] is not None and last["book_slope"] is not None
    assert last["coverage"].get("impact_cost_bps_1m_buy") == "EXHAUSTED"  # the test book holds < $1M a side
    spreads = [p["spread_bps"] for p in payloads if p["spread_bps"] is not None]
    assert min(spreads) <= last["spread_bps_ew_60s"] <= max(spreads)  # a time-weighted mean of the spreads seen


def test_memory_stays_flat_over_simulated_hours() -> None:
    """Six simulated hours of a state every 2 s (a trade every 10 s): the bars and the 1 s statistics behind the
    fragility / ew / risk families are O(1) per instrument, so nothing they allocate after the first hour stays."""
    import gc
    import tracemalloc

    from flowgauge.metrics.bar_feed import InstrumentBars
    from flowgauge.metrics.seconds import SecondStats

    rng = random.Random(6)
    bars = InstrumentBars(1.0)
    stats = SecondStats()
    sizes = []
    mid = 100.0
    for k in range(6 * 1800 + 1):
        t = T0 + k * 2 * S + 1
        mid += rng.choice((-0.1, 0.0, 0.1))
        bars.on_book(t, rng.gauss(0, 1), mid - 0.05, mid + 0.05)
        stats.on_book(t, mid, 10.0, 1e5 * (1 + rng.random()))
        if k % 5 == 0:
            bars.on_trade(t, rng.choice((1, -1)), 1.0)
        if k % 1800 == 0 and k:
            gc.collect()
            if not sizes:
                tracemalloc.start()
            sizes.append(tracemalloc.get_traced_memory()[0])
    tracemalloc.stop()
    assert len(sizes) == 6
    assert max(sizes) < 16 * 1024, sizes  # what is still allocated from hour 1 on: nothing grows
    assert stats.vol_1m() is not None and stats.resiliency_halflife_s() is not None
