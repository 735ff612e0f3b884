"""Funding, mark and index: the last-seen state and the rescaled rate / live premium (metrics.md §6.3).

Pure, synchronous metric math: no I/O, no asyncio, no prometheus_client.
"""

from __future__ import annotations

import math

from flowgauge.types import FundingRate

__all__ = ["FundingState", "funding_annualised", "funding_pressure", "funding_rate_8h", "premium_bps"]


def funding_rate_8h(rate: float | None, interval_hours: float | None) -> float | None:
    """A per-interval funding rate rescaled to 8 hours: `rate * 8 / interval_h`.

    None when the rate or the interval is unknown (an assumed 8 h interval would be a made-up value on venues
    that fund hourly or every 4 h).
    """
    if rate is None or interval_hours is None or interval_hours <= 0.0:
        return None
    return rate * 8.0 / interval_hours


def premium_bps(mid: float | None, index: float | None) -> float | None:
    """`(mid_perp - index) / index * 1e4`: the live premium that funding lags (§6.3 `premium_bps_live`)."""
    if mid is None or index is None or index <= 0.0:
        return None
    return (mid - index) / index * 1e4


class FundingState:
    """Last-seen funding fields of one instrument. A None field in an update means "unchanged"."""

    __slots__ = ("index_price", "interval_hours", "mark_price", "next_funding_ts", "rate", "ts_exchange")

    def __init__(self) -> None:
        self.rate: float | None = None
        self.interval_hours: float | None = None
        self.next_funding_ts: int | None = None
        self.mark_price: float | None = None
        self.index_price: float | None = None
        self.ts_exchange: int | None = None

    def update(self, funding: FundingRate) -> None:
        if funding.rate is not None:
            self.rate = funding.rate
        if funding.interval_hours is not None:
            self.interval_hours = funding.interval_hours
        if funding.next_funding_ts is not None:
            self.next_funding_ts = funding.next_funding_ts
        if funding.mark_price is not None:
            self.mark_price = funding.mark_price
        if funding.index_price is not None:
            self.index_price = funding.index_price
        last = self.ts_exchange
        if last is None or funding.ts_exchange > last:
            self.ts_exchange = funding.ts_exchange

    def rate_8h(self) -> float | None:
        return funding_rate_8h(self.rate, self.interval_hours)


def funding_annualised(rate: float | None, interval_hours: float | None) -> float | None:
    """`F * 24 * 365 / interval_h` (§6.3 `funding_ann`); None when the rate or the interval is unknown."""
    if rate is None or interval_hours is None or interval_hours <= 0.0:
        return None
    return rate * 24.0 * 365.0 / interval_hours


def funding_pressure(rate_8h: float | None, base: float, scale: float) -> float | None:
    """`tanh((F_8h - F_base) / F_scale)` in (-1, 1), + = longs pay (§6.3); None without a rate."""
    if rate_8h is None:
        return None
    return math.tanh((rate_8h - base) / scale)
