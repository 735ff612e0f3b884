"""EW z-score of an irregularly sampled series (metrics.md 0.3 weights, 8.3 z-scores), with its warm-up weight.

Pure metric math. Each observation `y` at `t` after the previous one at `t'` weighs `1 - a`, `a = exp(-ln2 / H
(t - t'))`: `m <- a m + (1 - a) y`, `q <- a q + (1 - a) y^2`, `w <- a w + (1 - a)` from `w = 0` (the first
observation only starts the clock). Mean `m / w`, variance `q / w - (m / w)^2` (bias-corrected), z-score of the
latest observation `(y - mean) / sqrt(variance)`, published only once `w >= min_weight` (0.95, about 4.3
half-lives): null before, so a restart never publishes a z-score of a few samples.
"""

from __future__ import annotations

import math

__all__ = ["EwZScore"]

_S = 1_000_000_000


class EwZScore:
    __slots__ = ("_lambda_ns", "_last", "_m", "_q", "_t", "_w", "min_weight")

    def __init__(self, half_life_s: float, min_weight: float = 0.95) -> None:
        if not half_life_s > 0.0:
            raise ValueError("half-life must be positive")
        self._lambda_ns = math.log(2.0) / (half_life_s * _S)
        self.min_weight = min_weight
        self._t: int | None = None
        self._m = self._q = self._w = 0.0
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
        self._m = a * self._m + b * y
        self._q = a * self._q + b * y * y
        self._w = a * self._w + b

    def value(self) -> float | None:
        w = self._w
        if self._last is None or w < self.min_weight:
            return None
        mean = self._m / w
        var = self._q / w - mean * mean
        if not var > 0.0:
            return None
        return (self._last - mean) / math.sqrt(var)
