"""L1 order-flow imbalance from the venue's best-quote stream (issue 11 item 1; metrics.md 1.1, 1.3, 1.4).

The depth-stream `ofi` nets every change inside one batched diff message (metrics.md 1.4 "Batched updates"): on
Binance USD-M that is ~19 messages/s against ~150-190 best-quote changes/s. This family computes the same CKS
`e_n` (1.1, case table) from the venue's real-time best-quote stream instead, one `e_n` per quote state, into its
own fields (the family "ofi_l1", `metrics.families`):

* `ofi_l1`: the sum of the L1 `e_n` since the previous metrics payload of this instrument (any trigger) up to this
  payload's `ts_exchange`, so summing it over payloads gives the interval OFI of 1.2 with every event counted
  once. An event stamped after the payload's time is held back for a later payload, as the windows hold it back.
  Null while the book is not VALID and until the first L1 state after a (re)sync is older than the payload
  (nothing to measure from: in "derived" mode the first book state's payload has a null `ofi_l1`, as its `ofi`).
* `ofi_l1_1s`, `ofi_l1_10s`, `ofi_l1_60s`: exact sliding sums of `e_n` over `(t - T, t]` (1.3 `ofi_raw_T`);
  `ofi_l1_ew_10s`: the decayed sum with `H = 10 s * ln 2` (1.3 `ofi_ew_T`). Evaluated at the payload's
  `ts_exchange` with the window classes of the running core (`metrics.windows` or the compiled ones).
* `source_granularity`: what fed them (1.4 "record source_granularity"): "best_quote" once the instrument's
  best-quote stream delivered a quote, else "derived": the top of the daemon's own book after each applied book
  message (no best-quote stream on the venue, or `venues.<id>.best_quote: false`), which on a batched diff
  stream is the coarsened OFI of 1.4 and then equals the core `ofi` windows.

Validity (metrics.md 0.2.4, 1.4): L1 flow counts only while the book is VALID. When the book leaves VALID (gap,
reset, reconnect of the connection that carries both streams) the previous L1 state is forgotten and
the not yet published `e_n` dropped; the first L1 state after it yields no `e_n`. A quote older than the last one
by the stream's own id is dropped (counted), a crossed or locked quote is a data error (no `e_n`, state
forgotten), and a stream restart (Bybit `u == 1`) forgets the state too; those three L1-only resets flag the
payload RESET until the longest window has slid past them. The switch from "derived" to "best_quote" (the first
quote) starts the windows afresh, so they never mix granularities. Windows not yet covered since the last first
state are marked PARTIAL in `coverage` (and PARTIAL_WINDOW), as the core's `ofi_raw_T`.

Written once for both cores in plain typed Python (no I/O, no imports beyond math): both run this source, each over
its own window classes (the compiled core's are C), as the risk families do (`metrics.extended`). It compiles as is
with Cython's pure-Python mode, but was measured no faster so (0.58 against 0.54 us per quote over the C windows,
which dominate), so it is not compiled. Both
cores' outputs are identical (tests/unit/metrics/test_ofi_l1.py over both cores' windows; the engine and replay
tests under both cores).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

__all__ = ["BEST_QUOTE", "DERIVED", "FIELDS", "OfiL1", "l1_event"]

BEST_QUOTE = "best_quote"
DERIVED = "derived"

_S = 1_000_000_000
FIELDS: tuple[str, ...] = ("ofi_l1", "ofi_l1_1s", "ofi_l1_10s", "ofi_l1_60s", "ofi_l1_ew_10s", "source_granularity")
_WINDOW_KEYS = ("ofi_l1_1s", "ofi_l1_10s", "ofi_l1_60s")
_WINDOWS_NS = (1 * _S, 10 * _S, 60 * _S)
EW_WINDOW_S = 10.0
FLAG_HORIZON_NS = 60 * _S  # an L1 reset flags payloads until the longest window no longer overlaps it
MAX_PENDING = 100_000  # e_n held for the next payload; beyond it the oldest half is folded into one item

_INF = math.inf


def l1_event(
    prev_bid_px: float,
    prev_bid_sz: float,
    prev_ask_px: float,
    prev_ask_sz: float,
    bid_px: float,
    bid_sz: float,
    ask_px: float,
    ask_sz: float,
) -> float:
    """CKS `e_n` (metrics.md 1.1 case table) between two L1 states; an empty side is price -inf (bid) / +inf
    (ask) with size 0 (1.4). The same operations in the same order as `metrics.ofi.ofi_event`."""
    if bid_px > prev_bid_px:
        bid_term = bid_sz
    elif bid_px == prev_bid_px:
        bid_term = bid_sz - prev_bid_sz
    else:
        bid_term = -prev_bid_sz
    if ask_px < prev_ask_px:
        ask_term = -ask_sz
    elif ask_px == prev_ask_px:
        ask_term = prev_ask_sz - ask_sz
    else:
        ask_term = prev_ask_sz
    return bid_term + ask_term


class OfiL1:
    """The "ofi_l1" family's state for one instrument (the `metrics.extended.BookFamily` protocol plus
    `on_best_quote`). `windows` is the module whose `SlidingSum` / `DecayedSum` the running core uses."""

    __slots__ = (
        "_ask_px",
        "_ask_sz",
        "_bid_px",
        "_bid_sz",
        "_ew",
        "_has_prev",
        "_last_seq",
        "_pending_e",
        "_pending_max_t",
        "_pending_t",
        "_reset_until",
        "_seen",
        "_start",
        "_valid",
        "_windows",
        "_windows_module",
        "crossed",
        "events",
        "pending_folded",
        "source",
        "stale_dropped",
    )

    def __init__(self, windows: ModuleType) -> None:
        self._windows_module = windows
        self.source = DERIVED
        self._valid = False  # the book is VALID (on_book seen since the last on_book_invalid)
        self._has_prev = False  # an L1 state n-1 is held
        self._bid_px = -_INF
        self._bid_sz = 0.0
        self._ask_px = _INF
        self._ask_sz = 0.0
        self._last_seq = -1  # the stream's id of the last quote used; -1: none since the last reset
        self._start = -1  # exchange time of the first L1 state since the last reset; -1: none
        self._seen = False  # an L1 state was seen since start / the source switch: windows are published
        self._reset_until = 0  # payloads before this time carry RESET (an L1-only reset)
        self._pending_t: list[int] = []  # e_n not yet published in an `ofi_l1`
        self._pending_e: list[float] = []
        self._pending_max_t = -1
        self._new_windows()
        self.events = 0  # e_n != 0 added (metrics.md 1.4: an unchanged state is not an event)
        self.stale_dropped = 0  # quotes older than the last one by the stream's id
        self.crossed = 0  # crossed or locked quotes
        self.pending_folded = 0

    def _new_windows(self) -> None:
        win = self._windows_module
        self._windows = tuple(win.SlidingSum(ns) for ns in _WINDOWS_NS)
        self._ew = win.DecayedSum.for_window(EW_WINDOW_S)

    # -- inputs -----------------------------------------------------------------------------------------------

    def on_book(self, book: Any, ts_ns: int) -> None:
        """A book message was applied to a VALID book. In "derived" mode its top is the next L1 state."""
        self._valid = True
        if self.source == BEST_QUOTE:
            return
        bid = book.bids.best()
        ask = book.asks.best()
        if bid is None:
            bid_px, bid_sz = -_INF, 0.0
        else:
            bid_px, bid_sz = bid
        if ask is None:
            ask_px, ask_sz = _INF, 0.0
        else:
            ask_px, ask_sz = ask
        self._state(bid_px, bid_sz, ask_px, ask_sz, ts_ns)

    def on_book_invalid(self, ts_ns: int) -> None:
        """The book left VALID: no L1 flow until it is VALID again, and none across the invalid period."""
        self._valid = False
        self._forget()

    def on_best_quote(
        self,
        bid_px: float,
        bid_sz: float,
        ask_px: float,
        ask_sz: float,
        ts_ns: int,
        seq: int = -1,
        reset: bool = False,
    ) -> None:
        """One state of the best-quote stream (empty side: -inf / +inf price, size 0); `seq` its stream id
        (-1: none), `reset` when the stream restarted from a fresh state."""
        if self.source != BEST_QUOTE:
            # From now on the best-quote stream feeds L1; the windows start afresh (no mixed granularity).
            self.source = BEST_QUOTE
            self._new_windows()
            self._seen = False
            self._forget()
        if not self._valid:
            self._forget()  # outside a VALID book period nothing counts, and nothing links across it
            return
        if reset:
            self._l1_reset(ts_ns)
        elif seq >= 0 and seq < self._last_seq:
            self.stale_dropped += 1  # an older quote arriving late: the state it describes is gone
            return
        if bid_px >= ask_px:
            self.crossed += 1  # a matching engine cannot rest it: a data error (1.4), no e_n across it
            self._l1_reset(ts_ns)
            return
        if seq >= 0:
            self._last_seq = seq
        self._state(bid_px, bid_sz, ask_px, ask_sz, ts_ns)

    def _l1_reset(self, ts_ns: int) -> None:
        self._forget()
        until = ts_ns + FLAG_HORIZON_NS
        if until > self._reset_until:
            self._reset_until = until

    def _forget(self) -> None:
        self._has_prev = False
        self._last_seq = -1
        self._start = -1
        self._pending_t.clear()
        self._pending_e.clear()
        self._pending_max_t = -1

    def _state(self, bid_px: float, bid_sz: float, ask_px: float, ask_sz: float, ts_ns: int) -> None:
        """L1 state n: its `e_n` from state n-1 goes into the windows and the pending `ofi_l1`."""
        if not self._has_prev:
            self._has_prev = True
            self._seen = True
            self._start = ts_ns
        else:
            e = l1_event(self._bid_px, self._bid_sz, self._ask_px, self._ask_sz, bid_px, bid_sz, ask_px, ask_sz)
            if e != 0.0:  # a zero adds nothing to a sum and is no event
                for window in self._windows:
                    window.add(ts_ns, e)
                self._ew.add(ts_ns, e)
                self._pend(ts_ns, e)
                self.events += 1
        self._bid_px = bid_px
        self._bid_sz = bid_sz
        self._ask_px = ask_px
        self._ask_sz = ask_sz

    def _pend(self, ts_ns: int, e: float) -> None:
        pending_t = self._pending_t
        pending_e = self._pending_e
        pending_t.append(ts_ns)
        pending_e.append(e)
        if ts_ns > self._pending_max_t:
            self._pending_max_t = ts_ns
        if len(pending_t) > MAX_PENDING:
            # No payload for this long: fold the oldest half into one item at its latest time, so memory stays
            # bounded and the total is kept (rounded once).
            half = len(pending_t) // 2
            folded_t = max(pending_t[:half])
            folded_e = math.fsum(pending_e[:half])
            del pending_t[:half]
            del pending_e[:half]
            pending_t.insert(0, folded_t)
            pending_e.insert(0, folded_e)
            self.pending_folded += 1

    def _take_pending(self, now: int) -> float:
        """The correctly rounded sum of the pending `e_n` stamped at or before `now`, removed from pending."""
        pending_t = self._pending_t
        if not pending_t:
            return 0.0
        pending_e = self._pending_e
        if self._pending_max_t <= now:
            total = math.fsum(pending_e)
            pending_t.clear()
            pending_e.clear()
            self._pending_max_t = -1
            return total
        taken: list[float] = []
        kept_t: list[int] = []
        kept_e: list[float] = []
        for i in range(len(pending_t)):
            if pending_t[i] <= now:
                taken.append(pending_e[i])
            else:
                kept_t.append(pending_t[i])
                kept_e.append(pending_e[i])
        self._pending_t = kept_t
        self._pending_e = kept_e
        self._pending_max_t = max(kept_t)
        return math.fsum(taken)

    # -- output -----------------------------------------------------------------------------------------------

    def fill(self, book: Any, out: dict[str, object], ts_ns: int, flags: set[str]) -> None:
        """Write `FIELDS` into the payload `out`, evaluated at its exchange time `ts_ns` (see the module doc)."""
        if book is not None and self._valid and self._has_prev and self._start < ts_ns:
            out["ofi_l1"] = self._take_pending(ts_ns)
        else:
            out["ofi_l1"] = None
        coverage = out.get("coverage")
        partial = False
        if self._seen:
            start = self._start
            for key, window, window_ns in zip(_WINDOW_KEYS, self._windows, _WINDOWS_NS, strict=True):
                out[key] = window.value(ts_ns)
                if start < 0 or ts_ns - start < window_ns:
                    partial = True
                    if isinstance(coverage, dict):
                        coverage[key] = "PARTIAL"
            out["ofi_l1_ew_10s"] = self._ew.value(ts_ns)
        else:
            for key in _WINDOW_KEYS:
                out[key] = None
            out["ofi_l1_ew_10s"] = None
        out["source_granularity"] = self.source
        if partial:
            flags.add("PARTIAL_WINDOW")
        if ts_ns < self._reset_until:
            flags.add("RESET")
