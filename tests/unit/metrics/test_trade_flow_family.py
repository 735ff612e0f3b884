"""The trade_flow family (issue 11 item 6): TFI windows (metrics.md 5.1), volume-bucket toxicity (5.2), Kyle's
lambda (5.3), and the 1 s / 1 min bucket rings behind the long windows."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowgauge.metrics.buckets import BucketRing
from flowgauge.metrics.flow_params import KyleParams, ToxicityParams, TradeFlowParams
from flowgauge.metrics.kyle import KyleLambda
from flowgauge.metrics.tfi import TFI_FIELDS, TradeFlowWindows
from flowgauge.metrics.toxicity import FlowToxicity, VolumeBuckets, normal_cdf
from flowgauge.metrics.trade_flow import TRADE_FLOW_FIELDS, TradeFlowFamily
from flowgauge.types import FundingRate, Trade

S = 1_000_000_000
T0 = 1_786_000_000 * S


def _fill(tfi: TradeFlowWindows, now: int) -> tuple[dict[str, object], dict[str, str], set[str]]:
    out: dict[str, object] = {}
    coverage: dict[str, str] = {}
    flags: set[str] = set()
    tfi.fill(now, out, coverage, flags)
    return out, coverage, flags


def test_bucket_ring_sums_the_last_n_buckets_and_forgets_older_ones() -> None:
    ring = BucketRing(S, 5, 2)
    for i in range(10):
        ring.add(T0 + i * S, (1.0, float(i)))
    assert ring.sums(T0 + 9 * S, 3) == [3.0, 7.0 + 8.0 + 9.0]
    assert ring.sums(T0 + 9 * S, 100) == [5.0, 5.0 + 6.0 + 7.0 + 8.0 + 9.0]  # only what the ring holds
    ring.add(T0 + 8 * S + 1, (1.0, 0.5))  # late but still held: joins its own bucket
    assert ring.sums(T0 + 8 * S, 1) == [2.0, 8.5]
    ring.add(T0, (1.0, 1.0))  # older than the ring
    assert ring.late_dropped == 1
    assert ring.sums(T0 + 20 * S, 3) == [0.0, 0.0]  # quiet seconds are empty buckets


def test_tfi_windows_vector() -> None:
    """Two buys and a sell; every ratio and sum by hand."""
    tfi = TradeFlowWindows()
    tfi.since = T0 - 400 * S
    tfi.add(T0, +1, 2.0, 100.0)
    tfi.add(T0 + S // 2, -1, 1.0, 101.0)
    tfi.add(T0 + S, +1, 1.0, 99.0)
    out, coverage, flags = _fill(tfi, T0 + S)
    assert out["tfi_vol_10s"] == pytest.approx((3.0 - 1.0) / 4.0, abs=1e-15)
    assert out["tfi_notional_10s"] == pytest.approx((200.0 + 99.0 - 101.0) / 400.0, abs=1e-15)
    assert out["tfi_count_10s"] == pytest.approx(1.0 / 3.0, abs=1e-15)
    assert out["signed_vol_10s"] == 2.0
    assert out["signed_notional_10s"] == pytest.approx(198.0, abs=1e-12)
    # (t - 1 s, t]: the trade at T0 is out, the other two in
    assert out["tfi_vol_1s"] == 0.0 and out["signed_vol_1s"] == 0.0
    assert out["tfi_vol_100ms"] == 1.0
    assert out["tfi_vol_300s"] == out["tfi_vol_60s"] == out["tfi_vol_10s"]
    assert -1.0 <= out["tfi_ew_10s"] <= 1.0  # type: ignore[operator]
    assert coverage == {} and flags == set()
    assert set(out) == set(TFI_FIELDS)


def test_tfi_null_without_trades_and_ew_holds_between_trades() -> None:
    tfi = TradeFlowWindows()
    tfi.since = T0
    out, _, _ = _fill(tfi, T0)
    assert out["tfi_vol_10s"] is None and out["signed_vol_10s"] == 0.0 and out["tfi_ew_10s"] is None
    tfi.add(T0, +1, 1.0, 100.0)
    tfi.add(T0, -1, 3.0, 100.0)
    a = _fill(tfi, T0 + S)[0]["tfi_ew_10s"]
    b = _fill(tfi, T0 + 5 * S)[0]["tfi_ew_10s"]
    assert a == pytest.approx(-0.5, abs=1e-12) and b == pytest.approx(-0.5, abs=1e-12)  # both sums decay alike


def test_tfi_coverage_partial_then_long_window_warmup() -> None:
    tfi = TradeFlowWindows()
    tfi.since = T0
    tfi.add(T0, +1, 1.0, 100.0)
    out, coverage, flags = _fill(tfi, T0 + 5 * S)
    assert coverage.get("tfi_vol_10s") == "PARTIAL" and coverage.get("tfi_vol_60s") == "PARTIAL"
    assert "tfi_vol_1s" not in coverage  # null: no entry
    assert out["tfi_vol_300s"] is None and "WARMUP" in flags  # a long window is null until filled
    tfi.add(T0 + 300 * S, -1, 1.0, 100.0)
    out, coverage, flags = _fill(tfi, T0 + 300 * S)
    # the buy at T0 is at t - 300 s exactly: out of (t - 300 s, t]
    assert out["tfi_vol_300s"] == -1.0 and coverage == {} and flags == set()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 120 * S), st.sampled_from((1, -1)), st.floats(1e-6, 1e3),
                          st.floats(1.0, 1e5)), min_size=1, max_size=40))  # fmt: skip
def test_tfi_ratios_are_bounded_and_mirror_symmetric(trades: list[tuple[int, int, float, float]]) -> None:
    """Every ratio in [-1, 1]; flipping every side flips every signed value (metrics.md 0.2.1)."""
    trades.sort()
    a, b = TradeFlowWindows(), TradeFlowWindows()
    a.since = b.since = T0 - 1000 * S
    for t, side, size, price in trades:
        a.add(T0 + t, side, size, price)
        b.add(T0 + t, -side, size, price)
    now = T0 + trades[-1][0]
    out_a, out_b = _fill(a, now)[0], _fill(b, now)[0]
    for key, value in out_a.items():
        if value is None:
            assert out_b[key] is None
            continue
        if key.startswith("tfi_"):
            assert -1.0 <= value <= 1.0  # type: ignore[operator]
        assert out_b[key] == pytest.approx(-value, rel=1e-9, abs=1e-9)  # type: ignore[operator]


def test_volume_buckets_split_trades_pro_rata() -> None:
    """V = 10: a 25-unit buy fills two buckets and half of a third; |S - B| per bucket by hand."""
    vb = VolumeBuckets(n=3)
    vb.next_size = 10.0
    assert vb.add(4.0, 0.0) == 0
    assert vb.add(0.0, 6.0) == 1  # bucket 1: B 4, S 6 -> 2
    assert vb.add(25.0, 0.0) == 2  # buckets 2, 3: B 10 -> 10 each; 5 left in bucket 4
    assert vb.value() == pytest.approx((2.0 + 10.0 + 10.0) / 30.0, abs=1e-15)
    assert vb.add(0.0, 5.0) == 1  # bucket 4: B 5, S 5 -> 0; the window is buckets 2..4
    assert vb.value() == pytest.approx((10.0 + 10.0 + 0.0) / 30.0, abs=1e-15)


def test_flow_toxicity_bootstrap_values_and_cdf() -> None:
    """Bucket size from the bootstrap notional; all-buy flow is toxicity 1, balanced flow 0; CDF ranks them."""
    params = ToxicityParams(buckets_per_day=50, window_buckets=2, bootstrap_daily_notional=50_000.0,
                            cdf_min_values=3)  # fmt: skip
    tox = FlowToxicity(params)
    t = T0
    tox.on_trade(t, +1, 10.0, 100.0)  # V = 50,000 / 100 / 50 = 10: one full bucket
    assert tox.bucket_volume == 10.0
    assert tox.values() == (None, None, None)  # n = 2 buckets needed
    tox.on_trade(t + S, +1, 10.0, 100.0)
    exact, _, cdf = tox.values()
    assert exact == 1.0 and cdf is None  # 1 value held, 3 needed
    for i in range(4):
        tox.on_trade(t + (2 + i) * S, +1 if i % 2 == 0 else -1, 5.0, 100.0)
        tox.on_trade(t + (2 + i) * S, -1 if i % 2 == 0 else +1, 5.0, 100.0)
    exact, _, cdf = tox.values()
    assert exact == 0.0
    assert cdf == pytest.approx(3.0 / 5.0, abs=1e-15)  # values held: 1, 0.5, 0, 0, 0 -> three at or below 0
    tox.set_venue_volume(-1.0)  # refused


def test_bvc_classifies_bars_by_their_price_change() -> None:
    params = ToxicityParams(window_buckets=1, bootstrap_daily_notional=50 * 100 * 100.0)  # V = 100 at price 100
    tox = FlowToxicity(params)
    for minute in range(4):  # bars close at the first trade of the next bar
        tox.on_trade(T0 + minute * 60 * S, +1, 100.0, 100.0 + minute)
    _, bvc, _ = tox.values()
    assert bvc is not None and 0.0 <= bvc <= 1.0
    assert normal_cdf(0.0) == 0.5 and normal_cdf(10.0) == pytest.approx(1.0)


def test_kyle_lambda_recovers_a_known_slope() -> None:
    """y = 2 + 5 x exactly on every bar: slope 5, R^2 1 (EW weights do not matter for an exact line)."""
    k = KyleLambda(KyleParams(min_bars=3))
    for x in (-1.0, 0.5, 2.0, 1.0, -0.25):
        k.add(x, 2.0 + 5.0 * x)
    beta, r2, n = k.values()
    assert beta == pytest.approx(5.0, rel=1e-9) and r2 == pytest.approx(1.0, rel=1e-9) and n == 5


def test_kyle_lambda_from_trades_on_minute_bars() -> None:
    """Each minute: a buy of $1M notional moves the price up 10 bps; a sell down: lambda = 10 bps per $1M."""
    k = KyleLambda(KyleParams(min_bars=5))
    price = 100.0
    t = T0 - T0 % (60 * S)
    k.on_trade(t, +1, 1e-9, price)  # a first bar to measure from
    for i in range(1, 12):
        side = 1 if i % 3 else -1
        price *= 1.0 + side * 10.0 / 1e4
        k.on_trade(t + i * 60 * S, side, 1e6 / price, price)
    beta, r2, n = k.values()
    assert n == 10  # the 11th bar is still open
    assert beta == pytest.approx(10.0, rel=1e-6) and r2 == pytest.approx(1.0, rel=1e-9)
    assert KyleLambda(KyleParams()).values() == (None, None, 0)


def test_family_keys_and_forced_prints() -> None:
    fam = TradeFlowFamily(TradeFlowParams())
    fam.set_since(T0)
    fam.on_trade(Trade("bybit", "BTC/USDT:USDT", 100.0, 1.0, 1, "1", True, T0, T0))  # forced: out of TFI
    out: dict[str, object] = {}
    fam.fill(None, out, T0, set())
    assert tuple(out) == TRADE_FLOW_FIELDS
    assert out["tfi_vol_10s"] is None
    assert all(v is None or (type(v) is float and math.isfinite(v)) for v in out.values())


def test_venue_24h_volume_replaces_the_bootstrap_bucket_size() -> None:
    """Bybit's ticker volume24h (carried on the funding event) sets V = volume / n_day before any bucket closed."""
    fam = TradeFlowFamily(TradeFlowParams())
    fam.on_trade(Trade("bybit", "BTC/USDT:USDT", 100.0, 1.0, 1, "1", False, T0, T0))
    assert fam._toxicity.bucket_volume == 1e9 / 100.0 / 50  # the configured bootstrap notional
    fam.on_funding(FundingRate("bybit", "BTC/USDT:USDT", None, None, None, None, None, T0, T0, volume_24h=5000.0))
    assert fam._toxicity.bucket_volume == 100.0
    fam.on_funding(FundingRate("bybit", "BTC/USDT:USDT", None, None, None, None, None, T0, T0, volume_24h=9000.0))
    assert fam._toxicity.bucket_volume == 100.0  # later figures wait for 00:00 UTC


def test_l1_depth_time_weighted_and_ti_depthnorm() -> None:
    """Depth 2 held for 10 s, then 4 held for 10 s: with H = 10 s the time-weighted mean weighs the later
    interval more; ti_depthnorm_T = signed_vol_T / that mean; an invalid book adds no time."""
    from flowgauge.book.l2 import L2Book
    from flowgauge.metrics.l1_depth import L1DepthEw

    book = L2Book()
    book.load([(100.0, 1.0)], [(100.1, 3.0)], seq=1, ts_exchange=T0)  # (1 + 3) / 2 = 2
    ew = L1DepthEw(10.0)
    ew.sample(book, T0)
    assert ew.value() is None  # no time weighed yet
    book.load([(100.0, 5.0)], [(100.1, 3.0)], seq=2, ts_exchange=T0 + 10 * S)  # 4
    ew.sample(book, T0 + 10 * S)
    assert ew.value() == pytest.approx(2.0, rel=1e-12)  # only depth 2 has held so far
    ew.sample(book, T0 + 20 * S)
    assert ew.value() == pytest.approx((2.0 * 0.5 * 0.5 + 4.0 * 0.5) / (1.0 - 0.25), rel=1e-12)
    ew.sample(None, T0 + 25 * S)
    ew.sample(book, T0 + 1000 * S)  # the clock restarted: the invalid period weighs nothing
    assert ew.value() == pytest.approx((2.0 * 0.25 + 4.0 * 0.5) / 0.75, rel=1e-12)

    fam = TradeFlowFamily(TradeFlowParams(depth_half_life_s=10.0))
    fam.on_trade(Trade("bybit", "BTC/USDT:USDT", 100.0, 3.0, 1, "1", False, T0, T0))
    out: dict[str, object] = {"coverage": {}}
    fam.fill(book, out, T0, set())
    assert out["ti_depthnorm_10s"] is None  # no depth weighed yet
    fam.fill(book, out, T0 + 5 * S, set())
    assert out["ti_depthnorm_10s"] == pytest.approx(3.0 / 4.0, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600 * S), st.sampled_from((1, -1)), st.floats(1e-3, 50.0),
                          st.floats(90.0, 110.0)), min_size=1, max_size=60))  # fmt: skip
def test_toxicity_and_kyle_bounded_and_mirror_symmetric(trades: list[tuple[int, int, float, float]]) -> None:
    """flow_toxicity* in [0, 1] and unchanged when every side flips (it is unsigned); Kyle's lambda flips sign with
    the flow, its R^2 stays in [0, 1]."""
    params = ToxicityParams(window_buckets=3, bootstrap_daily_notional=50 * 100 * 5.0, bvc_bar_s=5, cdf_min_values=2)
    a, b = FlowToxicity(params), FlowToxicity(params)
    ka, kb = KyleLambda(KyleParams(bar_s=5, min_bars=3)), KyleLambda(KyleParams(bar_s=5, min_bars=3))
    for t, side, size, price in sorted(trades):
        a.on_trade(T0 + t, side, size, price)
        b.on_trade(T0 + t, -side, size, price)
        ka.on_trade(T0 + t, side, size, price)
        kb.on_trade(T0 + t, -side, size, price)
    for value in (*a.values(), *b.values()):
        assert value is None or 0.0 <= value <= 1.0
    assert a.values()[0] == pytest.approx(b.values()[0], abs=1e-12) if a.values()[0] is not None else True
    beta_a, r2_a, _ = ka.values()
    beta_b, r2_b, _ = kb.values()
    if beta_a is not None:
        assert beta_b == pytest.approx(-beta_a, rel=1e-9, abs=1e-9)
    for r2 in (r2_a, r2_b):
        assert r2 is None or 0.0 <= r2 <= 1.0


def test_a_print_of_millions_of_buckets_costs_n_appends() -> None:
    """A tiny V and a huge print (bad venue figure, fat finger) fill 10^9 buckets at once without a loop per bucket."""
    vb = VolumeBuckets(n=3)
    vb.next_size = 1e-6
    assert vb.add(1000.0 + 5e-7, 0.0) == 10**9
    assert vb.completed == 10**9
    assert vb.value() == pytest.approx(1.0, abs=1e-12)


def test_a_feed_reset_marks_toxicity_partial_for_the_next_n_buckets() -> None:
    """metrics.md 5.2: a gap in the trade feed flags the bucket filling then and the windows that hold it."""
    from tests.conftest import linear_instrument

    from flowgauge.metrics.extended import ExtendedMetrics
    from flowgauge.metrics.params import MetricParams

    toxicity = ToxicityParams(window_buckets=2, bootstrap_daily_notional=50_000.0)
    params = MetricParams(trade_flow=TradeFlowParams(toxicity=toxicity))
    ext = ExtendedMetrics.build(("trade_flow",), linear_instrument(), params, compiled=False)
    assert ext is not None

    def coverage(t: int) -> dict[str, str]:
        out: dict[str, object] = {"coverage": {}, "quality": []}
        ext.fill(None, out, t)
        return out["coverage"]  # type: ignore[return-value]

    for i in range(3):  # V = 10 at price 100: one bucket per trade
        ext.on_trade(Trade("bybit", "BTC/USDT:USDT", 100.0, 10.0, 1, str(i), False, T0 + i * S, T0 + i * S))
    assert "flow_toxicity" not in coverage(T0 + 3 * S)
    ext.on_feed_reset(T0 + 3 * S)
    for i in range(3, 5):  # the bucket filling at the reset is the 4th: the windows ending at it and the next
        ext.on_trade(Trade("bybit", "BTC/USDT:USDT", 100.0, 10.0, 1, str(i), False, T0 + i * S, T0 + i * S))
        assert coverage(T0 + i * S).get("flow_toxicity") == "PARTIAL", i
    ext.on_trade(Trade("bybit", "BTC/USDT:USDT", 100.0, 10.0, 1, "5", False, T0 + 5 * S, T0 + 5 * S))
    assert "flow_toxicity" not in coverage(T0 + 5 * S)  # buckets 5 and 6: none filled across the reset
