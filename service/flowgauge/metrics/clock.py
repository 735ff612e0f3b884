"""A venue's clock offset: how far the daemon's receive clock runs ahead of the venue's exchange clock.

Sits beside the metric math and under the engine, which keeps one `ClockOffset` per venue, feeds it the
`(ts_recv, ts_exchange)` of every book message and trade, and flags that venue's payloads `CLOCK_SKEW` while
the estimate is beyond the configured bound. Pure and deterministic: replaying a recording feeds it the recorded
receive times, so replay reproduces the live estimate and flags exactly.

The offset of one message is `ts_recv - ts_exchange`: the venue's clock error plus the network and queueing delay
(tens of milliseconds on a healthy path). The estimate is the median of the last `window` samples, taken one per
received frame (the first event of a frame; a frame's events share its `ts_recv`), so neither a burst of old
trades a venue re-sends on subscribe (one frame, one sample) nor a few late or early frames move it; it follows a
real change of the venue's clock within half a window of frames. Memory is one fixed ring of `window` integers.
"""

from __future__ import annotations

__all__ = ["ClockOffset"]

DEFAULT_WINDOW = 64  # frames in the median
DEFAULT_EVERY = 8  # frames between two medians (the median costs a sort of `window` integers)
DEFAULT_MIN_SAMPLES = 16  # frames before the first estimate: one outlier at start is not a verdict


class ClockOffset:
    """Running median of `ts_recv - ts_exchange` (ns) over the last `window` frames of one venue.

    `offset_ns` is None until `min_samples` frames were seen; `skewed` is True while |offset| > `bound_s`.
    The median is recomputed every `every` frames (and when the first estimate becomes possible), so a
    payload's flag depends only on the frames before it, in order.
    """

    __slots__ = ("_count", "_last_recv", "_next", "_ring", "_since", "bound_ns", "every", "min_samples", "offset_ns",
                 "skewed")  # fmt: skip

    def __init__(
        self,
        bound_s: float = 2.0,
        *,
        window: int = DEFAULT_WINDOW,
        every: int = DEFAULT_EVERY,
        min_samples: int = DEFAULT_MIN_SAMPLES,
    ) -> None:
        if not bound_s > 0:
            raise ValueError("bound_s must be > 0")
        if window < 1 or every < 1 or not 1 <= min_samples <= window:
            raise ValueError("window and every must be >= 1, min_samples in [1, window]")
        self.bound_ns = round(bound_s * 1e9)
        self.every = every
        self.min_samples = min_samples
        self._ring = [0] * window
        self._next = 0  # ring slot the next sample goes to
        self._count = 0  # samples held (<= window)
        self._since = 0  # samples since the last median
        self._last_recv: int | None = None
        self.offset_ns: int | None = None
        self.skewed = False

    @property
    def window(self) -> int:
        return len(self._ring)

    def observe(self, ts_recv: int, ts_exchange: int) -> None:
        """One event's receive and exchange times (ns); a later event of the same frame adds nothing."""
        if ts_recv == self._last_recv or not ts_exchange:
            return
        self._last_recv = ts_recv
        ring = self._ring
        ring[self._next] = ts_recv - ts_exchange
        self._next = (self._next + 1) % len(ring)
        if self._count < len(ring):
            self._count += 1
        self._since += 1
        if self._count < self.min_samples:
            return
        if self._since >= self.every or self.offset_ns is None:
            self._since = 0
            held = sorted(ring[: self._count]) if self._count < len(ring) else sorted(ring)
            offset = held[len(held) // 2]
            self.offset_ns = offset
            self.skewed = abs(offset) > self.bound_ns
