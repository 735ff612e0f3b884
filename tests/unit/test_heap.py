"""flowgauge.heap: trimming gives freed heap pages back to the OS, and the daemon runs it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from flowgauge.heap import HeapTrimmer


def test_glibc_is_found_here() -> None:
    # The machines that build and run flowgauge (Debian, the image's base) have glibc: the trimmer must load.
    assert HeapTrimmer.load().available


def test_trim_returns_freed_heap_pages_to_the_os() -> None:
    # Fill the heap with 2 KiB blocks (above pymalloc's 512-byte limit: they come from malloc), free all but
    # every 64th, so each freed run is pinned by a live block above it and the heap cannot shrink from its top.
    # Only a trim gives the pages in between back. In a child: the test process's own heap must not count.
    script = textwrap.dedent(
        """
        from flowgauge.heap import HeapTrimmer

        def rss_kib():
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])

        heap = HeapTrimmer.load()
        blocks = [bytes(2048) for _ in range(40_000)]  # ~80 MiB
        kept = blocks[::64]
        del blocks
        before = rss_kib()
        released = heap.trim()
        after = rss_kib()
        print(before, after, int(released), heap.trims, len(kept))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    before, after, released, trims, _ = (int(x) for x in out.stdout.split())
    assert released == 1 and trims == 1
    assert before - after > 40_000, f"trim gave back only {before - after} KiB of ~78 MiB freed (RSS {before} KiB)"


def test_fixing_the_mmap_threshold_is_accepted() -> None:
    heap = HeapTrimmer.load()
    assert heap.fix_mmap_threshold()
