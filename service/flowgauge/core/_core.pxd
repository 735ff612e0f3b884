# Declarations of the compiled core's per-instrument state (see _core.pyx).

cdef class CBookSide:
    cdef double* px
    cdef double* sz
    cdef Py_ssize_t n
    cdef Py_ssize_t cap
    cdef Py_ssize_t max_levels
    cdef bint descending
    cdef public Py_ssize_t dropped

    cdef int _grow(self) except -1
    cdef Py_ssize_t _find(self, double price) noexcept nogil
    cdef int set_level(self, double price, double size) except -1
    cdef int apply_levels(self, object levels) except -1
    cdef double _notional_within(self, double limit) noexcept nogil


cdef class CBook:
    cdef readonly CBookSide bids
    cdef readonly CBookSide asks
    cdef public object seq
    cdef public object ts_exchange


cdef class OfiState:
    cdef bint has_prev
    cdef double bid_px
    cdef double bid_sz
    cdef double ask_px
    cdef double ask_sz
