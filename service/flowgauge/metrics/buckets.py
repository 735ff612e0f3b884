"""Fixed-size rings of time buckets: the long windows (> 60 s) as sums of 1 s or 1 min buckets (issue 11).

Pure, synchronous metric math: no I/O. Windows up to 60 s are exact (`metrics.windows`); longer ones would hold
every event of hours, so they are sums of buckets instead. A `BucketRing` keeps `count` buckets of `width_ns`
each, with `channels` float sums per bucket, in flat preallocated C arrays (8 bytes a number: a 4 h window of
1 min buckets with 4 channels is 8 KB): memory is fixed at construction, whatever the event rate or how long the
daemon runs.

Granularity, stated once for every long window: a query at time `t` sums the buckets `k` with
`floor(t / w) - n < k <= floor(t / w)`, i.e. the window is `(t - T, t]` rounded to whole buckets (the current
bucket counts whole, including events after `t` within it). Events are added to their own bucket whatever their
arrival order, as long as that bucket is still in the ring; an older one is counted in `late_dropped`.
Deterministic: the same events in the same order give the same bits (each sum is `math.fsum` of the buckets).
"""

from __future__ import annotations

import math
from array import array

__all__ = ["BucketRing"]

_EMPTY = -(2**63)  # the key of a slot that holds no bucket yet (bucket indexes are times // width: far above)


class BucketRing:
    """`count` buckets of `width_ns` with `channels` sums each; `sums(t, n)` totals the last `n` buckets at `t`."""

    __slots__ = ("_cache", "_head", "_keys", "_values", "_version", "channels", "count", "late_dropped", "width_ns")

    def __init__(self, width_ns: int, count: int, channels: int) -> None:
        if width_ns <= 0 or count <= 0 or channels <= 0:
            raise ValueError("width, count and channels must be positive")
        self.width_ns = width_ns
        self.count = count
        self.channels = channels
        self._keys = array("q", [_EMPTY]) * count  # which bucket index each slot holds
        self._values = array("d", [0.0]) * (count * channels)  # slot i's channels at i * channels
        self._head: int | None = None  # the newest bucket index seen
        self.late_dropped = 0
        # sums() is asked at every payload and its answer changes only with a new bucket or a new event: the last
        # answer per n is kept with the (bucket index, version) it was computed at
        self._version = 0
        self._cache: dict[int, tuple[int, int, list[float]]] = {}

    def __len__(self) -> int:
        """Slots (fixed): the memory bound."""
        return self.count

    def add(self, t: int, values: tuple[float, ...]) -> None:
        """Add `values` (one per channel) to the bucket of time `t` (ns)."""
        k = t // self.width_ns
        head = self._head
        if head is None or k > head:
            self._head = k
        elif k <= head - self.count:
            self.late_dropped += 1
            return
        self._version += 1
        slot = k % self.count
        base = slot * self.channels
        bucket = self._values
        if self._keys[slot] != k:  # a new bucket takes over the slot of one that left the ring
            self._keys[slot] = k
            for c in range(self.channels):
                bucket[base + c] = 0.0
        for c, x in enumerate(values):
            bucket[base + c] += x

    def sums(self, t: int, n: int) -> list[float]:
        """Per channel, the sum over the `n` buckets ending with the bucket of `t` (at most the ring's size)."""
        k_end = t // self.width_ns
        head = self._head
        out = [0.0] * self.channels
        if head is None:
            return out
        cached = self._cache.get(n)
        if cached is not None and cached[0] == k_end and cached[1] == self._version:
            return list(cached[2])
        lo = max(k_end - n, head - self.count)  # exclusive; older buckets are no longer held
        parts: list[list[float]] = [[] for _ in range(self.channels)]
        keys, values = self._keys, self._values
        channels = self.channels
        for k in range(lo + 1, min(k_end, head) + 1):
            slot = k % self.count
            if keys[slot] == k:
                base = slot * channels
                for c in range(channels):
                    parts[c].append(values[base + c])
        for c in range(self.channels):
            out[c] = math.fsum(parts[c])
        self._cache[n] = (k_end, self._version, out)
        return list(out)

    def last_key(self) -> int | None:
        """The newest bucket index seen (None before the first event)."""
        return self._head
