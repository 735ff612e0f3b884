"""`flowgauge bench`: flowgauge's pipeline measured against cryptofeed's handlers on the same frames.

A tool, not part of the daemon: only the CLI imports it (this light module, to build its options), and it
adds no work to the daemon's paths. `frames` and `synthetic` make the inputs, `paths` times the pipelines,
`cryptofeed_driver` runs the baseline (optional dependency, `pip install "flowgauge[bench]"`), `sample_shape`
makes frames shaped like cryptofeed's sample data, `feeder` measures receive -> publish latency from a feeder
process, `demo_mix` measures a real daemon on the five simulators, and `report` runs everything in
interleaved rounds and prints the table and the JSON summary.

`flowgauge bench-bus` (`bus`, with `bus_payloads`, `bus_phases`, `bus_subscriber`, `bus_report`, `brokers`)
measures the bus backends instead: publish rate and end-to-end latency to an SDK subscriber, against brokers it
starts itself.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "add_bus_arguments"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The bench options, shared by `flowgauge bench` and `benchmarks/run_bench.py`.

    Kept here, away from the measuring modules, so building the CLI parser imports nothing heavy.
    """
    parser.add_argument("--json", action="store_true", help="end the output with one JSON object")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller inputs, still 9 rounds; skips the demo mix and the books-per-core search (reported null)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        metavar="N",
        help="interleaved rounds per measurement (default 9)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a cProfile of the full path on the Bybit frames instead of measuring",
    )


def add_bus_arguments(parser: argparse.ArgumentParser) -> None:
    """The `flowgauge bench-bus` options (kept here for the same reason as `add_arguments`)."""
    parser.add_argument("--json", action="store_true", help="end the output with one JSON object")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 3 rounds, 2,000 messages per rate round, 0.3 s of latency per round")
    parser.add_argument("--rounds", type=_positive_int, default=None, metavar="N",
                        help="interleaved rounds (default 5; 3 with --quick)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
