"""Trade-flow imbalance over sliding windows of exchange time (metrics.md §5.1 `tfi_vol_T`).

Pure, synchronous metric math: no I/O, no asyncio, no prometheus_client. Forced prints (liquidation, ADL,
block) are the caller's to exclude (`include_forced = false` by default, §5.1); this module only sums what it
is given.
"""

from __future__ import annotations

from flowgauge.metrics.windows import SlidingFlow

__all__ = ["TradeFlowImbalance"]


class TradeFlowImbalance:
    """`(B - S) / (B + S)` over `(now - h, now]`, B / S = taker-buy / taker-sell volume in base units."""

    __slots__ = ("_flow",)

    def __init__(self, window_ns: int) -> None:
        self._flow = SlidingFlow(window_ns)

    @property
    def window_ns(self) -> int:
        return self._flow.window_ns

    def add(self, t: int, side: int, size: float) -> None:
        """Record a trade: `side` is the taker side (+1 buy, -1 sell), `size` in base units."""
        self._flow.add(t, size if side > 0 else -size, size)

    def value(self, now: int) -> float | None:
        """The imbalance in [-1, 1]; None when the window holds no volume."""
        signed, volume, _count = self._flow.evaluate(now)
        if volume <= 0.0:
            return None
        return signed / volume
