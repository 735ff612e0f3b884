"""EW z-score of an irregularly sampled series (metrics.md 0.3 weights, 8.3 z-scores), with its warm-up weight.

Pure metric math. Each observation `y` at `t` after the previous one at `t'` weighs `b = 1 - a`, `a = exp(-ln2 /
H (t - t'))`, `w <- a w + b` from `w = 0` (the first observation only starts the clock). The weighted mean and
variance are kept as in `metrics.ew.EwVariance` (weighted Welford with forgetting: `d = y - m`,
`m <- m + (b / w) d`, `S <- a S + b d (y - m)`, variance `S / w`), which equals `sum b y^2 / w - mean^2` but
without its cancellation: a constant series has exactly 0 variance, so its z-score is null (0/0) instead of
rounding noise. The z-score of the latest observation `(y - mean) / sqrt(variance)` is published only once
`w >= min_weight` (0.95, about 4.3 half-lives): null before, so a restart never publishes a z-score of a few
samples.
"""

from __future__ import annotations

import math

__all__ = ["EwZScore"]

_S = 1_000_000_000


class EwZScore:
    __slots__ = ("_lambda_ns", "_last", "_m", "_s", "_t", "_w", "min_weight")

    def __init__(self, half_life_s: float, min_weight: float = 0.95) -> None:
        if not half_life_s > 0.0:
            raise ValueError("half-life must be positive")
        self._lambda_ns = math.log(2.0) / (half_life_s * _S)
        self.min_weight = min_weight
        self._t: int | None = None
        self._m = self._s = self._w = 0.0  # weighted mean, weighted sum of squared deviations, weight
        self._last: float | None = None

    @property
    def weight(self) -> float:
        return self._w

    def update(self, t: int, y: float) -> None:
        if not math.isfinite(y):
            return
        self._last = y
        if self._t is None or t <= self._t:  # the first one starts the clock; no time passed: no weight
            if self._t is None:
                self._t = t
            return
        a = math.exp(-self._lambda_ns * (t - self._t))
        self._t = t
        b = 1.0 - a
        w = a * self._w + b
        if not w > 0.0:
            return  # no time's weight yet (a step too short to register)
        d = y - self._m
        m = self._m + (b / w) * d
        self._s = a * self._s + b * d * (y - m)
        self._m = m
        self._w = w

    def value(self) -> float | None:
        w = self._w
        if self._last is None or w < self.min_weight:
            return None
        var = self._s / w
        if not var > 0.0:
            return None  # a constant series has no scale
        return (self._last - self._m) / math.sqrt(var)
