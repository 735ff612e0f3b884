"""Smoke test of `flowgauge bench`: every measured path runs on tiny inputs and `--json` ends with a complete
summary. No timing assertions: a tiny run on a shared machine measures nothing; the test checks that every
figure is produced, that the books stayed valid (a broken frame loop would skip work and inflate figures),
and that nothing was dropped on the bus.
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
    "e2e_vs_cryptofeed_bybit",
    "p99_us_at_5k",
    "rss_mb_500x200",
    "scale_out_msgs_per_s",
)
PATHS = (
    "parse_book_bybit",
    "cryptofeed_parse_book_bybit",
    "full_path_bybit",
    "parse_book_binanceusdm",
    "cryptofeed_parse_book_binanceusdm",
    "full_path_binanceusdm",
    "full_path_bybit_mixed",
    "full_path_synthetic",
    "e2e_ours_bybit",
    "e2e_cryptofeed_bybit",
    "e2e_transport_only",
)


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def test_bench_json_summary_has_every_figure() -> None:
    # Arrange: the CLI's own argument parser, with --json.
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--json"])
    out = io.StringIO()

    # Act
    code = execute(args, out, config=BenchConfig.tiny(), progress=None)

    # Assert: the output ends with one JSON object carrying every tracked figure.
    assert code == 0
    lines = out.getvalue().rstrip("\n").splitlines()
    summary = json.loads(lines[-1])
    assert "parse+book vs cryptofeed, Bybit" in out.getvalue()  # the table came first
    for key in REQUIRED:
        assert _positive(summary[key]), (key, summary[key])
    assert summary["cryptofeed_version"]
    assert summary["gaps"] == []
    for name in PATHS:
        figures = summary["raw"][name]
        assert _positive(figures["msgs_per_s"]), name
        assert figures["invalid_books"] == 0, name
        assert figures["dropped"] == 0, name
    assert summary["raw"]["full_path_bybit"]["published"] >= summary["raw"]["full_path_bybit"]["messages"]
    assert _positive(summary["latency"]["p50_us"]) and summary["latency"]["invalid_books"] == 0
    assert (
        summary["rss"]["levels_held"] == summary["rss"]["instruments"] * summary["rss"]["levels_per_side"] * 2
    )
    assert all(row["invalid_books"] == 0 for row in summary["scale_out"]["sharded"])
    assert set(summary["targets"]) >= set(REQUIRED) - {"scale_out_msgs_per_s"}
