"""The positioning family (issue 11 item 7): OI flow and regimes (metrics.md 6.2), funding pressure (6.3),
long/short skew z-scores (6.4), liquidation imbalance and intensity (6.5); bounded memory over hours."""

from __future__ import annotations

import math
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import linear_instrument

from flowgauge.metrics.ewz import EwZScore
from flowgauge.metrics.funding import funding_annualised, funding_pressure
from flowgauge.metrics.liquidations import LiquidationWindows
from flowgauge.metrics.oi_flow import OiFlowWindows
from flowgauge.metrics.positioning import POSITIONING_FIELDS, PositioningFamily
from flowgauge.metrics.regime import RegimeTracker, classify
from flowgauge.types import FundingRate, Liquidation, LongShortRatio, OpenInterest, Trade

S = 1_000_000_000
MIN = 60 * S
T0 = 1_786_000_020 * S  # a whole minute
SYM = "BTC/USDT:USDT"


def _oi_fill(flow: OiFlowWindows) -> tuple[dict[str, object], dict[str, str], set[str]]:
    out: dict[str, object] = {}
    coverage: dict[str, str] = {}
    flags: set[str] = set()
    flow.fill(out, coverage, flags)
    return out, coverage, flags


@pytest.mark.parametrize(
    ("rho", "d", "regime"),
    [(0.3, 0.2, "LONG_BUILDUP"), (0.3, -0.2, "SHORT_BUILDUP"), (-0.3, 0.2, "SHORT_COVERING"),
     (-0.3, -0.2, "LONG_UNWINDING"), (0.01, 0.9, "NEUTRAL"), (0.9, 0.0, "NEUTRAL"), (0.05, 0.05, "LONG_BUILDUP")],
)  # fmt: skip
def test_regime_table(rho: float, d: float, regime: str) -> None:
    assert classify(rho, d, 0.05, 0.05) == regime


def test_regime_hysteresis_needs_two_windows_and_neutral_is_immediate() -> None:
    tr = RegimeTracker(MIN, 0.05, 0.05, 2)
    assert tr.update(0, 0.3, 0.2) == "NEUTRAL"  # first sight of LONG_BUILDUP: not yet confirmed
    assert tr.update(30 * S, 0.3, 0.2) == "NEUTRAL"
    assert tr.update(MIN, 0.3, 0.2) == "LONG_BUILDUP"  # held for a whole window more
    assert tr.update(MIN + S, 0.3, -0.2) == "LONG_BUILDUP"  # a flip must be confirmed too
    assert tr.update(MIN + 2 * S, 0.0, -0.2) == "NEUTRAL"  # thresholds fail: at once
    assert tr.update(MIN + 3 * S, None, 0.1) is None


def test_exact_window_open_ratio_scores_and_regime() -> None:
    """OI 1000 -> 1006 with 10 traded (8 taker buys, 2 sells): rho 0.6, omega 0.8, d 0.6."""
    flow = OiFlowWindows()
    flow.on_open_interest(T0, 1000.0)
    flow.on_trade(T0 + 10 * S, +1, 8.0, False)
    flow.on_trade(T0 + 20 * S, -1, 2.0, False)
    flow.on_open_interest(T0 + MIN, 1006.0)
    out, coverage, flags = _oi_fill(flow)
    assert out["oi_open_ratio_1m"] == pytest.approx(0.6, abs=1e-15)
    assert out["oi_chg_pct_1m"] == pytest.approx(0.006, abs=1e-15)
    assert out["oi_consistency_1m"] == pytest.approx(0.6, abs=1e-15)
    assert out["oi_buildup_score_1m"] == pytest.approx(0.6 * 0.8, abs=1e-15)
    assert out["oi_unwind_score_1m"] == pytest.approx(0.6 * 0.2, abs=1e-15)
    # build-up + unwind = d
    assert out["oi_buildup_score_1m"] + out["oi_unwind_score_1m"] == pytest.approx(0.6)  # type: ignore[operator]
    assert out["oi_regime_1m"] == "NEUTRAL"  # seen once: hysteresis
    assert out["oi_consistency_5m"] == pytest.approx(0.6, abs=1e-15)
    assert coverage["oi_consistency_5m"] == "PARTIAL"  # 1 of 5 minutes
    assert out["oi_open_ratio_1h"] is None and out["oi_regime_1h"] is None and "WARMUP" in flags
    assert "oi_open_ratio_5m" not in out  # a core-v1 field: the accumulator writes it


def test_forced_prints_count_in_v_not_in_d_and_long_liquidation_sublabel() -> None:
    flow = OiFlowWindows(confirm_windows=1)
    flow.on_open_interest(T0, 1000.0)
    flow.on_trade(T0 + S, -1, 6.0, False)
    flow.on_trade(T0 + 2 * S, -1, 4.0, True)  # forced: in V, out of d
    flow.on_liquidation(T0 + 2 * S, True, 4.0)
    flow.on_open_interest(T0 + MIN, 995.0)
    out, _, _ = _oi_fill(flow)
    assert out["oi_open_ratio_1m"] == pytest.approx(-0.5, abs=1e-15)
    assert out["oi_buildup_score_1m"] == pytest.approx(-1.0 * 0.25, abs=1e-15)
    assert out["oi_regime_1m"] == "LONG_LIQUIDATION"  # LONG_UNWINDING with 40 % of V liquidated longs


def test_bucketed_long_window_after_an_hour() -> None:
    """1 h from 1 min buckets: the reference is the last observation of the minute at t - 1 h."""
    flow = OiFlowWindows()
    oi = 1000.0
    for minute in range(62):
        t = T0 + minute * MIN
        flow.on_trade(t + S, +1, 1.0, False)
        flow.on_open_interest(t + 30 * S, oi)
        oi += 0.5
    out, _, flags = _oi_fill(flow)
    # now = T0 + 61 min + 30 s; reference = the observation at T0 + 1 min + 30 s (oi 1000.5), 60 minutes later
    assert out["oi_chg_pct_1h"] == pytest.approx(30.0 / 1000.5, rel=1e-12)
    assert out["oi_open_ratio_1h"] == pytest.approx(0.5, rel=1e-12)  # 30 OI over 60 traded
    assert out["oi_regime_1h"] == "NEUTRAL"
    assert out["oi_open_ratio_4h"] is None and "WARMUP" in flags


def test_bucketed_window_reference_older_than_a_few_minutes() -> None:
    """OI observed every 5 minutes (a slow poll, or polls failing for a while): the 1 h reference is the latest
    observation at or before t - 1 h however old (metrics.md 6.2), as for the exact windows, not null + WARMUP."""
    flow = OiFlowWindows()
    oi = 1000.0
    for k in range(14):  # observations at T0 + 5k min + 30 s (oi 1000 + 2k), one trade a minute
        for minute in range(5):
            flow.on_trade(T0 + (5 * k + minute) * MIN + S, +1, 1.0, False)
        flow.on_open_interest(T0 + 5 * k * MIN + 30 * S, oi)
        oi += 2.0
    for minute in range(70, 74):
        flow.on_trade(T0 + minute * MIN + S, +1, 1.0, False)
    flow.on_open_interest(T0 + 73 * MIN + 30 * S, oi)  # oi 1028 after a 8 min silence
    out, _, flags = _oi_fill(flow)
    # t - 1 h = T0 + 13.5 min: the latest observation at or before it is k = 2 (T0 + 10.5 min, oi 1004)
    assert out["oi_chg_pct_1h"] == pytest.approx(24.0 / 1004.0, rel=1e-12)
    # V: the trades after the reference's minute up to t's (minutes 11..73, one each)
    assert out["oi_open_ratio_1h"] == pytest.approx(24.0 / 63.0, rel=1e-12)
    assert out["oi_regime_1h"] is not None
    assert "WARMUP" in flags  # the 4 h window's, still without a reference


def test_liquidation_windows_vector() -> None:
    liq = LiquidationWindows(sampled=True)
    liq.since = T0 - 2 * 3600 * S
    liq.on_trade(T0, 10_000.0)
    liq.on_liquidation(T0 + S, True, 1_000.0)  # longs liquidated: forced selling
    liq.on_liquidation(T0 + 2 * S, False, 3_000.0)
    out: dict[str, object] = {}
    flags: set[str] = set()
    liq.fill(T0 + 2 * S, 100_000.0, out, {}, flags)
    for label in ("1m", "5m", "1h"):
        assert out[f"liq_imbalance_{label}"] == pytest.approx(0.5, abs=1e-15)
        assert out[f"liq_intensity_{label}"] == pytest.approx(0.4, abs=1e-15)
        assert out[f"liq_oi_share_{label}"] == pytest.approx(0.04, abs=1e-15)
        assert out[f"n_liq_msgs_{label}"] == 2.0
    assert flags == {"SAMPLED_INPUT"}
    out.clear()
    liq.fill(T0 + 2 * S + MIN, None, out, {}, flags)
    assert out["liq_imbalance_1m"] is None and out["n_liq_msgs_1m"] == 0.0 and out["liq_oi_share_5m"] is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50 * S), st.booleans(), st.floats(1.0, 1e6)), min_size=1, max_size=20))
def test_liquidation_imbalance_bounded_and_mirror_symmetric(events: list[tuple[int, bool, float]]) -> None:
    a, b = LiquidationWindows(False), LiquidationWindows(False)
    a.since = b.since = T0 - 7200 * S
    for t, long_side, notional in sorted(events):
        a.on_liquidation(T0 + t, long_side, notional)
        b.on_liquidation(T0 + t, not long_side, notional)
    out_a: dict[str, object] = {}
    out_b: dict[str, object] = {}
    a.fill(T0 + 50 * S, None, out_a, {}, set())
    b.fill(T0 + 50 * S, None, out_b, {}, set())
    for label in ("1m", "5m", "1h"):
        x = out_a[f"liq_imbalance_{label}"]
        assert x is not None and -1.0 <= x <= 1.0  # type: ignore[operator]
        assert out_b[f"liq_imbalance_{label}"] == pytest.approx(-x, abs=1e-12)  # type: ignore[operator]


def test_funding_pressure_and_annualised() -> None:
    assert funding_pressure(0.0001, 0.0001, 0.0005) == 0.0  # the venue's base interest: no pressure
    assert funding_pressure(0.0006, 0.0001, 0.0005) == pytest.approx(math.tanh(1.0), abs=1e-15)
    assert funding_pressure(None, 0.0001, 0.0005) is None
    assert funding_annualised(0.0001, 8.0) == pytest.approx(0.0001 * 1095, abs=1e-15)
    assert funding_annualised(0.0001, None) is None


@settings(max_examples=50, deadline=None)
@given(st.floats(-0.05, 0.05))
def test_funding_pressure_bounded_and_mirror_symmetric(rate: float) -> None:
    p = funding_pressure(rate, 0.0, 0.0005)
    assert p is not None and -1.0 <= p <= 1.0
    assert funding_pressure(-rate, 0.0, 0.0005) == pytest.approx(-p, abs=1e-15)


def test_ew_zscore_null_until_warm_then_standardised() -> None:
    z = EwZScore(half_life_s=10.0)
    z.update(0, 1.0)
    for i in range(1, 44):  # 43 s = 4.3 half-lives: weight just under 0.95
        z.update(i * S, 1.0 if i % 2 else -1.0)
    assert z.weight < 0.95 and z.value() is None
    for i in range(44, 200):
        z.update(i * S, 1.0 if i % 2 else -1.0)
    value = z.value()
    assert z.weight > 0.95 and value is not None and abs(value) == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("level", [0.000123, 0.37, -0.2, 0.5123])
def test_ew_zscore_of_a_constant_series_is_null(level: float) -> None:
    """A constant series (funding pinned at its base for days, an unchanged long/short ratio) has no scale: its
    z-score is 0/0, null (metrics.md 0.2.6), not a number made of rounding (q/w - m^2 left ~1e-20 and z ~1e-6)."""
    z = EwZScore(half_life_s=60.0)
    for i in range(2000):  # irregular spacing, weight well past 0.95
        z.update(i * 3 * S + (i % 7) * S, level)
    assert z.weight > 0.95
    assert z.value() is None
    z.update(7000 * S, level * 1.5)
    value = z.value()
    assert value is not None and value * level > 0.0  # the first move off the level is a positive deviation


def test_family_fields_and_memory_flat_over_simulated_hours() -> None:
    """Six simulated hours (every 6 s: 2 trades and an OI observation; a liquidation each 20 s, funding and
    long/short each minute): the bucket rings are fixed-size, the OI history stays within its window, and traced
    memory after hour 6 is where it was after hour 5 (within 64 KiB)."""
    fam = PositioningFamily(linear_instrument())
    fam.set_since(T0)
    oi = 1000.0
    sizes: list[int] = []

    def hour(h: int) -> None:
        nonlocal oi
        for sec in range(0, 3600, 6):
            t = T0 + (h * 3600 + sec) * S
            fam.on_trade(Trade("bybit", SYM, 100.0, 1.0, 1 if sec % 3 else -1, "x", False, t, t))
            fam.on_trade(Trade("bybit", SYM, 100.0, 0.5, -1, "y", sec % 7 == 0, t + S // 2, t + S // 2))
            oi += 0.1 if sec % 5 else -0.3
            fam.on_open_interest(OpenInterest("bybit", SYM, oi, t + S // 4, t))
            if sec % 24 == 0:
                side = "long" if sec % 48 else "short"
                fam.on_liquidation(Liquidation("bybit", SYM, side, 100.0, 0.2, t + S // 3, t))  # type: ignore[arg-type]
            if sec % 60 == 0:
                fam.on_funding(FundingRate("bybit", SYM, 0.0001 + sec * 1e-8, 8.0, None, 100.0, 100.0, t, t))
                fam.on_long_short(LongShortRatio("bybit", SYM, "accounts", 1.2, t, t))

    for h in range(4):  # the 4 h window fills
        hour(h)
    tracemalloc.start()  # traced from here only: tracing slows every allocation down
    try:
        hour(4)
        first = tracemalloc.get_traced_memory()[0]
        sizes.append(len(fam._oi_flow._exact[1]._obs))
        hour(5)
        second = tracemalloc.get_traced_memory()[0]
        sizes.append(len(fam._oi_flow._exact[1]._obs))
    finally:
        tracemalloc.stop()
    print(f"traced memory: {first} B after hour 5, {second} B after hour 6")
    assert second - first < 64 * 1024, (first, second)
    assert sizes[0] == sizes[1] <= 5 * 60 // 6 + 2  # the 5 min OI history holds 5 minutes, not hours
    out: dict[str, object] = {}
    flags: set[str] = set()
    now = T0 + 6 * 3600 * S
    fam.fill(None, out, now, flags)
    assert tuple(out) == POSITIONING_FIELDS
    for label in ("1m", "5m", "1h", "4h"):
        assert out.get(f"oi_open_ratio_{label}") is not None or label == "5m", label
        assert out[f"oi_regime_{label}"] is not None, label
    assert out["liq_imbalance_1h"] is not None and out["funding_pressure"] is not None
    assert out["oi_to_volume_24h"] is None and "WARMUP" in flags  # only the 24 h window is still warming


def test_oi_context_correlation_and_oi_to_volume() -> None:
    """OI rises by 10 x the minute's log return: correlation +1 once warm; OI over the 24 h volume after 24 h."""
    from flowgauge.metrics.oi_context import OiContext

    ctx = OiContext(corr_half_life_s=600.0)
    price, oi = 100.0, 1000.0
    for minute in range(80):
        t = T0 + minute * MIN
        step = 0.001 * (1 if minute % 3 else -2)
        price *= math.exp(step)
        oi += 10.0 * step
        ctx.on_trade(t + S, price, 2.0)
        ctx.on_open_interest(t + 2 * S, oi)
    ratio, corr, warming = ctx.values(T0 + 80 * MIN, oi, T0)
    assert corr == pytest.approx(1.0, abs=1e-9) and warming and ratio is None
    ratio, _, warming = ctx.values(T0 + (24 * 60 + 80) * MIN, oi, T0 - 1)
    assert not warming and ratio is None  # the 24 h ending now hold none of those trades
    ratio, _, _ = ctx.values(T0 + 80 * MIN, oi, T0 - 24 * 60 * MIN)
    assert ratio == pytest.approx(oi / 160.0, rel=1e-12)


def test_liquidation_decayed_sums() -> None:
    liq = LiquidationWindows(sampled=False)
    liq.since = T0
    liq.on_liquidation(T0, True, 1_000.0)
    liq.on_liquidation(T0, False, 3_000.0)
    out: dict[str, object] = {}
    liq.fill(T0, None, out, {}, set())
    assert (out["liq_long_ew_5m"], out["liq_short_ew_5m"], out["liq_imbalance_ew_5m"]) == (1_000.0, 3_000.0, 0.5)
    liq.fill(T0 + int(300 * math.log(2.0) * S), None, out, {}, set())  # one half-life later
    assert out["liq_long_ew_5m"] == pytest.approx(500.0, rel=1e-9)
    assert out["liq_imbalance_ew_5m"] == pytest.approx(0.5, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 600), st.sampled_from((1, -1)), st.floats(0.01, 50.0), st.booleans(),
                          st.floats(-20.0, 20.0)), min_size=2, max_size=30))  # fmt: skip
def test_oi_flow_bounded_additive_and_mirror_symmetric(events: list[tuple[int, int, float, bool, float]]) -> None:
    """Scores and ratios stay in [-1, 1], build-up + unwind = d, and flipping every taker side flips every score
    and leaves the opening ratio (metrics.md 0.2.1)."""
    a, b = OiFlowWindows(), OiFlowWindows()
    oi = 1000.0
    for second, side, size, forced, d_oi in sorted(events):
        t = T0 + second * S
        a.on_trade(t, side, size, forced)
        b.on_trade(t, -side, size, forced)
        oi = max(oi + d_oi, 1.0)
        a.on_open_interest(t + 1, oi)
        b.on_open_interest(t + 1, oi)
    out_a, out_b = _oi_fill(a)[0], _oi_fill(b)[0]
    for label in ("1m", "5m"):
        up, down = out_a[f"oi_buildup_score_{label}"], out_a[f"oi_unwind_score_{label}"]
        if up is None:
            continue
        assert -1.0 <= up <= 1.0 and -1.0 <= down <= 1.0  # type: ignore[operator]
        assert out_b[f"oi_buildup_score_{label}"] == pytest.approx(-up, abs=1e-12)  # type: ignore[operator]
        assert out_b[f"oi_unwind_score_{label}"] == pytest.approx(-down, abs=1e-12)  # type: ignore[operator]
        assert out_a[f"oi_consistency_{label}"] == out_b[f"oi_consistency_{label}"]
    assert out_a["oi_open_ratio_1m"] == out_b["oi_open_ratio_1m"]


_EVENT = st.tuples(
    st.sampled_from(("trade", "oi", "funding", "liq", "ls", "fill")),
    st.integers(-10 * S, 7200 * S),  # exchange time may step back
    st.floats(1e-9, 1e9),
    st.floats(1e-6, 1e7),
    st.sampled_from((1, -1)),
    st.booleans(),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_EVENT, max_size=40))
def test_slow_families_take_any_event_order_and_publish_finite_values(events: list[tuple]) -> None:  # type: ignore[type-arg]
    """Any interleaving, late and extreme inputs: no exception, every number finite, ratios in range."""
    from flowgauge.metrics.trade_flow import TradeFlowFamily

    fams = (PositioningFamily(linear_instrument()), TradeFlowFamily())
    for kind, dt, a, b, side, flag in events:
        t = T0 + dt
        for fam in fams:
            if kind == "trade":
                fam.on_trade(Trade("bybit", SYM, a, b, side, "x", flag, t, t))
            elif kind == "oi":
                fam.on_open_interest(OpenInterest("bybit", SYM, b, t, t))
            elif kind == "funding":
                fam.on_funding(FundingRate("bybit", SYM, side * b * 1e-9, 8.0 if flag else None, None, a, a, t, t,
                                           volume_24h=b))  # fmt: skip
            elif kind == "liq":
                fam.on_liquidation(Liquidation("bybit", SYM, "long" if flag else "short", a, b, t, t))  # type: ignore[arg-type]
            elif kind == "ls":
                fam.on_long_short(LongShortRatio("bybit", SYM, "accounts" if flag else "top_positions", b, t, t))
            else:
                out: dict[str, object] = {"coverage": {}}
                fam.fill(None, out, t, set())
                for key, value in out.items():
                    if isinstance(value, float):
                        assert math.isfinite(value), key
                        if key.startswith(("tfi_vol", "tfi_count", "tfi_notional", "tfi_ew", "liq_imbalance",
                                           "oi_open_ratio", "oi_buildup", "oi_unwind", "oi_price_corr")):  # fmt: skip
                            assert -1.0 <= value <= 1.0, key
