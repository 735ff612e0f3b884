"""Cross-venue aggregates (metrics.aggregate): hand-computed values, cadence on exchange time, exclusions.

Payloads here are plain dicts holding only the keys the aggregator reads, as the engine's payloads carry them.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import jsonschema
import pytest

from flowgauge.metrics.aggregate import CrossVenueAggregates, base_of, premium_stats

S = 1_000_000_000
MS = 1_000_000
AGG_SCHEMA = json.loads((resources.files("flowgauge") / "schema" / "agg.v1.json").read_text())

BINANCE = ("binanceusdm", "BTC/USDT:USDT")
BYBIT = ("bybit", "BTC/USDT:USDT")
OKX_INVERSE = ("okx", "BTC/USD:BTC")


def payload(ts: int, mid: float | None, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ts_exchange": ts,
        "book_state": "VALID" if mid is not None else "INVALID",
        "mid": mid,
        "quality": [],
        "oi_notional": None,
        "ofi_raw_1s": None,
        "ofi_raw_10s": None,
        "ofi_raw_60s": None,
        "depth_bid_10bps": None,
        "depth_ask_10bps": None,
        "depth_bid_25bps": None,
        "depth_ask_25bps": None,
    }
    body.update(fields)
    return body


def three_venues() -> CrossVenueAggregates:
    agg = CrossVenueAggregates(interval_ms=1000, stale_s=5.0)
    for venue, symbol in (BINANCE, BYBIT, OKX_INVERSE):
        assert agg.track(venue, symbol, "btc") == "BTC"
    return agg


def test_groups_perpetuals_by_base_whatever_the_margin_and_leaves_dated_futures_out() -> None:
    assert base_of("BTC/USDT:USDT", "BTC") == "BTC"
    assert base_of("BTC/USDC:USDC", "BTC") == "BTC"
    assert base_of("BTC/USD:BTC", "BTC") == "BTC"
    assert base_of("BTC/USD:BTC-250328", "BTC") is None  # dated future: its basis is not a premium
    assert base_of("BTC/USDT", "BTC") is None  # spot


def test_premium_stats_hand_computed() -> None:
    median, premiums, dispersion, spread = premium_stats({"a": 100.0, "b": 101.0, "c": 99.0})
    assert median == 100.0
    assert premiums == pytest.approx({"a": 0.0, "b": 100.0, "c": -100.0})
    assert dispersion == pytest.approx(math.sqrt((0 + 100**2 + 100**2) / 3))  # 81.6497 bps
    assert spread == pytest.approx(200.0)
    # An even count takes the mean of the two middle mids as the median.
    median, premiums, _, _ = premium_stats({"a": 100.0, "b": 102.0})
    assert median == 101.0 and premiums["a"] == pytest.approx(1e4 * (100 / 101 - 1))
    # One venue has nothing to disperse from.
    assert premium_stats({"a": 100.0}) == (100.0, {"a": 0.0}, None, None)
    assert premium_stats({}) == (None, {}, None, None)


def test_aggregate_values_hand_computed() -> None:
    """Timeline (interval 1 s): Binance at 0.2 s, Bybit 0.5 s, OKX 0.7 s, then Binance at 1.3 s makes the
    aggregate at 1.0 s due, from the three payloads before it."""
    agg = three_venues()
    assert not agg.observe(*BINANCE, payload(200 * MS, 100.0, oi_notional=600.0, ofi_raw_1s=0.5, ofi_raw_10s=2.0,
                                             ofi_raw_60s=3.0, depth_bid_10bps=1000.0, depth_ask_10bps=800.0,
                                             depth_bid_25bps=3000.0, depth_ask_25bps=2500.0))
    assert not agg.observe(*BYBIT, payload(500 * MS, 101.0, oi_notional=400.0, ofi_raw_1s=-0.25, ofi_raw_10s=-1.0,
                                           ofi_raw_60s=-1.0, depth_bid_10bps=500.0, depth_ask_10bps=700.0,
                                           depth_bid_25bps=1500.0, depth_ask_25bps=1700.0))
    # OKX reports no OI and no flow yet: it counts for the premium only.
    assert not agg.observe(*OKX_INVERSE, payload(700 * MS, 99.0, depth_bid_10bps=10.0))
    [(base, out)] = agg.observe(*BINANCE, payload(1300 * MS, 100.5))
    assert base == "BTC"
    assert out["ts_exchange"] == 1 * S and out["seq"] == 1 and out["interval_ms"] == 1000
    assert out["venues"] == ["binanceusdm", "bybit", "okx"]
    assert out["instruments"] == ["binanceusdm:BTC/USDT:USDT", "bybit:BTC/USDT:USDT", "okx:BTC/USD:BTC"]
    assert out["excluded"] == []
    assert out["oi_notional"] == 1000.0
    assert out["oi_share"] == pytest.approx({"binanceusdm": 0.6, "bybit": 0.4})
    assert out["ofi_notional_1s"] == pytest.approx(0.5 * 100 - 0.25 * 101)  # 24.75
    assert out["ofi_notional_10s"] == pytest.approx(2.0 * 100 - 1.0 * 101)  # 99
    assert out["ofi_notional_60s"] == pytest.approx(3.0 * 100 - 1.0 * 101)  # 199
    assert (out["depth_bid_10bps"], out["depth_ask_10bps"]) == (1510.0, 1500.0)
    assert (out["depth_bid_25bps"], out["depth_ask_25bps"]) == (4500.0, 4200.0)
    assert out["mid_median"] == 100.0
    assert out["premium_bps"] == pytest.approx(
        {"binanceusdm:BTC/USDT:USDT": 0.0, "bybit:BTC/USDT:USDT": 100.0, "okx:BTC/USD:BTC": -100.0}
    )
    assert out["premium_dispersion_bps"] == pytest.approx(81.64965809277261)
    assert out["premium_range_bps"] == pytest.approx(200.0)
    jsonschema.validate(out, AGG_SCHEMA)
    assert dict(agg.latest()) == {"BTC": out}


def test_stale_invalid_and_skewed_venues_are_excluded_and_listed() -> None:
    agg = three_venues()
    agg.observe(*BINANCE, payload(200 * MS, 100.0))
    agg.observe(*BYBIT, payload(500 * MS, 101.0))
    # OKX's clock is off: its payload is taken in (and excluded) but does not move the group's clock.
    assert not agg.observe(*OKX_INVERSE, payload(900 * S, 99.0, quality=["CLOCK_SKEW"]))
    [(_, first)] = agg.observe(*BINANCE, payload(1200 * MS, 100.0))
    assert first["ts_exchange"] == 1 * S
    assert first["excluded"] == [
        {"venue": "okx", "symbol": "BTC/USD:BTC", "reason": "CLOCK_SKEW", "ts_exchange": 900 * S}
    ]
    agg.invalidate(*BYBIT)
    # 6.1 s: Bybit is INVALID; Binance's latest (1.2 s) is 4.8 s old, within 5 s.
    [(_, second)] = agg.observe(*BINANCE, payload(6100 * MS, 100.0))
    assert second["ts_exchange"] == 6 * S and second["seq"] == 2
    assert second["venues"] == ["binanceusdm"]
    assert [(e["venue"], e["reason"]) for e in second["excluded"]] == [("bybit", "INVALID"), ("okx", "CLOCK_SKEW")]
    assert second["premium_dispersion_bps"] is None and second["premium_range_bps"] is None  # one venue left
    assert second["oi_notional"] is None and second["oi_share"] == {}
    # 12.5 s: Binance's latest (6.1 s) is 5.9 s behind the aggregate at 12 s: STALE.
    [(_, third)] = agg.observe(*BYBIT, payload(12500 * MS, 101.0))
    assert third["venues"] == []
    assert [(e["venue"], e["reason"]) for e in third["excluded"]] == [
        ("binanceusdm", "STALE"), ("bybit", "INVALID"), ("okx", "CLOCK_SKEW")
    ]
    assert third["mid_median"] is None and third["premium_bps"] == {}
    for out in (first, second, third):
        jsonschema.validate(out, AGG_SCHEMA)
    # A VALID payload brings Bybit back.
    [(_, fourth)] = agg.observe(*BYBIT, payload(13100 * MS, 101.0))
    assert fourth["venues"] == ["bybit"]


def test_cadence_is_exchange_time_one_aggregate_per_crossing_and_the_boundary_is_inclusive() -> None:
    agg = CrossVenueAggregates(interval_ms=500, stale_s=60.0)
    agg.track(*BINANCE, "BTC")
    agg.track(*BYBIT, "BTC")
    agg.track("binanceusdm", "BTC/USDT:USDT-251226", "BTC")  # dated: not tracked, its payloads ignored
    assert not agg.observe("binanceusdm", "BTC/USDT:USDT-251226", payload(10 * S, 1.0))
    assert not agg.observe(*BINANCE, payload(100 * MS, 100.0))
    # A payload exactly on the 500 ms multiple belongs to (0, 500 ms]: counted in that aggregate.
    assert not agg.observe(*BYBIT, payload(500 * MS, 102.0))
    # A payload stamped before the group's clock (another venue's stream lagging) publishes nothing.
    assert not agg.observe(*BINANCE, payload(400 * MS, 101.0))
    [(_, at_500)] = agg.observe(*BYBIT, payload(501 * MS, 103.0))
    assert at_500["ts_exchange"] == 500 * MS and at_500["mid_median"] == pytest.approx(101.5)
    # 4 s of silence: one aggregate, at the last multiple before the payload that ends it.
    [(_, later)] = agg.observe(*BINANCE, payload(4700 * MS, 100.0))
    assert later["ts_exchange"] == 4500 * MS and later["seq"] == 2
    assert later["mid_median"] == pytest.approx(102.0)  # Binance 101 (0.4 s), Bybit 103 (0.501 s)


def test_retired_member_leaves_the_group_and_untracked_payloads_are_ignored() -> None:
    agg = three_venues()
    agg.observe(*BINANCE, payload(100 * MS, 100.0))
    agg.observe(*BYBIT, payload(200 * MS, 100.0))
    agg.remove(*OKX_INVERSE)
    assert not agg.observe("deribit", "BTC/USD:BTC", payload(300 * MS, 100.0))  # never tracked
    [(_, out)] = agg.observe(*BINANCE, payload(1100 * MS, 100.0))
    assert out["instruments"] == ["binanceusdm:BTC/USDT:USDT", "bybit:BTC/USDT:USDT"]
    assert out["excluded"] == []


def test_non_finite_and_missing_inputs_count_as_absent() -> None:
    agg = three_venues()
    agg.observe(*BINANCE, payload(100 * MS, 100.0, oi_notional=math.inf, ofi_raw_10s=True))
    [(_, out)] = agg.observe(*BINANCE, payload(1100 * MS, 100.0))
    assert out["oi_notional"] is None and out["ofi_notional_10s"] is None
    assert [(e["venue"], e["reason"]) for e in out["excluded"]] == [("bybit", "NO_DATA"), ("okx", "NO_DATA")]


def test_parameters_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        CrossVenueAggregates(interval_ms=0)
    with pytest.raises(ValueError, match="must be > 0"):
        CrossVenueAggregates(stale_s=-1)


def test_a_group_on_fewer_venues_than_min_venues_publishes_nothing() -> None:
    """Two perpetuals of one venue are not cross-venue: nothing with the default min_venues=2, aggregates with 1."""
    for min_venues, expected in ((2, 0), (1, 1)):
        agg = CrossVenueAggregates(interval_ms=1000, stale_s=5.0, min_venues=min_venues)
        agg.track("bybit", "BTC/USDT:USDT", "BTC")
        agg.track("bybit", "BTC/USD:BTC", "BTC")
        agg.observe("bybit", "BTC/USDT:USDT", payload(100 * MS, 100.0))
        agg.observe("bybit", "BTC/USD:BTC", payload(200 * MS, 100.0))
        assert len(agg.observe("bybit", "BTC/USDT:USDT", payload(1100 * MS, 100.0))) == expected
    with pytest.raises(ValueError, match="min_venues"):
        CrossVenueAggregates(min_venues=0)
