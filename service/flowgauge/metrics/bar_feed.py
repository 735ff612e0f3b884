"""The published clock bars of one instrument (`flowgauge.v1.bars.<venue>.<slug>`, schema/bars.v1.json).

Pure metric math over `metrics.bars.ClockBars`: the engine feeds every applied book state (its time, its CKS
`e_n` and its best prices), every non-forced trade and every invalidation, and publishes what comes back, one dict
per closed bar (the metric part; the engine adds the envelope). How and when a bar closes, and why replay is
deterministic, is `metrics.bars`'s docstring.

Each bar carries EW z-scores (metrics.md §8.3) of its OFI, its return and its closing spread against the bars
before it (the bar itself is added to the statistics after its z-scores are taken, so a z-score is out of sample).
They are null until `z_min_samples` bars fed the statistics, and the bar's `quality` says WARMUP while their weight
is below 0.95 (with the default 24 h half-life, about 4.3 days after a start): WARMUP on a bar concerns its
z-scores only; its OHLC, flow and counts are exact.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from flowgauge.metrics.bars import Bar, ClockBars
from flowgauge.metrics.ew import EwVariance

__all__ = ["BAR_FIELDS", "BarSpec", "InstrumentBars"]

_S = 1_000_000_000

BAR_FIELDS: tuple[str, ...] = (
    "bar_s", "t_start", "t_end", "n_events", "n_trades",
    "mid_open", "mid_high", "mid_low", "mid_close", "ret_bps",
    "ofi", "buy_volume", "sell_volume", "spread_bps",
    "ofi_z", "ret_z", "spread_z", "quality",
)  # fmt: skip
"""The metric keys of a bar payload, in publication order."""


_NO_PAYLOADS: list[dict[str, object]] = []  # returned (never mutated) when a call closes no bar


class BarSpec(NamedTuple):
    """What the engine builds each instrument's bars with (config `publish.bars`)."""

    interval_s: float = 1.0
    z_half_life_s: float = 86_400.0
    z_min_samples: int = 30


class InstrumentBars:
    """Clock bars of one instrument and their z-score statistics."""

    __slots__ = ("_bar_s", "_bars", "_ofi", "_reason", "_ret", "_spread")

    def __init__(self, interval_s: float = 1.0, z_half_life_s: float = 86_400.0, z_min_samples: int = 30) -> None:
        if not (math.isfinite(interval_s) and round(interval_s * _S) > 0):
            raise ValueError(f"bar interval must be a finite number > 0 (got {interval_s!r})")
        interval_ns = round(interval_s * _S)
        self._bars = ClockBars(interval_ns)
        self._bar_s = interval_ns / _S
        self._ofi = EwVariance(z_half_life_s, self._bar_s, z_min_samples)
        self._ret = EwVariance(z_half_life_s, self._bar_s, z_min_samples)
        self._spread = EwVariance(z_half_life_s, self._bar_s, z_min_samples)
        self._reason: str | None = None  # GAP or RESET: why the book last left VALID

    @property
    def clock(self) -> ClockBars:
        return self._bars

    def on_book(self, t: int, e: float | None, bid_px: float | None, ask_px: float | None) -> list[dict[str, object]]:
        """An applied VALID book state at `t` with its `e_n` (None for the first state after a sync)."""
        mid: float | None = None
        spread: float | None = None
        if bid_px is not None and ask_px is not None:
            mid = (bid_px + ask_px) * 0.5
            spread = (ask_px - bid_px) / mid * 1e4 if mid > 0.0 else None
        return self._payloads(self._bars.on_book(t, mid, e, spread, None))

    def on_trade(self, t: int, side: int, size: float) -> None:
        self._bars.on_trade(t, side, size)

    def on_invalid(self, t: int, gap: bool) -> list[dict[str, object]]:
        """The book left VALID at `t` (`gap`: a sequence gap, else a reset of any other kind)."""
        closed = self._payloads(self._bars.close_until(t))  # bars that ended before it keep the reason they had
        self._reason = "GAP" if gap else "RESET"
        return [*closed, *self._payloads(self._bars.on_invalid(t))]

    def close_until(self, t: int) -> list[dict[str, object]]:
        """The timer: close the bars that ended at or before exchange time `t`."""
        return self._payloads(self._bars.close_until(t))

    def _payloads(self, bars: list[Bar]) -> list[dict[str, object]]:
        if not bars:
            return _NO_PAYLOADS
        return [self._payload(bar) for bar in bars]

    def _payload(self, bar: Bar) -> dict[str, object]:
        interval = self._bars.interval_ns
        t_start = bar.index * interval
        t_end = t_start + interval
        r = bar.log_return()
        ret_bps = r * 1e4 if r is not None else None
        spread = bar.spread_close
        ofi_z = self._ofi.zscore(bar.ofi) if not bar.invalid else None
        ret_z = self._ret.zscore(ret_bps) if ret_bps is not None else None
        spread_z = self._spread.zscore(spread) if spread is not None else None
        quality: set[str] = set()
        if not bar.invalid:
            self._ofi.add(t_end, bar.ofi)
        else:
            quality.add("PARTIAL_WINDOW")  # the book was not VALID for part of the bar: its flow covers less
            if self._reason is not None:
                quality.add(self._reason)
        if ret_bps is not None:
            self._ret.add(t_end, ret_bps)
        if spread is not None:
            self._spread.add(t_end, spread)
        if not (self._ofi.warm and self._ret.warm and self._spread.warm):
            quality.add("WARMUP")
        return {
            "bar_s": self._bar_s,
            "t_start": t_start,
            "t_end": t_end,
            "n_events": bar.n_events,
            "n_trades": bar.n_trades,
            "mid_open": bar.mid_open,
            "mid_high": bar.mid_high,
            "mid_low": bar.mid_low,
            "mid_close": bar.mid_close,
            "ret_bps": ret_bps,
            "ofi": bar.ofi,
            "buy_volume": bar.buy_volume,
            "sell_volume": bar.sell_volume,
            "spread_bps": spread,
            "ofi_z": ofi_z,
            "ret_z": ret_z,
            "spread_z": spread_z,
            "quality": sorted(quality),
        }
