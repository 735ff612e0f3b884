"""`flowgauge bench`: runs every measured path, interleaved and repeated in one process, and reports medians.

Sits at the top of `service.bench` (the CLI and `benchmarks/run_bench.py` call `main`). Prints progress to
stderr, a table to stdout and, with `--json`, ends stdout with ONE JSON object (schema `flowgauge.bench.v1`)
holding the ratios against cryptofeed, the latency and memory figures, and the raw numbers behind them.
Must not change the paths it measures; all timing lives in `bench.paths`.

Method: each repeat runs a block per comparison (cryptofeed and flowgauge on the same frames, back to back,
the order alternating between repeats, the blocks rotating), so slow phases of a shared machine hit both
sides of a ratio alike. A ratio is computed per repeat and the median of those is reported; throughput
figures are medians of their repeats. Latency at 5k msgs/s is repeated too; memory and the two-process
scale-out run once, in fresh child processes, after the repeats.
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
from flowgauge.bench.frames import RecordedFeed, frame_count, level_count, load_binance_usdm, load_bybit
from flowgauge.bench.synthetic import SyntheticStream

__all__ = ["TARGETS", "BenchConfig", "execute", "main", "run", "table"]

SCHEMA = "flowgauge.bench.v1"

# Issue 4's targets: key -> (comparison, threshold).
TARGETS: dict[str, tuple[str, float]] = {
    "parse_book_vs_cryptofeed_bybit": (">=", 4.0),
    "parse_book_vs_cryptofeed_binanceusdm": (">=", 4.0),
    "full_path_vs_cryptofeed_bybit": (">=", 2.5),
    "e2e_vs_cryptofeed_bybit": (">=", 4.0),
    "p99_us_at_5k": ("<", 250.0),
    "rss_mb_500x200": ("<", 300.0),
}


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Sizes of one benchmark run: `normal()` by default, `quick()` for a first look, `tiny()` for tests."""

    mode: str
    repeats: int
    bybit_frames: int  # recorded Bybit book frames per comparison run
    binance_frames: int  # recorded Binance USD-M depth frames per comparison run
    mixed_frames: int  # recorded Bybit data frames of every channel (full path on mixed traffic)
    synthetic_instruments: int
    synthetic_frames: int
    e2e_frames: int
    latency_rate: float = 5000.0
    latency_instruments: int = 100
    latency_seconds: float = 4.0
    rss_instruments: int = 500
    rss_levels: int = 200
    rss_deltas: int = 5000
    scale_processes: int = 2
    scale_instruments: int = 100
    scale_frames: int = 20000

    @classmethod
    def normal(cls) -> BenchConfig:
        return cls("normal", 3, 20_000, 6_000, 20_000, 100, 20_000, 20_000)

    @classmethod
    def quick(cls) -> BenchConfig:
        return cls(
            "quick",
            3,
            5_000,
            2_000,
            5_000,
            100,
            5_000,
            5_000,
            latency_seconds=1.0,
            rss_deltas=2000,
            scale_frames=5_000,
        )

    @classmethod
    def tiny(cls) -> BenchConfig:
        """For the smoke test only: every path runs, on sizes too small for the figures to mean anything."""
        return cls(
            "tiny",
            1,
            300,
            200,
            300,
            10,
            300,
            300,
            latency_seconds=0.1,
            rss_instruments=60,
            rss_deltas=200,
            scale_instruments=10,
            scale_frames=400,
        )


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(ours: float, theirs: float) -> float | None:
    return ours / theirs if theirs > 0 else None


class _Collector:
    """Samples of every measurement across repeats."""

    def __init__(self) -> None:
        self.runs: dict[str, list[paths.Run]] = {}
        self.ratios: dict[str, list[float]] = {}
        self.latency: list[dict[str, Any]] = []

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


def run(config: BenchConfig, progress: TextIO | None = sys.stderr) -> dict[str, Any]:
    """Run every measurement of `config`; returns the summary (what `--json` prints)."""

    def say(text: str) -> None:
        if progress is not None:
            print(text, file=progress, flush=True)

    gaps: list[str] = []
    cf_version = cryptofeed_version()
    if cf_version is None:
        gaps.append('cryptofeed is not installed (pip install "flowgauge[bench]"): no ratios')
    # Inputs, rendered once before anything is timed.
    bybit = load_bybit()
    bybit_items = bybit.items(config.bybit_frames)
    mixed = load_bybit(book_only=False)
    mixed_items = mixed.items(config.mixed_frames)
    binance: RecordedFeed | None = load_binance_usdm()
    binance_items = binance.items(config.binance_frames)
    try:
        paths.Pipeline("binanceusdm", binance.instruments, full=False)
    except (ImportError, KeyError, AttributeError, ValueError) as exc:
        gaps.append(f"binanceusdm pipeline unavailable ({exc!r}): no Binance figures")
        binance = None
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

    def ours(name: str, recorded: RecordedFeed, items: list[Any], full: bool) -> paths.Run:
        return collected.add(paths.measure_ours(name, recorded.venue, recorded.instruments, items, full=full))

    # A short untimed pass of each path: imports, caches and the allocator warm up before repeat 1.
    ours("warmup", bybit, bybit_items[:200], True)
    ours("warmup", bybit, bybit_items[:200], False)
    cf("warmup", bybit, bybit_items[:200])
    collected.runs.pop("warmup", None)

    def block_bybit(flip: bool) -> None:
        steps: list[Callable[[], paths.Run | None]] = [
            lambda: cf("cryptofeed_parse_book_bybit", bybit, bybit_items),
            lambda: ours("parse_book_bybit", bybit, bybit_items, False),
            lambda: ours("full_path_bybit", bybit, bybit_items, True),
        ]
        results = _in_order(steps, flip)
        collected.ratio("parse_book_vs_cryptofeed_bybit", results[1], results[0])
        collected.ratio("full_path_vs_cryptofeed_bybit", results[2], results[0])

    def block_binance(flip: bool) -> None:
        if binance is None:
            return
        steps: list[Callable[[], paths.Run | None]] = [
            lambda: cf("cryptofeed_parse_book_binanceusdm", binance, binance_items),
            lambda: ours("parse_book_binanceusdm", binance, binance_items, False),
            lambda: ours("full_path_binanceusdm", binance, binance_items, True),
        ]
        results = _in_order(steps, flip)
        collected.ratio("parse_book_vs_cryptofeed_binanceusdm", results[1], results[0])
        collected.ratio("full_path_vs_cryptofeed_binanceusdm", results[2], results[0])

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

    def block_latency(flip: bool) -> None:
        collected.latency.append(
            paths.latency_at_rate(config.latency_rate, config.latency_instruments, config.latency_seconds)
        )

    with paths.FrameServer(config.e2e_frames) as server:
        e2e_levels = level_count(bybit.items(config.e2e_frames))

        def block_e2e(flip: bool) -> None:
            steps: list[Callable[[], paths.Run | None]] = [
                lambda: collected.add(paths.e2e_cryptofeed(server.url, bybit)) if have_cf else None,
                lambda: collected.add(paths.e2e_ours(server.url, bybit)),
                lambda: collected.add(paths.e2e_transport(server.url)),
            ]
            results = _in_order(steps, flip)
            for result in results:
                if result is not None:
                    result.levels = e2e_levels
            collected.ratio("e2e_vs_cryptofeed_bybit", results[1], results[0])

        blocks = [block_bybit, block_binance, block_e2e, block_more, block_latency]
        for r in range(config.repeats):
            started = time.perf_counter()
            order = blocks[r % len(blocks) :] + blocks[: r % len(blocks)]
            for block in order:
                block(r % 2 == 1)
            say(f"repeat {r + 1}/{config.repeats} done in {time.perf_counter() - started:.1f}s")

    say(f"memory: {config.rss_instruments} books of {config.rss_levels} levels in a fresh process ...")
    rss = paths.rss(config.rss_instruments, config.rss_levels, config.rss_deltas)
    say(f"scale-out: 1 and {config.scale_processes} processes ...")
    single = paths.scale_out(1, config.scale_instruments, config.scale_frames, config.repeats)
    sharded = paths.scale_out(
        config.scale_processes, config.scale_instruments, config.scale_frames, config.repeats
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
        },
        {"bybit": bybit, "binanceusdm": binance, "mixed": mixed},
    )


def _in_order(steps: list[Callable[[], paths.Run | None]], flip: bool) -> list[paths.Run | None]:
    """Run `steps` forwards (or backwards when `flip`), returning results in the steps' own order."""
    results: list[paths.Run | None] = [None] * len(steps)
    indexes = range(len(steps) - 1, -1, -1) if flip else range(len(steps))
    for i in indexes:
        results[i] = steps[i]()
    return results


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
) -> dict[str, Any]:
    def instruments_of(name: str) -> int:
        if "synthetic" in name:
            return config.synthetic_instruments
        feed = feeds.get("binanceusdm") if "binance" in name else feeds.get("bybit")
        return len(feed.instruments) if feed is not None else 0

    raw: dict[str, Any] = {}
    for name, runs in collected.runs.items():
        rates = [run.msgs_per_s for run in runs]
        level_rates = [run.levels_per_s for run in runs]
        raw[name] = {
            "msgs_per_s": _median(rates),
            "levels_per_s": _median(level_rates),
            "msgs_per_s_samples": [round(v, 1) for v in rates],
            "messages": runs[-1].messages,
            "levels": runs[-1].levels,
            "instruments": instruments_of(name),
            "published": runs[-1].published,
            "dropped": max(run.dropped for run in runs),
            "invalid_books": max(run.invalid_books for run in runs),
        }
    latency = collected.latency
    latency_summary = {
        key: _median([sample[key] for sample in latency])
        for key in ("p50_us", "p99_us", "p999_us", "max_us", "achieved_rate", "behind_p99_us")
    } | {
        "rate": config.latency_rate,
        "instruments": config.latency_instruments,
        "messages": latency[-1]["messages"] if latency else 0,
        "p99_us_samples": [sample["p99_us"] for sample in latency],
        "dropped": max((sample["dropped"] for sample in latency), default=0),
        "invalid_books": max((sample["invalid_books"] for sample in latency), default=0),
    }
    single_rate = _median([s["msgs_per_s"] for s in single])
    sharded_rate = _median([s["msgs_per_s"] for s in sharded])
    summary: dict[str, Any] = {"schema": SCHEMA, "mode": config.mode, "repeats": config.repeats}
    for key in (
        "parse_book_vs_cryptofeed_bybit",
        "parse_book_vs_cryptofeed_binanceusdm",
        "full_path_vs_cryptofeed_bybit",
        "full_path_vs_cryptofeed_binanceusdm",
        "e2e_vs_cryptofeed_bybit",
    ):
        summary[key] = _median(collected.ratios.get(key, []))
    summary["p50_us_at_5k"] = latency_summary["p50_us"]
    summary["p99_us_at_5k"] = latency_summary["p99_us"]
    summary["p999_us_at_5k"] = latency_summary["p999_us"]
    summary["rss_mb_500x200"] = rss["rss_mb"]
    summary["scale_out_msgs_per_s"] = sharded_rate
    summary["scale_out_single_process_msgs_per_s"] = single_rate
    summary["scale_out_speedup"] = (
        sharded_rate / single_rate if sharded_rate is not None and single_rate else None
    )
    summary["targets"] = {
        key: {
            "target": f"{op} {threshold:g}",
            "value": summary.get(key),
            "met": _met(summary.get(key), op, threshold),
        }
        for key, (op, threshold) in TARGETS.items()
    }
    summary["cryptofeed_version"] = cf_version
    summary["ratio_samples"] = {
        key: [round(v, 3) for v in values] for key, values in collected.ratios.items()
    }
    summary["raw"] = raw
    summary["latency"] = latency_summary
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
        "event_loop": "uvloop" if paths.loop_factory() is not None else "asyncio",
        "versions": {
            name: _version(name)
            for name in ("flowgauge", "cryptofeed", "orjson", "msgspec", "websockets", "uvloop")
        },
    }
    summary["gaps"] = gaps
    return summary


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _met(value: float | None, op: str, threshold: float) -> bool | None:
    if value is None:
        return None
    return value >= threshold if op == ">=" else value < threshold


# ---------------------------------------------------------------------------------------------- output


def _fmt(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def table(summary: dict[str, Any]) -> str:
    """The human-readable table of a summary (what the README's Performance section shows)."""
    raw = summary["raw"]
    synthetic_books = raw.get("full_path_synthetic", {}).get("instruments", "?")
    rss = summary["rss"]
    lines = [
        f"flowgauge bench: {summary['mode']}, {summary['repeats']} repeat(s), medians; "
        f"cryptofeed {summary['cryptofeed_version'] or 'not installed'}, "
        f"Python {summary['environment']['python']}, {summary['environment']['event_loop']}, "
        f"{summary['environment']['cpus']} CPU(s)",
        "",
        f"{'path':<44}{'msgs/s':>12}{'levels/s':>14}",
    ]
    rows = [
        ("parse_book_bybit", "flowgauge parse+book, Bybit"),
        ("cryptofeed_parse_book_bybit", "cryptofeed handler, Bybit"),
        ("full_path_bybit", "flowgauge full path, Bybit"),
        ("parse_book_binanceusdm", "flowgauge parse+book, Binance USD-M"),
        ("cryptofeed_parse_book_binanceusdm", "cryptofeed handler, Binance USD-M"),
        ("full_path_binanceusdm", "flowgauge full path, Binance USD-M"),
        ("full_path_bybit_mixed", "flowgauge full path, Bybit all channels"),
        ("full_path_synthetic", f"flowgauge full path, synthetic x{synthetic_books}"),
        ("e2e_ours_bybit", "flowgauge end to end, loopback ws"),
        ("e2e_cryptofeed_bybit", "cryptofeed end to end, loopback ws"),
        ("e2e_transport_only", "websocket transport alone, loopback"),
    ]
    for key, label in rows:
        figures = raw.get(key)
        if figures is None:
            continue
        lines.append(f"{label:<44}{_fmt(figures['msgs_per_s']):>12}{_fmt(figures['levels_per_s']):>14}")
    lines += ["", f"{'target':<44}{'value':>12}{'goal':>14}  met"]
    labels = {
        "parse_book_vs_cryptofeed_bybit": ("parse+book vs cryptofeed, Bybit", 2, "x"),
        "parse_book_vs_cryptofeed_binanceusdm": ("parse+book vs cryptofeed, Binance USD-M", 2, "x"),
        "full_path_vs_cryptofeed_bybit": ("full path vs cryptofeed parse+book, Bybit", 2, "x"),
        "e2e_vs_cryptofeed_bybit": ("end to end vs cryptofeed, loopback ws", 2, "x"),
        "p99_us_at_5k": ("p99 latency at 5k msgs/s, 100 books", 0, " us"),
        "rss_mb_500x200": ("RSS, 500 books x 200 levels", 0, " MB"),
    }
    for key, target in summary["targets"].items():
        label, digits, unit = labels[key]
        met = {True: "yes", False: "NO", None: "n/a"}[target["met"]]
        lines.append(f"{label:<44}{_fmt(target['value'], digits, unit):>12}{target['target']:>14}  {met}")
    latency = summary["latency"]
    lines += [
        "",
        f"latency at {latency['rate']:,.0f} msgs/s over {latency['instruments']} books: "
        f"p50 {_fmt(latency['p50_us'], 0)} us, p99 {_fmt(latency['p99_us'], 0)} us, "
        f"p999 {_fmt(latency['p999_us'], 0)} us, max {_fmt(latency['max_us'], 0)} us",
        f"memory: {_fmt(rss['rss_mb'], 1)} MB RSS with {rss['instruments']} books of "
        f"{rss['levels_per_side']} levels per side (process baseline {_fmt(rss['baseline_mb'], 1)} MB)",
        f"scale-out: {summary['scale_out']['processes']} processes "
        f"{_fmt(summary['scale_out_msgs_per_s'])} msgs/s, "
        f"1 process {_fmt(summary['scale_out_single_process_msgs_per_s'])} msgs/s "
        f"({_fmt(summary['scale_out_speedup'], 2, 'x')})",
    ]
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
