"""One instrument's 1-second statistics: the slow EW state behind `vol_1m`, resiliency and the fragility z-scores.

Pure, synchronous metric math (plain floats, `math`). The instrument's book states are sampled on a 1-second clock
(`metrics.bars.ClockBars`, exchange time); every closed 1-second bar updates, once:

* `vol`: EW mean of squared 1-s log mid returns, half-life `vol_half_life_s` (default 41.6 s, mass-equivalent to
  1 minute); `vol_1m = sqrt(mean) * 1e4`, bps per sqrt(second). An empty bar is a zero return (the mid did not
  move), a bar touching an invalid book no return at all.
* `vol_ref`: the same over `vol_ref_half_life_s` (default 1 h, metrics.md §8.3), the "normal" level `vol_1m` is
  compared with.
* `spread` and `depth`: EW mean and variance of the closing `spread_bps` and `ln depth_total_10bps`, half-life
  `z_half_life_s` (default 24 h, metrics.md §8.3), for z-scores of the current state.
* `resiliency`: AR(1) of the closing `ln depth_total_10bps` around its EW mean (half-life
  `resiliency_half_life_s`, default 1 h, metrics.md §7 (a)): `x_k = phi * x_{k-1} + e` by EW regression (same
  half-life); `resiliency_halflife_s = ln 0.5 / ln phi` seconds for `0 < phi < 1`, else None.

Bars close when a later book state arrives (`advance`), so every value read at a payload's time `t` covers the
1-second bars that ended at or before `t`: the same in replay and live, and in both cores.
"""

from __future__ import annotations

import math

from flowgauge.metrics.bars import Bar, ClockBars
from flowgauge.metrics.ew import EwMean, EwRegression, EwVariance

__all__ = ["SECOND_NS", "SecondStats"]

SECOND_NS = 1_000_000_000
_LN_HALF = math.log(0.5)


class SecondStats:
    """1-second sampling and EW statistics of one instrument (see the module docstring)."""

    __slots__ = ("_bars", "_depth", "_depth_mean", "_prev_dev", "_resiliency", "_spread", "_vol", "_vol_ref",
                 "closed", "vol_min_samples")  # fmt: skip

    def __init__(
        self,
        *,
        vol_half_life_s: float = 60.0 * math.log(2.0),
        vol_ref_half_life_s: float = 3600.0,
        z_half_life_s: float = 86_400.0,
        z_min_samples: int = 30,
        resiliency_half_life_s: float = 3600.0,
        vol_min_samples: int = 10,
    ) -> None:
        self._bars = ClockBars(SECOND_NS)
        self._vol = EwMean(vol_half_life_s)
        self._vol_ref = EwMean(vol_ref_half_life_s)
        self._spread = EwVariance(z_half_life_s, min_samples=z_min_samples)
        self._depth = EwVariance(z_half_life_s, min_samples=z_min_samples)
        self._depth_mean = EwMean(resiliency_half_life_s)
        self._resiliency = EwRegression(resiliency_half_life_s)
        self._prev_dev: float | None = None  # the previous bar's log-depth deviation (None across an invalid bar)
        self.vol_min_samples = vol_min_samples
        self.closed = 0  # seconds closed so far: every statistic here changes only when it grows

    # -- inputs ---------------------------------------------------------------------------------------------

    def advance(self, t: int) -> None:
        """Close the 1-second bars that ended at or before `t` (call before reading values for a payload at `t`)."""
        for bar in self._bars.close_until(t):
            self._close(bar)

    def on_book(self, t: int, mid: float | None, spread_bps: float | None, depth_total: float | None) -> None:
        """The book state at `t` (VALID; mid None with an empty side)."""
        for bar in self._bars.on_book(t, mid, None, spread_bps, depth_total):
            self._close(bar)

    def on_invalid(self, t: int) -> None:
        for bar in self._bars.on_invalid(t):
            self._close(bar)

    def _close(self, bar: Bar) -> None:
        self.closed += 1
        t_end = (bar.index + 1) * SECOND_NS
        r = bar.log_return()
        if r is not None:
            r2 = r * r
            self._vol.add(t_end, r2)
            self._vol_ref.add(t_end, r2)
        if bar.invalid:
            self._prev_dev = None
            return
        spread = bar.spread_close
        if spread is not None:
            self._spread.add(t_end, spread)
        depth = bar.depth_close
        if depth is None or not depth > 0.0:
            self._prev_dev = None
            return
        log_depth = math.log(depth)
        self._depth.add(t_end, log_depth)
        mean = self._depth_mean.value()
        self._depth_mean.add(t_end, log_depth)
        if mean is None:
            return
        dev = log_depth - mean
        prev = self._prev_dev
        if prev is not None:
            self._resiliency.add(t_end, prev, dev)
        self._prev_dev = dev

    # -- outputs --------------------------------------------------------------------------------------------

    def vol_1m(self) -> float | None:
        """EW RMS of 1-s log mid returns, in bps (per sqrt second); None before `vol_min_samples` returns."""
        if self._vol.count < self.vol_min_samples:
            return None
        mean = self._vol.value()
        return math.sqrt(mean) * 1e4 if mean is not None else None

    def vol_ref(self) -> float | None:
        """`vol_1m`'s long-run level (same returns, longer half-life); None until it is warm."""
        if not self._vol_ref.warm:
            return None
        mean = self._vol_ref.value()
        return math.sqrt(mean) * 1e4 if mean is not None else None

    @property
    def vol_warm(self) -> bool:
        return self._vol.warm

    def spread_z(self, spread_bps: float | None) -> float | None:
        if spread_bps is None:
            return None
        return self._spread.zscore(spread_bps)

    def depth_z(self, depth_total: float | None) -> float | None:
        """z-score of `ln depth_total_10bps` (None without depth)."""
        if depth_total is None or not depth_total > 0.0:
            return None
        return self._depth.zscore(math.log(depth_total))

    @property
    def z_warm(self) -> bool:
        return self._spread.warm and self._depth.warm

    def resiliency_halflife_s(self) -> float | None:
        phi = self._resiliency.beta()
        if phi is None or not 0.0 < phi < 1.0:
            return None
        return _LN_HALF / math.log(phi)

    @property
    def resiliency_warm(self) -> bool:
        return self._depth_mean.warm
