"""An exchange time far ahead of its receipt does not freeze the windows (both cores).

Found in review: one book message stamped a year ahead made every later event fall behind the windows' late
horizon, so `ofi_raw_1s` published 0.0 while `ofi` kept reporting flow, until the wall clock reached the stamp.
The engine now replaces such a time with the receive time (counted, logged) and applies the event itself.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from tests.conftest import linear_instrument

from flowgauge import core
from flowgauge.engine import FUTURE_LIMIT_NS, Engine
from flowgauge.types import BookDelta, BookSnapshot

SYM = "BTC/USDT:USDT"
TOPIC = "flowgauge.v1.bybit.BTC-USDT-USDT"
S = 1_000_000_000
YEAR = 365 * 24 * 3600 * S


@pytest.mark.parametrize("core_name", core.CORES)
def test_a_timestamp_a_year_ahead_is_replaced_and_the_windows_keep_counting(core_name: str) -> None:
    if core_name == core.COMPILED and core.fallback_reason() is not None:
        pytest.fail(f"the compiled core must be built here: {core.fallback_reason()}")
    out: list[dict[str, Any]] = []
    engine = Engine(lambda topic, body: out.append(orjson.loads(body)) if topic == TOPIC else None,
                    clock=lambda: 0, core_name=core_name)
    engine.add_instrument(linear_instrument())
    t = 10 * S
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 1, t, t))
    # The bid queue grows by 1 at every message (e_n = +1 each); the second message's exchange time is a year on.
    for seq in range(2, 12):
        t += S // 10
        stamp = t + YEAR if seq == 2 else t
        engine.handle(BookDelta("bybit", SYM, ((100.0, 5.0 + seq - 1),), (), seq, None, stamp, t))
    last = out[-1]
    assert last["book_seq"] == 11 and last["bid_sz"] == 15.0  # every update applied, the bogus one too
    assert last["ofi"] == 1.0
    assert last["ofi_raw_1s"] == 10.0  # the ten events of the last second (was 0.0: all dropped as late)
    assert last["ts_exchange"] == t
    assert engine.future_timestamps == 1
    assert engine.status()["future_timestamps"] == 1


def test_a_clock_merely_seconds_ahead_is_left_alone() -> None:
    out: list[bytes] = []
    engine = Engine(lambda topic, body: out.append(body), clock=lambda: 0)
    engine.add_instrument(linear_instrument())
    ahead = FUTURE_LIMIT_NS - S  # a venue clock ahead of ours, or the simulators' clock faults (seconds)
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 1, 10 * S + ahead, 10 * S))
    assert engine.future_timestamps == 0
    assert orjson.loads(out[-1])["ts_exchange"] == 10 * S + ahead
