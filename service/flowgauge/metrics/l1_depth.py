"""Time-weighted EW mean of the L1 depth `(q_bid + q_ask) / 2` (CKS's AD, metrics.md 1.3 / 8.3), sampled at
payloads: the normaliser of `ti_depthnorm_T` in the trade_flow family, which sees no book event of its own.

Pure metric math. At each payload with a VALID book at `t` (after the previous one at `t'`) the depth that held
during `(t', t]` is the one read at `t'`: `m <- a m + (1 - a) y_prev`, `w <- a w + (1 - a)`, `a = exp(-ln2/H dt)`
(metrics.md 0.3), published as `m / w`. Every applied book message yields a payload (unless throttled or
conflated), so this is the book's time average; a throttled or conflated stream samples fewer states. A payload
without a VALID book stops the clock: the invalid period adds no weight.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["L1DepthEw"]

_S = 1_000_000_000


class L1DepthEw:
    __slots__ = ("_lambda_ns", "_m", "_prev", "_t", "_w")

    def __init__(self, half_life_s: float) -> None:
        self._lambda_ns = math.log(2.0) / (half_life_s * _S)
        self._m = self._w = 0.0
        self._t: int | None = None
        self._prev: float | None = None

    def sample(self, book: Any, t: int) -> None:
        """Read the L1 depth of `book` (the VALID book or None) at payload time `t`."""
        if book is None:
            self._prev = None
            self._t = None
            return
        bid, ask = book.bids.best(), book.asks.best()
        depth = ((bid[1] if bid is not None else 0.0) + (ask[1] if ask is not None else 0.0)) * 0.5
        prev, last = self._prev, self._t
        if prev is not None and last is not None and t > last:
            a = math.exp(-self._lambda_ns * (t - last))
            self._m = a * self._m + (1.0 - a) * prev
            self._w = a * self._w + (1.0 - a)
        if last is None or t >= last:
            self._t = t
            self._prev = depth

    def value(self) -> float | None:
        """The bias-corrected mean (None before any time has been weighed, or at zero depth)."""
        if not self._w > 0.0:
            return None
        mean = self._m / self._w
        return mean if mean > 0.0 else None
