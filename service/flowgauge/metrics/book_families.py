"""Per-book-event metric families of metrics.md 1.3, 2.1-2.2, 3.2 and 4.2-4.3, one source for both cores.

This file is the pure-Python reference (`FLOWGAUGE_CORE=python` imports it) and, compiled by Cython as
`flowgauge.core._families` (setup.py), the compiled core's implementation: the same operations on IEEE doubles in
the same order (no FMA contraction, no fast-math), so both cores publish the same bits by construction. It must
stay valid plain Python: absolute imports only, no Cython-only syntax. Each class follows `metrics.extended`'s
`BookFamily` protocol: `on_book(book, ts_ns)`, `on_book_invalid(ts_ns)`, `fill(book, out, ts_ns, flags)`.

Books are read through what `L2Book` and the core's `CBook` both answer: `side.best()`, `side.top(n)` (best
first), `side.worst_price()`. Exact sliding windows are the core's own classes (`windows`: `metrics.windows` or
the compiled ones), which tests hold identical.

Common rules (metrics.md 0.2, 1.4): positive = buying pressure; a first state (start, or after `on_book_invalid`)
has no predecessor, so no flow crosses an invalid period; an empty side is price -inf (bids) / +inf (asks) with
size 0; undefined values are None, never a made-up 0.
"""

from __future__ import annotations

import math
from math import exp
from typing import Any

__all__ = ["DepthExt", "Microprice", "Mlofi", "OfiExt", "cks_event", "level_weights", "solve"]

_S = 1_000_000_000
_INF = math.inf
WARM_WEIGHT = 0.95  # metrics.md 0.3: WARMUP while the warm-up weight is below this

OFI_WINDOWS_S = (1, 10, 60, 300)
CKS_BARS_S = (1, 10, 60)
ML_WINDOWS_S = (1, 10, 60)
BANDS_BPS = (5.0, 10.0, 25.0, 100.0, 250.0)
_BAND_NAMES = ("5bps", "10bps", "25bps", "100bps", "250bps")
EW_WINDOW_S = 10.0  # depth_ext's time-weighted EW means: boxcar-equivalent 10 s, H = 10 ln 2 s
VAMP_BAND_BPS = 10.0


def cks_event(
    pb: float, qb: float, pa: float, qa: float, bid_px: float, bid_sz: float, ask_px: float, ask_sz: float
) -> float:
    """metrics.md 1.1's case table: the flow of one transition from (pb, qb, pa, qa) to the new best levels."""
    if bid_px > pb:
        bid_term = bid_sz
    elif bid_px == pb:
        bid_term = bid_sz - qb
    else:
        bid_term = -qb
    if ask_px < pa:
        ask_term = -ask_sz
    elif ask_px == pa:
        ask_term = qa - ask_sz
    else:
        ask_term = qa
    return bid_term + ask_term


def _l1(book: Any) -> tuple[float, float, float, float]:
    """Best bid price/size and best ask price/size, an empty side as (-inf, 0) / (+inf, 0)."""
    best = book.bids.best()
    if best is None:
        bid_px, bid_sz = -_INF, 0.0
    else:
        bid_px, bid_sz = best
    best = book.asks.best()
    if best is None:
        ask_px, ask_sz = _INF, 0.0
    else:
        ask_px, ask_sz = best
    return bid_px, bid_sz, ask_px, ask_sz


def _prefix_within(side: Any, limit_bps: float, mid: float, bids: bool, start: int = 32) -> list[tuple[float, float]]:
    """A prefix of the side's levels (best first) holding every level within `limit_bps` of `mid`, and perhaps a
    few beyond it; read a growing prefix at a time from `start` levels (a 1000-level book is not copied for a
    10 bps band)."""
    price: float
    d: float
    n = start
    while True:
        levels = side.top(n)
        if len(levels) < n:
            return levels
        price = levels[-1][0]
        d = (mid - price) / mid * 1e4 if bids else (price - mid) / mid * 1e4
        if d > limit_bps:
            return levels
        n = n * 4


class _TimeWeighted:
    """Time-weighted EW mean of a piecewise-constant state with its warm-up weight (metrics.md 0.3):
    `m <- a m + (1-a) y_prev`, `w <- a w + (1-a)`, published as `m / w`, WARMUP while `w < 0.95`. A None state
    (undefined: empty side, invalid book) adds no time."""

    __slots__ = ("lam", "m", "t", "w", "y")

    def __init__(self, half_life_s: float) -> None:
        self.lam = math.log(2.0) / (half_life_s * _S)  # per ns
        self.m = 0.0
        self.w = 0.0
        self.t = -1  # time of the current state; -1 = none yet
        self.y: float | None = None  # the state holding since `t`

    def update(self, ts: int, y: float | None) -> None:
        """The state changes to `y` at `ts` (a time before the current one counts as no time passing)."""
        if self.y is not None and ts > self.t:
            a = math.exp(-self.lam * (ts - self.t))
            self.m = a * self.m + (1.0 - a) * self.y
            self.w = a * self.w + (1.0 - a)
        if ts > self.t:
            self.t = ts
        self.y = y

    def value(self, ts: int) -> tuple[float | None, bool]:
        """(bias-corrected mean at `ts`, warm): None before any defined state time has passed."""
        m = self.m
        w = self.w
        if self.y is not None and ts > self.t:
            a = math.exp(-self.lam * (ts - self.t))
            m = a * m + (1.0 - a) * self.y
            w = a * w + (1.0 - a)
        if w <= 0.0:
            return None, False
        return m / w, w >= WARM_WEIGHT


class _EwRegression:
    """metrics.md 0.3's EW regression of y on x, applied per bar with `a = exp(-bar / W)` (H_W = W ln 2)."""

    __slots__ = ("a", "sw", "sx", "sxx", "sxy", "sy", "syy")

    def __init__(self, bar_s: float, window_s: float) -> None:
        self.a = math.exp(-bar_s / window_s)
        self.sw = 0.0
        self.sx = 0.0
        self.sy = 0.0
        self.sxx = 0.0
        self.sxy = 0.0
        self.syy = 0.0

    def add(self, x: float, y: float) -> None:
        a = self.a
        self.sw = a * self.sw + 1.0
        self.sx = a * self.sx + x
        self.sy = a * self.sy + y
        self.sxx = a * self.sxx + x * x
        self.sxy = a * self.sxy + x * y
        self.syy = a * self.syy + y * y

    def add_empty(self, n: int) -> None:
        """`n` bars with x = y = 0 (empty bars, state carried forward) in closed form."""
        a = self.a
        f = a**n
        self.sw = f * self.sw + (1.0 - f) / (1.0 - a)
        self.sx = f * self.sx
        self.sy = f * self.sy
        self.sxx = f * self.sxx
        self.sxy = f * self.sxy
        self.syy = f * self.syy

    def fit(self) -> tuple[float | None, float | None]:
        """(beta, R^2); None when x (or, for R^2, y) has no variance yet. R^2 is clamped to [0, 1] (rounding)."""
        sw = self.sw
        den = sw * self.sxx - self.sx * self.sx
        if not den > 0.0:
            return None, None
        num = sw * self.sxy - self.sx * self.sy
        beta = num / den
        dy = sw * self.syy - self.sy * self.sy
        if not dy > 0.0:
            return beta, None
        r2 = num * num / (den * dy)
        return beta, (1.0 if r2 > 1.0 else r2)


class _Bars:
    """Clock bars of `bar_s` aligned to epoch multiples feeding a CKS regression of the bar's mid change (ticks) on
    its summed OFI. A bar is skipped when it holds a first state (reset) or either end's mid is undefined
    (metrics.md 1.4); bars with no event are regression points (0, 0). Bars close on the first book event of a
    later bar, so a payload shows the regression over the bars closed by then."""

    __slots__ = ("bar_ns", "k", "mid_last", "mid_start", "ofi", "reg", "tainted")

    def __init__(self, bar_s: int, window_s: float) -> None:
        self.bar_ns = bar_s * _S
        self.reg = _EwRegression(float(bar_s), window_s)
        self.k = -(1 << 62)  # current bar index; none yet
        self.ofi = 0.0
        self.mid_start: float | None = None
        self.mid_last: float | None = None
        self.tainted = True

    def on_book(self, ts: int, e: float | None, mid: float | None, tick: float) -> None:
        k = ts // self.bar_ns
        if k > self.k:
            if self.k > -(1 << 62):
                if not self.tainted and self.mid_start is not None and self.mid_last is not None:
                    self.reg.add(self.ofi, (self.mid_last - self.mid_start) / tick)
                if self.mid_last is not None and k - self.k > 1:
                    self.reg.add_empty(k - self.k - 1)
            self.k = k
            self.ofi = 0.0
            self.mid_start = self.mid_last
            self.tainted = self.mid_start is None
        if e is None:
            self.tainted = True
        else:
            self.ofi += e
        self.mid_last = mid

    def invalid(self) -> None:
        self.tainted = True
        self.mid_last = None


class _BarZ:
    """EW mean and variance (metrics.md 0.3, 8.3) of the series of one window's depth-normalised OFI sampled once per
    clock bar of the window's length: each bar's value is its summed flow over AD_ew at the bar's end. The weighted
    Welford recursion of `metrics.ew.EwVariance` (`w <- a w + b`, `d = y - m`, `m <- m + (b / w) d`,
    `S <- a S + b d (y - m)`, variance `S / w`, `a = exp(-lambda dt)` from the previous sample's time, the first
    sample weighed as if one bar after another); a run of n bars with no event adds n zeros in closed form (the
    weighted merge of the n zeros, weight 1 - a^n, with the history). A bar holding a first state (start, after an
    invalid period) covers less than its length and is not a sample; neither are the bars of an invalid period nor a
    bar without AD_ew."""

    __slots__ = ("a_bar", "bar_ns", "count", "end", "k", "lam", "last", "m", "ofi", "s", "tainted", "valid", "w")

    def __init__(self, bar_s: int, half_life_s: float) -> None:
        self.bar_ns = bar_s * _S
        self.lam = math.log(2.0) / (half_life_s * _S)  # per ns
        self.a_bar = math.exp(-self.lam * self.bar_ns)
        self.k = -(1 << 62)  # current bar index; none yet
        self.end = -(1 << 62)  # the current bar's end: an event before it closes nothing (the common case)
        self.ofi = 0.0
        self.tainted = True
        self.valid = False
        self.last = -1  # time of the last sample; -1 = none yet
        self.m = 0.0
        self.s = 0.0
        self.w = 0.0
        self.count = 0

    def _add(self, t: int, y: float) -> None:
        a: float = self.a_bar
        if self.last >= 0:
            a = math.exp(-self.lam * (t - self.last)) if t > self.last else 1.0
        b: float = 1.0 - a
        w: float = a * self.w + b
        d: float = y - self.m
        m: float = self.m + (b / w) * d if w > 0.0 else self.m
        self.s = a * self.s + b * d * (y - m)
        self.m = m
        self.w = w
        self.last = t
        self.count += 1

    def _add_zeros(self, t: int, n: int) -> None:
        """n bars with no event, the last ending at `t`."""
        f: float = self.a_bar**n
        if self.last >= 0:
            f = math.exp(-self.lam * (t - self.last)) if t > self.last else 1.0
        kept: float = f * self.w
        w: float = kept + (1.0 - f)
        m: float = self.m
        self.s = f * self.s + kept * (1.0 - f) / w * m * m
        self.m = kept * m / w
        self.w = w
        self.last = t
        self.count += n

    def _advance(self, ts: int, depth: _TimeWeighted) -> None:
        """Close the bars that ended by `ts` (before `depth` takes the state of `ts`: a bar reads AD_ew at its end)."""
        k = ts // self.bar_ns
        if k > self.k:
            if self.k > -(1 << 62):
                end = (self.k + 1) * self.bar_ns
                ad, _ = depth.value(end)
                if ad is not None and ad > 0.0:
                    if not self.tainted:
                        self._add(end, self.ofi / ad)
                    if self.valid and k - self.k > 1:
                        self._add_zeros(k * self.bar_ns, k - self.k - 1)
            self.k = k
            self.end = (k + 1) * self.bar_ns
            self.ofi = 0.0
            self.tainted = False

    def on_book(self, ts: int, e: float | None, depth: _TimeWeighted) -> None:
        if ts >= self.end:
            self._advance(ts, depth)
        self.valid = True
        if e is None:
            self.tainted = True
        else:
            self.ofi += e

    def invalid(self, ts: int, depth: _TimeWeighted) -> None:
        self._advance(ts, depth)
        self.tainted = True
        self.valid = False

    def zscore(self, y: float, min_samples: int) -> float | None:
        """`(y - m) / sqrt(v)`; None until `min_samples` bars and the weight WARM_WEIGHT (a slow estimate is null
        until warm, as the other z-scores), or while the variance is 0."""
        if self.count < min_samples or self.w < WARM_WEIGHT:
            return None
        v: float = self.s / self.w
        if not v > 0.0:
            return None
        return (y - self.m) / math.sqrt(v)


class OfiExt:
    """metrics.md 1.3: `ofi_notional_T`, `ofi_depthnorm_T`, `ofi_implied_ticks_T`, `ofi_implied_bps_T`,
    `ofi_ratio_T`, `ofi_z_T` (T = 1 s, 10 s, 60 s, 300 s, exact windows), CKS beta / R^2 on 1 s, 10 s and 60 s clock
    bars, `cks_beta_x_depth` (10 s beta times AD_ew).

    AD_ew is the time-weighted EW mean of the L1 depth (q^B + q^A)/2 (H_AD = 30 min by default); while its warm-up
    weight is below 0.95 the payload carries WARMUP. `ofi_notional_T` prices each e_n at the mid of the state it
    produced (the state before it when that one has no mid; no notional when neither has). `ofi_z_T` is
    `ofi_depthnorm_T` against the EW mean / variance of its T-long clock bars (`_BarZ`, H = 24 h by default):
    null until warm, without a flag, like the project's other slow z-scores."""

    def __init__(self, tick_size: float, params: Any, windows: Any) -> None:
        self.tick = tick_size
        self.has_prev = False
        self.seen = False
        self.pb = 0.0
        self.qb = 0.0
        self.pa = 0.0
        self.qa = 0.0
        self.wins = [windows.SlidingFlow(t * _S) for t in OFI_WINDOWS_S]
        self.notional = [windows.SlidingSum(t * _S) for t in OFI_WINDOWS_S]
        self.depth = _TimeWeighted(params.depth_half_life_s)
        self.z_min_samples = params.z_min_samples
        self.zbars = [_BarZ(t, params.z_half_life_s) for t in OFI_WINDOWS_S]
        self.bars = [_Bars(b, params.cks_window_s) for b in CKS_BARS_S]

    def on_book(self, book: Any, ts: int) -> None:
        bid_px, bid_sz, ask_px, ask_sz = _l1(book)
        e: float | None = None
        mid = (bid_px + ask_px) * 0.5 if bid_sz > 0.0 and ask_sz > 0.0 else None
        if self.has_prev:
            e = cks_event(self.pb, self.qb, self.pa, self.qa, bid_px, bid_sz, ask_px, ask_sz)
            if e != 0.0:
                mass = -e if e < 0.0 else e
                for win in self.wins:
                    win.add(ts, e, mass)
                ref = mid
                if ref is None and self.qb > 0.0 and self.qa > 0.0:
                    ref = (self.pb + self.pa) * 0.5
                if ref is not None:
                    notional = e * ref
                    for win in self.notional:
                        win.add(ts, notional)
        for zbars in self.zbars:
            zbars.on_book(ts, e, self.depth)  # before the depth takes this state: a closing bar reads AD_ew at its end
        self.has_prev = True
        self.seen = True
        self.pb = bid_px
        self.qb = bid_sz
        self.pa = ask_px
        self.qa = ask_sz
        self.depth.update(ts, (bid_sz + ask_sz) * 0.5)
        if self.tick > 0.0:
            for bars in self.bars:
                bars.on_book(ts, e, mid, self.tick)

    def on_book_invalid(self, ts: int) -> None:
        self.has_prev = False
        for zbars in self.zbars:
            zbars.invalid(ts, self.depth)  # before the depth forgets its state: bars closing here read AD_ew
        self.depth.update(ts, None)
        for bars in self.bars:
            bars.invalid()

    def fill(self, book: Any, out: dict[str, Any], ts: int, flags: set[str]) -> None:
        ad, warm = self.depth.value(ts)
        if self.seen and not warm:
            flags.add("WARMUP")
        if ad is not None and not ad > 0.0:
            ad = None
        mid: float | None = None
        if book is not None:
            bid_px, bid_sz, ask_px, ask_sz = _l1(book)
            if bid_sz > 0.0 and ask_sz > 0.0:
                mid = (bid_px + ask_px) * 0.5
        tick = self.tick
        for i in range(len(OFI_WINDOWS_S)):
            name = ("1s", "10s", "60s", "300s")[i]
            if not self.seen:
                out["ofi_notional_" + name] = None
                out["ofi_depthnorm_" + name] = None
                out["ofi_implied_ticks_" + name] = None
                out["ofi_implied_bps_" + name] = None
                out["ofi_ratio_" + name] = None
                out["ofi_z_" + name] = None
                continue
            signed, mass, _ = self.wins[i].evaluate(ts)
            out["ofi_notional_" + name] = self.notional[i].value(ts)
            if ad is None:
                out["ofi_depthnorm_" + name] = None
                out["ofi_implied_ticks_" + name] = None
                out["ofi_implied_bps_" + name] = None
                out["ofi_z_" + name] = None
            else:
                depthnorm = signed / ad
                ticks = signed / (2.0 * ad)
                out["ofi_depthnorm_" + name] = depthnorm
                out["ofi_implied_ticks_" + name] = ticks
                if mid is not None and mid > 0.0 and tick > 0.0:
                    out["ofi_implied_bps_" + name] = ticks * tick / mid * 1e4
                else:
                    out["ofi_implied_bps_" + name] = None
                out["ofi_z_" + name] = self.zbars[i].zscore(depthnorm, self.z_min_samples)
            out["ofi_ratio_" + name] = signed / mass if mass > 0.0 else None
        beta10: float | None = None
        for i in range(len(CKS_BARS_S)):
            name = ("1s", "10s", "60s")[i]
            beta, r2 = self.bars[i].reg.fit()
            out["cks_beta_" + name] = beta
            out["cks_r2_" + name] = r2
            if i == 1:
                beta10 = beta
        out["cks_beta_x_depth"] = beta10 * ad if beta10 is not None and ad is not None else None


def level_weights(levels: int, decay: float) -> list[float]:
    """metrics.md 3.2: w_m = exp(-(m-1)/kappa), m = 1..levels."""
    return [math.exp(-m / decay) for m in range(levels)]


class Mlofi:
    """metrics.md 2.1 / 2.2: rank-keyed per-level OFI e^m_n (m = 1..M) summed over exact 1 s / 10 s / 60 s
    windows (`mlofi_T`, arrays of M numbers), divided by the common depth Q^{M,h} (`mlofi_norm_T`), their
    weighted combination (`ofi_integrated_T`, weights w / ||w||_1, equal weights unless configured) and
    plain average (`ofi_ml_avg_T`). A level a side does not have is empty (price -inf / +inf, size 0), as for an
    empty side at L1. Q^{M,h} below `min_depth` is floored there, flagged FLOORED_DENOM."""

    def __init__(self, params: Any, integrated: Any, windows: Any) -> None:
        m = params.levels
        self.m = m
        self.min_depth = params.min_depth
        weights = list(integrated.weights) if integrated.weights else [1.0] * m
        norm = 0.0
        for w in weights:
            norm += abs(w)
        self.weights = [w / norm for w in weights]
        self.has_prev = False
        self.seen = False
        self.prev_b: list[tuple[float, float]] = []
        self.prev_a: list[tuple[float, float]] = []
        self.level_wins = [[windows.SlidingSum(t * _S) for _ in range(m)] for t in ML_WINDOWS_S]
        self.depth_wins = [windows.SlidingFlow(t * _S) for t in ML_WINDOWS_S]

    def _side(self, side: Any, empty_px: float) -> list[tuple[float, float]]:
        levels = side.top(self.m)
        while len(levels) < self.m:
            levels.append((empty_px, 0.0))
        return levels

    def on_book(self, book: Any, ts: int) -> None:
        bids = self._side(book.bids, -_INF)
        asks = self._side(book.asks, _INF)
        if self.has_prev:
            prev_b = self.prev_b
            prev_a = self.prev_a
            depth = 0.0
            for i in range(self.m):
                pb, qb = prev_b[i]
                pa, qa = prev_a[i]
                bid_px, bid_sz = bids[i]
                ask_px, ask_sz = asks[i]
                depth += bid_sz + ask_sz
                e = cks_event(pb, qb, pa, qa, bid_px, bid_sz, ask_px, ask_sz)
                if e != 0.0:
                    for wins in self.level_wins:
                        wins[i].add(ts, e)
            for win in self.depth_wins:
                win.add(ts, depth, 1.0)
        self.has_prev = True
        self.seen = True
        self.prev_b = bids
        self.prev_a = asks

    def on_book_invalid(self, ts: int) -> None:
        self.has_prev = False

    def fill(self, book: Any, out: dict[str, Any], ts: int, flags: set[str]) -> None:
        m = self.m
        for j in range(len(ML_WINDOWS_S)):
            name = ("1s", "10s", "60s")[j]
            if not self.seen:
                out["mlofi_" + name] = None
                out["mlofi_norm_" + name] = None
                out["ofi_integrated_" + name] = None
                out["ofi_ml_avg_" + name] = None
                continue
            flows = [win.value(ts) for win in self.level_wins[j]]
            out["mlofi_" + name] = flows
            depth, _, n = self.depth_wins[j].evaluate(ts)
            if n == 0:
                out["mlofi_norm_" + name] = None
                out["ofi_integrated_" + name] = None
                out["ofi_ml_avg_" + name] = None
                continue
            q = depth / (2.0 * m * n)
            if q < self.min_depth:
                q = self.min_depth
                flags.add("FLOORED_DENOM")
            norm = [x / q for x in flows]
            out["mlofi_norm_" + name] = norm
            integrated = 0.0
            total = 0.0
            for i in range(m):
                integrated += self.weights[i] * norm[i]
                total += norm[i]
            out["ofi_integrated_" + name] = integrated
            out["ofi_ml_avg_" + name] = total / m


_DEPTH_EXT_KEYS = (
    "di_lvl_5", "di_lvl_10",
    *("di_dist_" + b for b in _BAND_NAMES),
    *("bi_" + b for b in _BAND_NAMES),
    "vamp_10bps",
)  # fmt: skip
_DEPTH_EW_KEYS = ("qi_l1_ew_10s", "di_lvl_5_ew_10s", "di_dist_10bps_ew_10s", "bi_10bps_ew_10s")


def _walk_side(
    levels: list[tuple[float, float]],
    mid: float,
    is_bid: bool,
    scale: float,
    flat: list[float],
    dist: list[float],
    within: list[tuple[float, float]],
) -> int:
    """One side's band sums for BANDS_BPS (flat notional into `flat`, distance-weighted into `dist`) and its levels
    within VAMP_BAND_BPS (into `within`); returns how many levels lie within the widest band. Levels come best
    first, so their distance grows: each band's sums are a prefix of the side's. The `float` annotations make the
    compiled module do this arithmetic in C doubles (the same IEEE operations in the same order as Python's
    floats)."""
    flat_sum: float = 0.0
    dist_sum: float = 0.0
    widest: float = BANDS_BPS[4]
    d: float
    price: float
    size: float
    notional: float
    j = 0
    used = 0
    for level in levels:
        price = level[0]
        size = level[1]
        d = (mid - price) / mid * 1e4 if is_bid else (price - mid) / mid * 1e4
        if d > widest:
            break
        used += 1
        while j < 5 and d > BANDS_BPS[j]:
            flat[j] = flat_sum
            dist[j] = dist_sum
            j += 1
        if d <= VAMP_BAND_BPS:
            within.append((price, size))
        notional = price * size
        flat_sum += notional
        dist_sum += exp(-d / scale) * notional
    while j < 5:
        flat[j] = flat_sum
        dist[j] = dist_sum
        j += 1
    return used


def _vamp(bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> float | None:
    """metrics.md 4.3: sum(P^b_i q^a_i + P^a_i q^b_i) / sum(q^b_i + q^a_i) over the level pairs i both sides hold
    (within the band), pairing level i's bid price with level i's ask size as the published formula does."""
    pairs = len(bids) if len(bids) < len(asks) else len(asks)
    num: float = 0.0
    den: float = 0.0
    for i in range(pairs):
        num += bids[i][0] * asks[i][1] + asks[i][0] * bids[i][1]
        den += bids[i][1] + asks[i][1]
    return num / den if den > 0.0 else None


def _ratio(bid: float, ask: float) -> float | None:
    total = bid + ask
    return (bid - ask) / total if total > 0.0 else None


class DepthExt:
    """metrics.md 3.2: `di_lvl_M` (M = 5, 10; weights exp(-(m-1)/kappa)), `di_dist_X` (notional within X bps,
    weights exp(-d/l)), `bi_X` (flat notional within X bps), X = 5, 10, 25, 100, 250 bps, the time-weighted
    EW means (10 s equivalent) of qi_l1, di_lvl_5, di_dist_10bps, bi_10bps, and metrics.md 4.3's VAMP over the
    levels within 10 bps of the mid (`vamp_10bps`, see `_vamp`).

    Values are computed per book event (the EW means need the state that held before each one) and published
    while the book is VALID. A band the visible book does not reach on a non-empty side is `coverage`
    EXHAUSTED and PARTIAL_WINDOW (metrics.md 3.3); one side empty within a band gives +-1 and EMPTY_SIDE."""

    def __init__(self, params: Any) -> None:
        self.weights = level_weights(10, params.level_decay)
        self.scale = params.distance_scale_bps
        self.reach = [24, 24]  # levels within the widest band at the last event, per side
        self.values: list[float | None] | None = None  # per _DEPTH_EXT_KEYS, of the current book
        self.exhausted: list[str] = []
        self.one_sided = False
        half_life = EW_WINDOW_S * math.log(2.0)
        self.ew = [_TimeWeighted(half_life) for _ in _DEPTH_EW_KEYS]

    def on_book(self, book: Any, ts: int) -> None:
        bids = book.bids.top(10)
        asks = book.asks.top(10)
        values: list[float | None] = []
        weights = self.weights
        for levels in (5, 10):
            num = 0.0
            den = 0.0
            for i in range(levels):
                qb = bids[i][1] if i < len(bids) else 0.0
                qa = asks[i][1] if i < len(asks) else 0.0
                num += weights[i] * (qb - qa)
                den += weights[i] * (qb + qa)
            values.append(num / den if den > 0.0 else None)
        exhausted: list[str] = []
        one_sided = False
        if bids and asks:
            mid = (bids[0][0] + asks[0][0]) * 0.5
            flat_b = [0.0] * 5
            flat_a = [0.0] * 5
            dist_b = [0.0] * 5
            dist_a = [0.0] * 5
            top = BANDS_BPS[4]
            near: list[list[tuple[float, float]]] = []  # each side's levels within VAMP_BAND_BPS, best first
            for k, side, flat, dist, is_bid in (
                (0, book.bids, flat_b, dist_b, True),
                (1, book.asks, flat_a, dist_a, False),
            ):
                within: list[tuple[float, float]] = []
                # Start from the last walk's length: one read of the side in the common case.
                walk = _prefix_within(side, top, mid, is_bid, self.reach[k] + 8)
                self.reach[k] = _walk_side(walk, mid, is_bid, self.scale, flat, dist, within)
                near.append(within)
                worst = side.worst_price()
                reach = (mid - worst) / mid * 1e4 if is_bid else (worst - mid) / mid * 1e4
                for j in range(5):
                    if reach < BANDS_BPS[j]:
                        exhausted.append(_BAND_NAMES[j])
            dists = []
            flats = []
            for j in range(5):
                dists.append(_ratio(dist_b[j], dist_a[j]))
                flats.append(_ratio(flat_b[j], flat_a[j]))
                if (flat_b[j] > 0.0) != (flat_a[j] > 0.0):
                    one_sided = True
            values.extend(dists)
            values.extend(flats)
            values.append(_vamp(near[0], near[1]))
        else:
            values.extend([None] * 11)
        self.values = values
        self.exhausted = exhausted
        self.one_sided = one_sided
        qi = _ratio(bids[0][1], asks[0][1]) if bids and asks else None
        states = (qi, values[0], values[3], values[8])
        for i in range(4):
            self.ew[i].update(ts, states[i])

    def on_book_invalid(self, ts: int) -> None:
        self.values = None
        for ew in self.ew:
            ew.update(ts, None)

    def fill(self, book: Any, out: dict[str, Any], ts: int, flags: set[str]) -> None:
        values = self.values
        if book is None or values is None:
            for key in _DEPTH_EXT_KEYS:
                out[key] = None
            for key in _DEPTH_EW_KEYS:
                out[key] = None
            return
        for i in range(len(_DEPTH_EXT_KEYS)):
            out[_DEPTH_EXT_KEYS[i]] = values[i]
        if self.exhausted:
            flags.add("PARTIAL_WINDOW")
            coverage = out.get("coverage")
            if isinstance(coverage, dict):
                for band in self.exhausted:
                    coverage["di_dist_" + band] = "EXHAUSTED"
                    coverage["bi_" + band] = "EXHAUSTED"
        if self.one_sided:
            flags.add("EMPTY_SIDE")
        for i in range(4):
            value, warm = self.ew[i].value(ts)
            out[_DEPTH_EW_KEYS[i]] = value
            if value is not None and not warm:
                flags.add("WARMUP")


def solve(a: list[list[float]], rhs: list[list[float]]) -> list[list[float]] | None:
    """X with a X = rhs (Gauss-Jordan, partial pivoting); None when `a` is singular (a pivot below 1e-12)."""
    n = len(a)
    width = len(rhs[0])
    rows = [a[i][:] + rhs[i][:] for i in range(n)]
    for col in range(n):
        pivot = col
        best = abs(rows[col][col])
        for r in range(col + 1, n):
            v = abs(rows[r][col])
            if v > best:
                best = v
                pivot = r
        if best < 1e-12:
            return None
        if pivot != col:
            rows[col], rows[pivot] = rows[pivot], rows[col]
        prow = rows[col]
        inv = 1.0 / prow[col]
        for c in range(col, n + width):
            prow[c] = prow[c] * inv
        for r in range(n):
            if r != col:
                row = rows[r]
                f = row[col]
                if f != 0.0:
                    for c in range(col, n + width):
                        row[c] = row[c] - f * prow[c]
    return [rows[i][n:] for i in range(n)]


_JUMPS = (-1.0, -0.5, 0.5, 1.0)  # metrics.md 4.2: K, mid jumps in ticks
_RESCALE = 1e150  # transition weights grow instead of every count decaying; rescale them all past this


class Microprice:
    """metrics.md 4.2: Stoikov's micro-price `mid + G*(I, S) * tick`, estimated online per instrument.

    The state (imbalance bucket of I = q^B/(q^B + q^A) in `imbalance_buckets` equal-width buckets, spread in ticks)
    is sampled every `sample_ms` of exchange time (the state holding at each boundary; one sample = one step).
    Transitions between consecutive samples are counted, symmetrised (I -> 1 - I, dM -> -dM), into: no mid change
    (Q), a mid jump of K = -1, -1/2, +1/2, +1 ticks (R1) and the state after a jump (R2); wider jumps and spreads
    above `max_spread_ticks` are dropped; no transition crosses an invalid period. Counts decay with a half-life of
    `memory_days` (the spec's trailing window). After `min_samples` transitions, and every `refit_s` after that,
    G* = sum_{k=1..iterations} B^(k-1) g1 with g1 = (1 - Q)^-1 R1 K, B = (1 - Q)^-1 R2 is refitted, over the
    states from which a mid change was observed to follow (`_reaching`; the others stay null).

    Published: `micro_price` (None until the first fit, for a state never observed, for a spread above
    `max_spread_ticks` (the spec's fallback; `wmid` stays in core), an empty side or an invalid book) and
    `micro_minus_mid_bps`. O(1) per book event and per payload (a refit is O(states^3), once per `refit_s`)."""

    def __init__(self, tick_size: float, params: Any) -> None:
        self.tick = tick_size
        self.n_imb = params.imbalance_buckets
        self.n_spread = params.max_spread_ticks
        self.iterations = params.iterations
        self.sample_ns = params.sample_ms * 1_000_000
        self.min_samples = params.min_samples
        self.refit_ns = int(params.refit_s * _S)
        n = self.n_imb * self.n_spread
        self.n_states = n
        # One sample's weight grows by 2^(sample / memory) per sample: old counts weigh less, as if decayed.
        self.growth = 2.0 ** ((params.sample_ms / 1000.0) / (params.memory_days * 86400.0))
        self.inc = 1.0
        self.q = [0.0] * (n * n)
        self.r1 = [0.0] * (n * 4)
        self.r2 = [0.0] * (n * n)
        self.total = [0.0] * n
        self.transitions = 0
        self.fit_ts = -1
        self.g: list[float | None] | None = None
        self.k = -(1 << 62)  # sample index of the current state
        self.state = -1  # state index holding now (-1: none: empty side, wide spread, invalid)
        self.mid = 0.0
        self.valid = False
        self.sample_state = -1  # the last sample's state (-1: none)
        self.sample_mid = 0.0

    def _state_of(self, bid_px: float, bid_sz: float, ask_px: float, ask_sz: float) -> int:
        if not (bid_sz > 0.0 and ask_sz > 0.0) or not self.tick > 0.0:
            return -1
        # The nearest tick; not round(): compiled to C's round, it would break ties away from zero, Python to even.
        spread = math.floor((ask_px - bid_px) / self.tick + 0.5)
        if spread < 1 or spread > self.n_spread:
            return -1
        bucket = int(bid_sz / (bid_sz + ask_sz) * self.n_imb)
        if bucket >= self.n_imb:
            bucket = self.n_imb - 1
        return (spread - 1) * self.n_imb + bucket

    def _mirror(self, state: int) -> int:
        n_imb = self.n_imb
        return (state // n_imb) * n_imb + (n_imb - 1 - state % n_imb)

    def _count(self, x: int, y: int, half_ticks: int) -> None:
        n = self.n_states
        inc = self.inc
        self.total[x] += inc
        if half_ticks == 0:
            self.q[x * n + y] += inc
        else:
            j = half_ticks + 2 if half_ticks < 0 else half_ticks + 1
            self.r1[x * 4 + j] += inc
            self.r2[x * n + y] += inc

    def _sample(self) -> None:
        """One sample of the state holding now: count the transition from the previous sample."""
        x = self.sample_state
        y = self.state if self.valid else -1
        if x >= 0 and y >= 0:
            half_ticks = math.floor((self.mid - self.sample_mid) / self.tick * 2.0 + 0.5)
            if -2 <= half_ticks <= 2:
                self._count(x, y, half_ticks)
                self._count(self._mirror(x), self._mirror(y), -half_ticks)
                self.transitions += 1
                self.inc = self.inc * self.growth
                if self.inc > _RESCALE:
                    self._rescale()
        self.sample_state = y
        self.sample_mid = self.mid

    def _rescale(self) -> None:
        f = 1.0 / self.inc
        for values in (self.q, self.r1, self.r2, self.total):
            for i in range(len(values)):
                values[i] = values[i] * f
        self.inc = 1.0

    def on_book(self, book: Any, ts: int) -> None:
        k = ts // self.sample_ns
        if k > self.k:
            if self.k > -(1 << 62):
                # The state held at every boundary since the last one; identical samples past the first add
                # self-transitions (capped: a long quiet spell is one spell, not a day of counts).
                steps = k - self.k
                if steps > 64:
                    steps = 64
                for _ in range(steps):
                    self._sample()
            self.k = k
        bid_px, bid_sz, ask_px, ask_sz = _l1(book)
        self.state = self._state_of(bid_px, bid_sz, ask_px, ask_sz)
        self.mid = (bid_px + ask_px) * 0.5 if self.state >= 0 else 0.0
        self.valid = True
        if self.transitions >= self.min_samples and (self.fit_ts < 0 or ts - self.fit_ts >= self.refit_ns):
            self.fit_ts = ts
            self.g = self._fit()

    def on_book_invalid(self, ts: int) -> None:
        self.valid = False
        self.state = -1
        self.sample_state = -1

    def _reaching(self) -> list[int]:
        """The observed states from which a mid change was seen to follow, directly or through other states: the
        chain restricted to them is absorbing, so (1 - Q) is invertible there. From the others the expected
        move is unknown (their micro-price is null; as a later state after a jump they count as no drift)."""
        n = self.n_states
        reach = [False] * n
        for x in range(n):
            for j in range(4):
                if self.r1[x * 4 + j] > 0.0:
                    reach[x] = True
        changed = True
        while changed:
            changed = False
            for x in range(n):
                if not reach[x] and self.total[x] > 0.0:
                    for y in range(n):
                        if reach[y] and self.q[x * n + y] > 0.0:
                            reach[x] = True
                            changed = True
                            break
        return [x for x in range(n) if reach[x]]

    def _fit(self) -> list[float | None] | None:
        n = self.n_states
        states = self._reaching()
        m = len(states)
        if m == 0:
            return None
        # (1 - Q) restricted to the reaching states, against [R1 K | R2] (all states after a jump).
        a = [[0.0] * m for _ in range(m)]
        rhs = [[0.0] * (n + 1) for _ in range(m)]
        for i in range(m):
            x = states[i]
            total = self.total[x]
            a[i][i] = 1.0
            for k in range(m):
                a[i][k] = a[i][k] - self.q[x * n + states[k]] / total
            for y in range(n):
                rhs[i][y + 1] = self.r2[x * n + y] / total
            jump = 0.0
            for j in range(4):
                jump += self.r1[x * 4 + j] / total * _JUMPS[j]
            rhs[i][0] = jump
        solved = solve(a, rhs)
        if solved is None:
            return None
        g: list[float | None] = [None] * n
        term = [0.0] * n  # g^k by state; 0 for the states outside the system
        for i in range(m):
            term[states[i]] = solved[i][0]
            g[states[i]] = solved[i][0]
        for _ in range(self.iterations - 1):
            nxt = [0.0] * n
            for i in range(m):
                row = solved[i]
                acc = 0.0
                for y in range(n):
                    acc += row[y + 1] * term[y]
                nxt[states[i]] = acc
            term = nxt
            for i in range(m):
                x = states[i]
                g[x] = g[x] + term[x]  # type: ignore[operator]  # set above for every state in the system
        return g

    def fill(self, book: Any, out: dict[str, Any], ts: int, flags: set[str]) -> None:
        micro: float | None = None
        drift: float | None = None
        g = self.g
        state = self.state
        if book is not None and self.valid and g is not None and state >= 0:
            adjustment = g[state]
            if adjustment is not None:
                mid = self.mid
                micro = mid + adjustment * self.tick
                drift = (micro - mid) / mid * 1e4
        out["micro_price"] = micro
        out["micro_minus_mid_bps"] = drift
