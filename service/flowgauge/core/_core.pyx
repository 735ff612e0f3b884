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

from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_FromString
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.math cimport INFINITY, exp, fabs, isfinite, log
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

RULE_NONE = 0
RULE_CONSECUTIVE = 1
RULE_CHAINED = 2

DEF _EMPTY_SIDE = 1
DEF _PARTIAL = 2
# _bands: which (band, side) the visible book does not reach (metrics.accumulator coverage EXHAUSTED)
DEF _BID10 = 1
DEF _ASK10 = 2
DEF _BID25 = 4
DEF _ASK25 = 8

cdef object _EMPTY_SIDE_FLAG = "EMPTY_SIDE"
cdef object _PARTIAL_FLAG = "PARTIAL_WINDOW"
cdef object _EXHAUSTED = "EXHAUSTED"
cdef object _PARTIAL_COVERAGE = "PARTIAL"
# window lengths of metrics.accumulator OFI_COVERAGE / TFI_COVERAGE (ns, Python ints like the times compared)
cdef object _NS_1S = 1_000_000_000
cdef object _NS_10S = 10_000_000_000
cdef object _NS_60S = 60_000_000_000


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
        cdef Py_ssize_t i, n
        cdef PyObject* item
        cdef PyObject* p
        cdef PyObject* q
        if type(levels) is tuple:
            # The parsers' typed decode gives a tuple of (float, float) tuples: read them without generic
            # indexing; anything else takes the generic loop below.
            n = PyTuple_GET_SIZE(levels)
            for i in range(n):
                item = PyTuple_GET_ITEM(levels, i)
                if type(<object>item) is tuple and PyTuple_GET_SIZE(<object>item) == 2:
                    p = PyTuple_GET_ITEM(<object>item, 0)
                    q = PyTuple_GET_ITEM(<object>item, 1)
                    if type(<object>p) is float and type(<object>q) is float:
                        self.set_level(PyFloat_AS_DOUBLE(<object>p), PyFloat_AS_DOUBLE(<object>q))
                        continue
                level = <object>item
                price = level[0]
                size = level[1]
                self.set_level(price, size)
            return 0
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

    def apply_next(self, delta, int rule):
        """Apply `delta` when it is, by the venue's rule, the next one after the current book; the common case
        of BookSync.on_delta in one call (core.sync.CompiledBookSync). `rule`: RULE_CONSECUTIVE (`seq` must be
        the book's + 1, Bybit) or RULE_CHAINED (`prev_seq` must equal the book's, after the first delta).

        Returns 0 when it is not (nothing done: the caller's reference path decides stale or gap), 1 when it
        was applied, 2 when it was applied and crossed the book."""
        cdef object seq = self.seq
        if seq is None:
            return 0
        if rule == RULE_CONSECUTIVE:
            if delta.seq != seq + 1:
                return 0
        elif rule == RULE_CHAINED:
            if delta.prev_seq != seq:
                return 0
        else:
            return 0
        self.bids.apply_levels(delta.bids)
        self.asks.apply_levels(delta.asks)
        self.seq = delta.seq
        self.ts_exchange = delta.ts_exchange
        if self.bids.n > 0 and self.asks.n > 0 and self.bids.px[0] >= self.asks.px[0]:
            return 2
        return 1

    @property
    def dropped_levels(self):
        return self.bids.dropped + self.asks.dropped


cdef inline object _ratio_or_none(double bid_sum, double ask_sum):
    cdef double total = bid_sum + ask_sum
    if total > 0.0:
        return (bid_sum - ask_sum) / total
    return None


cdef inline void _running_sums(CBookSide side, double* sums) noexcept nogil:
    """Sum of the best 1, 5, 10 and 20 sizes (fewer when the side is shorter; 0.0 when empty), added left to
    right from the best level like `itertools.accumulate`."""
    cdef Py_ssize_t k = side.n if side.n < 20 else 20
    cdef Py_ssize_t i
    cdef double total = 0.0
    if k > 0:
        total = side.sz[0]
    sums[0] = sums[1] = sums[2] = sums[3] = total
    for i in range(1, k):
        total = total + side.sz[i]
        if i == 4:
            sums[1] = total
        elif i == 9:
            sums[2] = total
    if k < 5:
        sums[1] = total
    if k < 10:
        sums[2] = total
    sums[3] = total


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


cdef inline Py_ssize_t _count_bids_at_or_above(CBookSide side, double limit) noexcept nogil:
    """Levels with price >= limit (bids are descending: a prefix)."""
    cdef Py_ssize_t lo = 0, hi = side.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if side.px[mid] >= limit:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _count_asks_at_or_below(CBookSide side, double limit) noexcept nogil:
    """Levels with price <= limit (asks are ascending: a prefix)."""
    cdef Py_ssize_t lo = 0, hi = side.n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if side.px[mid] <= limit:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int _bands(CBook book, dict out, double mid) except -1:
    """metrics.depth.band_depth for the 10 and 25 bps bands; returns a bit per (band, side) whose non-empty side's
    deepest level is inside it (_BID10, _ASK10, _BID25, _ASK25: the band's depth is EXHAUSTED).

    Each sum is the reference's: price*size added one level at a time in ascending price order (asks from the
    best level out, bids from the deepest included level in). Those are three independent dependency chains
    (the asks' 10 bps sum is a prefix of their 25 bps sum, so one chain gives both); running them in one loop
    lets the CPU overlap them instead of waiting on each addition in turn. Same additions, same order, same
    bits."""
    cdef CBookSide bids = book.bids
    cdef CBookSide asks = book.asks
    cdef double frac10 = 10.0 / 1e4
    cdef double frac25 = 25.0 / 1e4
    cdef double bid_limit10 = mid * (1.0 - frac10)
    cdef double ask_limit10 = mid * (1.0 + frac10)
    cdef double bid_limit25 = mid * (1.0 - frac25)
    cdef double ask_limit25 = mid * (1.0 + frac25)
    cdef Py_ssize_t kb10 = _count_bids_at_or_above(bids, bid_limit10)
    cdef Py_ssize_t kb25 = _count_bids_at_or_above(bids, bid_limit25)
    cdef Py_ssize_t ka10 = _count_asks_at_or_below(asks, ask_limit10)
    cdef Py_ssize_t ka25 = _count_asks_at_or_below(asks, ask_limit25)
    cdef double bid10 = 0.0, bid25 = 0.0, ask10 = 0.0, ask = 0.0
    cdef double* bpx = bids.px
    cdef double* bsz = bids.sz
    cdef double* apx = asks.px
    cdef double* asz = asks.sz
    cdef Py_ssize_t j, steps = kb25
    cdef int partial = 0
    if ka25 > steps:
        steps = ka25
    for j in range(steps):
        if j < kb25:
            bid25 += bpx[kb25 - 1 - j] * bsz[kb25 - 1 - j]
        if j < kb10:
            bid10 += bpx[kb10 - 1 - j] * bsz[kb10 - 1 - j]
        if j < ka25:
            if j == ka10:
                ask10 = ask
            ask += apx[j] * asz[j]
    if ka10 == ka25:
        ask10 = ask
    out["depth_bid_10bps"] = bid10
    out["depth_ask_10bps"] = ask10
    out["depth_bid_25bps"] = bid25
    out["depth_ask_25bps"] = ask
    if bids.n > 0:
        if bpx[bids.n - 1] > bid_limit10:
            partial |= _BID10
        if bpx[bids.n - 1] > bid_limit25:
            partial |= _BID25
    if asks.n > 0:
        if apx[asks.n - 1] < ask_limit10:
            partial |= _ASK10
        if apx[asks.n - 1] < ask_limit25:
            partial |= _ASK25
    return partial


def book_fields(CBook book, dict out, set flags, dict coverage):
    """Fill the book-state fields of one payload into `out` (InstrumentMetrics._book_fields); returns the mid."""
    return _book_fields(book, out, flags, coverage)


cdef object _book_fields(CBook book, dict out, set flags, dict coverage):
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

    # Running sums of the best 20 sizes per side, read at 1, 5, 10 and 20 levels (metrics.depth uses the same
    # running sums, `accumulate`): one pass per side instead of four.
    cdef double bid_sums[4]
    cdef double ask_sums[4]
    _running_sums(bids, bid_sums)
    _running_sums(asks, ask_sums)
    out["depth_imb_1"] = _ratio_or_none(bid_sums[0], ask_sums[0])
    out["depth_imb_5"] = _ratio_or_none(bid_sums[1], ask_sums[1])
    out["depth_imb_10"] = _ratio_or_none(bid_sums[2], ask_sums[2])
    out["depth_imb_20"] = _ratio_or_none(bid_sums[3], ask_sums[3])
    if has_bid != has_ask:
        flags.add(_EMPTY_SIDE_FLAG)

    if mid_obj is None or mid <= 0.0:
        out["depth_bid_10bps"] = None
        out["depth_ask_10bps"] = None
        out["depth_bid_25bps"] = None
        out["depth_ask_25bps"] = None
    else:
        partial = _bands(book, out, mid)
        if partial:
            # metrics.accumulator: per band and side, in the reference's order (10 bps bid, ask, 25 bps bid, ask)
            if partial & _BID10:
                coverage["depth_bid_10bps"] = _EXHAUSTED
            if partial & _ASK10:
                coverage["depth_ask_10bps"] = _EXHAUSTED
            if partial & _BID25:
                coverage["depth_bid_25bps"] = _EXHAUSTED
            if partial & _ASK25:
                coverage["depth_ask_25bps"] = _EXHAUSTED
    return mid_obj


cdef class OfiState:
    """The previous top of book of one instrument and the CKS `e_n` of the latest book event (metrics.ofi)."""

    def __cinit__(self):
        self.has_prev = False

    def event(self, CBook book, ts_exchange, SlidingSum win_1s, SlidingSum win_10s, SlidingSum win_60s,
              DecayedSum ew_10s):
        """InstrumentMetrics._book_event: `step`, then a non-zero `e_n` added to the OFI windows at its time."""
        cdef object e = self.step(book)
        cdef long long t
        cdef double x
        if e is None:
            return None
        x = e
        if x != 0.0:
            t = _ns(ts_exchange)
            win_1s._add_item(t, x, 0.0)
            win_10s._add_item(t, x, 0.0)
            win_60s._add_item(t, x, 0.0)
            ew_10s._add(t, x)
        return e

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


# connectors.levels.MIN_PRICE and MAX_LEVEL_VALUE: the range of a level's price and size on every path.
MIN_PRICE = 1e-18
MAX_LEVEL_VALUE = 1e18
cdef double _MIN_PRICE = MIN_PRICE
cdef double _MAX_LEVEL = MAX_LEVEL_VALUE


def string_levels(raw):
    """connectors.okx._raw_levels for a clean `[[px, sz, ...], ...]` (a list of lists whose first two items are
    str): the same list of (px string, sz string, float(px), float(sz)) with the same checks (MIN_PRICE <= px <
    MAX_LEVEL_VALUE, 0 <= sz < MAX_LEVEL_VALUE); None as soon as anything is not so (the caller's reference loop then says what is wrong).
    `PyFloat_FromString` is what `float(str)` runs, so the values are the same objects' values."""
    cdef list out = []
    cdef object item, px_s, sz_s, price_obj, size_obj
    cdef double price, size
    if type(raw) is not list:
        return None
    for item in <list>raw:
        if type(item) is not list or len(<list>item) < 2:
            return None
        px_s = (<list>item)[0]
        sz_s = (<list>item)[1]
        if type(px_s) is not str or type(sz_s) is not str:
            return None
        try:
            price_obj = PyFloat_FromString(px_s)
            size_obj = PyFloat_FromString(sz_s)
        except ValueError:
            return None
        price = PyFloat_AS_DOUBLE(price_obj)
        size = PyFloat_AS_DOUBLE(size_obj)
        if not (_MIN_PRICE <= price < _MAX_LEVEL) or not (0.0 <= size < _MAX_LEVEL):
            return None
        out.append((px_s, sz_s, price_obj, size_obj))
    return out


cdef object _DELETE = "delete"
cdef object _NEW = "new"
cdef object _CHANGE = "change"
cdef object _PX = "px"
cdef object _SZ = "sz"


cdef inline object _json_number(object value):
    """deribit._number for a float or a plain int (a bool is neither): the float, or None if not finite / not a
    number / too large (the reference loop then reports it)."""
    cdef double x
    if type(value) is float:
        x = PyFloat_AS_DOUBLE(value)
        return value if isfinite(x) else None
    if type(value) is int:
        try:
            x = value  # float(int), as the reference's float(value)
        except OverflowError:
            return None
        return x if isfinite(x) else None
    return None


def action_levels(rows, bint usd):
    """DeribitParser._levels for clean rows (`[action, price, amount]`, JSON numbers): the same tuple of (price,
    base size) with the same checks (finite, MIN_PRICE <= price < MAX_LEVEL_VALUE, 0 <= amount < MAX_LEVEL_VALUE,
    action delete/new/change; a USD amount is divided by its level's price), or None as soon as anything is not so (the reference then says what)."""
    cdef list out = []
    cdef object row, action, price_obj, amount_obj
    cdef double price, amount
    if type(rows) is not list:
        return None
    for row in <list>rows:
        if type(row) is not list or len(<list>row) != 3:
            return None
        action = (<list>row)[0]
        price_obj = _json_number((<list>row)[1])
        amount_obj = _json_number((<list>row)[2])
        if price_obj is None or amount_obj is None:
            return None
        price = PyFloat_AS_DOUBLE(price_obj)
        amount = PyFloat_AS_DOUBLE(amount_obj)
        if not (_MIN_PRICE <= price < _MAX_LEVEL) or not (0.0 <= amount < _MAX_LEVEL):
            return None
        if action == _DELETE:
            out.append((price_obj, 0.0))
        elif action == _NEW or action == _CHANGE:
            out.append((price_obj, amount / price if usd else amount_obj))
        else:
            return None
    return tuple(out)


def dict_levels(raw, Py_ssize_t depth, double multiplier):
    """hyperliquid._book_side for a clean side of a linear instrument (`[{"px": str, "sz": str, ...}, ...]`, the
    first `depth` used): the same tuple of (price, size * multiplier) with the same checks (MIN_PRICE <= px <
    MAX_LEVEL_VALUE, 0 <= sz < MAX_LEVEL_VALUE), or None as soon as anything is not so (the reference then says what)."""
    cdef list out = []
    cdef object level, px_s, sz_s, price_obj, size_obj
    cdef double price, size
    cdef Py_ssize_t i, n
    if type(raw) is not list:
        return None
    if depth < 0:
        return None  # raw[:depth] would drop from the end: the reference's slice decides
    n = len(<list>raw)
    if depth < n:
        n = depth
    for i in range(n):
        level = (<list>raw)[i]
        if type(level) is not dict:
            return None
        px_s = (<dict>level).get(_PX)
        sz_s = (<dict>level).get(_SZ)
        if type(px_s) is not str or type(sz_s) is not str:
            return None
        try:
            price_obj = PyFloat_FromString(px_s)
            size_obj = PyFloat_FromString(sz_s)
        except ValueError:
            return None
        price = PyFloat_AS_DOUBLE(price_obj)
        size = PyFloat_AS_DOUBLE(size_obj)
        if not (_MIN_PRICE <= price < _MAX_LEVEL) or not (0.0 <= size < _MAX_LEVEL):
            return None
        out.append((price_obj, size * multiplier))
    return tuple(out)


def valid_sides(bids, asks):
    """connectors.levels.reference_valid_sides: `valid_levels(bids) and valid_levels(asks)` in one call."""
    return _valid_levels(bids) and _valid_levels(asks)


def valid_levels(levels):
    """connectors.levels.valid_levels in one C loop, with the reference's exact verdicts: the minimum price
    must be >= MIN_PRICE, the minimum size >= 0, the maximum price and size < MAX_LEVEL_VALUE, and the sum of
    every price and size a number (so a NaN anywhere fails)."""
    return _valid_levels(levels)


cdef bint _valid_levels(object levels) except -1:
    cdef object level
    cdef double price, size, min_price = 0.0, min_size = 0.0, max_price = 0.0, max_size = 0.0
    cdef double prices = 0.0, sizes = 0.0
    cdef bint first = True
    cdef Py_ssize_t i
    cdef PyObject* item
    cdef PyObject* p
    cdef PyObject* q
    for i in range(PyTuple_GET_SIZE(levels) if type(levels) is tuple else 0):
        # The typed decode's shape (a tuple of (float, float) tuples) read without generic indexing; anything
        # else, from its first odd item on, takes the generic loop below.
        item = PyTuple_GET_ITEM(levels, i)
        if type(<object>item) is not tuple or PyTuple_GET_SIZE(<object>item) != 2:
            break
        p = PyTuple_GET_ITEM(<object>item, 0)
        q = PyTuple_GET_ITEM(<object>item, 1)
        if type(<object>p) is not float or type(<object>q) is not float:
            break
        price = PyFloat_AS_DOUBLE(<object>p)
        size = PyFloat_AS_DOUBLE(<object>q)
        if first:
            min_price = max_price = price
            min_size = max_size = size
            prices = price
            sizes = size
            first = False
            continue
        if price < min_price:
            min_price = price
        if size < min_size:
            min_size = size
        if price > max_price:
            max_price = price
        if size > max_size:
            max_size = size
        prices += price
        sizes += size
    else:
        if type(levels) is tuple:
            return _verdict(first, min_price, min_size, max_price, max_size, prices, sizes)
    first = True  # not all of the typed shape: start again with the generic loop (same arithmetic)
    for level in levels:
        price = level[0]
        size = level[1]
        if first:
            min_price = max_price = price
            min_size = max_size = size
            prices = price
            sizes = size
            first = False
            continue
        # min() keeps the first item unless a later one compares smaller (a NaN never does), max() likewise
        if price < min_price:
            min_price = price
        if size < min_size:
            min_size = size
        if price > max_price:
            max_price = price
        if size > max_size:
            max_size = size
        prices += price
        sizes += size
    return _verdict(first, min_price, min_size, max_price, max_size, prices, sizes)


cdef inline bint _verdict(
    bint empty, double min_price, double min_size, double max_price, double max_size, double prices, double sizes
) noexcept:
    if empty:
        return True
    cdef double total = prices + sizes
    return (
        min_price >= _MIN_PRICE and min_size >= 0.0 and max_price < _MAX_LEVEL and max_size < _MAX_LEVEL
        and total == total
    )


# ------------------------------------------------------------------------------------------------- windows
# metrics.windows.SlidingSum / DecayedSum / ExactSum, step for step: the same partials, the same fsum, the
# same eviction, so the same bits.

cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object, int*) except? -1

cdef long long _TIME_LIMIT = 1LL << 62  # times beyond +-2^62 ns (year 2116) are clamped: no window reaches them


cdef long long _ns(object t) except? -1:
    """An int time in ns as a C integer. Absurd venue times (beyond 64 bits) are clamped far beyond any window,
    where they give the reference's results (everything evicted, decays to 0) without overflowing."""
    cdef int overflow = 0
    cdef long long value = PyLong_AsLongLongAndOverflow(t, &overflow)
    if overflow > 0 or value > _TIME_LIMIT:
        return _TIME_LIMIT
    if overflow < 0 or value < -_TIME_LIMIT:
        return -_TIME_LIMIT
    return value


cdef int _exact_add(double** partials, Py_ssize_t* count, Py_ssize_t* cap, double x) except -1:
    """ExactSum.add: grow-expansion with zero elimination over the partials, smallest magnitude first."""
    cdef double* p = partials[0]
    cdef Py_ssize_t n = count[0], kept = 0, j
    cdef double y, hi, lo, t
    for j in range(n):
        y = p[j]
        if fabs(x) < fabs(y):
            t = x
            x = y
            y = t
        hi = x + y
        lo = y - (hi - x)
        if lo != 0.0:
            p[kept] = lo
            kept += 1
        x = hi
    if kept == cap[0]:
        p = <double*>PyMem_Realloc(p, 2 * cap[0] * sizeof(double))
        if p == NULL:
            raise MemoryError()
        partials[0] = p
        cap[0] *= 2
    p[kept] = x
    count[0] = kept + 1
    return 0


cdef double _fsum(const double* values, Py_ssize_t count, double* work) noexcept nogil:
    """math.fsum over `values` (CPython's algorithm: partials, then the half-even correction). `work` has room
    for `count` doubles. No special values reach it (window inputs are finite)."""
    cdef Py_ssize_t i, j, n = 0, k
    cdef double x, y, t, hi, yr, lo = 0.0
    for k in range(count):
        x = values[k]
        i = 0
        for j in range(n):
            y = work[j]
            if fabs(x) < fabs(y):
                t = x
                x = y
                y = t
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                work[i] = lo
                i += 1
            x = hi
        n = i
        if x != 0.0:
            work[n] = x
            n += 1
    hi = 0.0
    if n > 0:
        n -= 1
        hi = work[n]
        while n > 0:
            x = hi
            n -= 1
            y = work[n]
            hi = x + y
            yr = hi - x
            lo = y - yr
            if lo != 0.0:
                break
        if n > 0 and ((lo < 0.0 and work[n - 1] < 0.0) or (lo > 0.0 and work[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            yr = x - hi
            if y == yr:
                hi = x
    return hi


# Array room of the compiled windows, in items. Powers of two up to ROOM_STEP, then whole multiples of it: from
# there a block is mmapped (heap.MMAP_THRESHOLD_BYTES is 64 KiB, ROOM_STEP times 8 bytes), so growing is an mremap
# and costs no copy, and the room tracks what a window holds within about an eighth instead of swinging between
# two powers of two (which moved the soak's RSS by megabytes with no change in the data held).
DEF ROOM_STEP = 8192


cdef inline Py_ssize_t _room(Py_ssize_t items) noexcept nogil:
    """The capacity to hold `items`: the next power of two (at least 64) up to ROOM_STEP, then the next multiple
    of ROOM_STEP."""
    cdef Py_ssize_t cap = 64
    if items > ROOM_STEP:
        return ((items + ROOM_STEP - 1) // ROOM_STEP) * ROOM_STEP
    while cap < items:
        cap *= 2
    return cap


cdef inline Py_ssize_t _grown_room(Py_ssize_t cap) noexcept nogil:
    """The next capacity up from a full `cap`: doubling up to ROOM_STEP, then an eighth more rounded up to a step
    (geometric, so growing stays amortised O(1) per item where realloc copies instead of remapping)."""
    return _room(cap + (cap // 8 if cap >= ROOM_STEP else cap))


cdef inline Py_ssize_t _room_after_compaction(Py_ssize_t cap, Py_ssize_t rest) noexcept nogil:
    """The capacity a window should shrink to right after compacting to `rest` items, or `cap` to keep it. The
    next compaction comes when as many items again have left the window, so 2 * rest is what a steady rate needs;
    a block at least twice that, or two steps and a quarter over it, held a burst that has gone (less is what
    growing by an eighth leaves, and shrinking it would only grow it again)."""
    cdef Py_ssize_t target = _room(2 * rest + 1)
    if cap > 64 and (2 * target <= cap or cap - target >= max(2 * ROOM_STEP, target // 4)):
        return target
    return cap


cdef inline Py_ssize_t _bisect_right(const long long* times, Py_ssize_t lo, Py_ssize_t hi, long long t) noexcept nogil:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if t < times[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef struct ExactAcc:
    # metrics.windows.ExactSum: non-overlapping partials, smallest magnitude first
    double* p
    Py_ssize_t n
    Py_ssize_t cap


cdef int _acc_init(ExactAcc* acc) except -1:
    acc.cap = 16
    acc.n = 0
    acc.p = <double*>PyMem_Malloc(acc.cap * sizeof(double))
    if acc.p == NULL:
        raise MemoryError()
    return 0


cdef inline int _acc_add(ExactAcc* acc, double x) except -1:
    return _exact_add(&acc.p, &acc.n, &acc.cap, x)


cdef double _acc_value(ExactAcc* acc) except? -1.0:
    """math.fsum of the partials."""
    cdef double stack[64]
    cdef double* work = stack
    cdef double total
    if acc.n > 64:
        work = <double*>PyMem_Malloc(acc.n * sizeof(double))
        if work == NULL:
            raise MemoryError()
    total = _fsum(acc.p, acc.n, work)
    if work != stack:
        PyMem_Free(work)
    return total


cdef class _Boxcar:
    """metrics.windows._Boxcar in C: exact boxcar sums (1 or 2 channels) of the items with `q - h < t_i <= q`
    at any query time `q` within the late horizon; same state, same steps, same bits.

    Items are kept in time order in `times`/`values` (channel c of item i at `values[i*channels + c]`) from
    `head` (dropped items before it, compacted away by the reference's rule); `[lo, hi)` are the items of the
    last query's window, whose exact sums `sums[c]` hold.
    """

    cdef readonly long long window_ns
    cdef readonly long long horizon_ns
    cdef readonly Py_ssize_t max_items
    cdef public Py_ssize_t late_dropped
    cdef public Py_ssize_t late_queries
    cdef public Py_ssize_t overflow_dropped
    cdef int channels
    cdef long long* times
    cdef double* values
    cdef Py_ssize_t n, head, lo, hi
    cdef readonly Py_ssize_t cap  # items the arrays have room for (memory only; read by the tests)
    cdef long long query, high
    cdef bint has_query, has_high
    cdef ExactAcc sums[2]

    def __dealloc__(self):
        PyMem_Free(self.times)
        PyMem_Free(self.values)
        PyMem_Free(self.sums[0].p)
        PyMem_Free(self.sums[1].p)

    cdef int _setup(self, window_ns, Py_ssize_t max_items, horizon_ns, int channels) except -1:
        if window_ns <= 0:
            raise ValueError("window must be positive")
        if horizon_ns < 0:
            raise ValueError("late horizon must be >= 0")
        self.window_ns = window_ns
        self.horizon_ns = horizon_ns
        self.max_items = max_items
        self.channels = channels
        self.cap = 64
        self.times = <long long*>PyMem_Malloc(self.cap * sizeof(long long))
        self.values = <double*>PyMem_Malloc(self.cap * channels * sizeof(double))
        if self.times == NULL or self.values == NULL:
            raise MemoryError()
        _acc_init(&self.sums[0])
        _acc_init(&self.sums[1])
        return 0

    def __len__(self):
        return self.n - self.head

    cdef inline long long _advance(self, long long t) noexcept:
        if not self.has_high or t > self.high:
            self.high = t
            self.has_high = True
        return self.high

    cdef int _grow(self) except -1:
        return self._resize(_grown_room(self.cap))

    cdef int _add_item(self, long long t, double x0, double x1) except -1:
        cdef long long high = self._advance(t)
        cdef Py_ssize_t i
        cdef int c, channels = self.channels
        if t <= high - self.horizon_ns - self.window_ns:
            self.late_dropped += 1
            return 0
        if self.n == self.cap:
            self._grow()
        if self.n == 0 or self.times[self.n - 1] <= t:
            i = self.n
        else:  # late within the horizon: rare, lands near the right end
            i = _bisect_right(self.times, self.head, self.n, t)
            memmove(&self.times[i + 1], &self.times[i], (self.n - i) * sizeof(long long))
            memmove(&self.values[(i + 1) * channels], &self.values[i * channels],
                    (self.n - i) * channels * sizeof(double))
        self.times[i] = t
        self.values[i * channels] = x0
        if channels == 2:
            self.values[i * channels + 1] = x1
        self.n += 1
        if self.has_query and t <= self.query:
            if t <= self.query - self.window_ns:
                self.lo += 1
            else:
                _acc_add(&self.sums[0], x0)
                if channels == 2:
                    _acc_add(&self.sums[1], x1)
            self.hi += 1
        self._drop_before(high - self.horizon_ns - self.window_ns)
        if self.n - self.head > self.max_items:
            self._drop_first()
            self.overflow_dropped += 1
        return 0

    cdef int _move(self, long long q) except -1:
        cdef long long high = self._advance(q)
        cdef long long oldest = high - self.horizon_ns
        cdef Py_ssize_t new_lo, new_hi, i, lo, hi
        cdef int c, channels = self.channels
        cdef ExactAcc* total
        cdef double* values = self.values
        if q < oldest:
            self.late_queries += 1
            q = oldest
        self._drop_before(oldest - self.window_ns)
        self.query = q
        self.has_query = True
        lo = self.lo
        hi = self.hi
        new_lo = _bisect_right(self.times, self.head, self.n, q - self.window_ns)
        new_hi = _bisect_right(self.times, new_lo, self.n, q)
        if new_lo == new_hi:
            for c in range(channels):
                self.sums[c].n = 0
        elif new_lo >= hi or new_hi <= lo:  # no overlap with the last window: start over
            for c in range(channels):
                total = &self.sums[c]
                total.n = 0
                for i in range(new_lo, new_hi):
                    _acc_add(total, values[i * channels + c])
        else:  # each edge moves by the items that crossed it, in either direction
            for c in range(channels):
                total = &self.sums[c]
                for i in range(lo, new_lo):
                    _acc_add(total, -values[i * channels + c])
                for i in range(new_lo, lo):
                    _acc_add(total, values[i * channels + c])
                for i in range(hi, new_hi):
                    _acc_add(total, values[i * channels + c])
                for i in range(new_hi, hi):
                    _acc_add(total, -values[i * channels + c])
        self.lo = new_lo
        self.hi = new_hi
        return 0

    cdef int _drop_before(self, long long edge) except -1:
        while self.head < self.n and self.times[self.head] <= edge:
            self._drop_first()
        return 0

    cdef int _drop_first(self) except -1:
        cdef Py_ssize_t head = self.head
        cdef Py_ssize_t rest, cap
        cdef int c, channels = self.channels
        if self.lo <= head < self.hi:  # it was inside the last window
            for c in range(channels):
                _acc_add(&self.sums[c], -self.values[head * channels + c])
        head += 1
        self.head = head
        if self.lo < head:
            self.lo = head
        if self.hi < head:
            self.hi = head
        if head >= 1024 and head * 2 >= self.n:  # compact: amortised O(1) per item
            rest = self.n - head
            memmove(self.times, &self.times[head], rest * sizeof(long long))
            memmove(self.values, &self.values[head * channels], rest * channels * sizeof(double))
            self.n = rest
            self.lo -= head
            self.hi -= head
            self.head = 0
            cap = _room_after_compaction(self.cap, rest)
            if cap != self.cap:
                self._resize(cap)
        return 0

    cdef int _resize(self, Py_ssize_t cap) except -1:
        """Give the arrays room for `cap` items (at least the `n` they hold). Shrinking after a burst has left
        the window matters as much as growing: without it the arrays kept the largest burst's size for the life of
        the process (the soak's RSS crept up as bursts grew rarer and larger). Memory only: the items, and so
        every value, are untouched."""
        cdef bint shrinking = cap < self.cap
        cdef long long* times = <long long*>PyMem_Realloc(self.times, cap * sizeof(long long))
        if times == NULL:
            if shrinking:
                return 0  # the larger block is kept, still valid
            raise MemoryError()
        self.times = times
        cdef double* values = <double*>PyMem_Realloc(self.values, cap * self.channels * sizeof(double))
        if values == NULL:
            if shrinking:
                self.cap = cap  # times is the smaller block now; values keeps its larger one (valid for cap)
                return 0
            raise MemoryError()  # times grew, values did not: `cap` stays the old room, which both still have
        self.values = values
        self.cap = cap
        return 0


cdef class SlidingSum(_Boxcar):
    """metrics.windows.SlidingSum in C (one channel)."""

    def __cinit__(self, window_ns, Py_ssize_t max_items=1_000_000, horizon_ns=5_000_000_000):
        self._setup(window_ns, max_items, horizon_ns, 1)

    def add(self, t, double x):
        self._add_item(_ns(t), x, 0.0)

    cdef double value_at(self, long long now) except? -1.0:
        self._move(now)
        if self.lo == self.hi:
            return 0.0
        return _acc_value(&self.sums[0])

    def value(self, now):
        """Sum of the items with `now - h < t_i <= now` (0.0 for an empty window)."""
        return self.value_at(_ns(now))


cdef class SlidingFlow(_Boxcar):
    """metrics.windows.SlidingFlow in C: a signed flow and its unsigned mass over the same items."""

    def __cinit__(self, window_ns, Py_ssize_t max_items=1_000_000, horizon_ns=5_000_000_000):
        self._setup(window_ns, max_items, horizon_ns, 2)

    def add(self, t, double signed, double mass):
        self._add_item(_ns(t), signed, mass)

    def evaluate(self, now):
        """(signed sum, mass sum, item count) over `(now - h, now]`."""
        self._move(_ns(now))
        cdef Py_ssize_t n = self.hi - self.lo
        if n == 0:
            return 0.0, 0.0, 0
        return _acc_value(&self.sums[0]), _acc_value(&self.sums[1]), n


cdef class TradeFlowImbalance:
    """metrics.trades.TradeFlowImbalance in C: `(B - S) / (B + S)` over `(now - h, now]`."""

    cdef readonly SlidingFlow _flow

    def __cinit__(self, window_ns):
        self._flow = SlidingFlow(window_ns)

    @property
    def window_ns(self):
        return self._flow.window_ns

    def add(self, t, int side, double size):
        self._flow._add_item(_ns(t), size if side > 0 else -size, size)

    def value(self, now):
        """The imbalance in [-1, 1]; None when the window holds no volume."""
        return self.value_at(_ns(now))

    cdef object value_at(self, long long now):
        cdef SlidingFlow flow = self._flow
        cdef double signed, volume
        flow._move(now)
        if flow.hi == flow.lo:
            return None  # the reference's (0.0, 0.0, 0): no volume
        signed = _acc_value(&flow.sums[0])
        volume = _acc_value(&flow.sums[1])
        if volume <= 0.0:
            return None
        return signed / volume


cdef class DecayedSum:
    """metrics.windows.DecayedSum in C: the impulses at or before the query time, each decayed to it, folded in
    time order with the reference's prefixes, settling and late folding; same steps, same bits."""

    cdef readonly double half_life_s
    cdef readonly long long horizon_ns
    cdef public Py_ssize_t late_folded
    cdef public Py_ssize_t late_queries
    cdef double lambda_ns
    cdef double settled_s
    cdef long long settled_t
    cdef bint has_settled
    cdef long long* times
    cdef double* values
    cdef double* prefix
    cdef Py_ssize_t n, head
    cdef readonly Py_ssize_t cap  # impulses the arrays have room for (memory only; read by the tests)
    cdef long long high
    cdef bint has_high

    def __cinit__(self, double half_life_s, horizon_ns=5_000_000_000):
        if not half_life_s > 0.0:
            raise ValueError("half-life must be positive")
        if horizon_ns < 0:
            raise ValueError("late horizon must be >= 0")
        self.half_life_s = half_life_s
        self.horizon_ns = horizon_ns
        self.lambda_ns = log(2.0) / (half_life_s * 1e9)
        self.cap = 64
        self.times = <long long*>PyMem_Malloc(self.cap * sizeof(long long))
        self.values = <double*>PyMem_Malloc(self.cap * sizeof(double))
        self.prefix = <double*>PyMem_Malloc(self.cap * sizeof(double))
        if self.times == NULL or self.values == NULL or self.prefix == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.times)
        PyMem_Free(self.values)
        PyMem_Free(self.prefix)

    @classmethod
    def for_window(cls, double window_s, horizon_ns=5_000_000_000):
        return cls(window_s * log(2.0), horizon_ns)

    def __len__(self):
        return self.n - self.head

    cdef inline long long _advance(self, long long t) noexcept:
        if not self.has_high or t > self.high:
            self.high = t
            self.has_high = True
        return self.high

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = _grown_room(self.cap)
        cdef long long* times = <long long*>PyMem_Realloc(self.times, cap * sizeof(long long))
        if times == NULL:
            raise MemoryError()
        self.times = times
        cdef double* values = <double*>PyMem_Realloc(self.values, cap * sizeof(double))
        if values == NULL:
            raise MemoryError()
        self.values = values
        cdef double* prefix = <double*>PyMem_Realloc(self.prefix, cap * sizeof(double))
        if prefix == NULL:
            raise MemoryError()
        self.prefix = prefix
        self.cap = cap
        return 0

    cdef int _add(self, long long t, double x) except -1:
        cdef long long high = self._advance(t)
        cdef Py_ssize_t i
        if self.has_settled and t < self.settled_t:
            self.late_folded += 1
            self.settled_s += x * exp(-self.lambda_ns * <double>(self.settled_t - t))
            self._refold(self.head)
        else:
            if self.n == self.cap:
                self._grow()
            if self.n == 0 or self.times[self.n - 1] <= t:
                i = self.n
            else:  # late within the horizon: rare, lands near the right end
                i = _bisect_right(self.times, self.head, self.n, t)
                memmove(&self.times[i + 1], &self.times[i], (self.n - i) * sizeof(long long))
                memmove(&self.values[i + 1], &self.values[i], (self.n - i) * sizeof(double))
                memmove(&self.prefix[i + 1], &self.prefix[i], (self.n - i) * sizeof(double))
            self.times[i] = t
            self.values[i] = x
            self.prefix[i] = 0.0
            self.n += 1
            self._refold(i)
        self._settle(high - self.horizon_ns)
        return 0

    cdef void _refold(self, Py_ssize_t start) noexcept:
        """Recompute the running sums from impulse `start` on."""
        cdef double s
        cdef long long last = 0, t
        cdef bint has_last
        cdef Py_ssize_t i
        cdef double lam = self.lambda_ns
        if start > self.head:
            s = self.prefix[start - 1]
            last = self.times[start - 1]
            has_last = True
        else:
            s = self.settled_s
            last = self.settled_t
            has_last = self.has_settled
        for i in range(start, self.n):
            t = self.times[i]
            if not has_last:
                s = self.values[i]
            else:
                if t > last:
                    s *= exp(-lam * <double>(t - last))
                s += self.values[i]
            last = t
            has_last = True
            self.prefix[i] = s

    cdef void _settle(self, long long edge) noexcept:
        cdef Py_ssize_t head = self.head
        cdef Py_ssize_t n = self.n
        cdef Py_ssize_t rest, cap
        if head < n and self.times[head] <= edge:
            while head < n and self.times[head] <= edge:
                head += 1
            self.settled_s = self.prefix[head - 1]
            self.settled_t = self.times[head - 1]
            self.has_settled = True
            self.head = head
            if head >= 1024 and head * 2 >= n:  # compact: amortised O(1) per impulse
                rest = n - head
                memmove(self.times, &self.times[head], rest * sizeof(long long))
                memmove(self.values, &self.values[head], rest * sizeof(double))
                memmove(self.prefix, &self.prefix[head], rest * sizeof(double))
                self.n = rest
                self.head = 0
                cap = _room_after_compaction(self.cap, rest)
                if cap < self.cap:
                    self._shrink(cap)

    cdef void _shrink(self, Py_ssize_t cap) noexcept:
        """As `_Boxcar._resize`, smaller only: room for `cap` items once a burst has gone. A failed shrinking
        realloc leaves the block as it was, so this cannot fail."""
        cdef long long* times = <long long*>PyMem_Realloc(self.times, cap * sizeof(long long))
        if times == NULL:
            return
        self.times = times
        cdef double* values = <double*>PyMem_Realloc(self.values, cap * sizeof(double))
        if values == NULL:
            self.cap = cap  # times is already the smaller block; values keeps its larger one (still valid)
            return
        self.values = values
        cdef double* prefix = <double*>PyMem_Realloc(self.prefix, cap * sizeof(double))
        if prefix != NULL:
            self.prefix = prefix
        self.cap = cap

    def add(self, t, double x):
        self._add(_ns(t), x)

    cdef double value_at(self, long long now) noexcept:
        cdef long long high = self._advance(now)
        cdef long long oldest = high - self.horizon_ns
        cdef Py_ssize_t i, n
        cdef double s
        cdef long long last
        if now < oldest:
            self.late_queries += 1
            now = oldest
        self._settle(oldest)
        n = self.n
        # The usual case first: every impulse is at or before `now`.
        if n > self.head and self.times[n - 1] <= now:
            i = n - 1
        else:
            i = _bisect_right(self.times, self.head, n, now) - 1
        if i >= self.head:
            s = self.prefix[i]
            last = self.times[i]
        elif self.has_settled:
            s = self.settled_s
            last = self.settled_t
        else:
            return 0.0
        if now <= last:
            return s
        return s * exp(-self.lambda_ns * <double>(now - last))

    def value(self, now):
        """The impulses at or before `now`, decayed to `now` (0.0 before the first one)."""
        return self.value_at(_ns(now))


_NO_BOOK_KEYS = (
    "bid_px", "bid_sz", "ask_px", "ask_sz", "mid", "spread_bps", "wmid",
    "depth_imb_1", "depth_imb_5", "depth_imb_10", "depth_imb_20",
    "depth_bid_10bps", "depth_ask_10bps", "depth_bid_25bps", "depth_ask_25bps", "ofi",
)


def flow_fields(
    object book,
    object last_e,
    object trigger,
    bint first_book_seen,
    SlidingSum win_1s,
    SlidingSum win_10s,
    SlidingSum win_60s,
    DecayedSum ew_10s,
    TradeFlowImbalance tfi_10s,
    TradeFlowImbalance tfi_60s,
    object now_ns,
    dict out,
    set flags,
    dict coverage,
):
    """InstrumentMetrics._flow_fields in one call: the book-state fields, `ofi`, the OFI windows and the
    trade-flow windows at `now_ns`, written into `out` in the reference's order; returns the mid."""
    cdef long long now = _ns(now_ns)
    cdef object mid = None
    cdef object key
    if book is None:
        for key in _NO_BOOK_KEYS:
            out[key] = None
    else:
        mid = _book_fields(<CBook?>book, out, flags, coverage)
        out["ofi"] = last_e if trigger == "book" else None
    if first_book_seen:
        out["ofi_raw_1s"] = win_1s.value_at(now)
        out["ofi_raw_10s"] = win_10s.value_at(now)
        out["ofi_raw_60s"] = win_60s.value_at(now)
        out["ofi_ew_10s"] = ew_10s.value_at(now)
    else:
        out["ofi_raw_1s"] = None
        out["ofi_raw_10s"] = None
        out["ofi_raw_60s"] = None
        out["ofi_ew_10s"] = None
    out["tfi_10s"] = tfi_10s.value_at(now)
    out["tfi_60s"] = tfi_60s.value_at(now)
    return mid


DEF _OI_PARTIAL = 1
DEF _OI_INCONSISTENT = 2
DEF _OI_STALE = 4
OI_PARTIAL = _OI_PARTIAL
OI_INCONSISTENT = _OI_INCONSISTENT
OI_STALE = _OI_STALE


cdef class PayloadFields:
    """InstrumentMetrics.fields in one call per payload, for one instrument's compiled metrics.

    Holds the instrument's C windows. `fill` writes every metric field in the reference's order: the per-event
    part (`flow_fields`), then the slow-moving state (OI, funding, long/short skew) from `state`, a tuple the
    caller rebuilds only when those inputs change (see metrics.compiled), then the quality flags.
    """

    cdef SlidingSum win_1s
    cdef SlidingSum win_10s
    cdef SlidingSum win_60s
    cdef DecayedSum ew_10s
    cdef TradeFlowImbalance tfi_10s
    cdef TradeFlowImbalance tfi_60s
    cdef object warmup_ns

    def __cinit__(self, SlidingSum win_1s, SlidingSum win_10s, SlidingSum win_60s, DecayedSum ew_10s,
                  TradeFlowImbalance tfi_10s, TradeFlowImbalance tfi_60s, warmup_ns):
        self.win_1s = win_1s
        self.win_10s = win_10s
        self.win_60s = win_60s
        self.ew_10s = ew_10s
        self.tfi_10s = tfi_10s
        self.tfi_60s = tfi_60s
        self.warmup_ns = warmup_ns

    def fill(self, tuple state, object book, object last_e, object trigger, bint first_book_seen, object now_ns,
             object warm_start, object since, set open_flags, dict flag_until, dict out):
        """`state` = (oi, oi_notional, oi_chg_pct, oi_open_ratio, oi flags (OI_* bits), funding_rate_8h,
        mark_price, index_price, ls_skew_accounts, ls_skew_top_positions); `since` the time of the instrument's
        first input (trade windows are covered from it)."""
        cdef set flags = set()
        cdef dict coverage = {}
        cdef object mid = flow_fields(book, last_e, trigger, first_book_seen, self.win_1s, self.win_10s,
                                      self.win_60s, self.ew_10s, self.tfi_10s, self.tfi_60s, now_ns, out, flags,
                                      coverage)
        # metrics.accumulator InstrumentMetrics._window_coverage
        if warm_start is None:
            if out["ofi_raw_1s"] is not None:
                coverage["ofi_raw_1s"] = _PARTIAL_COVERAGE
            if out["ofi_raw_10s"] is not None:
                coverage["ofi_raw_10s"] = _PARTIAL_COVERAGE
            if out["ofi_raw_60s"] is not None:
                coverage["ofi_raw_60s"] = _PARTIAL_COVERAGE
        else:
            if out["ofi_raw_1s"] is not None and now_ns - warm_start < _NS_1S:
                coverage["ofi_raw_1s"] = _PARTIAL_COVERAGE
            if out["ofi_raw_10s"] is not None and now_ns - warm_start < _NS_10S:
                coverage["ofi_raw_10s"] = _PARTIAL_COVERAGE
            if out["ofi_raw_60s"] is not None and now_ns - warm_start < _NS_60S:
                coverage["ofi_raw_60s"] = _PARTIAL_COVERAGE
        if out["tfi_10s"] is not None and (since is None or now_ns - since < _NS_10S):
            coverage["tfi_10s"] = _PARTIAL_COVERAGE
        if out["tfi_60s"] is not None and (since is None or now_ns - since < _NS_60S):
            coverage["tfi_60s"] = _PARTIAL_COVERAGE
        cdef int oi_flags = state[4]
        cdef object index = state[7]
        cdef double mid_px, index_px
        cdef object flag, until
        cdef list quality
        out["oi"] = state[0]
        out["oi_notional"] = state[1]
        out["oi_chg_pct_5m"] = state[2]
        out["oi_open_ratio_5m"] = state[3]
        if oi_flags & _OI_PARTIAL:
            coverage["oi_open_ratio_5m"] = _PARTIAL_COVERAGE
        if coverage:
            flags.add(_PARTIAL_FLAG)
        if oi_flags & _OI_INCONSISTENT:
            flags.add("OI_INCONSISTENT")
        if oi_flags & _OI_STALE:
            flags.add("STALE")
        out["funding_rate_8h"] = state[5]
        # metrics.funding.premium_bps
        if mid is None or index is None or index <= 0.0:
            out["premium_bps_live"] = None
        else:
            mid_px = mid
            index_px = index
            out["premium_bps_live"] = (mid_px - index_px) / index_px * 1e4
        out["mark_price"] = state[6]
        out["index_price"] = index
        out["ls_skew_accounts"] = state[8]
        out["ls_skew_top_positions"] = state[9]
        if warm_start is None or now_ns - warm_start < self.warmup_ns:
            flags.add("WARMUP")
        if open_flags:
            flags.update(open_flags)
        for flag, until in flag_until.items():
            if now_ns < until:
                flags.add(flag)
        quality = sorted(flags)
        out["quality"] = quality
        out["coverage"] = coverage
        return out
