"""Smoke test of `flowgauge bench`: every measured path runs on tiny inputs in 3 interleaved rounds and `--json`
ends with a complete summary. No timing assertions: a tiny run on a shared machine measures nothing; the test
checks that every figure is produced, that the books stayed valid (a broken frame loop would skip work and
inflate figures), that nothing was dropped on the bus, and that the long cases are reported as skipped.
"""

from __future__ import annotations

import argparse
import io
import json
import math

from flowgauge.bench import add_arguments
from flowgauge.bench.report import BenchConfig, execute

REQUIRED = (
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
    "p99_us_at_5k",
    "p99_recv_to_publish_us_at_5k",
    "p99_recv_to_publish_us_at_20k",
    "rss_mb_500x200",
    "scale_out_msgs_per_s",
)
RATIOS = [key for key in REQUIRED if "_vs_" in key]
PATHS = (
    "parse_book_bybit",
    "cryptofeed_parse_book_bybit",
    "full_path_bybit",
    "full_path_all_fields_bybit",
    "parse_book_binanceusdm",
    "cryptofeed_parse_book_binanceusdm",
    "full_path_binanceusdm",
    "parse_book_bybit_cf_frames",
    "cryptofeed_parse_book_bybit_cf_frames",
    "full_path_bybit_cf_frames",
    "parse_book_binanceusdm_cf_frames",
    "cryptofeed_parse_book_binanceusdm_cf_frames",
    "full_path_binanceusdm_cf_frames",
    "full_path_bybit_mixed",
    "full_path_synthetic",
    "e2e_ours_bybit",
    "e2e_ours_picows_bybit",
    "e2e_cryptofeed_bybit",
    "e2e_transport_only",
    "e2e_transport_picows",
)
TINY = BenchConfig.tiny()
ROUNDS = TINY.repeats
LONG_CASES = ("cpu_us_per_payload_demo_mix", "instruments_per_core_at_20hz")


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def test_real_runs_take_at_least_nine_rounds() -> None:
    """Timings drift 20-40% between runs here: a figure is a median over >= 9 interleaved rounds (the smoke test
    below runs fewer, on tiny inputs, only to show every path runs and aggregates)."""
    assert BenchConfig.normal().repeats >= 9
    assert BenchConfig.quick().repeats >= 9


def test_bench_json_summary_has_every_figure() -> None:
    # Arrange: the CLI's own argument parser, with --json.
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--json"])
    out = io.StringIO()

    # Act
    code = execute(args, out, config=TINY, progress=None)

    # Assert: the output ends with one JSON object carrying every tracked figure.
    assert code == 0
    lines = out.getvalue().rstrip("\n").splitlines()
    summary = json.loads(lines[-1])
    assert "parse+book vs cryptofeed, Bybit" in out.getvalue()  # the table came first
    for key in REQUIRED:
        assert _positive(summary[key]), (key, summary[key])
    assert summary["cryptofeed_version"]
    assert summary["gaps"] == []
    assert summary["core"] in ("compiled", "python")
    assert summary["field_set"] == "core-v1"
    # Every ratio was measured in each of the interleaved rounds; median, min and max are reported.
    assert summary["rounds"] == ROUNDS
    for key in RATIOS:
        samples = summary["ratio_samples"][key]
        assert len(samples) == ROUNDS, (key, samples)
        assert summary[f"{key}_min"] <= summary[key] <= summary[f"{key}_max"], key
    for name in PATHS:
        figures = summary["raw"][name]
        assert _positive(figures["msgs_per_s"]), name
        assert len(figures["msgs_per_s_samples"]) == ROUNDS, name
        assert figures["invalid_books"] == 0, name
        assert figures["dropped"] == 0, name
    assert summary["raw"]["full_path_bybit"]["published"] >= summary["raw"]["full_path_bybit"]["messages"]
    # Both baselines are re-measured in this run.
    for name in ("cryptofeed_parse_book_bybit", "cryptofeed_parse_book_binanceusdm", "e2e_cryptofeed_bybit"):
        assert _positive(summary["baselines"][name]["median"]), name
    # Latency from the feeder process: every frame reached the pipeline and published; waiting included, so
    # receive -> publish is never below the handle-only time of the same frames.
    for latency in (summary["latency"], summary["latency_20k"]):
        assert latency["invalid_books"] == 0 and latency["unpublished"] == 0
        seconds = TINY.latency_seconds if latency["rate"] == TINY.latency_rate else TINY.latency_seconds_high
        assert latency["messages"] == int(latency["rate"] * seconds)
        assert len(latency["recv_to_publish_p99_us_samples"]) == ROUNDS
        assert latency["recv_to_publish_p50_us"] >= latency["p50_us"] > 0
    # The frames carry the recordings' level count, not the old synthetic 4.8.
    assert summary["inputs"]["bybit_cf_frames"]["levels"] / summary["inputs"]["bybit_cf_frames"]["frames"] > 10
    # The long cases are skipped in this mode, visibly: the keys are null and a note says why.
    for key in LONG_CASES:
        assert key in summary and summary[key] is None, key
        assert "not run" in summary["skipped"][key], key
    assert (
        summary["rss"]["levels_held"] == summary["rss"]["instruments"] * summary["rss"]["levels_per_side"] * 2
    )
    assert all(row["invalid_books"] == 0 for row in summary["scale_out"]["sharded"])
    assert set(summary["targets"]) >= {
        "parse_book_vs_cryptofeed_bybit",
        "full_path_vs_cryptofeed_binanceusdm",
        "e2e_vs_cryptofeed_bybit",
        "p99_recv_to_publish_us_at_5k",
        "cpu_us_per_payload_demo_mix",
    }
