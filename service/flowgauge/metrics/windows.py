"""Streaming window primitives on exchange time (metrics.md §0.3): exact sums, sliding windows, decayed sums.

Pure, synchronous metric math: imports nothing from the I/O layers (no asyncio, sockets, prometheus_client).
Times are integer nanoseconds of exchange time. Windows are half-open `(t - h, t]`.

Determinism is the point of this module. A sliding sum that adds on arrival and subtracts on expiry in plain
floats drifts, and its bits then depend on the whole history (and on how messages were batched). Here every
running sum is an `ExactSum`: it holds the exact real-number total as a short list of non-overlapping floats
(error-free two-sum transformations), so the published value is always the correctly rounded sum of exactly
the items inside the window — bit-identical to `math.fsum` over them, whatever happened before.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["MAX_WINDOW_ITEMS", "DecayedSum", "ExactSum", "SlidingFlow", "SlidingSum"]

_NS_PER_S = 1_000_000_000

MAX_WINDOW_ITEMS = 1_000_000
"""Hard cap on the items one sliding window holds. The time window bounds memory at (rate x length); the cap
only guards against a runaway feed (1M items is ~16k events/s over 60 s). Items evicted early because of it
are counted in `overflow_dropped` and make the window sum cover less than its length."""


class ExactSum:
    """The exact sum of finite floats, with exact removal.

    Internally a list of non-overlapping partial sums, smallest magnitude first, whose real sum equals the
    real sum of everything added minus everything removed. Adding `-x` removes `x` exactly, so there is no
    drift. The list stays short (its length is bounded by the exponent span of the values, a handful in
    practice). Inputs must be finite: an infinity or NaN would poison the partials.
    """

    __slots__ = ("_partials",)

    def __init__(self) -> None:
        self._partials: list[float] = []

    def add(self, x: float) -> None:
        """Add `x` exactly (Shewchuk-style grow-expansion with zero elimination)."""
        partials = self._partials
        kept = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)  # the rounding error of hi, exact because |x| >= |y|
            if lo:
                partials[kept] = lo
                kept += 1
            x = hi
        del partials[kept:]
        partials.append(x)

    def sub(self, x: float) -> None:
        self.add(-x)

    def add_sum(self, other: ExactSum) -> None:
        """Add another exact sum without rounding it first."""
        for p in tuple(other._partials):
            self.add(p)

    def sub_sum(self, other: ExactSum) -> None:
        for p in tuple(other._partials):
            self.add(-p)

    def value(self) -> float:
        """The correctly rounded total."""
        return math.fsum(self._partials)

    def clear(self) -> None:
        self._partials.clear()


def _insert_sorted(items: deque[tuple[int, float]], entry: tuple[int, float]) -> None:
    """Insert keeping the deque sorted by time; late entries are rare and land near the right end."""
    t = entry[0]
    i = len(items)
    while i > 0 and items[i - 1][0] > t:
        i -= 1
    items.insert(i, entry)


class SlidingSum:
    """Exact boxcar sum of impulses over `(now - h, now]`.

    `now` never goes backwards: a query or an add with an older time is answered at the latest time seen,
    which is what keeps eviction monotone. Items older than the window when they arrive are dropped (counted
    in `late_dropped`); items arriving out of order but still inside the window are inserted in time order.
    """

    __slots__ = ("_items", "_now", "_sum", "late_dropped", "max_items", "overflow_dropped", "window_ns")

    def __init__(self, window_ns: int, max_items: int = MAX_WINDOW_ITEMS) -> None:
        if window_ns <= 0:
            raise ValueError("window must be positive")
        self.window_ns = window_ns
        self.max_items = max_items
        self._items: deque[tuple[int, float]] = deque()
        self._sum = ExactSum()
        self._now: int | None = None
        self.late_dropped = 0
        self.overflow_dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, t: int, x: float) -> None:
        now = self._now
        if now is None or t > now:
            self._now = now = t
        if t <= now - self.window_ns:
            self.late_dropped += 1
            return
        items = self._items
        if items and items[-1][0] > t:
            _insert_sorted(items, (t, x))
        else:
            items.append((t, x))
        self._sum.add(x)
        self._evict(now)
        if len(items) > self.max_items:
            self._sum.sub(items.popleft()[1])
            self.overflow_dropped += 1

    def value(self, now: int) -> float:
        """Sum of the items with `now - h < t_i <= now` (0.0 for an empty window)."""
        last = self._now
        if last is None or now > last:
            self._now = last = now
        self._evict(last)
        if not self._items:
            return 0.0
        return self._sum.value()

    def _evict(self, now: int) -> None:
        items = self._items
        edge = now - self.window_ns
        if items and items[0][0] <= edge:
            total = self._sum
            while items and items[0][0] <= edge:
                total.sub(items.popleft()[1])
            if not items:
                total.clear()  # already exactly zero; clearing just keeps the partials list empty


class SlidingFlow:
    """Two exact boxcar sums sharing one deque: a signed flow and its unsigned mass (e.g. B - S and B + S).

    Same time rules as `SlidingSum`. `count` is the number of items inside the window after the last
    evaluation, so "no trades in the window" is told apart from "trades that cancel out".
    """

    __slots__ = (
        "_items",
        "_mass",
        "_now",
        "_signed",
        "late_dropped",
        "max_items",
        "overflow_dropped",
        "window_ns",
    )

    def __init__(self, window_ns: int, max_items: int = MAX_WINDOW_ITEMS) -> None:
        if window_ns <= 0:
            raise ValueError("window must be positive")
        self.window_ns = window_ns
        self.max_items = max_items
        self._items: deque[tuple[int, float, float]] = deque()
        self._signed = ExactSum()
        self._mass = ExactSum()
        self._now: int | None = None
        self.late_dropped = 0
        self.overflow_dropped = 0

    def add(self, t: int, signed: float, mass: float) -> None:
        now = self._now
        if now is None or t > now:
            self._now = now = t
        if t <= now - self.window_ns:
            self.late_dropped += 1
            return
        items = self._items
        entry = (t, signed, mass)
        if items and items[-1][0] > t:
            i = len(items)
            while i > 0 and items[i - 1][0] > t:
                i -= 1
            items.insert(i, entry)
        else:
            items.append(entry)
        self._signed.add(signed)
        self._mass.add(mass)
        self._evict(now)
        if len(items) > self.max_items:
            _, s, m = items.popleft()
            self._signed.sub(s)
            self._mass.sub(m)
            self.overflow_dropped += 1

    def evaluate(self, now: int) -> tuple[float, float, int]:
        """(signed sum, mass sum, item count) over `(now - h, now]`."""
        last = self._now
        if last is None or now > last:
            self._now = last = now
        self._evict(last)
        n = len(self._items)
        if n == 0:
            return 0.0, 0.0, 0
        return self._signed.value(), self._mass.value(), n

    def _evict(self, now: int) -> None:
        items = self._items
        edge = now - self.window_ns
        if items and items[0][0] <= edge:
            signed = self._signed
            mass = self._mass
            while items and items[0][0] <= edge:
                _, s, m = items.popleft()
                signed.sub(s)
                mass.sub(m)
            if not items:
                signed.clear()
                mass.clear()


class DecayedSum:
    """Exponentially decayed sum of impulses: `S <- a*S + x`, `a = exp(-ln2/H * dt)` (metrics.md §0.3).

    Queries never mutate the state: `value(now)` decays a copy. That way the bits of the result depend only on
    the sequence of impulses, not on how often someone looked. An impulse older than the last one is decayed
    to the last impulse's time before it is added (same exact value, no backwards step of the clock).
    """

    __slots__ = ("_lambda_ns", "_s", "_t", "half_life_s")

    def __init__(self, half_life_s: float) -> None:
        if not half_life_s > 0.0:
            raise ValueError("half-life must be positive")
        self.half_life_s = half_life_s
        self._lambda_ns = math.log(2.0) / (half_life_s * _NS_PER_S)
        self._s = 0.0
        self._t: int | None = None

    @classmethod
    def for_window(cls, window_s: float) -> DecayedSum:
        """The decayed sum mass-equivalent to a boxcar of `window_s` seconds: `H = T * ln 2`."""
        return cls(window_s * math.log(2.0))

    def add(self, t: int, x: float) -> None:
        last = self._t
        if last is None:
            self._t = t
            self._s = x
        elif t >= last:
            if t > last:
                self._s *= math.exp(-self._lambda_ns * (t - last))
                self._t = t
            self._s += x
        else:
            self._s += x * math.exp(-self._lambda_ns * (last - t))

    def value(self, now: int) -> float:
        """The sum decayed to `now` (never decayed backwards: an older `now` reads the last impulse time)."""
        last = self._t
        if last is None:
            return 0.0
        if now <= last:
            return self._s
        return self._s * math.exp(-self._lambda_ns * (now - last))
