"""Engine: events in, payloads out; invalid books publish status and null book metrics, never wrong ones."""

from __future__ import annotations

import orjson
from tests.conftest import linear_instrument

from flowgauge.engine import Engine
from flowgauge.types import BadFrame, BookDelta, BookSnapshot, OpenInterest, Trade

SYM = "BTC/USDT:USDT"
BOOK_TOPIC = "flowgauge.v1.bybit.BTC-USDT-USDT"
STATUS_TOPIC = "flowgauge.v1.status.bybit.BTC-USDT-USDT"
S = 1_000_000_000


def snapshot(seq: int, t: int) -> BookSnapshot:
    return BookSnapshot("bybit", SYM, ((100.0, 5.0), (99.9, 1.0)), ((100.1, 3.0),), seq, t, t)


def delta(seq: int, t: int, bids=(), asks=()) -> BookDelta:
    return BookDelta("bybit", SYM, tuple(bids), tuple(asks), seq, None, t, t)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, orjson.loads(payload)))

    def books(self) -> list[dict]:
        return [p for t, p in self.messages if t == BOOK_TOPIC and p["trigger"] == "book"]

    def statuses(self) -> list[dict]:
        return [p for t, p in self.messages if t == STATUS_TOPIC]


def make() -> tuple[Engine, Recorder]:
    out = Recorder()
    engine = Engine(out, clock=lambda: 42)
    engine.add_instrument(linear_instrument())
    return engine, out


def test_book_payload_envelope_and_ofi() -> None:
    engine, out = make()
    assert engine.handle(snapshot(10, 1 * S)) is None
    assert engine.handle(delta(11, 2 * S, bids=[(100.0, 7.0)])) is None
    first, second = out.books()
    assert first["ofi"] is None  # first state: no e_n
    assert second["ofi"] == 2.0  # bid queue grew by 2 at an unchanged best price (metrics.md 1.5 S1)
    assert second["seq"] == 2 and second["book_seq"] == 11
    assert second["instrument"] == "BTCUSDT" and second["schema"] == "flowgauge.v1"
    assert second["ts_exchange"] == 2 * S and second["ts_publish"] == 42
    assert out.statuses()[0]["state"] == "VALID"
    assert engine.ready()


def test_gap_publishes_status_nulls_book_metrics_and_requests_resync() -> None:
    engine, out = make()
    engine.handle(snapshot(10, 1 * S))
    assert engine.handle(delta(13, 2 * S, bids=[(100.0, 1.0)])) == SYM
    assert not engine.ready()
    status = out.statuses()[-1]
    assert (status["state"], status["reason"]) == ("INVALID", "GAP")
    # Deltas after the gap are not applied and publish nothing.
    before = len(out.books())
    engine.handle(delta(14, 3 * S, bids=[(100.0, 9.0)]))
    assert len(out.books()) == before
    # An OI observation still publishes, with every book metric null and the reason flagged.
    engine.handle(OpenInterest("bybit", SYM, 123.0, 4 * S, 4 * S))
    oi_payload = out.messages[-1][1]
    assert oi_payload["trigger"] == "open_interest" and oi_payload["oi"] == 123.0
    assert oi_payload["bid_px"] is None and oi_payload["depth_imb_10"] is None
    assert oi_payload["book_seq"] is None and "GAP" in oi_payload["quality"]
    # A fresh snapshot recovers; the first state after it has no e_n.
    engine.handle(snapshot(20, 5 * S))
    assert out.books()[-1]["ofi"] is None
    assert out.statuses()[-1]["state"] == "VALID"


def test_bad_frame_touching_book_invalidates_that_book_only() -> None:
    engine, _out = make()
    engine.add_instrument(linear_instrument("ETH/USDT:USDT", "ETHUSDT", 0.01))
    engine.handle(snapshot(10, 1 * S))
    engine.handle(BookSnapshot("bybit", "ETH/USDT:USDT", ((10.0, 1.0),), ((10.1, 1.0),), 5, S, S))
    assert engine.handle(BadFrame("bybit", "garbage", SYM, True, 2 * S)) == SYM
    states = dict(((v, s), st) for v, s, st in engine.book_states())
    assert states[("bybit", SYM)] == "INVALID"
    assert states[("bybit", "ETH/USDT:USDT")] == "VALID"
    assert engine.bad_frames == 1
    # Garbage that touched no book is only counted.
    assert engine.handle(BadFrame("bybit", "not JSON", None, False, 3 * S)) is None
    assert engine.bad_frames == 2


def test_trades_feed_tfi_and_unknown_symbols_are_ignored() -> None:
    engine, out = make()
    engine.handle(snapshot(10, 1 * S))
    engine.handle(Trade("bybit", SYM, 100.1, 3.0, 1, "t1", False, 2 * S, 2 * S))
    engine.handle(Trade("bybit", SYM, 100.0, 1.0, -1, "t2", False, 2 * S, 2 * S))
    engine.handle(Trade("bybit", "XRP/USDT:USDT", 1.0, 1.0, 1, "t3", False, 2 * S, 2 * S))
    engine.handle(delta(11, 3 * S, asks=[(100.1, 2.0)]))
    assert out.books()[-1]["tfi_10s"] == 0.5  # (3 - 1) / (3 + 1)


def test_min_interval_throttles_book_payloads_only() -> None:
    out = Recorder()
    engine = Engine(out, min_interval_ms=1000)
    engine.add_instrument(linear_instrument())
    engine.handle(snapshot(10, 1 * S))
    for i in range(5):
        engine.handle(delta(11 + i, 1 * S + i, bids=[(99.0, float(i + 1))]))
    engine.handle(OpenInterest("bybit", SYM, 1.0, 2 * S, 1 * S + 10))
    assert len(out.books()) == 1
    assert any(p.get("trigger") == "open_interest" for _, p in out.messages)
    assert engine.state("bybit", SYM).throttled == 5


def test_long_short_ratio_publishes_bounded_skew() -> None:
    from flowgauge.types import LongShortRatio

    engine, out = make()
    engine.handle(LongShortRatio("bybit", SYM, "accounts", 3.0, 1 * S, 1 * S))
    engine.handle(LongShortRatio("bybit", SYM, "top_positions", 0.25, 2 * S, 2 * S))
    payload = out.messages[-1][1]
    assert payload["trigger"] == "long_short"
    assert payload["ls_skew_accounts"] == 0.5  # (3 - 1) / (3 + 1): 75% long, 25% short
    assert payload["ls_skew_top_positions"] == -0.6  # (0.25 - 1) / (0.25 + 1)


def test_sampled_liquidation_venue_is_flagged() -> None:
    from flowgauge.types import Liquidation

    out = Recorder()
    engine = Engine(out, clock=lambda: 1)
    import msgspec

    binance = msgspec.structs.replace(linear_instrument(), venue="binanceusdm")
    engine.add_instrument(binance)
    engine.add_instrument(linear_instrument())
    engine.handle(Liquidation("binanceusdm", SYM, "long", 100.0, 1.0, 1 * S, 1 * S))
    engine.handle(Liquidation("bybit", SYM, "long", 100.0, 1.0, 1 * S, 1 * S))
    binance_payload, bybit_payload = (p for _, p in out.messages if p.get("trigger") == "liquidation")
    assert "SAMPLED_INPUT" in binance_payload["quality"]
    assert "SAMPLED_INPUT" not in bybit_payload["quality"]


def test_a_payload_json_cannot_carry_is_dropped_and_counted_not_raised() -> None:
    # A venue timestamp beyond 64 bits (ms field of 1e17 -> 1e23 ns) cannot be encoded by orjson.
    engine, out = make()
    engine.handle(snapshot(10, 1 * S))
    before = len(out.messages)
    engine.handle(OpenInterest("bybit", SYM, 1.0, 10**23, 10**23))
    assert len(out.messages) == before
    assert engine.bad_frames == 1
