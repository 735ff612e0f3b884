"""Liquidation imbalance and intensity (metrics.md 6.5) over 1 min, 5 min and 1 h.

Pure, synchronous metric math. `LL` / `SL` = notional of liquidated longs (forced sells) / shorts (forced buys)
in `(t - T, t]`:

* `liq_imbalance_T = (SL - LL) / (SL + LL)` in [-1, 1], + = forced buying; null without liquidations;
* `liq_intensity_T = (SL + LL) / V_T`, `V_T` the notional of every trade in the window (forced prints included):
  the share of volume that was forced; null without trades;
* `liq_oi_share_T = (SL + LL) / oi_notional` (the current OI notional); null without OI or mark price;
* `n_liq_msgs_T`: liquidation messages in the window (so a consumer sees how little a sampled stream holds);
* `liq_long_ew_5m`, `liq_short_ew_5m`: decayed sums of LL and SL notional (half-life 300 s x ln 2, the mass of a
  5 min window, metrics.md 0.3), and `liq_imbalance_ew_5m` = their `(SL - LL) / (SL + LL)` (null at 0).

1 min is exact; 5 min and 1 h are sums of 1 s and 1 min buckets, null with WARMUP until the instrument has been
observed that long. On venues whose stream is a sample (Binance: the latest liquidation per symbol per second)
the totals are lower bounds: non-null values there carry SAMPLED_INPUT.
"""

from __future__ import annotations

from flowgauge.metrics.buckets import BucketRing
from flowgauge.metrics.windows import LATE_HORIZON_NS, MAX_WINDOW_ITEMS, DecayedSum, SlidingSum, _Boxcar

__all__ = ["LIQUIDATION_FIELDS", "LiquidationWindows"]

_S = 1_000_000_000
LABELS = ("1m", "5m", "1h")
_KINDS = ("liq_imbalance", "liq_intensity", "liq_oi_share", "n_liq_msgs")
LIQUIDATION_FIELDS: tuple[str, ...] = (
    *(f"{kind}_{label}" for label in LABELS for kind in _KINDS),
    "liq_long_ew_5m", "liq_short_ew_5m", "liq_imbalance_ew_5m",
)  # fmt: skip


class _LiqFlow(_Boxcar):
    """Exact 1 min sums of (liquidated-long notional, liquidated-short notional, messages)."""

    __slots__ = ()

    def __init__(self, window_ns: int) -> None:
        super().__init__(window_ns, 3, MAX_WINDOW_ITEMS, LATE_HORIZON_NS)

    def add(self, t: int, item: tuple[float, float, float]) -> None:
        self._add(t, item)

    def evaluate(self, now: int) -> tuple[float, float, float]:
        self._move(now)
        if self._lo == self._hi:
            return 0.0, 0.0, 0.0
        ll, sl, n = (total.value() for total in self._sums)
        return ll, sl, n


class LiquidationWindows:
    """Liquidation windows of one instrument; `since` is the owner's first input (coverage of the long windows)."""

    __slots__ = ("_ew_long", "_ew_short", "_liq_1m", "_minutes", "_seconds", "_volume_1m", "sampled", "since")

    def __init__(self, sampled: bool) -> None:
        self.sampled = sampled
        self._liq_1m = _LiqFlow(60 * _S)
        self._volume_1m = SlidingSum(60 * _S)
        # (LL notional, SL notional, messages, trade notional) per second (5 min) and per minute (1 h)
        self._seconds = BucketRing(_S, 301, 4)
        self._minutes = BucketRing(60 * _S, 61, 4)
        self._ew_long = DecayedSum.for_window(300.0)
        self._ew_short = DecayedSum.for_window(300.0)
        self.since: int | None = None

    def on_trade(self, t: int, notional: float) -> None:
        self._volume_1m.add(t, notional)
        item = (0.0, 0.0, 0.0, notional)
        self._seconds.add(t, item)
        self._minutes.add(t, item)

    def on_liquidation(self, t: int, long_side: bool, notional: float) -> None:
        item = (notional, 0.0, 1.0) if long_side else (0.0, notional, 1.0)
        self._liq_1m.add(t, item)
        (self._ew_long if long_side else self._ew_short).add(t, notional)
        self._seconds.add(t, (*item, 0.0))
        self._minutes.add(t, (*item, 0.0))

    def fill(
        self, now: int, oi_notional: float | None, out: dict[str, object], coverage: dict[str, str], flags: set[str]
    ) -> None:
        since = self.since
        ll, sl, n = self._liq_1m.evaluate(now)
        self._write("1m", ll, sl, n, self._volume_1m.value(now), oi_notional, out, flags)
        if ll + sl > 0.0 and (since is None or now - since < 60 * _S):
            for kind in ("liq_imbalance", "liq_intensity", "liq_oi_share"):
                if out[f"{kind}_1m"] is not None:
                    coverage[f"{kind}_1m"] = "PARTIAL"
        for label, ring, width, count in (("5m", self._seconds, _S, 300), ("1h", self._minutes, 60 * _S, 60)):
            if since is None or now - since < width * count:
                for kind in ("liq_imbalance", "liq_intensity", "liq_oi_share", "n_liq_msgs"):
                    out[f"{kind}_{label}"] = None
                flags.add("WARMUP")
                continue
            ll, sl, n, volume = ring.sums(now, count)
            self._write(label, ll, sl, n, volume, oi_notional, out, flags)
        ll, sl = self._ew_long.value(now), self._ew_short.value(now)
        out["liq_long_ew_5m"] = ll
        out["liq_short_ew_5m"] = sl
        total = ll + sl
        out["liq_imbalance_ew_5m"] = (sl - ll) / total if total > 0.0 else None

    def _write(
        self,
        label: str,
        ll: float,
        sl: float,
        n: float,
        volume: float,
        oi_notional: float | None,
        out: dict[str, object],
        flags: set[str],
    ) -> None:
        total = ll + sl
        out[f"liq_imbalance_{label}"] = (sl - ll) / total if total > 0.0 else None
        out[f"liq_intensity_{label}"] = total / volume if volume > 0.0 else None
        out[f"liq_oi_share_{label}"] = total / oi_notional if oi_notional and oi_notional > 0.0 else None
        out[f"n_liq_msgs_{label}"] = float(n)
        if self.sampled and total > 0.0:
            flags.add("SAMPLED_INPUT")
