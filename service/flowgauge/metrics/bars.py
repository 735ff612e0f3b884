"""Clock bars of one instrument on exchange time (metrics.md §0.3 "Clock bars", §8.1).

Pure, synchronous metric math. Bar `k` of length `D` covers exchange time `[k*D, (k+1)*D)` (aligned to UTC epoch
multiples of its length). Book states and trades accumulate into the bar of their own time; a bar closes when
something shows that its time is over:

* `on_book(t, ...)`: a book state at `t` closes every open bar before `floor(t/D)`, empty ones included (an empty
  bar has `n_events = 0`, flow 0 and the state carried forward from the bar before);
* `close_until(t)`: the daemon's timer closes the bars that ended at or before `t` when no event comes (an idle
  or dead feed still emits its bars). Replay never calls it, so a replay's bars depend on the recorded events
  only, in their order: deterministic, and independent of how messages were batched.

A trade stamped in a bar already closed is late: it is counted (`late_trades`), not added (a published bar never
changes). A trade stamped in a bar not yet open waits in a bounded queue until that bar opens (streams of one
instrument are not mutually ordered); beyond `MAX_PENDING_TRADES` the oldest waiting trade is dropped, counted.
Jumps of exchange time are bounded: a gap of up to `MAX_CATCH_UP` bars is filled with empty bars; a longer one (a
feed silent for over an hour of 1 s bars, or a venue timestamp a year ahead) is not filled, only counted
(`skipped_bars`), so one bad stamp cannot emit millions of bars. A state stamped more than `MAX_CATCH_UP` bars
behind the open bar restarts the bars at its time (`clock_restarts`; the bar that was open is closed, and the new
one has no return): after a bogus future stamp, the bars follow the venue's real time again.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["MAX_CATCH_UP", "MAX_PENDING_TRADES", "Bar", "ClockBars"]

MAX_CATCH_UP = 3600
"""The longest gap (in bars) filled with empty bars, and how far behind the open bar a state may be stamped before
the bars restart at its time: an hour of 1-second bars."""

MAX_PENDING_TRADES = 10_000
"""Most trades held for a bar not yet open (trades run ahead of the book by up to a few seconds)."""


_NO_BARS: list[Bar] = []  # returned (never mutated) when a call closes no bar


class Bar:
    """One closed bar. Prices are the mid of the book state (None while the book had no two-sided VALID state);
    `*_close` states are the ones holding at the bar's end (carried forward through empty bars)."""

    __slots__ = ("buy_volume", "depth_close", "index", "invalid", "mid_close", "mid_high", "mid_low", "mid_open",
                 "n_events", "n_trades", "ofi", "prev_close", "sell_volume", "spread_close")  # fmt: skip

    def __init__(self, index: int, state_mid: float | None, spread: float | None, depth: float | None,
                 prev_close: float | None, invalid: bool) -> None:  # fmt: skip
        self.index = index
        self.n_events = 0
        self.n_trades = 0
        self.ofi = 0.0
        self.buy_volume = 0.0
        self.sell_volume = 0.0
        self.mid_open = state_mid
        self.mid_high = state_mid
        self.mid_low = state_mid
        self.mid_close = state_mid
        self.spread_close = spread
        self.depth_close = depth
        self.prev_close = prev_close  # the previous bar's closing mid (for the return)
        # The book was not VALID for some of the bar: it opened before a (re)sync completed (the first bar too) or
        # the book left VALID in it. Its flow covers less than its length, and it has no return.
        self.invalid = invalid

    def log_return(self) -> float | None:
        """`ln(close / previous close)`; None when either is missing (an invalid stretch is no return)."""
        prev, close = self.prev_close, self.mid_close
        if prev is None or close is None or self.invalid or not (prev > 0.0 and close > 0.0):
            return None
        return math.log(close / prev)


class ClockBars:
    """Bars of `interval_ns` for one instrument; `on_book`, `on_trade`, `on_invalid` feed them, and the bars they
    close come back from `on_book` / `close_until` in time order (see the module docstring)."""

    __slots__ = ("_bar", "_depth", "_mid", "_pending", "_spread", "_valid", "clock_restarts", "interval_ns",
                 "late_trades", "pending_dropped", "skipped_bars")  # fmt: skip

    def __init__(self, interval_ns: int) -> None:
        if interval_ns <= 0:
            raise ValueError("bar interval must be > 0")
        self.interval_ns = interval_ns
        self._bar: Bar | None = None  # the open bar; None before the first book state
        self._mid: float | None = None  # the current state, carried into the next bar
        self._spread: float | None = None
        self._depth: float | None = None
        self._valid = False  # the book is VALID now (a state came after the last invalidation)
        self._pending: deque[tuple[int, int, float]] = deque()  # trades ahead of the open bar: (index, side, size)
        self.late_trades = 0
        self.pending_dropped = 0
        self.skipped_bars = 0
        self.clock_restarts = 0

    @property
    def open_index(self) -> int | None:
        return self._bar.index if self._bar is not None else None

    def _open(self, index: int) -> Bar:
        prev = self._bar
        # A bar opening while the book is not VALID (it left VALID in an earlier bar) is invalid from its start.
        bar = Bar(index, self._mid, self._spread, self._depth, prev.mid_close if prev is not None else None,
                  not self._valid)  # fmt: skip
        self._bar = bar
        pending = self._pending
        while pending and pending[0][0] <= index:
            k, side, size = pending.popleft()
            if k < index:
                self.late_trades += 1  # its bar was skipped
            else:
                _add_trade(bar, side, size)
        return bar

    def _advance(self, index: int, closed: list[Bar], restart: bool = True) -> Bar:
        """Close bars up to (not including) `index` and return the open bar `index` (see the module docstring for
        jumps of more than MAX_CATCH_UP bars; `restart` False: a time far behind changes nothing, the timer's case)."""
        bar = self._bar
        if bar is None:
            return self._open(index)
        if index <= bar.index:
            if restart and index < bar.index - MAX_CATCH_UP:
                # Exchange time went back by more than MAX_CATCH_UP bars (after a bogus future stamp, or a venue
                # clock reset): the bars restart there, no return across it.
                closed.append(bar)
                self.clock_restarts += 1
                self._bar = None
                return self._open(index)
            return bar
        closed.append(bar)
        first = bar.index + 1
        if index - first > MAX_CATCH_UP:
            self.skipped_bars += index - first  # too long a gap to fill: none of it is emitted
            first = index
        for k in range(first, index):
            closed.append(self._open(k))
        return self._open(index)

    def close_until(self, t: int) -> list[Bar]:
        """Close every bar that ended at or before `t` (the timer's call); returns them, oldest first."""
        closed: list[Bar] = []
        if self._bar is not None:
            self._advance(t // self.interval_ns, closed, restart=False)
        return closed

    def on_book(
        self, t: int, mid: float | None, e: float | None, spread: float | None, depth: float | None
    ) -> list[Bar]:
        """A VALID book state at `t` (mid None with an empty side), `e` its OFI event (None for the first state
        after a sync). Returns the bars it closed, oldest first."""
        # A state stamped in a bar already closed (exchange time stepped back) is still the current state: it goes
        # to the open bar.
        bar = self._bar
        index = t // self.interval_ns
        closed: list[Bar]
        if bar is not None and bar.index - MAX_CATCH_UP <= index <= bar.index:
            closed = _NO_BARS  # the common case: a state in the open bar (no list built per event)
        else:
            closed = []
            bar = self._advance(index, closed)
        self._valid = True
        bar.n_events += 1
        if e is not None:
            bar.ofi += e
        if mid is not None:
            if bar.mid_open is None:
                bar.mid_open = bar.mid_high = bar.mid_low = mid
            else:
                if mid > bar.mid_high:  # type: ignore[operator]
                    bar.mid_high = mid
                if mid < bar.mid_low:  # type: ignore[operator]
                    bar.mid_low = mid
            bar.mid_close = mid
        else:
            bar.mid_close = None
        bar.spread_close = spread
        bar.depth_close = depth
        self._mid = mid
        self._spread = spread
        self._depth = depth
        return closed

    def on_invalid(self, t: int) -> list[Bar]:
        """The book left VALID at `t`: the open bar is marked, and the state is gone until the next book state."""
        closed: list[Bar] = []
        if self._bar is None:
            return closed
        bar = self._advance(t // self.interval_ns, closed)
        bar.invalid = True
        bar.mid_close = None
        bar.spread_close = None
        bar.depth_close = None
        self._mid = self._spread = self._depth = None
        self._valid = False
        return closed

    def on_trade(self, t: int, side: int, size: float) -> None:
        """A (non-forced) trade; `side` +1 taker buy, -1 taker sell."""
        bar = self._bar
        index = t // self.interval_ns
        if bar is not None and index == bar.index:
            _add_trade(bar, side, size)
        elif bar is not None and index < bar.index:
            self.late_trades += 1
        else:
            pending = self._pending
            if len(pending) >= MAX_PENDING_TRADES:
                pending.popleft()
                self.pending_dropped += 1
            if pending and pending[-1][0] > index:
                # Out of order among the waiting ones (rare): keep the queue sorted by bar.
                items = sorted((*pending, (index, side, size)), key=lambda item: item[0])
                pending.clear()
                pending.extend(items)
            else:
                pending.append((index, side, size))


def _add_trade(bar: Bar, side: int, size: float) -> None:
    bar.n_trades += 1
    if side > 0:
        bar.buy_volume += size
    else:
        bar.sell_volume += size
