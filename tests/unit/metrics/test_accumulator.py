"""InstrumentMetrics: the per-instrument accumulator, driven with real L2Book updates and typed events."""

from __future__ import annotations

import math
import random

import pytest

from flowgauge.book.l2 import L2Book
from flowgauge.metrics.accumulator import FIELD_NAMES, QUALITY_FLAGS, InstrumentMetrics
from flowgauge.types import (
    BUY,
    SELL,
    ContractKind,
    FundingRate,
    Instrument,
    InvalidReason,
    Liquidation,
    OpenInterest,
    Trade,
)

S = 1_000_000_000
T0 = 1_786_000_000 * S  # an exchange timestamp in 2026, ns

INSTRUMENT = Instrument(
    venue="bybit",
    symbol="BTC/USDT:USDT",
    venue_id="BTCUSDT",
    category="linear",
    kind=ContractKind.LINEAR,
    contract_size=1.0,
    tick_size=0.1,
    base="BTC",
    quote="USDT",
    settle="USDT",
    derivative=True,
)

BOOK_KEYS = (
    "bid_px", "bid_sz", "ask_px", "ask_sz", "mid", "spread_bps", "wmid",
    "depth_imb_1", "depth_imb_5", "depth_imb_10", "depth_imb_20",
    "depth_bid_10bps", "depth_ask_10bps", "depth_bid_25bps", "depth_ask_25bps", "ofi",
)  # fmt: skip

# metrics.md §1.5 as book deltas on top of S0 (bid 100.0x5, ask 100.1x3)
VECTOR_DELTAS: list[tuple[list[tuple[float, float]], list[tuple[float, float]], float]] = [
    ([(100.0, 7.0)], [], 2.0),
    ([], [(100.1, 1.0)], 2.0),
    ([], [(100.1, 0.0), (100.2, 4.0)], 1.0),
    ([(100.1, 2.0)], [], 2.0),
    ([(100.1, 0.0)], [], -2.0),
    ([], [(100.1, 5.0)], -5.0),
]


def trade(ts: int, side: int, size: float, forced: bool = False, price: float = 100.0) -> Trade:
    return Trade(
        venue="bybit",
        symbol=INSTRUMENT.symbol,
        price=price,
        size=size,
        side=side,
        trade_id=str(ts),
        forced=forced,
        ts_exchange=ts,
        ts_recv=ts + 1,
    )


def open_interest(ts: int, value: float) -> OpenInterest:
    return OpenInterest(venue="bybit", symbol=INSTRUMENT.symbol, open_interest=value, ts_exchange=ts, ts_recv=ts)


def funding(ts: int, **kw: float | None) -> FundingRate:
    fields: dict[str, float | None] = {
        "rate": None,
        "interval_hours": None,
        "mark_price": None,
        "index_price": None,
    }
    fields.update(kw)
    return FundingRate(
        venue="bybit",
        symbol=INSTRUMENT.symbol,
        next_funding_ts=None,
        ts_exchange=ts,
        ts_recv=ts,
        **fields,
    )


def start_book(m: InstrumentMetrics, ts: int) -> L2Book:
    book = L2Book()
    # the far levels (99.0, 101.2) reach past the 25 bps band, so a full book is not PARTIAL_WINDOW
    book.load(
        [(100.0, 5.0), (99.9, 1.0), (99.0, 1.0)],
        [(100.1, 3.0), (100.3, 2.0), (101.2, 1.0)],
        seq=1,
        ts_exchange=ts,
    )
    m.on_book(book, ts)
    return book


def test_keys_are_exactly_the_published_set() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    out = m.fields(None, T0, "trade")
    assert tuple(out) == FIELD_NAMES
    book = start_book(m, T0)
    out = m.fields(book, T0, "book")
    assert tuple(out) == FIELD_NAMES
    assert set(out["quality"]) <= QUALITY_FLAGS  # type: ignore[arg-type]


def test_vector_through_the_accumulator() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    first = m.fields(book, T0, "book")
    assert first["ofi"] is None  # first state after start: stored as n-1, no e_n
    assert first["ofi_raw_10s"] == 0.0  # a book event has been seen: windows exist, and are empty
    seen = []
    running = []
    for i, (bids, asks, expected) in enumerate(VECTOR_DELTAS, start=1):
        ts = T0 + i * 100_000_000
        book.apply(bids, asks, seq=i + 1, ts_exchange=ts)
        m.on_book(book, ts)
        out = m.fields(book, ts, "book")
        seen.append(out["ofi"])
        running.append(out["ofi_raw_10s"])
        assert out["ofi"] == expected
    assert running == [2.0, 4.0, 5.0, 7.0, 5.0, 0.0]  # additivity: each window total is the sum so far
    end = T0 + len(VECTOR_DELTAS) * 100_000_000
    out = m.fields(book, end, "book")
    assert out["ofi_raw_1s"] == out["ofi_raw_60s"] == 0.0
    assert m.book_events == 6
    # additivity across the 1 s window: at T0 + 1.25 s the first two events (0.1 s, 0.2 s) have left it
    late = m.fields(book, T0 + 1_250_000_000, "timer")
    assert late["ofi_raw_1s"] == 0.0 - 2.0 - 2.0
    assert late["ofi"] is None  # not a book trigger


def test_ofi_only_for_book_triggers() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    book.apply([(100.0, 8.0)], [], seq=2, ts_exchange=T0 + 1)
    m.on_book(book, T0 + 1)
    assert m.fields(book, T0 + 1, "book")["ofi"] == 3.0
    assert m.fields(book, T0 + 1, "trade")["ofi"] is None


def test_flow_windows_none_before_first_book_event() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    m.on_trade(trade(T0, BUY, 1.0))
    out = m.fields(None, T0, "trade")
    for key in ("ofi_raw_1s", "ofi_raw_10s", "ofi_raw_60s", "ofi_ew_10s"):
        assert out[key] is None
    assert out["tfi_10s"] == 1.0
    assert "WARMUP" in out["quality"]  # type: ignore[operator]


def test_first_state_after_gap_has_no_ofi_and_carries_gap_flag() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    book.apply([(100.0, 9.0)], [], seq=2, ts_exchange=T0 + S)
    m.on_book(book, T0 + S)  # e = +4
    m.on_book_invalid(T0 + 2 * S, InvalidReason.GAP)

    during = m.fields(None, T0 + 3 * S, "trade")
    for key in BOOK_KEYS:
        assert during[key] is None, key
    assert "GAP" in during["quality"]  # type: ignore[operator]
    assert during["ofi_raw_10s"] == 4.0  # flow before the gap is real flow, published with the flag

    resync = T0 + 5 * S
    book.load([(101.0, 1.0), (100.0, 1.0)], [(101.1, 1.0), (102.0, 1.0)], seq=100, ts_exchange=resync)
    m.on_book(book, resync)
    out = m.fields(book, resync, "book")
    assert out["ofi"] is None  # the transition across the gap is not an event
    assert out["ofi_raw_10s"] == 4.0  # and contributes nothing
    # the windows reach back before the resync: partial, as every flow window in its first T seconds
    assert out["quality"] == ["GAP", "PARTIAL_WINDOW", "WARMUP"]
    assert out["coverage"] == {"ofi_raw_1s": "PARTIAL", "ofi_raw_10s": "PARTIAL", "ofi_raw_60s": "PARTIAL"}

    book.apply([], [(101.1, 0.5)], seq=101, ts_exchange=resync + 1)
    m.on_book(book, resync + 1)
    assert m.fields(book, resync + 1, "book")["ofi"] == 0.5

    # the 60 s window overlaps (gap start, resync] until 60 s after the resync
    assert "GAP" in m.fields(book, resync + 60 * S - 1, "timer")["quality"]  # type: ignore[operator]
    assert m.fields(book, resync + 60 * S, "timer")["quality"] == []


@pytest.mark.parametrize("reason", [r for r in InvalidReason if r is not InvalidReason.GAP])
def test_other_invalid_reasons_flag_reset(reason: InvalidReason) -> None:
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    m.on_book_invalid(T0 + S, reason)
    m.on_book(book, T0 + 2 * S)
    out = m.fields(book, T0 + 2 * S, "book")
    assert out["ofi"] is None
    assert "RESET" in out["quality"]  # type: ignore[operator]
    assert "GAP" not in out["quality"]  # type: ignore[operator]


def test_warmup_restarts_after_resync() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    assert "WARMUP" in m.fields(book, T0 + 59 * S, "timer")["quality"]  # type: ignore[operator]
    assert "WARMUP" not in m.fields(book, T0 + 60 * S, "timer")["quality"]  # type: ignore[operator]
    m.on_book_invalid(T0 + 61 * S, InvalidReason.RESET)
    m.on_book(book, T0 + 62 * S)
    assert "WARMUP" in m.fields(book, T0 + 62 * S, "book")["quality"]  # type: ignore[operator]
    assert m.fields(book, T0 + 122 * S, "timer")["quality"] == []


def test_book_none_gives_none_book_metrics_but_keeps_other_families() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    start_book(m, T0)
    m.on_funding(funding(T0, rate=0.0001, interval_hours=8.0, mark_price=100.0, index_price=99.9))
    m.on_open_interest(open_interest(T0, 1000.0))
    m.on_book_invalid(T0 + 1, InvalidReason.STALE)
    out = m.fields(None, T0 + 2, "funding")
    for key in BOOK_KEYS:
        assert out[key] is None, key
    assert out["premium_bps_live"] is None  # needs the book's mid
    assert out["funding_rate_8h"] == pytest.approx(0.0001, abs=1e-18)
    assert out["oi"] == 1000.0
    assert out["oi_notional"] == 100_000.0
    assert out["mark_price"] == 100.0


def test_book_fields_and_empty_side_flag() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    out = m.fields(book, T0, "book")
    assert (out["bid_px"], out["bid_sz"], out["ask_px"], out["ask_sz"]) == (100.0, 5.0, 100.1, 3.0)
    assert out["mid"] == pytest.approx(100.05, abs=1e-12)
    assert out["depth_imb_1"] == pytest.approx(2.0 / 8.0, abs=1e-15)
    assert out["depth_imb_5"] == pytest.approx(1.0 / 13.0, abs=1e-15)
    assert out["depth_bid_10bps"] == pytest.approx(500.0, abs=1e-9)
    assert out["depth_ask_10bps"] == pytest.approx(300.3, abs=1e-9)
    assert out["depth_bid_25bps"] == pytest.approx(500.0 + 99.9, abs=1e-9)
    assert out["depth_ask_25bps"] == pytest.approx(300.3 + 200.6, abs=1e-9)
    assert out["quality"] == ["PARTIAL_WINDOW", "WARMUP"]  # the OFI windows' first seconds
    assert out["coverage"] == {"ofi_raw_1s": "PARTIAL", "ofi_raw_10s": "PARTIAL", "ofi_raw_60s": "PARTIAL"}

    book.apply([(99.0, 0.0)], [], seq=2, ts_exchange=T0)  # now the bids stop inside the 25 bps band
    out = m.fields(book, T0 + 60 * S, "book")
    assert "PARTIAL_WINDOW" in out["quality"]  # type: ignore[operator]
    assert out["coverage"] == {"depth_bid_25bps": "EXHAUSTED"}  # that band and side only

    book.apply([], [(100.1, 0.0), (100.3, 0.0), (101.2, 0.0)], seq=3, ts_exchange=T0 + 1)
    m.on_book(book, T0 + 1)
    out = m.fields(book, T0 + 1, "book")
    assert out["ofi"] == 3.0  # ask disappeared: +q_ask of the previous state
    assert out["ask_px"] is None and out["mid"] is None and out["spread_bps"] is None
    assert out["depth_imb_1"] == 1.0
    assert out["depth_bid_10bps"] is None  # no mid, no band
    assert "EMPTY_SIDE" in out["quality"]  # type: ignore[operator]


def test_trades_forced_excluded_from_tfi_included_in_oi_volume() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    m.on_open_interest(open_interest(T0, 1000.0))
    m.on_trade(trade(T0 + S, BUY, 3.0))
    m.on_trade(trade(T0 + 2 * S, SELL, 1.0))
    m.on_trade(trade(T0 + 3 * S, SELL, 4.0, forced=True))
    m.on_open_interest(open_interest(T0 + 4 * S, 1004.0))
    out = m.fields(None, T0 + 4 * S, "open_interest")
    assert out["tfi_10s"] == 0.5
    assert out["tfi_60s"] == 0.5
    assert out["oi_open_ratio_5m"] == pytest.approx(4.0 / 8.0, abs=1e-15)
    assert out["oi_chg_pct_5m"] is None  # no observation at or before t - 5 min
    assert "PARTIAL_WINDOW" in out["quality"]  # type: ignore[operator]
    assert out["coverage"]["oi_open_ratio_5m"] == "PARTIAL"  # type: ignore[index]
    assert out["oi_notional"] is None  # no mark price yet
    later = m.fields(None, T0 + 12 * S, "timer")
    assert later["tfi_10s"] is None
    assert later["tfi_60s"] == 0.5


def test_oi_inconsistent_flag() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    m.on_open_interest(open_interest(T0, 1000.0))
    m.on_open_interest(open_interest(T0 + S, 1010.0))
    out = m.fields(None, T0 + S, "open_interest")
    assert out["oi_open_ratio_5m"] is None
    assert "OI_INCONSISTENT" in out["quality"]  # type: ignore[operator]


def test_premium_from_book_mid() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    m.on_funding(funding(T0, index_price=100.0))
    out = m.fields(book, T0, "funding")
    assert out["premium_bps_live"] == pytest.approx(5.0, abs=1e-9)  # mid 100.05
    assert out["funding_rate_8h"] is None  # no rate known yet


def test_windows_are_evaluated_at_the_payload_time_not_the_latest_time_seen() -> None:
    """Issue 8 item 4: a message from a stream that runs ahead neither slides the windows of an older payload
    nor enters them; it counts from the first payload at or after its own time."""
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    book.apply([(100.0, 6.0)], [], seq=2, ts_exchange=T0 + S)
    m.on_book(book, T0 + S)  # e = +1 at 1 s
    m.on_trade(trade(T0 + 3 * S, BUY, 1.0))  # the trade stream is 2 s ahead
    m.on_open_interest(open_interest(T0 + 3 * S, 1000.0))
    out = m.fields(book, T0 + S, "book")  # the payload of the 1 s book state
    assert out["ofi"] == 1.0
    assert out["ofi_raw_1s"] == 1.0  # its own event is in its own 1 s window
    assert out["ofi_ew_10s"] == 1.0  # not decayed toward a later time
    assert out["tfi_10s"] is None  # the 3 s trade is newer than this book state
    later = m.fields(book, T0 + 3 * S, "open_interest")
    assert later["tfi_10s"] == 1.0  # the trade counts from a payload at its time
    assert later["ofi_raw_1s"] == 0.0 and later["ofi_raw_10s"] == 1.0
    assert later["ofi_ew_10s"] == pytest.approx(math.exp(-0.2), abs=1e-15)


def test_exchange_time_stepping_back_within_one_stream() -> None:
    """The documented rule: each event counts at its own time, each payload is evaluated at its own time, so
    a book message whose time steps back does not see a same-stream event stamped after it (held back until
    a payload reaches that time), while its own event counts."""
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    book.apply([(100.0, 7.0)], [], seq=2, ts_exchange=T0 + 2 * S)
    m.on_book(book, T0 + 2 * S)  # +2 at 2 s
    book.apply([(100.0, 10.0)], [], seq=3, ts_exchange=T0 + 2 * S - 300_000_000)
    m.on_book(book, T0 + 2 * S - 300_000_000)  # +3 stamped 0.3 s earlier
    out = m.fields(book, T0 + 2 * S - 300_000_000, "book")
    assert (out["ofi"], out["ofi_raw_1s"]) == (3.0, 3.0)
    assert m.fields(book, T0 + 2 * S, "timer")["ofi_raw_1s"] == 5.0


def test_warmup_and_gap_flags_are_anchored_on_the_payload_time() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    m.on_trade(trade(T0 + 30 * S, BUY, 1.0))  # a stream far ahead of the first book state
    book = start_book(m, T0)
    # warm-up counts from the first book state's own time, not from the newest time seen
    assert "WARMUP" in m.fields(book, T0 + 59 * S, "timer")["quality"]  # type: ignore[operator]
    assert "WARMUP" not in m.fields(book, T0 + 60 * S, "timer")["quality"]  # type: ignore[operator]


def test_ofi_raw_matches_brute_force_and_ew_matches_definition() -> None:
    rng = random.Random(21)
    m = InstrumentMetrics(INSTRUMENT)
    book = start_book(m, T0)
    events: list[tuple[int, float]] = []
    ts = T0
    for i in range(600):
        ts += rng.randint(1_000_000, 80_000_000)
        price = 100.0 if rng.random() < 0.7 else 99.9
        book.apply(
            [(price, rng.choice([0.0, 0.5, 1.5, 3.25]))],
            [(100.1, rng.choice([1.0, 2.0, 0.125]))],
            seq=i + 2,
            ts_exchange=ts,
        )
        if book.bids.best() is None:
            book.apply([(99.5, 1.0)], [], seq=i + 2, ts_exchange=ts)
        m.on_book(book, ts)
        e = m.fields(book, ts, "book")["ofi"]
        assert isinstance(e, float)
        events.append((ts, e))
    out = m.fields(book, ts, "book")
    for key, h in (("ofi_raw_1s", S), ("ofi_raw_10s", 10 * S), ("ofi_raw_60s", 60 * S)):
        assert out[key] == math.fsum(e for t, e in events if ts - h < t <= ts)
    ew = math.fsum(e * math.exp(-(ts - t) / (10 * S)) for t, e in events)
    assert out["ofi_ew_10s"] == pytest.approx(ew, abs=1e-9)


def _feed_random_session(seed: int) -> list[dict[str, object]]:
    """A deterministic pseudo-random session of every event kind, including an invalid period."""
    rng = random.Random(seed)
    m = InstrumentMetrics(INSTRUMENT)
    book = L2Book()
    book.load(
        [(100.0 - 0.1 * k, 1.0 + k) for k in range(25)],
        [(100.1 + 0.1 * k, 1.5 + k) for k in range(25)],
        seq=1,
        ts_exchange=T0,
    )
    valid = True
    m.on_book(book, T0)
    outputs: list[dict[str, object]] = []
    ts = T0
    for i in range(1500):
        ts += rng.randint(0, 150_000_000)
        kind = rng.random()
        if kind < 0.6 and valid:
            side = rng.random() < 0.5
            px = round((100.0 if side else 100.1) + rng.choice([-1, 1]) * rng.randint(0, 5) * 0.1, 1)
            if (side and px >= 100.1) or (not side and px <= 100.0):
                continue  # keep the book uncrossed
            level = [(px, rng.choice([0.0, 0.3, 1.7, 4.0]))]
            book.apply(level if side else [], [] if side else level, seq=i + 2, ts_exchange=ts)
            if book.is_crossed() or book.bids.best() is None or book.asks.best() is None:
                m.on_book_invalid(ts, InvalidReason.CROSSED)
                valid = False
                outputs.append(m.fields(None, ts, "status"))
                continue
            m.on_book(book, ts)
            outputs.append(m.fields(book, ts, "book"))
        elif kind < 0.6:
            book.load(
                [(100.0 - 0.1 * k, 1.0 + k) for k in range(25)],
                [(100.1 + 0.1 * k, 1.5 + k) for k in range(25)],
                seq=i + 2,
                ts_exchange=ts,
            )
            valid = True
            m.on_book(book, ts)
            outputs.append(m.fields(book, ts, "book"))
        elif kind < 0.85:
            m.on_trade(
                trade(
                    ts - rng.randint(0, 5_000_000),
                    rng.choice([BUY, SELL]),
                    rng.choice([0.01, 0.5, 2.0]),
                    forced=rng.random() < 0.05,
                )
            )
            outputs.append(m.fields(book if valid else None, ts, "trade"))
        elif kind < 0.93:
            m.on_open_interest(open_interest(ts, 1000.0 + rng.randint(-50, 50) * 0.1))
            outputs.append(m.fields(book if valid else None, ts, "open_interest"))
        elif kind < 0.98:
            m.on_funding(
                funding(ts, rate=0.0001, interval_hours=8.0, mark_price=100.05 + rng.random(), index_price=100.0)
            )
            outputs.append(m.fields(book if valid else None, ts, "funding"))
        else:
            m.on_liquidation(
                Liquidation(
                    venue="bybit",
                    symbol=INSTRUMENT.symbol,
                    liquidated_side="long",
                    price=99.0,
                    size=1.0,
                    ts_exchange=ts,
                    ts_recv=ts,
                )
            )
            if rng.random() < 0.5 and valid:
                m.on_book_invalid(ts, rng.choice([InvalidReason.GAP, InvalidReason.RESET]))
                valid = False
                outputs.append(m.fields(None, ts, "status"))
    return outputs


def test_determinism_same_input_gives_identical_output() -> None:
    first = _feed_random_session(99)
    second = _feed_random_session(99)
    assert len(first) > 1000
    assert first == second
    # the session really covered the interesting cases
    flags = {flag for out in first for flag in out["quality"]}  # type: ignore[attr-defined]
    assert {"GAP", "RESET", "WARMUP"} <= flags
    assert any(out["ofi"] not in (None, 0.0) for out in first)
    assert any(out["oi_open_ratio_5m"] is not None for out in first)


def test_all_numbers_are_plain_python_floats() -> None:
    for out in _feed_random_session(5):
        for key, value in out.items():
            if key == "quality":
                assert isinstance(value, list) and all(type(f) is str for f in value)
                assert value == sorted(value)
            elif key == "coverage":
                assert isinstance(value, dict)
                assert all(out[k] is not None and v in ("PARTIAL", "EXHAUSTED") for k, v in value.items())
            else:
                assert value is None or type(value) is float, (key, value, type(value))


def test_liquidations_are_counted() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    liq = Liquidation(
        venue="bybit",
        symbol=INSTRUMENT.symbol,
        liquidated_side="short",
        price=101.0,
        size=2.0,
        ts_exchange=T0,
        ts_recv=T0,
    )
    m.on_liquidation(liq)
    assert m.last_liquidation is liq
    assert (m.liq_count_short, m.liq_size_short, m.liq_count_long) == (1, 2.0, 0)


def test_flow_windows_are_partial_for_their_first_t_seconds() -> None:
    """Issue 11 item 2: PARTIAL_WINDOW on every window not fully covered, per field in `coverage`."""
    m = InstrumentMetrics(INSTRUMENT)
    m.on_trade(trade(T0, BUY, 1.0))
    book = start_book(m, T0)
    cov = m.fields(book, T0 + S // 2, "book")["coverage"]
    assert cov == {k: "PARTIAL" for k in ("ofi_raw_1s", "ofi_raw_10s", "ofi_raw_60s", "tfi_10s", "tfi_60s")}
    cov = m.fields(book, T0 + 5 * S, "book")["coverage"]
    assert cov == {k: "PARTIAL" for k in ("ofi_raw_10s", "ofi_raw_60s", "tfi_10s", "tfi_60s")}
    cov = m.fields(book, T0 + 10 * S, "book")["coverage"]
    # tfi_10s is null (no trade in its window): no entry
    assert cov == {"ofi_raw_60s": "PARTIAL", "tfi_60s": "PARTIAL"}
    m.on_trade(trade(T0 + 30 * S, SELL, 1.0))
    cov = m.fields(book, T0 + 30 * S, "book")["coverage"]
    assert cov == {"ofi_raw_60s": "PARTIAL", "tfi_60s": "PARTIAL"}
    out = m.fields(book, T0 + 60 * S, "book")
    assert out["coverage"] == {}
    assert "PARTIAL_WINDOW" not in out["quality"]  # type: ignore[operator]


def test_open_ratio_is_null_without_trades_and_change_needs_a_full_window() -> None:
    m = InstrumentMetrics(INSTRUMENT)
    m.on_open_interest(open_interest(T0, 1000.0))
    m.on_open_interest(open_interest(T0 + 300 * S, 1000.0))
    out = m.fields(None, T0 + 300 * S, "open_interest")
    assert out["oi_open_ratio_5m"] is None  # 0/0 without trades is unknown, not 0.0
    assert out["oi_chg_pct_5m"] == 0.0
    assert "OI_INCONSISTENT" not in out["quality"]  # type: ignore[operator]
