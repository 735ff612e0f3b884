"""Kyle's lambda (metrics.md 5.3): price impact per unit of signed trade flow, by EW regression on clock bars.

Pure, synchronous metric math. Bars of `bar_s` (60 s) of exchange time; per bar with trades, `x` = signed taker
notional `sum s p v` in $1M and `y` = the bar's price change in bps, from the previous bar-with-trades' last
trade price to this bar's, relative to the former. The bars are built from the trade stream alone: the last trade
price stands in for the mid (the mid is a per-book-event value this slow family does not follow), and a bar with
no trades is no observation (its price change lands in the next bar with trades). The regression `y = a + l x`
is the EW one of metrics.md 0.3 with decay `exp(-ln2 / H * bar_s)` per bar (H = 30 min); it publishes
`kyle_lambda_bps_per_musd` (the slope, negative values as they come: not clipped), `kyle_r2` and `kyle_n` (bars
regressed). All null until `min_bars` bars have been regressed, or while the flow has no variance.

A bar closes when the first trade of a later bar arrives, so values read at `t` cover the bars closed before it.
"""

from __future__ import annotations

import math

from flowgauge.metrics.flow_params import KyleParams

__all__ = ["KyleLambda"]

_S = 1_000_000_000


class KyleLambda:
    """The EW regression of bar price change on bar signed notional for one instrument."""

    __slots__ = ("_a", "_bar", "_close", "_flow", "_prev", "_w", "_x", "_xx", "_xy", "_y", "_yy", "n", "params")

    def __init__(self, params: KyleParams) -> None:
        self.params = params
        self._a = math.exp(-math.log(2.0) / params.half_life_s * params.bar_s)
        self._bar: int | None = None
        self._flow = 0.0
        self._close = 0.0
        self._prev: float | None = None
        self._w = self._x = self._y = self._xx = self._xy = self._yy = 0.0
        self.n = 0

    def on_trade(self, t: int, side: int, size: float, price: float) -> None:
        if not (size > 0.0 and price > 0.0):
            return
        bar = t // (self.params.bar_s * _S)
        if self._bar is None:
            self._bar = bar
        elif bar > self._bar:
            self._close_bar()
            self._bar = bar
        self._flow += (1.0 if side > 0 else -1.0) * price * size / 1e6
        self._close = price

    def _close_bar(self) -> None:
        prev, close, x = self._prev, self._close, self._flow
        self._prev = close
        self._flow = 0.0
        if prev is None:
            return
        y = (close - prev) / prev * 1e4
        self.add(x, y)

    def add(self, x: float, y: float) -> None:
        """One bar: decay, then add (metrics.md 0.3 EW regression)."""
        a = self._a
        self._w = a * self._w + 1.0
        self._x = a * self._x + x
        self._y = a * self._y + y
        self._xx = a * self._xx + x * x
        self._xy = a * self._xy + x * y
        self._yy = a * self._yy + y * y
        self.n += 1

    def values(self) -> tuple[float | None, float | None, int]:
        """(kyle_lambda_bps_per_musd, kyle_r2, kyle_n)."""
        if self.n < self.params.min_bars:
            return None, None, self.n
        w = self._w
        sxx = w * self._xx - self._x * self._x
        sxy = w * self._xy - self._x * self._y
        syy = w * self._yy - self._y * self._y
        if not sxx > 0.0:
            return None, None, self.n
        beta = sxy / sxx
        r2 = sxy * sxy / (sxx * syy) if syy > 0.0 else None
        if r2 is not None and r2 > 1.0:
            r2 = 1.0
        return beta, r2, self.n
