"""`coverage` (issue 11 item 2) is the same in both cores: per band and side EXHAUSTED, per window PARTIAL."""

from __future__ import annotations

import pytest
from tests.conftest import linear_instrument

from flowgauge.book.l2 import L2Book
from flowgauge.core import _core
from flowgauge.metrics.accumulator import InstrumentMetrics
from flowgauge.metrics.compiled import CompiledInstrumentMetrics

S = 1_000_000_000
T0 = 1_786_000_000 * S


@pytest.mark.parametrize(
    ("bids", "asks", "expected"),
    [
        # both sides end inside 10 bps of the mid: all four band values are lower bounds
        ([(100.0, 1.0), (99.95, 1.0)], [(100.1, 1.0), (100.15, 1.0)],
         {"depth_bid_10bps", "depth_ask_10bps", "depth_bid_25bps", "depth_ask_25bps"}),
        # bids reach past 25 bps, asks end between 10 and 25 bps
        ([(100.0, 1.0), (99.0, 1.0)], [(100.1, 1.0), (100.2, 1.0)], {"depth_ask_25bps"}),
        ([(100.0, 1.0), (99.0, 1.0)], [(100.1, 1.0), (101.0, 1.0)], set()),
        ([(100.0, 1.0)], [], set()),  # an empty side is 0, not a lower bound; no mid: no band at all
    ],
)  # fmt: skip
def test_band_coverage_per_side_in_both_cores(
    bids: list[tuple[float, float]], asks: list[tuple[float, float]], expected: set[str]
) -> None:
    outs = []
    for metrics, book in ((InstrumentMetrics(linear_instrument()), L2Book()),
                          (CompiledInstrumentMetrics(linear_instrument()), _core.CBook(5000))):  # fmt: skip
        book.load(bids, asks, 1, T0)
        metrics.on_book(book, T0)
        outs.append(metrics.fields(book, T0 + 120 * S, "book"))  # windows long covered: only the bands remain
    assert list(outs[0].items()) == list(outs[1].items())
    coverage = outs[0]["coverage"]
    assert coverage == dict.fromkeys(expected, "EXHAUSTED")
    assert ("PARTIAL_WINDOW" in outs[0]["quality"]) == bool(expected)  # type: ignore[operator]
