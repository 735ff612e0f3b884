"""The "fragility", "ew" and "risk" metric families (issue 11 items 8, 9, 11), one source for both cores.

Each class follows `metrics.extended`'s `BookFamily` protocol (`on_book`, `on_book_invalid`, `fill`). They read the
book only through what `L2Book` and the compiled `CBook` both answer (`side.best()`, `side.top(n)`,
`side.notional_within(price)`, `len(side)`) and the core fields already in the payload (`mid`, `spread_bps`,
`depth_*_10bps`, `ofi_raw_*`), and do plain float arithmetic: both cores publish the same bits (the same source runs
in both, on the same inputs). Unlike `metrics.book_families` this module is not compiled: both cores run it as
Python (its per-payload cost is measured in the commit history: about 1-2 us for "risk", the default one).
docs/metrics.md gives every field's definition.

Slow state (1-second sampling for `vol_1m`, resiliency and z-scores, `metrics.seconds`) is fed once per payload
from the payload's own book state, at the payload's exchange time; so, like every window, it depends only on the
sequence of payloads, never on wall time. Under `publish.min_interval_ms` a throttled book message is not sampled
(the next payload's state stands for it).

Warm-up, as the project's other families do it: a decayed average published while young (`spread_bps_ew_60s`,
`depth_total_10bps_ew_60s`) is bias-corrected and the payload carries WARMUP until its weight reaches 0.95; the slow
estimates (`spread_z`, `depth_z`, `fragility_index`, `resiliency_halflife_s`) are null until theirs does (no flag:
their warm-up is hours to days and must not hold the whole payload in WARMUP). `vol_1m` is published from
`metrics.risk.vol_min_samples` returns on (a desk needs a volatility soon after a start) and marked per field.

Per-field coverage (`coverage[field]`, with PARTIAL_WINDOW on the payload): "EXHAUSTED" for an impact cost the
visible book cannot fill (the value is null), "PARTIAL" for a book slope over fewer levels than asked and for
`vol_1m` younger than its warm-up (~3 minutes).
"""

from __future__ import annotations

from typing import Any

from flowgauge.metrics.ew import WARM_WEIGHT, EwStateMean, half_life_for_window
from flowgauge.metrics.fragility import DEFAULT_NOTIONALS, book_slope, impact_costs, ofi_stress
from flowgauge.metrics.params import EwParams, FragilityParams, RiskParams
from flowgauge.metrics.risk import fragility_index, hedge_urgency, micro_drift_bps, risk_scale
from flowgauge.metrics.seconds import SecondStats

__all__ = ["EW_KEYS", "FRAGILITY_KEYS", "RISK_KEYS", "EwFamily", "FragilityFamily", "RiskFamily"]

_NOTIONAL_NAMES = ("10k", "100k", "1m")
_IMPACT_KEYS = tuple(
    (f"impact_cost_bps_{name}_buy", f"impact_cost_bps_{name}_sell") for name in _NOTIONAL_NAMES
)  # fmt: skip
_STRESS = (("ofi_stress_1s", "ofi_raw_1s"), ("ofi_stress_10s", "ofi_raw_10s"), ("ofi_stress_60s", "ofi_raw_60s"))
_BAND_FRAC = 10.0 / 1e4  # depth_total_10bps's band, as metrics.depth computes it

FRAGILITY_KEYS: tuple[str, ...] = (
    *(key for pair in _IMPACT_KEYS for key in pair),
    "book_slope_bid", "book_slope_ask", "book_slope",
    *(key for key, _ in _STRESS),
    "resiliency_halflife_s", "fragility_index",
)  # fmt: skip
EW_KEYS: tuple[str, ...] = ("spread_bps_ew_60s", "depth_total_10bps_ew_60s", "spread_z", "depth_z")
RISK_KEYS: tuple[str, ...] = ("vol_1m", "micro_drift_bps", "risk_scale", "hedge_urgency")

# The inputs "risk" takes from other families' keys in the same payload (None when that family is off).
TOXICITY_KEY = "flow_toxicity"
OI_PRESSURE_KEY = "oi_buildup_score_5m"
MICRO_PRICE_KEY = "micro_price"

_PARTIAL = "PARTIAL"
_EXHAUSTED = "EXHAUSTED"
_PARTIAL_WINDOW = "PARTIAL_WINDOW"  # the payload flag that goes with any coverage entry


def _coverage(out: dict[str, object]) -> dict[str, str] | None:
    cov = out.get("coverage")
    return cov if isinstance(cov, dict) else None


def _depth_total(out: dict[str, object]) -> float | None:
    bid = out.get("depth_bid_10bps")
    ask = out.get("depth_ask_10bps")
    if not isinstance(bid, float) or not isinstance(ask, float):
        return None
    return bid + ask


def _float(value: object) -> float | None:
    return value if isinstance(value, float) else None


def _sample(stats: SecondStats, out: dict[str, object], book: Any, ts_ns: int) -> None:
    """Feed the payload's book state (if VALID) to the 1-second statistics, closing the seconds before `ts_ns`."""
    if book is None:
        stats.advance(ts_ns)
        return
    stats.on_book(ts_ns, _float(out.get("mid")), _float(out.get("spread_bps")), _depth_total(out))


class FragilityFamily:
    """metrics.md 7: impact cost, book slope, OFI stress, resiliency, fragility index."""

    __slots__ = ("_ask_hint", "_bid_hint", "_levels", "_stats")

    def __init__(self, params: FragilityParams, ew: EwParams) -> None:
        self._levels = params.slope_levels
        # Levels the last impact walk of each side read: the next walk reads that many (plus room) at once.
        self._ask_hint = 32
        self._bid_hint = 32
        self._stats = SecondStats(
            z_half_life_s=ew.z_half_life_s,
            z_min_samples=ew.z_min_samples,
            resiliency_half_life_s=params.resiliency_half_life_s,
        )

    def on_book(self, book: Any, ts_ns: int) -> None:
        return None  # sampled per payload (fill)

    def on_book_invalid(self, ts_ns: int) -> None:
        self._stats.on_invalid(ts_ns)

    def fill(self, book: Any, out: dict[str, object], ts_ns: int, flags: set[str]) -> None:
        stats = self._stats
        _sample(stats, out, book, ts_ns)
        mid = _float(out.get("mid"))
        cov = _coverage(out)
        # the slow state outlives an invalid book: the last estimate still describes the instrument
        resiliency = stats.resiliency_halflife_s() if stats.resiliency_warm else None
        if book is None or mid is None or not mid > 0.0:
            for key in FRAGILITY_KEYS:
                out[key] = None
            out["resiliency_halflife_s"] = resiliency
            return
        buys, _, used = impact_costs(book.asks, mid, DEFAULT_NOTIONALS, True, self._ask_hint)
        self._ask_hint = used + 8
        sells, _, used = impact_costs(book.bids, mid, DEFAULT_NOTIONALS, False, self._bid_hint)
        self._bid_hint = used + 8
        for (buy_key, sell_key), buy, sell in zip(_IMPACT_KEYS, buys, sells, strict=True):
            out[buy_key] = buy
            out[sell_key] = sell
            if cov is not None and (buy is None or sell is None):
                flags.add(_PARTIAL_WINDOW)
                if buy is None:
                    cov[buy_key] = _EXHAUSTED
                if sell is None:
                    cov[sell_key] = _EXHAUSTED
        bid_slope, bid_short = book_slope(book.bids, mid, self._levels)
        ask_slope, ask_short = book_slope(book.asks, mid, self._levels)
        out["book_slope_bid"] = bid_slope
        out["book_slope_ask"] = ask_slope
        out["book_slope"] = (bid_slope + ask_slope) * 0.5 if bid_slope is not None and ask_slope is not None else None
        if cov is not None and ((bid_short and bid_slope is not None) or (ask_short and ask_slope is not None)):
            flags.add(_PARTIAL_WINDOW)
            if bid_short and bid_slope is not None:
                cov["book_slope_bid"] = _PARTIAL
            if ask_short and ask_slope is not None:
                cov["book_slope_ask"] = _PARTIAL
            if (bid_short or ask_short) and out["book_slope"] is not None:
                cov["book_slope"] = _PARTIAL
        bid_depth = _float(out.get("depth_bid_10bps"))
        ask_depth = _float(out.get("depth_ask_10bps"))
        for key, window in _STRESS:
            out[key] = ofi_stress(_float(out.get(window)), mid, bid_depth, ask_depth)
        out["resiliency_halflife_s"] = resiliency
        if stats.z_warm:
            spread_z = stats.spread_z(_float(out.get("spread_bps")))
            out["fragility_index"] = fragility_index(spread_z, stats.depth_z(_depth_total(out)))
        else:
            out["fragility_index"] = None


class EwFamily:
    """metrics.md 8.2 / 8.3: time-weighted EW means of the spread and the 10 bps depth, and their z-scores."""

    __slots__ = ("_depth", "_spread", "_stats")

    def __init__(self, params: EwParams) -> None:
        half_life = half_life_for_window(60.0)  # the `_60s` of the keys: mass-equivalent to a 1-minute boxcar
        self._spread = EwStateMean(half_life)
        self._depth = EwStateMean(half_life)
        self._stats = SecondStats(z_half_life_s=params.z_half_life_s, z_min_samples=params.z_min_samples)

    def on_book(self, book: Any, ts_ns: int) -> None:
        """Every book state counts, for the time it held (the EW means are time-weighted)."""
        best_bid = book.bids.best()
        best_ask = book.asks.best()
        if best_bid is None or best_ask is None:
            self._spread.update(ts_ns, None)
            self._depth.update(ts_ns, None)
            return
        bid_px = best_bid[0]
        ask_px = best_ask[0]
        mid = (bid_px + ask_px) * 0.5
        if not mid > 0.0:
            self._spread.update(ts_ns, None)
            self._depth.update(ts_ns, None)
            return
        self._spread.update(ts_ns, (ask_px - bid_px) / mid * 1e4)
        # as metrics.depth.band_depth: bids at or above mid(1 - X), asks at or below mid(1 + X)
        depth = float(book.bids.notional_within(mid * (1.0 - _BAND_FRAC))) + float(
            book.asks.notional_within(mid * (1.0 + _BAND_FRAC))
        )
        self._depth.update(ts_ns, depth)

    def on_book_invalid(self, ts_ns: int) -> None:
        # No value holds while the book is invalid: that time adds nothing (EwStateMean's None state).
        self._spread.update(ts_ns, None)
        self._depth.update(ts_ns, None)
        self._stats.on_invalid(ts_ns)

    def fill(self, book: Any, out: dict[str, object], ts_ns: int, flags: set[str]) -> None:
        stats = self._stats
        _sample(stats, out, book, ts_ns)
        for key, mean in (("spread_bps_ew_60s", self._spread), ("depth_total_10bps_ew_60s", self._depth)):
            value = mean.value(ts_ns)
            out[key] = value
            if value is not None and mean.weight(ts_ns) < WARM_WEIGHT:
                flags.add("WARMUP")
        if book is not None and stats.z_warm:
            out["spread_z"] = stats.spread_z(_float(out.get("spread_bps")))
            out["depth_z"] = stats.depth_z(_depth_total(out))
        else:
            out["spread_z"] = None
            out["depth_z"] = None


class RiskFamily:
    """Issue 11 item 11: vol_1m, micro_drift_bps, risk_scale, hedge_urgency (docs/metrics.md).

    In the default families, so on the hot path: the volatility figures change only when a second closes and are
    kept between those (`_closed`); the rest is a handful of float operations per payload. `vol_1m` is published
    from `vol_min_samples` returns on, with `coverage` PARTIAL until its EW weight reaches 0.95 (about 3 minutes)."""

    __slots__ = ("_closed", "_params", "_stats", "_vol", "_vol_ratio")

    def __init__(self, params: RiskParams, ew: EwParams) -> None:
        self._params = params
        self._stats = SecondStats(
            vol_half_life_s=params.vol_half_life_s,
            vol_ref_half_life_s=params.vol_ref_half_life_s,
            vol_min_samples=params.vol_min_samples,
            z_half_life_s=ew.z_half_life_s,
            z_min_samples=ew.z_min_samples,
        )
        self._closed = -1  # stats.closed when _vol / _vol_ratio were computed
        self._vol: float | None = None
        self._vol_ratio: float | None = None

    def on_book(self, book: Any, ts_ns: int) -> None:
        return None  # sampled per payload (fill)

    def on_book_invalid(self, ts_ns: int) -> None:
        self._stats.on_invalid(ts_ns)

    def fill(self, book: Any, out: dict[str, object], ts_ns: int, flags: set[str]) -> None:
        p = self._params
        stats = self._stats
        mid = out.get("mid") if book is not None else None
        spread = out.get("spread_bps")
        bid_depth = out.get("depth_bid_10bps")
        ask_depth = out.get("depth_ask_10bps")
        depth = bid_depth + ask_depth if type(bid_depth) is float and type(ask_depth) is float else None
        if book is None:
            stats.advance(ts_ns)
        else:
            stats.on_book(ts_ns, mid if type(mid) is float else None, spread if type(spread) is float else None, depth)
        if stats.closed != self._closed:
            self._closed = stats.closed
            vol = self._vol = stats.vol_1m()
            vol_ref = stats.vol_ref()
            self._vol_ratio = vol / vol_ref if vol is not None and vol_ref is not None and vol_ref > 0.0 else None
        vol = self._vol
        out["vol_1m"] = vol
        if vol is not None and not stats.vol_warm:
            # Younger than its own warm-up (~3 min, past the payload's 60 s WARMUP): says so per field.
            cov = _coverage(out)
            if cov is not None:
                cov["vol_1m"] = _PARTIAL
                flags.add(_PARTIAL_WINDOW)
        if type(mid) is not float or not mid > 0.0:
            # No VALID two-sided book: nothing to quote against (metrics.md 7: nothing during INVALID states).
            out["micro_drift_bps"] = None
            out["risk_scale"] = None
            out["hedge_urgency"] = None
            return
        micro = out.get(MICRO_PRICE_KEY)
        out["micro_drift_bps"] = micro_drift_bps(micro if type(micro) is float else None, mid)
        toxicity = out.get(TOXICITY_KEY)
        if type(toxicity) is not float:
            toxicity = None
        ofi = out.get("ofi_raw_10s")
        stress = abs(ofi * mid) / depth if type(ofi) is float and depth is not None and depth > 0.0 else None
        fragility = None
        if stats.z_warm:  # a z-score against minutes of a 24 h average is no evidence of stress: neutral until warm
            fragility = fragility_index(stats.spread_z(spread if type(spread) is float else None), stats.depth_z(depth))
        oi = out.get(OI_PRESSURE_KEY)
        out["risk_scale"] = risk_scale(p, toxicity, stress, fragility, oi if type(oi) is float else None)
        out["hedge_urgency"] = hedge_urgency(p, self._vol_ratio, toxicity, stress)
