"""`flowgauge bench`: flowgauge's pipeline measured against cryptofeed's handlers on the same frames.

A tool, not part of the daemon: only the CLI imports it (this light module, to build its options), and it
adds no work to the daemon's paths. `frames` and `synthetic` make the inputs, `paths` times the pipelines,
`cryptofeed_driver` runs the baseline (optional dependency, `pip install "flowgauge[bench]"`), and `report`
runs everything, repeats it and prints the table and the JSON summary.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options, shared by `flowgauge bench` and `benchmarks/run_bench.py`.

    Kept here, away from the measuring modules, so building the CLI parser imports nothing heavy.
    """
    parser.add_argument("--json", action="store_true", help="end the output with one JSON object")
    parser.add_argument("--quick", action="store_true", help="smaller inputs: a first look in about a minute")
    parser.add_argument(
        "--repeats", type=int, default=None, metavar="N", help="repeats per measurement (default 3)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile of the full path on the Bybit frames instead of measuring",
    )
