"""Keep the C heap from holding on to memory the daemon has freed (glibc only; a no-op elsewhere).

Why: the soak (issue 10) showed RSS creeping up after the warm-up (+3% over 20 minutes) while the memory Python
and the compiled core had allocated stayed flat (tracemalloc). The growth was memory freed back to glibc's
malloc but not to the OS: calling `malloc_trim(0)` in the running soak daemon released 6.2 MB at once. Two
things feed it. glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), so
after one multi-megabyte frame or snapshot every later large buffer comes from the heap, where a live chunk
above it pins the freed pages. And the heap only shrinks from its top, so freed pages in its middle stay
resident until something trims them.

So the daemon, at start, fixes the mmap threshold (large buffers stay mmapped and go back to the OS when
freed), and then trims the heap on a fixed period: `malloc_trim(0)` gives every wholly free page back
(`madvise`), and costs about a millisecond on the soak's 70 MB heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from dataclasses import dataclass

__all__ = ["MMAP_THRESHOLD_BYTES", "TRIM_INTERVAL_S", "HeapTrimmer", "MallocInfo"]

MMAP_THRESHOLD_BYTES = 64 * 1024  # buffers at least this large are mmapped (glibc's default starts at 128 KiB)
TRIM_INTERVAL_S = 5.0
_M_MMAP_THRESHOLD = -3  # mallopt parameter number, from glibc's malloc.h


class MallocInfo(ctypes.Structure):
    """glibc's `struct mallinfo2` (glibc 2.33+): byte counts summed over every malloc arena."""

    _fields_ = [
        ("arena", ctypes.c_size_t),  # non-mmapped bytes obtained from the OS (all arenas' heaps)
        ("ordblks", ctypes.c_size_t),  # free chunks
        ("smblks", ctypes.c_size_t),
        ("hblks", ctypes.c_size_t),  # mmapped chunks
        ("hblkhd", ctypes.c_size_t),  # bytes in mmapped chunks
        ("usmblks", ctypes.c_size_t),
        ("fsmblks", ctypes.c_size_t),
        ("uordblks", ctypes.c_size_t),  # bytes allocated in the heaps
        ("fordblks", ctypes.c_size_t),  # bytes free in the heaps
        ("keepcost", ctypes.c_size_t),  # free bytes at the top of the main heap (what a plain trim could return)
    ]


@dataclass
class HeapTrimmer:
    """glibc's `mallopt` and `malloc_trim` when the process runs on glibc; `available` False otherwise."""

    available: bool = False
    trims: int = 0
    released: int = 0  # trims that gave memory back (malloc_trim returned 1)
    last_duration_s: float = 0.0
    max_duration_s: float = 0.0
    _libc: ctypes.CDLL | None = None
    _mallinfo2: bool = False

    @classmethod
    def load(cls) -> HeapTrimmer:
        name = ctypes.util.find_library("c")
        if name is None:
            return cls()
        try:
            libc = ctypes.CDLL(name)
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            libc.malloc_trim.restype = ctypes.c_int
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.mallopt.restype = ctypes.c_int
        except (OSError, AttributeError):  # not glibc (musl has no malloc_trim): nothing to do
            return cls()
        try:
            libc.mallinfo2.argtypes = []
            libc.mallinfo2.restype = MallocInfo
            has_mallinfo2 = True
        except AttributeError:  # glibc before 2.33: no byte counts, trimming still works
            has_mallinfo2 = False
        return cls(available=True, _libc=libc, _mallinfo2=has_mallinfo2)

    def fix_mmap_threshold(self, threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
        """Pin the mmap threshold (which also stops glibc raising it). True when set."""
        if self._libc is None:
            return False
        return bool(self._libc.mallopt(_M_MMAP_THRESHOLD, threshold))

    def trim(self) -> bool:
        """Give wholly free heap pages back to the OS. True when some were."""
        if self._libc is None:
            return False
        started = time.perf_counter()
        released = bool(self._libc.malloc_trim(0))
        self.last_duration_s = time.perf_counter() - started
        self.max_duration_s = max(self.max_duration_s, self.last_duration_s)
        self.trims += 1
        self.released += released
        return released

    def info(self) -> dict[str, int] | None:
        """The C heap's counts (`mallinfo2`): bytes in use, free inside the heaps, mmapped, and the mmapped blocks;
        None without glibc 2.33+."""
        if self._libc is None or not self._mallinfo2:
            return None
        info = self._libc.mallinfo2()
        return {
            "heap_bytes": int(info.arena),
            "in_use_bytes": int(info.uordblks),
            "free_bytes": int(info.fordblks),
            "mmapped_bytes": int(info.hblkhd),
            "mmapped_blocks": int(info.hblks),
        }
