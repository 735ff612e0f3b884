"""Engine: events in, payloads out; invalid books publish status and null book metrics, never wrong ones."""

from __future__ import annotations

import math

import orjson
import pytest
from tests.conftest import linear_instrument

from flowgauge import core
from flowgauge.book.sequencing import binance_futures
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


# -- windows anchored on each payload's own exchange time (issue 8 item 4) ---------------------------------
# Hand-built interleavings of book deltas and trades whose exchange times cross, through the real engine.
# Both cores (an unbuilt compiled core fails these tests, it does not skip them).
WINDOW_CORES = list(core.CORES)


def make_with(core_name: str) -> tuple[Engine, Recorder]:
    out = Recorder()
    engine = Engine(out, clock=lambda: 42, core_name=core_name)
    engine.add_instrument(linear_instrument())
    return engine, out


def trade_at(t: int, side: int, size: float) -> Trade:
    return Trade("bybit", SYM, 100.0, size, side, f"t{t}", False, t, t)


@pytest.mark.parametrize("core_name", WINDOW_CORES)
def test_book_payload_counts_its_own_event_when_trades_run_ahead(core_name: str) -> None:
    """The Bybit DOGEUSDT shape (book_seq 13178260: `ofi` 42 but `ofi_raw_1s` 0): the trade stream was more
    than 1 s ahead of the book stream, and the 1 s window was evaluated at the trade's time."""
    engine, out = make_with(core_name)
    engine.handle(snapshot(10, 100 * S))
    engine.handle(delta(11, 101 * S, bids=[(100.0, 7.0)]))  # +2
    engine.handle(trade_at(103 * S + S // 10, 1, 5.0))  # trades 1.1 s ahead of the next book message
    engine.handle(delta(12, 102 * S, bids=[(100.0, 49.0)]))  # +42
    payload = out.books()[-1]
    assert payload["ts_exchange"] == 102 * S
    assert payload["ofi"] == 42.0
    assert payload["ofi_raw_1s"] == 42.0  # (101 s, 102 s]: its own event in, the one at 101 s out
    assert payload["ofi_raw_10s"] == 44.0
    assert payload["ofi_ew_10s"] == pytest.approx(2.0 * math.exp(-0.1) + 42.0, abs=1e-12)  # not valued ahead
    assert payload["tfi_10s"] is None  # the trade is newer than this book state
    # the trade counts from the first payload at or after its time
    engine.handle(delta(13, 103 * S + S // 5, asks=[(100.1, 2.0)]))  # +1
    payload = out.books()[-1]
    assert payload["tfi_10s"] == 1.0
    assert payload["ofi_raw_1s"] == 0.0 + 1.0  # (102.2 s, 103.2 s]


@pytest.mark.parametrize("core_name", WINDOW_CORES)
def test_one_second_window_keeps_events_a_later_stream_would_push_out(core_name: str) -> None:
    """The Binance BTCUSDT shape (book_seq 5123127144087: -0.026 published, 1.509 per the spec): a window
    anchored at a later trade's time dropped book events still inside the payload's own 1 s window."""
    engine, out = make_with(core_name)
    engine.handle(snapshot(10, 100 * S))
    engine.handle(delta(11, 101 * S, bids=[(100.0, 6.5)]))  # +1.5 at 101.0 s
    engine.handle(delta(12, 101 * S + 600_000_000, bids=[(100.0, 6.509)]))  # +0.009 at 101.6 s
    engine.handle(trade_at(102 * S + 300_000_000, -1, 1.0))  # trades 0.4 s ahead
    engine.handle(delta(13, 101 * S + 900_000_000, asks=[(100.1, 3.0)]))  # 0 at 101.9 s: no change at the top
    payload = out.books()[-1]
    assert payload["ofi_raw_1s"] == math.fsum([1.5, 6.509 - 6.5])  # (100.9 s, 101.9 s] holds both
    assert payload["tfi_10s"] is None


@pytest.mark.parametrize("core_name", WINDOW_CORES)
def test_payloads_of_every_trigger_use_their_own_time(core_name: str) -> None:
    engine, out = make_with(core_name)
    engine.handle(snapshot(10, 100 * S))
    engine.handle(delta(11, 101 * S, bids=[(100.0, 8.0)]))  # +3
    engine.handle(trade_at(101 * S, 1, 2.0))
    engine.handle(delta(12, 103 * S, bids=[(100.0, 9.0)]))  # +1, the book stream now ahead
    engine.handle(trade_at(102 * S + S // 2, -1, 1.0))
    engine.handle(OpenInterest("bybit", SYM, 10.0, 101 * S + S // 2, 104 * S))  # a slow OI poll
    oi_payload = out.messages[-1][1]
    assert oi_payload["trigger"] == "open_interest" and oi_payload["ts_exchange"] == 101 * S + S // 2
    assert oi_payload["ofi_raw_1s"] == 3.0  # (100.5 s, 101.5 s]: the 103 s event is held back
    assert oi_payload["tfi_10s"] == 1.0  # only the 101 s buy; the 102.5 s sell is later


def test_payload_after_a_rest_snapshot_catches_up_carries_the_last_diffs_time() -> None:
    """A REST-snapshot venue buffers diffs until the snapshot arrives, then applies those that follow it:
    the book state published is the last diff's, and so is its time."""
    out = Recorder()
    engine = Engine(out, clock=lambda: 42, core_name=core.PYTHON)
    engine.add_instrument(linear_instrument(), binance_futures, buffer_deltas=True)
    for seq, t in ((105, 5 * S), (108, 6 * S), (111, 7 * S)):
        engine.handle(BookDelta("bybit", SYM, ((100.0, float(seq)),), (), seq, seq - 3, t, t, seq - 2))
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 106, 4 * S, 9 * S))
    payload = out.books()[-1]
    assert payload["book_seq"] == 111 and payload["bid_sz"] == 111.0
    assert payload["ts_exchange"] == 7 * S  # not the snapshot's 4 s


# -- backlog conflation (issue 8 item 6) --------------------------------------------------------------------


class ShedCounter(Recorder):
    """A sink that is also the engine's telemetry hooks, counting shed payloads per venue."""

    def __init__(self) -> None:
        super().__init__()
        self.shed: dict[str, int] = {}

    def resync(self, venue: str, symbol: str, reason: str) -> None:
        pass

    def bad_frame(self, venue: str) -> None:
        pass

    def published(self, venue: str, ts_exchange: int, ts_recv: int, ts_publish: int) -> None:
        pass

    def conflated(self, venue: str, shed: int) -> None:
        self.shed[venue] = self.shed.get(venue, 0) + shed


def comparable(payload: dict) -> dict:
    """A payload without what conflation legitimately changes: its publish counter, time, the flag, and `ofi_l1`
    (the L1 flow since the previous published payload: a conflated payload's covers the ones it replaced)."""
    out = {k: v for k, v in payload.items() if k not in ("seq", "ts_publish", "ofi_l1")}
    out["quality"] = [f for f in payload["quality"] if f != "CONFLATED"]
    return out


def burst(n: int, start_seq: int, t0: int) -> list[object]:
    """`n` book deltas and a trade stamped after them (held back from their windows), as one backlog."""
    events: list[object] = [
        delta(start_seq + i, t0 + i * 1_000_000, bids=[(100.0, 5.0 + i)], asks=[(100.1, 3.0 + (i % 2))])
        for i in range(n)
    ]
    events.insert(n // 2, trade_at(t0 + n * 1_000_000, 1, 0.5))
    return events


@pytest.mark.parametrize("core_name", core.CORES)
def test_conflated_turn_publishes_the_last_state_once_and_equal_to_the_unconflated_payload(core_name: str) -> None:
    if core_name == core.COMPILED and core.fallback_reason() is not None:
        pytest.fail(f"the compiled core must be built here: {core.fallback_reason()}")
    plain_out, conflated_out = Recorder(), ShedCounter()
    plain = Engine(plain_out, clock=lambda: 42, core_name=core_name)
    conflating = Engine(conflated_out, clock=lambda: 42, core_name=core_name, hooks=conflated_out)
    for engine in (plain, conflating):
        engine.add_instrument(linear_instrument())
        engine.handle(snapshot(10, 100 * S))
    events = burst(8, 11, 101 * S)
    plain.handle_all(events)
    conflating.conflate = True
    conflating.handle_all(events)
    conflating.conflate = False
    assert len(conflated_out.books()) == 1  # the snapshot's payload; the turn's payload waits for its end
    conflating.flush_conflated()
    last = conflated_out.books()[-1]
    assert last["quality"].count("CONFLATED") == 1
    assert last["book_state"] == "VALID" and last["book_seq"] == 18
    assert comparable(last) == comparable(plain_out.books()[-1])
    # No L1 flow is lost to shedding: the conflated payload's ofi_l1 is the sum of the unconflated ones'.
    assert last["ofi_l1"] == math.fsum(p["ofi_l1"] for p in plain_out.books()[1:]) != 0.0
    assert conflating.conflated == 7 and conflated_out.shed == {"bybit": 7}
    assert len(plain_out.books()) == 1 + 8


def test_a_deferred_payload_is_published_before_anything_that_would_change_it() -> None:
    out = ShedCounter()
    engine = Engine(out, clock=lambda: 42, core_name=core.PYTHON, hooks=out)
    engine.add_instrument(linear_instrument())
    engine.handle(snapshot(10, 100 * S))
    engine.conflate = True
    engine.handle(delta(11, 101 * S, bids=[(100.0, 6.0)]))
    engine.handle(delta(12, 102 * S, bids=[(100.0, 7.0)]))
    # a trade at or before the deferred state's time would enter its tfi window: the payload goes out first
    engine.handle(trade_at(102 * S, -1, 1.0))
    first = out.books()[-1]
    assert first["book_seq"] == 12 and "CONFLATED" in first["quality"] and first["tfi_10s"] is None
    # an OI observation publishes its own payload, after the deferred book payload
    engine.handle(delta(13, 103 * S, bids=[(100.0, 8.0)]))
    engine.handle(OpenInterest("bybit", SYM, 5.0, 103 * S, 103 * S))
    book, oi = out.messages[-2][1], out.messages[-1][1]
    assert (book["book_seq"], "CONFLATED" in book["quality"]) == (13, False)  # alone in its turn: not merged
    assert oi["trigger"] == "open_interest" and oi["seq"] == book["seq"] + 1
    # a gap while deferred: the deferred state is gone with the book; shed and counted, the status says why
    engine.handle(delta(14, 104 * S, bids=[(100.0, 9.0)]))
    before = len(out.books())
    assert engine.handle(delta(20, 105 * S, bids=[(100.0, 1.0)])) == SYM
    engine.flush_conflated()
    assert len(out.books()) == before
    assert out.statuses()[-1]["reason"] == "GAP"
    assert out.shed == {"bybit": 1 + 1}


def test_a_rest_snapshot_older_than_the_live_book_changes_nothing() -> None:
    """BookSync ignores a REST snapshot behind the live book; the engine must not treat that as a failure
    (it used to reset the flow state, publish a status and ask for a resync, whose snapshot would again lag)."""
    out = Recorder()
    engine = Engine(out, clock=lambda: 42, core_name=core.PYTHON)
    engine.add_instrument(linear_instrument(), binance_futures, buffer_deltas=True)
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 100, 1 * S, 1 * S))
    engine.handle(BookDelta("bybit", SYM, ((100.0, 6.0),), (), 105, 100, 2 * S, 2 * S, 99))
    messages = len(out.messages)
    assert engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 100, 1 * S, 3 * S)) is None
    assert len(out.messages) == messages  # no status, no payload
    assert engine.state("bybit", SYM).sync.stale_snapshots == 1
    engine.handle(BookDelta("bybit", SYM, ((100.0, 8.0),), (), 106, 105, 4 * S, 4 * S, 106))
    assert out.books()[-1]["ofi"] == 2.0  # the flow state n-1 survived: no RESET across the stale snapshot
    assert "RESET" not in out.books()[-1]["quality"]
