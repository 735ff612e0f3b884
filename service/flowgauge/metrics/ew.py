"""Exponentially weighted (EW) streaming primitives on exchange time (metrics.md §0.3, §8.2, §8.3).

Pure, synchronous metric math: plain float arithmetic and `math.exp`, no numpy, no I/O, so the same source runs
in both cores (and compiles unchanged in Cython's pure-Python mode). Times are integer nanoseconds of exchange time.

Every primitive decays by `a = exp(-lambda * dt)` with `lambda = ln 2 / H` for a half-life `H` in seconds, so an
irregularly spaced stream is handled exactly (no resampling). Time that steps back (another stream's clock, a
venue's jitter) decays nothing: `dt` is clamped at 0, so the state never grows by a negative-time "undecay".

The sample-based EWs (`EwMean`, `EwVariance`, `EwRegression`, fed once per bar) take a sample stamped before the
previous one as the new time origin: it adds no weight itself (no time passed), and the samples after it decay
from its time, so a clock that restarted earlier (a bogus future stamp, then the venue's real time) does not
freeze them until the future comes.

The warm-up weight `w <- a*w + (1 - a)` (from 0) is the total weight the EW has collected. A mean is published
bias-corrected (`m / w`), and an output is "warming up" while `w < WARM_WEIGHT` (0.95, about 4.3 half-lives):
callers flag it WARMUP (or leave it null where a partly filled estimate would mislead, see each class).
"""

from __future__ import annotations

import math

__all__ = ["WARM_WEIGHT", "EwMean", "EwRegression", "EwStateMean", "EwVariance", "decay", "half_life_for_window"]

_NS_PER_S = 1_000_000_000
_LN2 = math.log(2.0)

WARM_WEIGHT = 0.95
"""Warm-up threshold on the collected weight (metrics.md §0.3): below it an EW output is flagged WARMUP."""


def half_life_for_window(window_s: float) -> float:
    """The half-life mass-equivalent to a boxcar of `window_s` seconds: `H = T * ln 2` (metrics.md §0.3)."""
    return window_s * _LN2


def decay(lambda_ns: float, dt_ns: int) -> float:
    """`exp(-lambda * dt)`, with time that steps back (dt < 0) decaying nothing."""
    if dt_ns <= 0:
        return 1.0
    return math.exp(-lambda_ns * dt_ns)


def _lambda_ns(half_life_s: float) -> float:
    if not (half_life_s > 0.0 and math.isfinite(half_life_s)):
        raise ValueError(f"half-life must be a finite number > 0 (got {half_life_s!r})")
    return _LN2 / (half_life_s * _NS_PER_S)


class EwMean:
    """EW mean of samples (one per bar): `m <- a*m + (1 - a)*y`, `w <- a*w + (1 - a)`, published as `m / w`.

    `a` comes from the time since the previous sample; the first sample is weighed as if it followed one
    `sample_interval_s` earlier (a bar after the bar before it), so a regular series has the textbook weight
    `w = 1 - a^n` after `n` samples and `m / w` of the first sample is the sample itself.
    """

    __slots__ = ("_a_first", "_lambda_ns", "_last_t", "_m", "_w", "count", "half_life_s")

    def __init__(self, half_life_s: float, sample_interval_s: float = 1.0) -> None:
        self.half_life_s = half_life_s
        self._lambda_ns = _lambda_ns(half_life_s)
        self._a_first = _first_decay(self._lambda_ns, sample_interval_s)
        self._m = 0.0
        self._w = 0.0
        self._last_t: int | None = None
        self.count = 0

    def add(self, t: int, y: float) -> None:
        last = self._last_t
        a = self._a_first if last is None else decay(self._lambda_ns, t - last)
        self._last_t = t  # even when earlier (a clock restart): later samples then decay from here, not from the future
        b = 1.0 - a
        self._m = a * self._m + b * y
        self._w = a * self._w + b
        self.count += 1

    @property
    def weight(self) -> float:
        return self._w

    @property
    def warm(self) -> bool:
        return self._w >= WARM_WEIGHT

    def value(self) -> float | None:
        """The bias-corrected mean `m / w`; None before any sample."""
        if self.count == 0 or not self._w > 0.0:
            return None
        return self._m / self._w


def _first_decay(lambda_ns: float, sample_interval_s: float) -> float:
    if not (sample_interval_s > 0.0 and math.isfinite(sample_interval_s)):
        raise ValueError(f"sample interval must be a finite number > 0 (got {sample_interval_s!r})")
    return math.exp(-lambda_ns * sample_interval_s * _NS_PER_S)


class EwVariance:
    """EW mean and variance of samples (one per bar), for z-scores (metrics.md §0.3 "EW variance", §8.3).

    The spec's recursion `v <- a*(v + (1 - a)*d^2)` with the warm-up weight folded in, so that the estimate is
    unbiased by the empty history during warm-up (weighted Welford with exponential forgetting):
    `W <- a*W + b; d = y - m; m <- m + (b/W)*d; S <- a*S + b*d*(y - m)`, `b = 1 - a`, variance `S / W`. That is
    exactly the weighted mean and variance of the samples with `EwMean`'s weights; once warm (`W -> 1`) it is the
    spec's recursion. The first sample is weighed as in `EwMean` (`sample_interval_s` before it).
    `zscore(y)` is `(y - m) / sqrt(S / W)`: None until `min_samples` samples were seen or while the variance is 0 (a
    constant series has no scale).
    """

    __slots__ = ("_a_first", "_lambda_ns", "_last_t", "_m", "_s", "_w", "count", "half_life_s", "min_samples")

    def __init__(self, half_life_s: float, sample_interval_s: float = 1.0, min_samples: int = 2) -> None:
        if min_samples < 2:
            raise ValueError("min_samples must be >= 2 (one sample has no variance)")
        self.half_life_s = half_life_s
        self.min_samples = min_samples
        self._lambda_ns = _lambda_ns(half_life_s)
        self._a_first = _first_decay(self._lambda_ns, sample_interval_s)
        self._m = 0.0
        self._s = 0.0
        self._w = 0.0
        self._last_t: int | None = None
        self.count = 0

    def add(self, t: int, y: float) -> None:
        last = self._last_t
        a = self._a_first if last is None else decay(self._lambda_ns, t - last)
        self._last_t = t  # even when earlier (a clock restart): later samples then decay from here, not from the future
        b = 1.0 - a
        w = a * self._w + b
        d = y - self._m
        m = self._m + (b / w) * d
        self._s = a * self._s + b * d * (y - m)
        self._m = m
        self._w = w
        self.count += 1

    @property
    def mean(self) -> float | None:
        return self._m if self.count else None

    @property
    def variance(self) -> float | None:
        if self.count == 0:
            return None
        v = self._s / self._w
        return v if v > 0.0 else 0.0  # rounding can leave a constant series a hair below 0

    @property
    def weight(self) -> float:
        return self._w

    @property
    def warm(self) -> bool:
        return self._w >= WARM_WEIGHT

    def zscore(self, y: float) -> float | None:
        """`(y - m) / sd` against the samples so far (None while undefined, see the class)."""
        v = self.variance
        if self.count < self.min_samples or v is None or not v > 0.0:
            return None
        return (y - self._m) / math.sqrt(v)


class EwStateMean:
    """Time-weighted EW mean of a piecewise-constant state (depth, spread): `m <- a*m + (1 - a)*y_prev`.

    `y_prev` is the value that held during `(t', t]`, so a burst of updates does not outweigh a quiet stretch
    (metrics.md §0.3). `value(t)` first brings the average forward to `t` with the value holding now, then returns
    it bias-corrected by the weight (None before the first state). A None state (empty side, invalid book) holds no
    value: the interval it covers adds nothing and the average decays toward nothing, its weight with it, so the
    bias correction keeps the mean of the valid time only. `reset()` forgets everything (the caller's choice).
    """

    __slots__ = ("_lambda_ns", "_last_t", "_m", "_w", "_y", "half_life_s")

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self._lambda_ns = _lambda_ns(half_life_s)
        self._m = 0.0
        self._w = 0.0
        self._last_t: int | None = None
        self._y: float | None = None

    def _advance(self, t: int) -> None:
        last = self._last_t
        if last is None:
            self._last_t = t
            return
        if t <= last:
            return
        a = math.exp(-self._lambda_ns * (t - last))
        y = self._y
        if y is None:
            self._m = a * self._m
            self._w = a * self._w
        else:
            b = 1.0 - a
            self._m = a * self._m + b * y
            self._w = a * self._w + b
        self._last_t = t

    def update(self, t: int, y: float | None) -> None:
        """The state is `y` from time `t` on."""
        self._advance(t)
        self._y = y

    def value(self, t: int) -> float | None:
        """The time-weighted mean up to `t` (bias-corrected); None while no time has passed with a value."""
        self._advance(t)
        if self._w > 0.0:
            return self._m / self._w
        return self._y  # no time has passed yet with a value: the current state is the only estimate

    def weight(self, t: int) -> float:
        self._advance(t)
        return self._w

    def reset(self) -> None:
        self._m = 0.0
        self._w = 0.0
        self._last_t = None
        self._y = None


class EwRegression:
    """EW least squares `y = alpha + beta*x + e`, fed once per bar (metrics.md §0.3 "EW regression").

    Decay then add: `W <- a*W + 1, Sx <- a*Sx + x, ...` with `a = exp(-lambda * dt)` from the previous sample's time.
    `beta` and `r2` are None while the design is degenerate (fewer than `min_samples` samples, or no spread in x).
    """

    __slots__ = ("_lambda_ns", "_last_t", "count", "half_life_s", "min_samples", "s_w", "s_x", "s_xx", "s_xy",
                 "s_y", "s_yy")  # fmt: skip

    def __init__(self, half_life_s: float, min_samples: int = 3) -> None:
        self.half_life_s = half_life_s
        self.min_samples = min_samples
        self._lambda_ns = _lambda_ns(half_life_s)
        self._last_t: int | None = None
        self.count = 0
        self.s_w = 0.0
        self.s_x = 0.0
        self.s_y = 0.0
        self.s_xx = 0.0
        self.s_xy = 0.0
        self.s_yy = 0.0

    def add(self, t: int, x: float, y: float) -> None:
        last = self._last_t
        a = 1.0 if last is None else decay(self._lambda_ns, t - last)
        self._last_t = t  # even when earlier (a clock restart): later samples then decay from here, not from the future
        self.s_w = a * self.s_w + 1.0
        self.s_x = a * self.s_x + x
        self.s_y = a * self.s_y + y
        self.s_xx = a * self.s_xx + x * x
        self.s_xy = a * self.s_xy + x * y
        self.s_yy = a * self.s_yy + y * y
        self.count += 1

    def beta(self) -> float | None:
        if self.count < self.min_samples:
            return None
        den = self.s_w * self.s_xx - self.s_x * self.s_x
        if not den > 0.0:
            return None
        return (self.s_w * self.s_xy - self.s_x * self.s_y) / den

    def r2(self) -> float | None:
        if self.count < self.min_samples:
            return None
        den_x = self.s_w * self.s_xx - self.s_x * self.s_x
        den_y = self.s_w * self.s_yy - self.s_y * self.s_y
        if not (den_x > 0.0 and den_y > 0.0):
            return None
        num = self.s_w * self.s_xy - self.s_x * self.s_y
        r2 = num * num / (den_x * den_y)
        return r2 if r2 <= 1.0 else 1.0  # rounding can overshoot 1 by an ulp on a perfect fit
