"""Volume-bucket flow toxicity (metrics.md 5.2), published under neutral names: `flow_toxicity` (aggressor
flags), `flow_toxicity_bvc` (bulk volume classification) and `flow_toxicity_cdf`.

Pure, synchronous metric math. Volume time: the traded volume is cut into buckets of exactly `V` base units (a
trade that crosses a boundary is split pro rata, one larger than `V` fills several buckets). For the last `n`
completed buckets `j`, `flow_toxicity = sum |S_j - B_j| / sum V_j` in [0, 1] (`= sum |S - B| / (n V)` while `V`
is constant): with `B`/`S` the taker-buy/-sell volume (exact: every venue here flags the aggressor), and for
`flow_toxicity_bvc` with `B = V_i * Z(dP_i / sigma)` per time bar `i` (1 min bars, `Z` the standard normal CDF,
`sigma` the EW standard deviation of the bar price changes). BVC buckets fill when a bar closes (the first trade
of a later bar), so that variant lags by up to one bar. `flow_toxicity_cdf` is the share of the values of the
trailing 30 days (one per completed bucket) at or below the current one.

Bucket size. `V = ADV / n_day`, `ADV` the mean of the last 7 rolling-24 h volumes, each taken at a 00:00 UTC
crossing once 24 h have been observed (so `V` changes only at 00:00 UTC, and only from the next bucket on).
Before that it is bootstrapped: from the venue's own 24 h volume when the owner passes one (`set_venue_volume`;
no recording carries it), else from `bootstrap_daily_notional / first trade price`. Null until `n` buckets have
completed: with the defaults and a real ADV that is about a day of trading, far more than any recording holds.

Feed gaps (5.2): after a reset of the instrument's feed (a reconnect or reload, when trades may have been lost),
the values whose window holds the bucket that was filling then are marked `coverage` PARTIAL by the family, until
`n` more buckets have completed.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from flowgauge.metrics.buckets import BucketRing
from flowgauge.metrics.flow_params import ToxicityParams

__all__ = ["FlowToxicity", "VolumeBuckets", "normal_cdf"]

_S = 1_000_000_000
_DAY_NS = 86400 * _S


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


class VolumeBuckets:
    """Cuts (buy, sell) volume into buckets of `size` and keeps the last `n` bucket imbalances."""

    __slots__ = ("_buy", "_filled", "_imbalances", "_sell", "_volumes", "completed", "gap_until", "n", "next_size",
                 "size")  # fmt: skip

    def __init__(self, n: int) -> None:
        self.n = n
        self.size = 0.0  # V of the bucket being filled (0 until set)
        self.next_size = 0.0  # V from the next bucket on
        self._buy = 0.0
        self._sell = 0.0
        self._filled = 0.0
        self._imbalances: deque[float] = deque(maxlen=n)
        self._volumes: deque[float] = deque(maxlen=n)
        self.completed = 0
        self.gap_until = 0  # while completed < gap_until the window holds a bucket filled across a feed gap

    def add(self, buy: float, sell: float) -> int:
        """Add volume (split pro rata across boundaries); returns the number of buckets it completed."""
        total = buy + sell
        if not total > 0.0:
            return 0
        if self.size <= 0.0:
            self.size = self.next_size
            if self.size <= 0.0:
                return 0
        done = 0
        buy_share = buy / total
        left = total
        while left > 0.0 and self.size > 0.0:
            room = self.size - self._filled
            if left < room:
                self._buy += left * buy_share
                self._sell += left * (1.0 - buy_share)
                self._filled += left
                break
            self._buy += room * buy_share
            self._sell += room * (1.0 - buy_share)
            self._complete(self.size)
            done += 1
            left -= room
            # Whole buckets of this one print at once: only the last n can stay in the window, so a print of
            # millions of buckets (a tiny V, a huge trade) costs at most n appends, not a loop per bucket.
            whole = int(left // self.size) if self.size > 0.0 else 0
            if whole > 0:
                imbalance = self.size * abs(1.0 - 2.0 * buy_share)
                for _ in range(min(whole, self.n)):
                    self._imbalances.append(imbalance)
                    self._volumes.append(self.size)
                self.completed += whole
                done += whole
                left -= whole * self.size
        return done

    def _complete(self, size: float) -> None:
        self._imbalances.append(abs(self._sell - self._buy))
        self._volumes.append(size)
        self.completed += 1
        self._buy = self._sell = self._filled = 0.0
        self.size = self.next_size  # an ADV change applies from the next bucket (5.2)

    def mark_gap(self) -> None:
        """The bucket being filled and the next n hold (or follow) lost trades (5.2: flag them)."""
        self.gap_until = self.completed + self.n + 1

    def value(self) -> float | None:
        """sum |S - B| / sum V over the last n buckets; None until n buckets have completed."""
        if len(self._imbalances) < self.n:
            return None
        v = math.fsum(self._imbalances) / math.fsum(self._volumes)
        return 1.0 if v > 1.0 else v


class FlowToxicity:
    """Exact and BVC volume-bucket toxicity of one instrument, and the CDF of the exact one."""

    __slots__ = ("_bar", "_bar_close", "_bar_sell", "_bar_volume", "_bvc", "_cdf_sorted", "_cdf_times",
                 "_daily", "_day", "_exact", "_prev_close", "_rolling", "_sigma_m", "_sigma_v", "_sigma_w",
                 "_since", "_venue_volume", "params")  # fmt: skip

    def __init__(self, params: ToxicityParams) -> None:
        self.params = params
        self._exact = VolumeBuckets(params.window_buckets)
        self._bvc = VolumeBuckets(params.window_buckets)
        self._rolling = BucketRing(60 * _S, 24 * 60 + 1, 1)  # 1 min buckets: the rolling 24 h volume
        self._daily: deque[float] = deque(maxlen=params.adv_days)
        self._day: int | None = None  # UTC day of the latest trade
        self._since: int | None = None
        self._venue_volume: float | None = None
        self._bar: int | None = None
        self._bar_volume = 0.0
        self._bar_sell = 0.0
        self._bar_close = 0.0
        self._prev_close: float | None = None
        self._sigma_m = 0.0  # EW mean / variance / weight of the bar price changes
        self._sigma_v = 0.0
        self._sigma_w = 0.0
        self._cdf_sorted: list[float] = []
        self._cdf_times: deque[tuple[int, float]] = deque()

    def set_venue_volume(self, volume_24h: float) -> None:
        """The venue's own 24 h volume (base units), used until 24 h have been observed. The first one replaces
        the configured bootstrap at once (from the next bucket; also the current one while none has completed),
        later ones wait for 00:00 UTC like every bucket-size change."""
        if not (volume_24h > 0.0 and math.isfinite(volume_24h)):
            return
        first = self._venue_volume is None
        self._venue_volume = volume_24h
        if first and not self._daily and self._day is not None:
            size = volume_24h / self.params.buckets_per_day
            for buckets in (self._exact, self._bvc):
                buckets.next_size = size
                if buckets.completed == 0:
                    buckets.size = size

    def _bucket_size(self, price: float) -> float:
        adv = math.fsum(self._daily) / len(self._daily) if self._daily else 0.0
        if not adv > 0.0:  # no full day yet (or days without trades): the venue's figure, else the bootstrap
            adv = self._venue_volume if self._venue_volume is not None else self.params.bootstrap_daily_notional / price
        return adv / self.params.buckets_per_day

    def on_trade(self, t: int, side: int, size: float, price: float) -> None:
        if not (size > 0.0 and price > 0.0):
            return
        if self._since is None:
            self._since = t
        day = t // _DAY_NS
        if self._day is None or day > self._day:
            if self._day is not None and t - self._since >= _DAY_NS:
                # 00:00 UTC: one more rolling-24 h volume; V changes here only, from the next bucket on
                self._daily.append(self._rolling.sums(t - 1, 24 * 60)[0])
            self._day = day
            size_now = self._bucket_size(price)
            self._exact.next_size = size_now
            self._bvc.next_size = size_now
        self._rolling.add(t, (size,))
        if self._exact.add(size if side > 0 else 0.0, size if side < 0 else 0.0):
            self._record(t)
        self._bvc_trade(t, size, price)

    def _bvc_trade(self, t: int, size: float, price: float) -> None:
        bar = t // (self.params.bvc_bar_s * _S)
        if self._bar is None:
            self._bar = bar
        elif bar > self._bar:
            self._close_bar()
            self._bar = bar
        self._bar_volume += size
        self._bar_close = price  # a late trade within the bar counts in its volume, not as the close

    def _close_bar(self) -> None:
        close = self._bar_close
        prev = self._prev_close
        self._prev_close = close
        volume = self._bar_volume
        self._bar_volume = 0.0
        if prev is None:
            return  # no price change for the first bar: its volume is not classified
        dp = close - prev
        a = math.exp(-math.log(2.0) * self.params.bvc_bar_s / self.params.bvc_sigma_half_life_s)
        # EW variance of dP (metrics.md 0.3), sigma read before this bar joins it
        sigma = math.sqrt(self._sigma_v / self._sigma_w) if self._sigma_w > 0.0 else 0.0
        d = dp - self._sigma_m
        self._sigma_m += (1.0 - a) * d
        self._sigma_v = a * (self._sigma_v + (1.0 - a) * d * d)
        self._sigma_w = a * self._sigma_w + (1.0 - a)
        # without a sigma yet (first bars, or a price that never moved) the bar goes by its sign, half each if flat
        z = normal_cdf(dp / sigma) if sigma > 0.0 else 0.5 if dp == 0.0 else 1.0 if dp > 0.0 else 0.0
        self._bvc.add(volume * z, volume * (1.0 - z))

    def _record(self, t: int) -> None:
        value = self._exact.value()
        if value is None:
            return
        horizon = t - int(self.params.cdf_days * _DAY_NS)
        times = self._cdf_times
        while times and times[0][0] <= horizon:
            _, old = times.popleft()
            del self._cdf_sorted[bisect.bisect_left(self._cdf_sorted, old)]
        times.append((t, value))
        bisect.insort(self._cdf_sorted, value)
        if len(times) > self._cdf_cap():  # buckets far smaller than ADV / n_day: keep the newest ones
            _, old = times.popleft()
            del self._cdf_sorted[bisect.bisect_left(self._cdf_sorted, old)]

    def _cdf_cap(self) -> int:
        return 4 * int(self.params.cdf_days * self.params.buckets_per_day) + self.params.cdf_min_values

    def mark_gap(self) -> None:
        """A gap in the trade feed (reconnect): the current and next n buckets of both variants are marked."""
        self._exact.mark_gap()
        self._bvc.mark_gap()

    def gapped(self) -> tuple[bool, bool]:
        """Whether the exact / BVC windows still hold a bucket marked by `mark_gap`."""
        return self._exact.completed < self._exact.gap_until, self._bvc.completed < self._bvc.gap_until

    def values(self) -> tuple[float | None, float | None, float | None]:
        """(flow_toxicity, flow_toxicity_bvc, flow_toxicity_cdf)."""
        exact = self._exact.value()
        cdf = None
        held = self._cdf_sorted
        if exact is not None and len(held) >= self.params.cdf_min_values:
            cdf = bisect.bisect_right(held, exact) / len(held)
        return exact, self._bvc.value(), cdf

    @property
    def bucket_volume(self) -> float:
        """V of the bucket being filled (base units; 0 before the first trade)."""
        return self._exact.size or self._exact.next_size

    def held(self) -> int:
        """Values held for the CDF (bounded by cdf_days of buckets)."""
        return len(self._cdf_sorted)
