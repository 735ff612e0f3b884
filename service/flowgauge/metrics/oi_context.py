"""Slow OI context of metrics.md 6.2: `oi_to_volume_24h` and `oi_price_corr_4h`.

Pure metric math, fed by the positioning family.

* `oi_to_volume_24h = OI / V_24h`: open interest over the volume of every trade of the last 24 h (1 min buckets,
  the window to the minute); high = positions held rather than turned over (crowding). Null until the instrument
  has been observed for 24 h (payload WARMUP until then), or without volume.
* `oi_price_corr_4h`: EW correlation (half-life 4 h, decay per 1 min bar) of the 1 min OI change and the 1 min log
  return of the last trade price. A minute closes at the first event of a later one; its point is its last OI and
  last trade price against those of the previous closed minute (minutes without events give no point). Null until
  the EW weight reaches `min_weight` (about 17 h with the defaults) or while either series is flat.
"""

from __future__ import annotations

import math

from flowgauge.metrics.buckets import BucketRing

__all__ = ["OiContext"]

_S = 1_000_000_000
_MIN = 60 * _S
_DAY_MIN = 24 * 60


class OiContext:
    __slots__ = ("_a", "_closed", "_minute", "_oi", "_price", "_sums", "_volume", "_w", "min_weight")

    def __init__(self, corr_half_life_s: float = 4 * 3600.0, min_weight: float = 0.95) -> None:
        self._volume = BucketRing(_MIN, _DAY_MIN + 1, 1)
        self._a = math.exp(-math.log(2.0) / corr_half_life_s * 60.0)
        self.min_weight = min_weight
        self._minute: int | None = None  # the open minute
        self._oi: float | None = None  # its last OI and trade price so far
        self._price: float | None = None
        self._closed: tuple[float, float] | None = None  # (oi, price) of the previous closed minute
        self._sums = [0.0] * 5  # EW sums of x, y, xx, yy, xy
        self._w = 0.0

    def _roll(self, t: int) -> None:
        minute = t // _MIN
        if self._minute is None:
            self._minute = minute
            return
        if minute <= self._minute:
            return
        oi, price = self._oi, self._price
        if oi is not None and price is not None and price > 0.0:
            closed = self._closed
            if closed is not None:
                self._point(oi - closed[0], math.log(price / closed[1]))
            self._closed = (oi, price)
        self._minute = minute

    def _point(self, x: float, y: float) -> None:
        a = self._a
        b = 1.0 - a
        s = self._sums
        for i, v in enumerate((x, y, x * x, y * y, x * y)):
            s[i] = a * s[i] + b * v
        self._w = a * self._w + b

    def on_trade(self, t: int, price: float, size: float) -> None:
        self._roll(t)
        self._volume.add(t, (size,))
        if t // _MIN == self._minute:
            self._price = price

    def on_open_interest(self, t: int, oi: float) -> None:
        self._roll(t)
        if t // _MIN == self._minute:
            self._oi = oi

    def values(self, now: int, oi: float | None, since: int | None) -> tuple[float | None, float | None, bool]:
        """(oi_to_volume_24h, oi_price_corr_4h, warming): `warming` while 24 h have not been observed."""
        ratio = None
        warming = since is None or now - since < _DAY_MIN * _MIN
        if not warming and oi is not None:
            volume = self._volume.sums(now, _DAY_MIN)[0]
            ratio = oi / volume if volume > 0.0 else None
        corr = None
        w = self._w
        if w >= self.min_weight:
            mx, my, mxx, myy, mxy = (v / w for v in self._sums)
            vx, vy = mxx - mx * mx, myy - my * my
            if vx > 0.0 and vy > 0.0:
                corr = max(-1.0, min(1.0, (mxy - mx * my) / math.sqrt(vx * vy)))
        return ratio, corr, warming
