"""The soak's daemon process: the real daemon (`app.Daemon`) plus a sampler that reports what the soak measures.

Run by `flowgauge soak` as `python -m flowgauge.soak.child CONFIG`: nothing here changes what the daemon does;
the sampler is one more task on the daemon's own event loop. Every `--every` seconds it prints one JSON line on
stdout (the daemon's log goes to stderr): the process's RSS, the event loop's lag since the last line, over the
whole run and after `--warmup` (a 10 ms timer: how late it fires is how long the loop was busy elsewhere),
frames received and payloads published, the books' resyncs and bad frames, and each book's state. SIGTERM or
SIGINT stops the daemon as `flowgauge run` does; the last line then has `"final": true`. An exception out of
the daemon is a crash: one line with `"crash"` (the traceback's last lines), exit 1.

Memory is fixed: the lag histogram has one counter per millisecond up to `LAG_BUCKETS_MS` (beyond it, one
overflow counter and the maximum).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from array import array
from typing import Any

import orjson

__all__ = ["LAG_BUCKETS_MS", "LagHistogram", "main", "rss_kib"]

LAG_BUCKETS_MS = 10_000
TICK_S = 0.01
TRACE_ENV = "FLOWGAUGE_SOAK_TRACEMALLOC"
TRACE_EVERY_S = 120.0
HEAPSTATS_ENV = "FLOWGAUGE_SOAK_HEAPSTATS"


def heap_stats(trimmer: Any = None) -> dict[str, int]:
    """pymalloc's arena counts (from `sys._debugmallocstats`, which writes to fd 2) and the cyclic collector's
    per-generation collection counts: what the soak reports when FLOWGAUGE_SOAK_HEAPSTATS=1, for finding why RSS
    grows while the live objects do not. Diverts fd 2 for the call (a log line written meanwhile lands in the
    capture): a debugging aid, never on in a measured run."""
    import gc
    import tempfile

    stats: dict[str, int] = {f"gc{gen}_collections": int(s["collections"]) for gen, s in enumerate(gc.get_stats())}
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        try:
            os.dup2(capture.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("ascii", "replace")
    for line in text.splitlines():
        if line.startswith("# arenas ") and "=" in line:
            name, _, value = line.partition("=")
            key = "arenas_" + name.removeprefix("# arenas ").strip().replace(" ", "_")
            with contextlib.suppress(ValueError):
                stats[key] = int(value.strip().replace(",", ""))
        elif line.startswith("# bytes in allocated blocks"):
            with contextlib.suppress(ValueError):
                stats["pymalloc_allocated_bytes"] = int(line.partition("=")[2].strip().replace(",", ""))
    if trimmer is not None:  # the daemon's flowgauge.heap.HeapTrimmer: glibc's side of the heap
        stats.update(trimmer.info() or {})
        stats["trims"] = trimmer.trims
        stats["trim_max_us"] = int(trimmer.max_duration_s * 1e6)
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile", "Threads"):
                stats[name] = int(value.split()[0])
    return stats


def rss_kib(pid: int | str = "self") -> int | None:
    """Resident set size of process `pid` in KiB (Linux /proc), None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class LagHistogram:
    """Loop lag samples in 1 ms buckets (fixed memory); percentiles to the millisecond above."""

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * (LAG_BUCKETS_MS + 1)))
        self.n = 0
        self.max_s = 0.0

    def add(self, lag_s: float) -> None:
        self.counts[min(LAG_BUCKETS_MS, max(0, int(lag_s * 1000.0)))] += 1
        self.n += 1
        self.max_s = max(self.max_s, lag_s)

    def percentile_ms(self, q: float) -> float | None:
        """The upper edge (ms) of the bucket holding quantile `q` (0..1); None without samples."""
        if not self.n:
            return None
        rank = q * self.n
        seen = 0
        for ms, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return float(ms + 1) if ms < LAG_BUCKETS_MS else round(self.max_s * 1000.0, 1)
        return round(self.max_s * 1000.0, 1)

    def summary(self) -> dict[str, Any]:
        return {
            "samples": self.n,
            "p50_ms": self.percentile_ms(0.50),
            "p99_ms": self.percentile_ms(0.99),
            "max_ms": round(self.max_s * 1000.0, 1),
        }


async def _sample_lag(whole: LagHistogram, settled: LagHistogram, windows: list[LagHistogram], warmup_s: float) -> None:
    loop = asyncio.get_running_loop()
    settle_at = loop.time() + warmup_s
    while True:
        due = loop.time() + TICK_S
        await asyncio.sleep(TICK_S)
        now = loop.time()
        lag = max(0.0, now - due)
        whole.add(lag)
        windows[0].add(lag)
        if now >= settle_at:
            settled.add(lag)


def _counter_totals(daemon: Any) -> dict[str, float]:
    totals: dict[str, float] = {}
    for metric in daemon.registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _line(daemon: Any, started: float, lags: tuple[LagHistogram, LagHistogram, LagHistogram], final: bool) -> bytes:
    whole, settled, window = lags
    status = daemon.engine.status()
    books = [(venue, symbol, book) for venue, books in status["venues"].items() for symbol, book in books.items()]
    totals = _counter_totals(daemon)
    states: dict[str, int] = {}
    for _, _, book in books:
        states[book["state"]] = states.get(book["state"], 0) + 1
    record = {
        "t": round(time.monotonic() - started, 3),
        "rss_kib": rss_kib(),
        "lag": window.summary(),
        "lag_run": whole.summary(),
        "lag_after_warmup": settled.summary(),
        "frames": int(totals.get("flowgauge_ws_messages_total", 0)),
        "published": sum(int(book["published"]) for _, _, book in books),
        "resyncs": sum(int(book["resyncs"]) for _, _, book in books),
        "gaps": sum(int(book["gaps"]) for _, _, book in books),
        "bad_frames": int(status["bad_frames"]),
        "reconnects": int(totals.get("flowgauge_ws_reconnects_total", 0)),
        "conflated": int(totals.get("flowgauge_payloads_conflated_total", 0)),
        "books": len(books),
        "core": daemon.engine.core,
        "states": states,
        "final": final,
    }
    if os.environ.get(HEAPSTATS_ENV):
        record["heap"] = heap_stats(daemon.heap)
    return orjson.dumps(record) + b"\n"


async def _trace(frames: int, warmup_s: float) -> None:
    """Debugging what grows (FLOWGAUGE_SOAK_TRACEMALLOC=frames): tracemalloc from the end of the warm-up, a
    baseline a minute later, then every `TRACE_EVERY_S` the allocations grown most since it, as JSON lines on
    stderr (the daemon's log). Costs CPU and memory: never on in a measured run."""
    import tracemalloc

    await asyncio.sleep(warmup_s)
    tracemalloc.start(frames)
    await asyncio.sleep(60.0)
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen *>")]
    base = tracemalloc.take_snapshot().filter_traces(ignore)
    while True:
        await asyncio.sleep(TRACE_EVERY_S)
        snapshot = tracemalloc.take_snapshot().filter_traces(ignore)
        top = [
            {"kib": round(stat.size_diff / 1024, 1), "blocks": stat.count_diff, "at": stat.traceback.format()}
            for stat in snapshot.compare_to(base, "traceback")[:12]
        ]
        sys.stderr.write(
            orjson.dumps({"trace": top, "traced_kib": tracemalloc.get_traced_memory()[0] // 1024}).decode()
        )
        sys.stderr.write("\n")
        sys.stderr.flush()


async def _run(config: str, every_s: float, warmup_s: float) -> int:
    from flowgauge import app, core
    from flowgauge.config import load_settings

    core.select(os.environ.get("FLOWGAUGE_CORE"))  # as `flowgauge run`: compiled when built, unless forced

    not_settings = (TRACE_ENV, HEAPSTATS_ENV)
    settings = load_settings(config, {k: v for k, v in os.environ.items() if k not in not_settings})
    daemon = app.Daemon(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.stop.set)
    whole = LagHistogram()
    settled = LagHistogram()  # after the warm-up only
    windows = [LagHistogram()]
    started = time.monotonic()
    out = sys.stdout.buffer

    async def report() -> None:
        while True:
            await asyncio.sleep(every_s)
            window, windows[0] = windows[0], LagHistogram()
            out.write(_line(daemon, started, (whole, settled, window), final=False))
            out.flush()

    sampler = asyncio.create_task(_sample_lag(whole, settled, windows, warmup_s), name="soak-lag")
    reporter = asyncio.create_task(report(), name="soak-report")
    frames = int(os.environ.get(TRACE_ENV, "0") or 0)
    tracer = asyncio.create_task(_trace(frames, warmup_s), name="soak-trace") if frames > 0 else None
    try:
        await daemon.run()
    except Exception as exc:  # a crash is what the soak counts: say what it was, exit 1
        lines = traceback.format_exception(exc)
        out.write(orjson.dumps({"crash": "".join(lines)[-2000:]}) + b"\n")
        out.flush()
        return 1
    finally:
        for task in (sampler, reporter, tracer):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    out.write(_line(daemon, started, (whole, settled, windows[0]), final=True))
    out.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowgauge.soak.child", description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the daemon's YAML config")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between report lines (default 5)")
    parser.add_argument(
        "--warmup", type=float, default=300.0, help="seconds before lag samples count in lag_after_warmup (default 300)"
    )
    args = parser.parse_args(argv)
    from flowgauge import logs

    logs.configure(os.environ.get("FLOWGAUGE_LOG_LEVEL", "WARNING"))
    for handler in logging.getLogger().handlers:  # the daemon's log lines to stderr: stdout carries the reports
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    return asyncio.run(_run(args.config, args.every, args.warmup))


if __name__ == "__main__":
    sys.exit(main())
