"""`flowgauge bench`: runs every measured path, interleaved in rounds in one process, and reports medians.

Sits at the top of `flowgauge.bench` (the CLI and `benchmarks/run_bench.py` call `main`). Prints progress to
stderr, a table to stdout and, with `--json`, ends stdout with ONE JSON object (schema `flowgauge.bench.v1`)
holding the ratios against cryptofeed, the latency and memory figures, and the raw numbers behind them.
Must not change the paths it measures; all timing lives in `bench.paths`, `bench.feeder`, `bench.demo_mix`.

Method: each round (9 by default, in every mode) runs a block per comparison (cryptofeed and flowgauge on the
same frames, back to back, the order alternating between rounds, the blocks rotating), so slow phases of a
shared machine hit both sides of a ratio alike. A ratio is computed per round; the summary gives its median
and its min and max over the rounds (`<key>`, `<key>_min`, `<key>_max`, samples under `ratio_samples`).
Both baselines (cryptofeed's handler on each venue, and end to end) are re-measured in every round and
reported under `baselines`. The ratios run on our recordings and on frames shaped like cryptofeed's own
sample data (`bench.sample_shape`, keys ending `_cf_frames`). Latency (receive -> publish through a loopback
websocket from a feeder process, `bench.feeder`) runs at 5k and 20k msgs/s in every round. After the rounds:
memory and scale-out in fresh child processes, the books-per-core search, and the five-venue demo mix
through a real daemon and the real simulators (`bench.demo_mix`). The two long cases are skipped in
`--quick` mode, with their keys present as null and a note under `skipped`.

Field set: the ratios measure today's payload ("core-v1", `field_set` in the JSON); metrics added later are
reported as separate figures, not folded into these: `full_path_all_fields_bybit` runs the full path with the
default metric families (`publish.families`' default) in the Bybit block, and
`full_path_all_fields_vs_cryptofeed_bybit` is its ratio to the same round's cryptofeed handler.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

from flowgauge.bench import add_arguments, paths
from flowgauge.bench.cryptofeed_driver import CryptofeedMissing, cryptofeed_version
from flowgauge.bench.demo_mix import measure_demo_mix
from flowgauge.bench.feeder import Feeder, LatencyRequest, instruments_per_core, measure_latency
from flowgauge.bench.frames import RecordedFeed, frame_count, level_count, load_binance_usdm, load_bybit
from flowgauge.bench.sample_shape import cryptofeed_shaped
from flowgauge.bench.synthetic import SyntheticStream
from flowgauge.metrics.families import DEFAULT_FAMILIES

__all__ = ["TARGETS", "BenchConfig", "execute", "main", "run", "table"]

SCHEMA = "flowgauge.bench.v1"
FIELD_SET = "core-v1"  # the payload fields the ratios are measured on (today's payload)

# Issue 8's targets: key -> (comparison, threshold).
TARGETS: dict[str, tuple[str, float]] = {
    "parse_book_vs_cryptofeed_bybit": (">=", 4.0),
    "parse_book_vs_cryptofeed_binanceusdm": (">=", 4.0),
    "full_path_vs_cryptofeed_bybit": (">=", 2.5),
    "full_path_vs_cryptofeed_binanceusdm": (">=", 2.5),
    "e2e_vs_cryptofeed_bybit": (">=", 2.5),
    "p99_recv_to_publish_us_at_5k": ("<", 250.0),
    "p99_us_at_5k": ("<", 250.0),
    "rss_mb_500x200": ("<", 300.0),
    "cpu_us_per_payload_demo_mix": ("<=", 120.0),
}

# Ratio keys: (ours, cryptofeed) runs per round.
RATIOS: tuple[str, ...] = (
    "parse_book_vs_cryptofeed_bybit",
    "parse_book_vs_cryptofeed_binanceusdm",
    "full_path_vs_cryptofeed_bybit",
    "full_path_vs_cryptofeed_binanceusdm",
    "full_path_all_fields_vs_cryptofeed_bybit",
    "parse_book_vs_cryptofeed_bybit_cf_frames",
    "parse_book_vs_cryptofeed_binanceusdm_cf_frames",
    "full_path_vs_cryptofeed_bybit_cf_frames",
    "full_path_vs_cryptofeed_binanceusdm_cf_frames",
    "e2e_vs_cryptofeed_bybit",
    "e2e_picows_vs_cryptofeed_bybit",
    "e2e_picows_vs_websockets_bybit",
)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Sizes of one benchmark run: `normal()` by default, `quick()` for a first look, `tiny()` for tests."""

    mode: str
    repeats: int  # rounds: every ratio and latency figure is measured once per round
    bybit_frames: int  # recorded Bybit book frames per comparison run
    binance_frames: int  # recorded Binance USD-M depth frames per comparison run
    mixed_frames: int  # recorded Bybit data frames of every channel (full path on mixed traffic)
    synthetic_instruments: int
    synthetic_frames: int
    e2e_frames: int
    cf_frames: int = 6_000  # frames shaped like cryptofeed's sample data, per venue and run
    latency_rate: float = 5000.0
    latency_rate_high: float = 20000.0
    latency_instruments: int = 100
    latency_seconds: float = 3.0
    latency_seconds_high: float = 1.5
    rss_instruments: int = 500
    rss_levels: int = 200
    rss_deltas: int = 5000
    scale_processes: int = 2
    scale_instruments: int = 100
    scale_frames: int = 20000
    long_cases: bool = True  # demo_mix and instruments_per_core_at_20hz
    demo_speed: float = 20.0
    demo_window_s: float = 20.0
    per_core_seconds: float = 3.0

    @classmethod
    def normal(cls) -> BenchConfig:
        return cls("normal", 9, 10_000, 6_000, 10_000, 100, 10_000, 10_000)

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            "quick",
            9,
            3_000,
            2_000,
            3_000,
            100,
            3_000,
            3_000,
            cf_frames=2_000,
            latency_seconds=0.6,
            latency_seconds_high=0.3,
            rss_deltas=2000,
            scale_frames=5_000,
            long_cases=False,
        )

    @classmethod
    def tiny(cls) -> BenchConfig:
        """For the smoke test only: every path runs, on sizes too small for the figures to mean anything, in 3
        interleaved rounds (enough to show the rounds interleave and aggregate; real runs take 9 or more)."""
        return cls(
            "tiny",
            3,
            300,
            200,
            300,
            10,
            300,
            300,
            cf_frames=200,
            latency_instruments=10,
            latency_seconds=0.06,
            latency_seconds_high=0.03,
            rss_instruments=60,
            rss_deltas=200,
            scale_instruments=10,
            scale_frames=400,
            long_cases=False,
        )


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(ours: float, theirs: float) -> float | None:
    return ours / theirs if theirs > 0 else None


class _Collector:
    """Samples of every measurement across rounds."""

    def __init__(self) -> None:
        self.runs: dict[str, list[paths.Run]] = {}
        self.ratios: dict[str, list[float]] = {}
        self.latency: list[dict[str, Any]] = []
        self.latency_high: list[dict[str, Any]] = []

    def add(self, run: paths.Run) -> paths.Run:
        self.runs.setdefault(run.name, []).append(run)
        return run

    def ratio(self, key: str, ours: paths.Run | None, theirs: paths.Run | None) -> None:
        if ours is None or theirs is None:
            return
        value = _ratio(ours.msgs_per_s, theirs.msgs_per_s)
        if value is not None:
            self.ratios.setdefault(key, []).append(value)


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def active_core() -> str:
    """The core the measured pipelines run on ("compiled" or "python"); "python" where there is no choice."""
    try:
        from flowgauge.core import active_core as core_in_use
    except ImportError:
        return "python"
    return str(core_in_use())


def run(config: BenchConfig, progress: TextIO | None = sys.stderr) -> dict[str, Any]:
    """Run every measurement of `config`; returns the summary (what `--json` prints)."""

    def say(text: str) -> None:
        if progress is not None:
            print(text, file=progress, flush=True)

    gaps: list[str] = []
    cf_version = cryptofeed_version()
    if cf_version is None:
        gaps.append('cryptofeed is not installed (pip install "flowgauge[bench]"): no ratios')
    have_picows = paths.picows_available()
    if not have_picows:
        gaps.append("picows is not installed (pip install picows): no picows e2e figures")
    # Inputs, rendered once before anything is timed.
    bybit = load_bybit()
    bybit_items = bybit.items(config.bybit_frames)
    mixed = load_bybit(book_only=False)
    mixed_items = mixed.items(config.mixed_frames)
    binance_loaded = load_binance_usdm()
    binance: RecordedFeed | None = binance_loaded
    binance_items = binance_loaded.items(config.binance_frames)
    try:
        paths.Pipeline("binanceusdm", binance_loaded.instruments, full=False)
    except (ImportError, KeyError, AttributeError, ValueError) as exc:
        gaps.append(f"binanceusdm pipeline unavailable ({exc!r}): no Binance figures")
        binance = None
    cf_bybit, cf_bybit_items = cryptofeed_shaped("bybit", config.cf_frames)
    cf_binance, cf_binance_items = cryptofeed_shaped("binanceusdm", config.cf_frames)
    synthetic = SyntheticStream(config.synthetic_instruments)
    synthetic_warm = synthetic.snapshots()
    synthetic_items = synthetic.deltas(config.synthetic_frames)
    have_cf = cf_version is not None
    collected = _Collector()

    def cf(name: str, recorded: RecordedFeed, items: list[Any]) -> paths.Run | None:
        if not have_cf:
            return None
        try:
            return collected.add(paths.measure_cryptofeed(name, recorded, items))
        except CryptofeedMissing:
            return None

    def ours(
        name: str, recorded: RecordedFeed, items: list[Any], full: bool, families: tuple[str, ...] = paths.CORE_V1
    ) -> paths.Run:
        return collected.add(
            paths.measure_ours(name, recorded.venue, recorded.instruments, items, full=full, families=families)
        )

    # A short untimed pass of each path: imports, caches and the allocator warm up before round 1.
    ours("warmup", bybit, bybit_items[:200], True)
    ours("warmup", bybit, bybit_items[:200], False)
    cf("warmup", bybit, bybit_items[:200])
    collected.runs.pop("warmup", None)

    def comparison(venue_key: str, suffix: str, recorded: RecordedFeed, items: list[Any], flip: bool) -> None:
        """cryptofeed's handler, our parse+book and our full path on the same items, in one block (on Bybit's
        recordings also the full path with the default metric families)."""
        steps: list[Callable[[], paths.Run | None]] = [
            lambda: cf(f"cryptofeed_parse_book_{venue_key}{suffix}", recorded, items),
            lambda: ours(f"parse_book_{venue_key}{suffix}", recorded, items, False),
            lambda: ours(f"full_path_{venue_key}{suffix}", recorded, items, True),
        ]
        all_fields = venue_key == "bybit" and not suffix
        if all_fields:
            steps.append(lambda: ours(f"full_path_all_fields_{venue_key}", recorded, items, True, DEFAULT_FAMILIES))
        results = _in_order(steps, flip)
        collected.ratio(f"parse_book_vs_cryptofeed_{venue_key}{suffix}", results[1], results[0])
        collected.ratio(f"full_path_vs_cryptofeed_{venue_key}{suffix}", results[2], results[0])
        if all_fields:
            collected.ratio(f"full_path_all_fields_vs_cryptofeed_{venue_key}", results[3], results[0])

    def block_bybit(flip: bool) -> None:
        comparison("bybit", "", bybit, bybit_items, flip)

    def block_binance(flip: bool) -> None:
        if binance is not None:
            comparison("binanceusdm", "", binance, binance_items, flip)

    def block_cf_frames(flip: bool) -> None:
        comparison("bybit", "_cf_frames", cf_bybit, cf_bybit_items, flip)
        comparison("binanceusdm", "_cf_frames", cf_binance, cf_binance_items, not flip)

    def block_more(flip: bool) -> None:
        ours("full_path_bybit_mixed", mixed, mixed_items, True)
        collected.add(
            paths.measure_ours(
                "full_path_synthetic",
                "bybit",
                synthetic.instruments,
                synthetic_items,
                full=True,
                warm=synthetic_warm,
            )
        )

    with paths.FrameServer(config.e2e_frames) as server, Feeder() as feeder:
        e2e_levels = level_count(bybit.items(config.e2e_frames))

        def block_latency(flip: bool) -> None:
            low = LatencyRequest(config.latency_rate, config.latency_instruments, config.latency_seconds)
            high = LatencyRequest(
                config.latency_rate_high, config.latency_instruments, config.latency_seconds_high
            )
            for request, samples in _in_order_pairs(
                [(low, collected.latency), (high, collected.latency_high)], flip
            ):
                samples.append(measure_latency(feeder.url, request))

        def block_e2e(flip: bool) -> None:
            steps: list[Callable[[], paths.Run | None]] = [
                lambda: collected.add(paths.e2e_cryptofeed(server.url, bybit)) if have_cf else None,
                lambda: collected.add(paths.e2e_ours(server.url, bybit)),
                lambda: collected.add(paths.e2e_ours_picows(server.url, bybit)) if have_picows else None,
                lambda: collected.add(paths.e2e_transport(server.url)),
                lambda: collected.add(paths.e2e_transport_picows(server.url)) if have_picows else None,
            ]
            results = _in_order(steps, flip)
            for result in results:
                if result is not None:
                    result.levels = e2e_levels
            collected.ratio("e2e_vs_cryptofeed_bybit", results[1], results[0])
            collected.ratio("e2e_picows_vs_cryptofeed_bybit", results[2], results[0])
            collected.ratio("e2e_picows_vs_websockets_bybit", results[2], results[1])

        blocks = [block_bybit, block_binance, block_e2e, block_cf_frames, block_more, block_latency]
        for r in range(config.repeats):
            started = time.perf_counter()
            order = blocks[r % len(blocks) :] + blocks[: r % len(blocks)]
            for block in order:
                block(r % 2 == 1)
            say(f"round {r + 1}/{config.repeats} done in {time.perf_counter() - started:.1f}s")

        skipped: dict[str, str] = {}
        per_core: dict[str, Any] | None = None
        if config.long_cases:
            say("books per core at 20 msg/s each (200 levels) ...")
            per_core = instruments_per_core(feeder.url, seconds=config.per_core_seconds)
        else:
            skipped["instruments_per_core_at_20hz"] = f"{config.mode} mode: long case not run"

    demo: dict[str, Any] | None = None
    if config.long_cases:
        say(f"demo mix: five simulators at {config.demo_speed:g}x into a daemon, {config.demo_window_s:g}s ...")
        try:
            demo = measure_demo_mix(config.demo_speed, config.demo_window_s)
        except (RuntimeError, OSError) as exc:
            gaps.append(f"demo_mix failed: {exc}"[:500])
    else:
        skipped["cpu_us_per_payload_demo_mix"] = f"{config.mode} mode: long case not run"
    say(f"memory: {config.rss_instruments} books of {config.rss_levels} levels in a fresh process ...")
    rss = paths.rss(config.rss_instruments, config.rss_levels, config.rss_deltas)
    say(f"scale-out: 1 and {config.scale_processes} processes ...")
    single = paths.scale_out(1, config.scale_instruments, config.scale_frames, min(config.repeats, 3))
    sharded = paths.scale_out(
        config.scale_processes, config.scale_instruments, config.scale_frames, min(config.repeats, 3)
    )
    return _summary(
        config,
        collected,
        rss,
        single,
        sharded,
        cf_version,
        gaps,
        {
            "bybit": bybit_items,
            "binanceusdm": binance_items,
            "mixed": mixed_items,
            "synthetic": synthetic_items,
            "bybit_cf_frames": cf_bybit_items,
            "binanceusdm_cf_frames": cf_binance_items,
        },
        {"bybit": bybit, "binanceusdm": binance, "mixed": mixed, "cf_frames": cf_bybit},
        {"demo_mix": demo, "per_core": per_core, "skipped": skipped},
    )


def _in_order(steps: list[Callable[[], paths.Run | None]], flip: bool) -> list[paths.Run | None]:
    """Run `steps` forwards (or backwards when `flip`), returning results in the steps' own order."""
    results: list[paths.Run | None] = [None] * len(steps)
    indexes = range(len(steps) - 1, -1, -1) if flip else range(len(steps))
    for i in indexes:
        results[i] = steps[i]()
    return results


def _in_order_pairs(pairs: list[Any], flip: bool) -> list[Any]:
    return list(reversed(pairs)) if flip else pairs


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "median": _median(values),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def _latency_summary(samples: list[dict[str, Any]], rate: float, instruments: int) -> dict[str, Any]:
    keys = (
        "recv_to_publish_p50_us",
        "recv_to_publish_p99_us",
        "recv_to_publish_p999_us",
        "recv_to_publish_max_us",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "achieved_rate",
        "feeder_behind_p99_us",
        "cpu_share",
        "cpu_needed",
    )
    summary: dict[str, Any] = {key: _median([sample[key] for sample in samples]) for key in keys}
    return summary | {
        "rate": rate,
        "instruments": instruments,
        "levels_per_message": "recordings' (about 14)",
        "messages": samples[-1]["messages"] if samples else 0,
        "recv_to_publish_p99_us_samples": [round(s["recv_to_publish_p99_us"], 1) for s in samples],
        "p99_us_samples": [round(s["p99_us"], 1) for s in samples],
        "dropped": max((s["dropped"] for s in samples), default=0),
        "unpublished": max((s["unpublished"] for s in samples), default=0),
        "invalid_books": max((s["invalid_books"] for s in samples), default=0),
    }


def _summary(
    config: BenchConfig,
    collected: _Collector,
    rss: dict[str, Any],
    single: list[dict[str, Any]],
    sharded: list[dict[str, Any]],
    cf_version: str | None,
    gaps: list[str],
    items: dict[str, list[Any]],
    feeds: dict[str, RecordedFeed | None],
    long_cases: dict[str, Any],
) -> dict[str, Any]:
    def instruments_of(name: str) -> int:
        if "synthetic" in name:
            return config.synthetic_instruments
        if "cf_frames" in name:
            feed = feeds.get("cf_frames")
        elif "binance" in name:
            feed = feeds.get("binanceusdm")
        else:
            feed = feeds.get("bybit")
        return len(feed.instruments) if feed is not None else 0

    raw: dict[str, Any] = {}
    for name, runs in collected.runs.items():
        rates = [run.msgs_per_s for run in runs]
        level_rates = [run.levels_per_s for run in runs]
        raw[name] = {
            "msgs_per_s": _median(rates),
            "msgs_per_s_min": min(rates),
            "msgs_per_s_max": max(rates),
            "levels_per_s": _median(level_rates),
            "msgs_per_s_samples": [round(v, 1) for v in rates],
            "messages": runs[-1].messages,
            "levels": runs[-1].levels,
            "instruments": instruments_of(name),
            "published": runs[-1].published,
            "dropped": max(run.dropped for run in runs),
            "invalid_books": max(run.invalid_books for run in runs),
        }
    latency = _latency_summary(collected.latency, config.latency_rate, config.latency_instruments)
    latency_high = _latency_summary(
        collected.latency_high, config.latency_rate_high, config.latency_instruments
    )
    single_rate = _median([s["msgs_per_s"] for s in single])
    sharded_rate = _median([s["msgs_per_s"] for s in sharded])
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "mode": config.mode,
        "repeats": config.repeats,
        "rounds": config.repeats,
        "core": active_core(),
        "field_set": FIELD_SET,
    }
    for key in RATIOS:
        spread = _spread(collected.ratios.get(key, []))
        summary[key] = spread["median"]
        summary[f"{key}_min"] = spread["min"]
        summary[f"{key}_max"] = spread["max"]
    summary["p50_us_at_5k"] = latency["p50_us"]
    summary["p99_us_at_5k"] = latency["p99_us"]
    summary["p999_us_at_5k"] = latency["p999_us"]
    for key, samples in (("5k", collected.latency), ("20k", collected.latency_high)):
        spread = _spread([s["recv_to_publish_p99_us"] for s in samples])
        summary[f"p99_recv_to_publish_us_at_{key}"] = spread["median"]
        summary[f"p99_recv_to_publish_us_at_{key}_min"] = spread["min"]
        summary[f"p99_recv_to_publish_us_at_{key}_max"] = spread["max"]
    summary["rss_mb_500x200"] = rss["rss_mb"]
    summary["scale_out_msgs_per_s"] = sharded_rate
    summary["scale_out_single_process_msgs_per_s"] = single_rate
    summary["scale_out_speedup"] = (
        sharded_rate / single_rate if sharded_rate is not None and single_rate else None
    )
    demo = long_cases["demo_mix"]
    per_core = long_cases["per_core"]
    summary["cpu_us_per_payload_demo_mix"] = demo["cpu_us_per_payload"] if demo else None
    summary["instruments_per_core_at_20hz"] = per_core["instruments"] if per_core else None
    summary["skipped"] = long_cases["skipped"]
    summary["targets"] = {
        key: {
            "target": f"{op} {threshold:g}",
            "value": summary.get(key),
            "min": summary.get(f"{key}_min"),
            "max": summary.get(f"{key}_max"),
            "met": _met(summary.get(key), op, threshold),
        }
        for key, (op, threshold) in TARGETS.items()
    }
    summary["cryptofeed_version"] = cf_version
    summary["baselines"] = {
        name: _spread([run.msgs_per_s for run in collected.runs.get(name, [])]) | {"unit": "msgs/s"}
        for name in (
            "cryptofeed_parse_book_bybit",
            "cryptofeed_parse_book_binanceusdm",
            "cryptofeed_parse_book_bybit_cf_frames",
            "cryptofeed_parse_book_binanceusdm_cf_frames",
            "e2e_cryptofeed_bybit",
        )
    }
    summary["ratio_samples"] = {
        key: [round(v, 3) for v in values] for key, values in collected.ratios.items()
    }
    summary["raw"] = raw
    summary["latency"] = latency
    summary["latency_20k"] = latency_high
    summary["demo_mix"] = demo
    summary["instruments_per_core"] = per_core
    summary["rss"] = rss
    summary["scale_out"] = {
        "processes": config.scale_processes,
        "instruments": config.scale_instruments,
        "messages": config.scale_frames,
        "single": single,
        "sharded": sharded,
    }
    summary["inputs"] = {
        name: {"frames": frame_count(values), "levels": level_count(values)} for name, values in items.items()
    }
    summary["environment"] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": _cpu_count(),
        "load_average": _load_average(),
        "event_loop": "uvloop" if paths.loop_factory() is not None else "asyncio",
        "versions": {
            name: _version(name)
            for name in ("flowgauge", "cryptofeed", "orjson", "msgspec", "websockets", "picows", "uvloop")
        },
    }
    summary["gaps"] = gaps
    return summary


def _load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load when the run ended: a loaded machine explains noisy figures."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _met(value: float | None, op: str, threshold: float) -> bool | None:
    if value is None:
        return None
    if op == ">=":
        return value >= threshold
    if op == "<=":
        return value <= threshold
    return value < threshold


# ---------------------------------------------------------------------------------------------- output


def _fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _range(summary: dict[str, Any], key: str, digits: int, unit: str) -> str:
    low, high = summary.get(f"{key}_min"), summary.get(f"{key}_max")
    if low is None or high is None:
        return ""
    return f"[{_fmt(low, digits)}-{_fmt(high, digits)}{unit}]"


def table(summary: dict[str, Any]) -> str:
    """The human-readable table of a summary (what the README's Performance section shows)."""
    raw = summary["raw"]
    synthetic_books = raw.get("full_path_synthetic", {}).get("instruments", "?")
    rss = summary["rss"]
    lines = [
        f"flowgauge bench: {summary['mode']}, {summary['rounds']} interleaved round(s), medians [min-max]; "
        f"core {summary['core']}, field set {summary['field_set']}; "
        f"cryptofeed {summary['cryptofeed_version'] or 'not installed'}, "
        f"Python {summary['environment']['python']}, {summary['environment']['event_loop']}, "
        f"{summary['environment']['cpus']} CPU(s), load {summary['environment']['load_average']}",
        "",
        f"{'path':<50}{'msgs/s':>12}{'min-max':>22}{'levels/s':>14}",
    ]
    rows = [
        ("parse_book_bybit", "flowgauge parse+book, Bybit"),
        ("cryptofeed_parse_book_bybit", "cryptofeed handler, Bybit"),
        ("full_path_bybit", "flowgauge full path, Bybit"),
        ("full_path_all_fields_bybit", "flowgauge full path, Bybit, default families"),
        ("parse_book_binanceusdm", "flowgauge parse+book, Binance USD-M"),
        ("cryptofeed_parse_book_binanceusdm", "cryptofeed handler, Binance USD-M"),
        ("full_path_binanceusdm", "flowgauge full path, Binance USD-M"),
        ("parse_book_bybit_cf_frames", "flowgauge parse+book, Bybit, cf-shaped"),
        ("cryptofeed_parse_book_bybit_cf_frames", "cryptofeed handler, Bybit, cf-shaped"),
        ("full_path_bybit_cf_frames", "flowgauge full path, Bybit, cf-shaped"),
        ("parse_book_binanceusdm_cf_frames", "flowgauge parse+book, Binance, cf-shaped"),
        ("cryptofeed_parse_book_binanceusdm_cf_frames", "cryptofeed handler, Binance, cf-shaped"),
        ("full_path_binanceusdm_cf_frames", "flowgauge full path, Binance, cf-shaped"),
        ("full_path_bybit_mixed", "flowgauge full path, Bybit all channels"),
        ("full_path_synthetic", f"flowgauge full path, synthetic x{synthetic_books}"),
        ("e2e_ours_bybit", "flowgauge end to end, websockets client"),
        ("e2e_ours_picows_bybit", "flowgauge end to end, picows client"),
        ("e2e_cryptofeed_bybit", "cryptofeed end to end, loopback ws"),
        ("e2e_transport_only", "websockets client alone, loopback"),
        ("e2e_transport_picows", "picows client alone, loopback"),
    ]
    for key, label in rows:
        figures = raw.get(key)
        if figures is None:
            continue
        spread = f"{_fmt(figures['msgs_per_s_min'])}-{_fmt(figures['msgs_per_s_max'])}"
        lines.append(
            f"{label:<50}{_fmt(figures['msgs_per_s']):>12}{spread:>22}{_fmt(figures['levels_per_s']):>14}"
        )
    lines += ["", f"{'ratio (median over rounds)':<50}{'value':>12}{'min-max':>22}"]
    ratio_labels = {
        "parse_book_vs_cryptofeed_bybit": "parse+book vs cryptofeed, Bybit",
        "parse_book_vs_cryptofeed_binanceusdm": "parse+book vs cryptofeed, Binance USD-M",
        "full_path_vs_cryptofeed_bybit": "full path vs cryptofeed parse+book, Bybit",
        "full_path_vs_cryptofeed_binanceusdm": "full path vs cryptofeed parse+book, Binance",
        "full_path_all_fields_vs_cryptofeed_bybit": "full path, default families, vs cryptofeed, Bybit",
        "parse_book_vs_cryptofeed_bybit_cf_frames": "parse+book vs cryptofeed, Bybit, cf-shaped",
        "parse_book_vs_cryptofeed_binanceusdm_cf_frames": "parse+book vs cryptofeed, Binance, cf-shaped",
        "full_path_vs_cryptofeed_bybit_cf_frames": "full path vs cryptofeed, Bybit, cf-shaped",
        "full_path_vs_cryptofeed_binanceusdm_cf_frames": "full path vs cryptofeed, Binance, cf-shaped",
        "e2e_vs_cryptofeed_bybit": "end to end vs cryptofeed (websockets client)",
        "e2e_picows_vs_cryptofeed_bybit": "end to end vs cryptofeed (picows client)",
        "e2e_picows_vs_websockets_bybit": "end to end, picows over websockets client",
    }
    for key, label in ratio_labels.items():
        lines.append(f"{label:<50}{_fmt(summary.get(key), 2, 'x'):>12}{_range(summary, key, 2, 'x'):>22}")
    lines += ["", f"{'target':<50}{'value':>12}{'goal':>14}  met"]
    labels = {
        "parse_book_vs_cryptofeed_bybit": ("parse+book vs cryptofeed, Bybit", 2, "x"),
        "parse_book_vs_cryptofeed_binanceusdm": ("parse+book vs cryptofeed, Binance USD-M", 2, "x"),
        "full_path_vs_cryptofeed_bybit": ("full path vs cryptofeed parse+book, Bybit", 2, "x"),
        "full_path_vs_cryptofeed_binanceusdm": ("full path vs cryptofeed parse+book, Binance", 2, "x"),
        "e2e_vs_cryptofeed_bybit": ("end to end vs cryptofeed, loopback ws", 2, "x"),
        "p99_recv_to_publish_us_at_5k": ("p99 receive->publish at 5k msgs/s, 100 books", 0, " us"),
        "p99_us_at_5k": ("p99 handle only at 5k msgs/s (old key)", 0, " us"),
        "rss_mb_500x200": ("RSS, 500 books x 200 levels", 0, " MB"),
        "cpu_us_per_payload_demo_mix": ("CPU per payload, five-venue demo mix", 0, " us"),
    }
    for key, target in summary["targets"].items():
        label, digits, unit = labels[key]
        met = {True: "yes", False: "NO", None: "n/a"}[target["met"]]
        lines.append(f"{label:<50}{_fmt(target['value'], digits, unit):>12}{target['target']:>14}  {met}")
    latency, latency_high = summary["latency"], summary["latency_20k"]
    lines.append("")
    for figures in (latency, latency_high):
        lines.append(
            f"receive->publish at {figures['rate']:,.0f} msgs/s over {figures['instruments']} books "
            f"(feeder process, loopback ws): p50 {_fmt(figures['recv_to_publish_p50_us'], 0)} us, "
            f"p99 {_fmt(figures['recv_to_publish_p99_us'], 0)} us, "
            f"max {_fmt(figures['recv_to_publish_max_us'], 0)} us; handle only p99 {_fmt(figures['p99_us'], 0)} us; "
            f"achieved {_fmt(figures['achieved_rate'])} msgs/s, CPU needed {_fmt(figures['cpu_needed'], 2)} core"
        )
    per_core = summary.get("instruments_per_core")
    if per_core is not None:
        lines.append(
            f"books per core at 20 msg/s (200 levels, CPU <= 80%, p99 < 250 us): {per_core['instruments']} "
            f"(CPU alone would allow {per_core['instruments_cpu_only']})"
        )
    demo = summary.get("demo_mix")
    if demo is not None:
        lines.append(
            f"demo mix ({demo['books']} books, five simulators at {demo['speed']:g}x): "
            f"{_fmt(demo['cpu_us_per_payload'], 0)} us CPU per payload, {_fmt(demo['payloads_per_s'])} payloads/s, "
            f"daemon at {_fmt(100 * demo['daemon_cpu_share'], 0)}% of a core"
        )
    lines += [
        f"memory: {_fmt(rss['rss_mb'], 1)} MB RSS with {rss['instruments']} books of "
        f"{rss['levels_per_side']} levels per side (process baseline {_fmt(rss['baseline_mb'], 1)} MB)",
        f"scale-out: {summary['scale_out']['processes']} processes "
        f"{_fmt(summary['scale_out_msgs_per_s'])} msgs/s, "
        f"1 process {_fmt(summary['scale_out_single_process_msgs_per_s'])} msgs/s "
        f"({_fmt(summary['scale_out_speedup'], 2, 'x')})",
    ]
    for key, why in summary["skipped"].items():
        lines.append(f"skipped: {key} ({why})")
    for gap in summary["gaps"]:
        lines.append(f"gap: {gap}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- entry


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flowgauge bench", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return parser.parse_args(argv)


def execute(
    args: argparse.Namespace,
    out: TextIO = sys.stdout,
    config: BenchConfig | None = None,
    progress: TextIO | None = sys.stderr,
) -> int:
    """Run what `args` asks for; returns the exit code. `config` overrides the sizes (the smoke test)."""
    if config is None:
        config = BenchConfig.quick() if args.quick else BenchConfig.normal()
    if args.repeats is not None:
        if args.repeats < 1:
            print("--repeats must be >= 1", file=sys.stderr)
            return 2
        config = replace(config, repeats=args.repeats)
    if args.profile:
        recorded = load_bybit()
        print(paths.profile_full_path(recorded.items(config.bybit_frames), recorded), file=out)
        return 0
    summary = run(config, progress)
    print(table(summary), file=out)
    if args.json:
        print(json.dumps(summary, separators=(",", ":")), file=out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return execute(_arguments(argv))


if __name__ == "__main__":
    sys.exit(main())
