# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled hot core: per-instrument books in C arrays and the per-event book fields.

Every function here mirrors a pure-Python reference, operation for operation, so both cores publish the same
bits (the extension is compiled with -ffp-contract=off and without -ffast-math, so C evaluates each `a*b + c`
exactly as Python does):

* `CBook` / `CBookSide` mirror `book.l2.L2Book` / `BookSide` (same bound `max_levels`, same drop counting);
* `book_fields` mirrors `metrics.accumulator.InstrumentMetrics._book_fields` with `metrics.depth`;
* `OfiState.step` mirrors `metrics.ofi.top_of_book` + `ofi_event`.

Sides are stored best first (bids descending, asks ascending): the best level is index 0, so the top-N sums and
band depths read a prefix of the arrays.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport INFINITY, isfinite
from libc.string cimport memmove

cdef extern from *:
    """
    #ifndef FLOWGAUGE_CORE_SOURCE_HASH
    #define FLOWGAUGE_CORE_SOURCE_HASH "unknown"
    #endif
    """
    const char* FLOWGAUGE_CORE_SOURCE_HASH

SOURCE_HASH = FLOWGAUGE_CORE_SOURCE_HASH.decode("ascii")
"""sha256 of the .pyx/.pxd sources this extension was built from (setup.py passes it at build time)."""

DEF _EMPTY_SIDE = 1
DEF _PARTIAL = 2

cdef object _EMPTY_SIDE_FLAG = "EMPTY_SIDE"
cdef object _PARTIAL_FLAG = "PARTIAL_WINDOW"


cdef class CBookSide:
    """One side of the book, best first, at most `max_levels` levels (beyond it the worst level is dropped)."""

    def __cinit__(self, bint descending, Py_ssize_t max_levels):
        if max_levels < 1:
            raise ValueError("max_levels must be >= 1")
        self.descending = descending
        self.max_levels = max_levels
        self.n = 0
        self.cap = 64 if max_levels > 64 else max_levels
        self.px = <double*>PyMem_Malloc(self.cap * sizeof(double))
        self.sz = <double*>PyMem_Malloc(self.cap * sizeof(double))
        if self.px == NULL or self.sz == NULL:
            raise MemoryError()
        self.dropped = 0

    def __dealloc__(self):
        PyMem_Free(self.px)
        PyMem_Free(self.sz)

    def __len__(self):
        return self.n

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self.cap * 2
        if cap > self.max_levels:
            cap = self.max_levels
        cdef double* px = <double*>PyMem_Realloc(self.px, cap * sizeof(double))
        if px == NULL:
            raise MemoryError()
        self.px = px
        cdef double* sz = <double*>PyMem_Realloc(self.sz, cap * sizeof(double))
        if sz == NULL:
            raise MemoryError()
        self.sz = sz
        self.cap = cap
        return 0

    cdef Py_ssize_t _find(self, double price) noexcept nogil:
        """First index whose price is not better than `price` (where `price` is or would be)."""
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        cdef double* px = self.px
        if self.descending:
            while lo < hi:
                mid = (lo + hi) >> 1
                if px[mid] > price:
                    lo = mid + 1
                else:
                    hi = mid
        else:
            while lo < hi:
                mid = (lo + hi) >> 1
                if px[mid] < price:
                    lo = mid + 1
                else:
                    hi = mid
        return lo

    cdef int set_level(self, double price, double size) except -1:
        cdef Py_ssize_t i = self._find(price)
        cdef Py_ssize_t n = self.n
        cdef bint found = i < n and self.px[i] == price
        if size > 0.0:
            if found:
                self.sz[i] = size
                return 0
            if n == self.max_levels:
                # Full: the new level or the current worst goes, whichever is worse (counted either way).
                self.dropped += 1
                if i == n:
                    return 0
                n -= 1
                self.n = n
            elif n == self.cap:
                self._grow()
            if i < n:
                memmove(&self.px[i + 1], &self.px[i], (n - i) * sizeof(double))
                memmove(&self.sz[i + 1], &self.sz[i], (n - i) * sizeof(double))
            self.px[i] = price
            self.sz[i] = size
            self.n = n + 1
        elif found:
            if i < n - 1:
                memmove(&self.px[i], &self.px[i + 1], (n - i - 1) * sizeof(double))
                memmove(&self.sz[i], &self.sz[i + 1], (n - i - 1) * sizeof(double))
            self.n = n - 1
        return 0

    cdef int apply_levels(self, object levels) except -1:
        cdef object level
        cdef double price, size
        for level in levels:
            price = level[0]
            size = level[1]
            self.set_level(price, size)
        return 0

    def clear(self):
        self.n = 0

    def set(self, double price, double size):
        """Insert, update, or (size <= 0) delete the level at `price`."""
        self.set_level(price, size)

    def load(self, levels):
        cdef object level
        cdef double price, size
        self.n = 0
        for level in levels:
            price = level[0]
            size = level[1]
            if size > 0.0:
                self.set_level(price, size)

    def best(self):
        if self.n == 0:
            return None
        return (self.px[0], self.sz[0])

    def top(self, Py_ssize_t n):
        """The best `n` levels, best first."""
        cdef Py_ssize_t k = n if n < self.n else self.n
        return [(self.px[i], self.sz[i]) for i in range(k)]

    def top_sizes(self, Py_ssize_t n):
        cdef Py_ssize_t k = n if n < self.n else self.n
        return [self.sz[i] for i in range(k)]

    def size_at(self, double price):
        cdef Py_ssize_t i = self._find(price)
        if i < self.n and self.px[i] == price:
            return self.sz[i]
        return 0.0

    cdef double _notional_within(self, double limit) noexcept nogil:
        # The reference sums price*size in ascending price order: asks from the best, bids from the deepest
        # included level up to the best. Same order here, so the same bits.
        cdef double total = 0.0
        cdef Py_ssize_t i, k = 0
        cdef double* px = self.px
        cdef double* sz = self.sz
        if self.descending:
            while k < self.n and px[k] >= limit:
                k += 1
            i = k - 1
            while i >= 0:
                total += px[i] * sz[i]
                i -= 1
        else:
            while k < self.n and px[k] <= limit:
                total += px[k] * sz[k]
                k += 1
        return total

    def notional_within(self, double limit_price):
        """Sum of price*size over levels at or better than `limit_price` (quote notional)."""
        return self._notional_within(limit_price)

    def worst_price(self):
        if self.n == 0:
            return None
        return self.px[self.n - 1]

    def levels(self):
        return self.top(self.n)

    @property
    def dropped_levels(self):
        return self.dropped


cdef class CBook:
    """Bids and asks of one instrument; `seq` is the venue sequence id of the current state."""

    def __cinit__(self, Py_ssize_t max_levels):
        self.bids = CBookSide(True, max_levels)
        self.asks = CBookSide(False, max_levels)
        self.seq = None
        self.ts_exchange = 0

    def load(self, bids, asks, seq, ts_exchange):
        self.bids.load(bids)
        self.asks.load(asks)
        self.seq = seq
        self.ts_exchange = ts_exchange

    def apply(self, bids, asks, seq, ts_exchange):
        self.bids.apply_levels(bids)
        self.asks.apply_levels(asks)
        self.seq = seq
        self.ts_exchange = ts_exchange

    def clear(self):
        self.bids.n = 0
        self.asks.n = 0
        self.seq = None

    def is_crossed(self):
        return self.bids.n > 0 and self.asks.n > 0 and self.bids.px[0] >= self.asks.px[0]

    @property
    def dropped_levels(self):
        return self.bids.dropped + self.asks.dropped


cdef inline object _ratio_or_none(double bid_sum, double ask_sum):
    cdef double total = bid_sum + ask_sum
    if total > 0.0:
        return (bid_sum - ask_sum) / total
    return None


cdef inline double _prefix_sum(CBookSide side, Py_ssize_t n) noexcept nogil:
    cdef double total = 0.0
    cdef Py_ssize_t i
    cdef Py_ssize_t k = n if n < side.n else side.n
    if k == 0:
        return 0.0
    total = side.sz[0]
    for i in range(1, k):
        total = total + side.sz[i]
    return total


cdef int _band(CBook book, dict out, double mid, double band, object bid_key, object ask_key) except -1:
    """metrics.depth.band_depth: returns _PARTIAL when a non-empty side's deepest level is inside the band."""
    cdef double frac = band / 1e4
    cdef double bid_limit = mid * (1.0 - frac)
    cdef double ask_limit = mid * (1.0 + frac)
    cdef CBookSide bids = book.bids
    cdef CBookSide asks = book.asks
    out[bid_key] = bids._notional_within(bid_limit)
    out[ask_key] = asks._notional_within(ask_limit)
    if (bids.n > 0 and bids.px[bids.n - 1] > bid_limit) or (asks.n > 0 and asks.px[asks.n - 1] < ask_limit):
        return _PARTIAL
    return 0


def book_fields(CBook book, dict out, set flags):
    """Fill the book-state fields of one payload into `out` (InstrumentMetrics._book_fields); returns the mid."""
    cdef CBookSide bids = book.bids
    cdef CBookSide asks = book.asks
    cdef double bid_px = 0.0, bid_sz = 0.0, ask_px = 0.0, ask_sz = 0.0, mid = 0.0, total, imb
    cdef bint has_bid = bids.n > 0
    cdef bint has_ask = asks.n > 0
    cdef object mid_obj = None
    cdef int partial = 0
    if has_bid:
        bid_px = bids.px[0]
        bid_sz = bids.sz[0]
        out["bid_px"] = bid_px
        out["bid_sz"] = bid_sz
    else:
        out["bid_px"] = None
        out["bid_sz"] = None
    if has_ask:
        ask_px = asks.px[0]
        ask_sz = asks.sz[0]
        out["ask_px"] = ask_px
        out["ask_sz"] = ask_sz
    else:
        out["ask_px"] = None
        out["ask_sz"] = None
    if has_bid and has_ask:
        mid = (bid_px + ask_px) * 0.5
        mid_obj = mid
        out["mid"] = mid_obj
        # spread_bps recomputes the mid the same way
        out["spread_bps"] = (ask_px - bid_px) / mid * 1e4 if mid > 0.0 else None
        total = bid_sz + ask_sz
        if total > 0.0:
            imb = bid_sz / total
            out["wmid"] = imb * ask_px + (1.0 - imb) * bid_px
        else:
            out["wmid"] = None
    else:
        out["mid"] = None
        out["spread_bps"] = None
        out["wmid"] = None

    out["depth_imb_1"] = _ratio_or_none(_prefix_sum(bids, 1), _prefix_sum(asks, 1))
    out["depth_imb_5"] = _ratio_or_none(_prefix_sum(bids, 5), _prefix_sum(asks, 5))
    out["depth_imb_10"] = _ratio_or_none(_prefix_sum(bids, 10), _prefix_sum(asks, 10))
    out["depth_imb_20"] = _ratio_or_none(_prefix_sum(bids, 20), _prefix_sum(asks, 20))
    if has_bid != has_ask:
        flags.add(_EMPTY_SIDE_FLAG)

    if mid_obj is None or mid <= 0.0:
        out["depth_bid_10bps"] = None
        out["depth_ask_10bps"] = None
        out["depth_bid_25bps"] = None
        out["depth_ask_25bps"] = None
    else:
        partial |= _band(book, out, mid, 10.0, "depth_bid_10bps", "depth_ask_10bps")
        partial |= _band(book, out, mid, 25.0, "depth_bid_25bps", "depth_ask_25bps")
        if partial:
            flags.add(_PARTIAL_FLAG)
    return mid_obj


cdef class OfiState:
    """The previous top of book of one instrument and the CKS `e_n` of the latest book event (metrics.ofi)."""

    def __cinit__(self):
        self.has_prev = False

    def forget(self):
        """The book left VALID: the next state has no predecessor."""
        self.has_prev = False

    @property
    def has_previous(self):
        return self.has_prev

    def step(self, CBook book):
        """Store the book's top as the new state n; returns `e_n`, or None for the first state (no n-1)."""
        cdef CBookSide bids = book.bids
        cdef CBookSide asks = book.asks
        cdef double bid_px, bid_sz, ask_px, ask_sz, bid_term, ask_term
        if bids.n > 0:
            bid_px = bids.px[0]
            bid_sz = bids.sz[0]
        else:
            bid_px = -INFINITY
            bid_sz = 0.0
        if asks.n > 0:
            ask_px = asks.px[0]
            ask_sz = asks.sz[0]
        else:
            ask_px = INFINITY
            ask_sz = 0.0
        cdef bint had_prev = self.has_prev
        cdef double prev_bid_px = self.bid_px, prev_bid_sz = self.bid_sz
        cdef double prev_ask_px = self.ask_px, prev_ask_sz = self.ask_sz
        self.bid_px = bid_px
        self.bid_sz = bid_sz
        self.ask_px = ask_px
        self.ask_sz = ask_sz
        self.has_prev = True
        if not had_prev:
            return None
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


def valid_levels(levels):
    """connectors.levels.valid_levels in one C loop, with the reference's exact verdicts: the minimum price
    must be > 0, the minimum size >= 0, and the sum of every price and size finite (so a NaN anywhere, an
    infinity, or a sum that overflows all fail)."""
    cdef object level
    cdef double price, size, min_price = 0.0, min_size = 0.0, prices = 0.0, sizes = 0.0, total
    cdef bint first = True
    for level in levels:
        price = level[0]
        size = level[1]
        if first:
            min_price = price
            min_size = size
            prices = price
            sizes = size
            first = False
            continue
        # min() keeps the first item unless a later one compares smaller (a NaN never does)
        if price < min_price:
            min_price = price
        if size < min_size:
            min_size = size
        prices += price
        sizes += size
    if first:
        return True
    total = prices + sizes
    return min_price > 0.0 and min_size >= 0.0 and total == total and total != INFINITY
