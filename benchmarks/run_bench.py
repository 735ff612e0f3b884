"""Run the benchmark, the same as `flowgauge bench`: `python benchmarks/run_bench.py --quick --json`.

A thin script so the benchmark can be run from a checkout without the console script installed; every
measurement lives in `flowgauge.bench`. Needs the optional `bench` extra for the cryptofeed comparison.
"""

from __future__ import annotations

import sys

from flowgauge.bench.report import main

if __name__ == "__main__":
    sys.exit(main())
