"""Streaming window primitives on exchange time (metrics.md §0.3): exact sums, sliding windows, decayed sums.

Pure, synchronous metric math: imports nothing from the I/O layers (no asyncio, sockets, prometheus_client).
Times are integer nanoseconds of exchange time. Windows are half-open `(t - h, t]`, evaluated at the time `t`
each query asks for (a payload's own exchange time), not at the latest time seen: an item stamped after `t`
is held back until a query at or after its time. That holds across streams and within one stream whose
exchange time steps back alike (each item counts at its own time; one rule, no per-stream clock). Memory is
bounded by a late horizon behind the newest time seen (`LATE_HORIZON_NS`; see `_Boxcar`, `DecayedSum`).

Determinism is the point of this module. A sliding sum that adds on arrival and subtracts on expiry in plain
floats drifts, and its bits then depend on the whole history (and on how messages were batched). Here every
running sum is an `ExactSum`: it holds the exact real-number total as a short list of non-overlapping floats
(error-free two-sum transformations), so the published value is always the correctly rounded sum of exactly
the items inside the window — bit-identical to `math.fsum` over them, whatever happened before.
"""

from __future__ import annotations

import math
from bisect import bisect_right

__all__ = ["LATE_HORIZON_NS", "MAX_WINDOW_ITEMS", "DecayedSum", "ExactSum", "SlidingFlow", "SlidingSum"]

_NS_PER_S = 1_000_000_000

MAX_WINDOW_ITEMS = 1_000_000
"""Hard cap on the items one sliding window holds. The time window bounds memory at (rate x length); the cap
only guards against a runaway feed (1M items is ~16k events/s over 60 s). Items evicted early because of it
are counted in `overflow_dropped` and make the window sum cover less than its length."""

LATE_HORIZON_NS = 5 * _NS_PER_S
"""How far behind the latest time seen a window can still be evaluated exactly. Streams of one instrument are
not mutually ordered (the recordings show payloads up to ~2 s behind the newest trade or book time), and within
one stream exchange time can step back a little; both are answered exactly within this horizon. It costs
memory: each window keeps `h + horizon` of items. See `_Boxcar` for what happens beyond it."""


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


class _Boxcar:
    """Exact boxcar sums of items over `(q - h, q]`, for any query time `q` within the late horizon.

    Items are kept in time order in parallel lists (`_times`, `_items`; a head index instead of popping from the
    front). `[_lo, _hi)` are the items inside the window of the last query and `_sums` hold their exact totals,
    so a query moves both edges by the items that crossed them, in either direction: the exact sums make the
    result independent of the path (always the correctly rounded sum of exactly the items in the window).

    Time rules (metrics.md §0.2.3, issue 8 item 4): a query at `q` counts the items with `q - h < t_i <= q`
    that have arrived, whatever the query order; an item later than `q` is held back until a query at or
    after its time. Memory stays bounded by a late horizon `L`: with `high` the latest time seen (item or
    query), items at or before `high - L - h` are dropped, so:
      * an item arriving with `t_i <= high - L - h` can be in no answerable window: dropped, `late_dropped`;
      * a query older than `high - L` is answered at `high - L`, the oldest time still exact (`late_queries`).
    """

    __slots__ = (
        "_head",
        "_hi",
        "_high",
        "_items",
        "_lo",
        "_query",
        "_sums",
        "_times",
        "horizon_ns",
        "late_dropped",
        "late_queries",
        "max_items",
        "overflow_dropped",
        "window_ns",
    )

    def __init__(self, window_ns: int, channels: int, max_items: int, horizon_ns: int) -> None:
        if window_ns <= 0:
            raise ValueError("window must be positive")
        if horizon_ns < 0:
            raise ValueError("late horizon must be >= 0")
        self.window_ns = window_ns
        self.horizon_ns = horizon_ns
        self.max_items = max_items
        self._times: list[int] = []
        self._items: list[tuple[float, ...]] = []
        self._head = 0  # items before it are dropped (compacted away now and then)
        self._lo = 0  # [_lo, _hi): the items inside the window of the last query
        self._hi = 0
        self._query: int | None = None  # the (clamped) time of the last query
        self._sums = tuple(ExactSum() for _ in range(channels))
        self._high: int | None = None
        self.late_dropped = 0
        self.late_queries = 0
        self.overflow_dropped = 0

    def __len__(self) -> int:
        """Items retained (inside some window still answerable)."""
        return len(self._times) - self._head

    def _advance(self, t: int) -> int:
        high = self._high
        if high is None or t > high:
            self._high = high = t
        return high

    def _add(self, t: int, item: tuple[float, ...]) -> None:
        high = self._advance(t)
        if t <= high - self.horizon_ns - self.window_ns:
            self.late_dropped += 1
            return
        times = self._times
        if not times or times[-1] <= t:
            times.append(t)
            self._items.append(item)
        else:  # late within the horizon: rare, lands near the right end
            i = bisect_right(times, t, self._head)
            times.insert(i, t)
            self._items.insert(i, item)
        # Keep [_lo, _hi) on the last query's window: the item's index is at or before _lo if it is older
        # than that window, within [_lo, _hi] if inside it, at or after _hi if newer.
        query = self._query
        if query is not None and t <= query:
            if t <= query - self.window_ns:
                self._lo += 1
            else:
                for total, x in zip(self._sums, item, strict=True):
                    total.add(x)
            self._hi += 1
        self._drop_before(high - self.horizon_ns - self.window_ns)
        if len(times) - self._head > self.max_items:
            self._drop_first()
            self.overflow_dropped += 1

    def _move(self, q: int) -> None:
        """Make `[_lo, _hi)` and `_sums` the window `(q - h, q]` (q clamped to the late horizon)."""
        high = self._advance(q)
        oldest = high - self.horizon_ns
        if q < oldest:
            self.late_queries += 1
            q = oldest
        self._drop_before(oldest - self.window_ns)
        self._query = q
        times = self._times
        lo, hi = self._lo, self._hi
        new_lo = bisect_right(times, q - self.window_ns, self._head)
        new_hi = bisect_right(times, q, new_lo)
        if new_lo == new_hi:
            for total in self._sums:
                total.clear()
        elif new_lo >= hi or new_hi <= lo:  # no overlap with the last window: start over
            items = self._items
            for c, total in enumerate(self._sums):
                total.clear()
                for i in range(new_lo, new_hi):
                    total.add(items[i][c])
        else:  # each edge moves by the items that crossed it, in either direction
            items = self._items
            for c, total in enumerate(self._sums):
                for i in range(lo, new_lo):
                    total.sub(items[i][c])
                for i in range(new_lo, lo):
                    total.add(items[i][c])
                for i in range(hi, new_hi):
                    total.add(items[i][c])
                for i in range(new_hi, hi):
                    total.sub(items[i][c])
        self._lo, self._hi = new_lo, new_hi

    def _drop_before(self, edge: int) -> None:
        times = self._times
        # len() each time round: _drop_first may compact the list (shorter, head back to 0) in the middle.
        while self._head < len(times) and times[self._head] <= edge:
            self._drop_first()

    def _drop_first(self) -> None:
        head = self._head
        if self._lo <= head < self._hi:  # it was inside the last window
            for total, x in zip(self._sums, self._items[head], strict=True):
                total.sub(x)
        self._head = head = head + 1
        if self._lo < head:
            self._lo = head
        if self._hi < head:
            self._hi = head
        if head >= 1024 and head * 2 >= len(self._times):  # compact: amortised O(1) per item
            del self._times[:head]
            del self._items[:head]
            self._lo -= head
            self._hi -= head
            self._head = 0


class SlidingSum(_Boxcar):
    """Exact boxcar sum of impulses over `(t - h, t]` at any query time `t` (time rules: `_Boxcar`)."""

    __slots__ = ()

    def __init__(self, window_ns: int, max_items: int = MAX_WINDOW_ITEMS, horizon_ns: int = LATE_HORIZON_NS) -> None:
        super().__init__(window_ns, 1, max_items, horizon_ns)

    def add(self, t: int, x: float) -> None:
        self._add(t, (x,))

    def value(self, now: int) -> float:
        """Sum of the items with `now - h < t_i <= now` (0.0 for an empty window)."""
        self._move(now)
        if self._lo == self._hi:
            return 0.0
        return self._sums[0].value()


class SlidingFlow(_Boxcar):
    """Two exact boxcar sums over the same items: a signed flow and its unsigned mass (e.g. B - S and B + S).

    Same time rules as `SlidingSum`. The count tells "no trades in the window" apart from "trades that cancel".
    """

    __slots__ = ()

    def __init__(self, window_ns: int, max_items: int = MAX_WINDOW_ITEMS, horizon_ns: int = LATE_HORIZON_NS) -> None:
        super().__init__(window_ns, 2, max_items, horizon_ns)

    def add(self, t: int, signed: float, mass: float) -> None:
        self._add(t, (signed, mass))

    def evaluate(self, now: int) -> tuple[float, float, int]:
        """(signed sum, mass sum, item count) over `(now - h, now]`."""
        self._move(now)
        n = self._hi - self._lo
        if n == 0:
            return 0.0, 0.0, 0
        signed, mass = self._sums
        return signed.value(), mass.value(), n


_TIME_LIMIT = 1 << 62


def _clamped(t: int) -> int:
    """The compiled core's clamp (core._core._ns): a venue time beyond +-2^62 ns (year 2116) is taken as +-2^62,
    far beyond any window, so the decay of an absurd time is 0 instead of an OverflowError converting it to float."""
    if t > _TIME_LIMIT:
        return _TIME_LIMIT
    return -_TIME_LIMIT if t < -_TIME_LIMIT else t


class DecayedSum:
    """Exponentially decayed sum of impulses: `S <- a*S + x`, `a = exp(-ln2/H * dt)` (metrics.md §0.3).

    `value(q)` is the sum of the impulses with `t_i <= q` that have arrived, each decayed to `q`; an impulse
    later than `q` is held back until a query at or after its time (same time rules as `_Boxcar`).

    The impulses are folded in time order: each retained impulse keeps the running sum just after it
    (`prefix_i = prefix_{i-1} * a(t_i - t_{i-1}) + x_i`), and a query decays the last prefix at or before `q`.
    So the bits depend only on the time-ordered impulses, never on how often or in which order anyone looked,
    and an in-order stream costs one `exp` per impulse and one per query. Impulses older than
    `high - horizon` (`high` = latest time seen) are settled into one (time, sum) pair, which bounds memory:
      * an impulse older than the settled time is decayed to it and added there (`late_folded`), and the
        prefixes after it are recomputed;
      * a query older than `high - horizon` is answered at `high - horizon` (`late_queries`).
    """

    __slots__ = (
        "_head",
        "_high",
        "_lambda_ns",
        "_prefix",
        "_settled_s",
        "_settled_t",
        "_times",
        "_values",
        "half_life_s",
        "horizon_ns",
        "late_folded",
        "late_queries",
    )

    def __init__(self, half_life_s: float, horizon_ns: int = LATE_HORIZON_NS) -> None:
        if not half_life_s > 0.0:
            raise ValueError("half-life must be positive")
        if horizon_ns < 0:
            raise ValueError("late horizon must be >= 0")
        self.half_life_s = half_life_s
        self.horizon_ns = horizon_ns
        self._lambda_ns = math.log(2.0) / (half_life_s * _NS_PER_S)
        self._settled_s = 0.0  # the fold of every settled impulse, at _settled_t
        self._settled_t: int | None = None
        self._times: list[int] = []  # retained impulses in time order, from _head
        self._values: list[float] = []
        self._prefix: list[float] = []  # the fold of everything up to and including impulse i
        self._head = 0
        self._high: int | None = None
        self.late_folded = 0
        self.late_queries = 0

    @classmethod
    def for_window(cls, window_s: float, horizon_ns: int = LATE_HORIZON_NS) -> DecayedSum:
        """The decayed sum mass-equivalent to a boxcar of `window_s` seconds: `H = T * ln 2`."""
        return cls(window_s * math.log(2.0), horizon_ns)

    def __len__(self) -> int:
        """Impulses retained unsettled."""
        return len(self._times) - self._head

    def _advance(self, t: int) -> int:
        high = self._high
        if high is None or t > high:
            self._high = high = t
        return high

    def add(self, t: int, x: float) -> None:
        t = _clamped(t)
        high = self._advance(t)
        times = self._times
        settled_t = self._settled_t
        if settled_t is not None and t < settled_t:
            self.late_folded += 1
            self._settled_s += x * math.exp(-self._lambda_ns * (settled_t - t))
            self._refold(self._head)
        elif not times or times[-1] <= t:
            times.append(t)
            self._values.append(x)
            self._prefix.append(0.0)
            self._refold(len(times) - 1)
        else:  # late within the horizon: rare, lands near the right end
            i = bisect_right(times, t, self._head)
            times.insert(i, t)
            self._values.insert(i, x)
            self._prefix.insert(i, 0.0)
            self._refold(i)
        self._settle(high - self.horizon_ns)

    def _refold(self, start: int) -> None:
        """Recompute the running sums from impulse `start` on."""
        times, values, prefix = self._times, self._values, self._prefix
        last: int | None
        if start > self._head:
            s, last = prefix[start - 1], times[start - 1]
        else:
            s, last = self._settled_s, self._settled_t
        lam = self._lambda_ns
        for i in range(start, len(times)):
            t = times[i]
            if last is None:
                s = values[i]
            else:
                if t > last:
                    s *= math.exp(-lam * (t - last))
                s += values[i]
            last = t
            prefix[i] = s

    def _settle(self, edge: int) -> None:
        times = self._times
        head = self._head
        n = len(times)
        if head < n and times[head] <= edge:
            while head < n and times[head] <= edge:
                head += 1
            self._settled_s = self._prefix[head - 1]
            self._settled_t = times[head - 1]
            self._head = head
            if head >= 1024 and head * 2 >= n:  # compact: amortised O(1) per impulse
                del times[:head]
                del self._values[:head]
                del self._prefix[:head]
                self._head = 0

    def value(self, now: int) -> float:
        """The impulses at or before `now`, decayed to `now` (0.0 before the first one)."""
        now = _clamped(now)
        high = self._advance(now)
        oldest = high - self.horizon_ns
        if now < oldest:
            self.late_queries += 1
            now = oldest
        self._settle(oldest)
        times = self._times
        n = len(times)
        # The usual case first: every impulse is at or before `now`.
        i = n - 1 if n > self._head and times[-1] <= now else bisect_right(times, now, self._head) - 1
        if i >= self._head:
            s, last = self._prefix[i], times[i]
        elif self._settled_t is not None:
            s, last = self._settled_s, self._settled_t
        else:
            return 0.0
        if now <= last:
            return s
        return s * math.exp(-self._lambda_ns * (now - last))
