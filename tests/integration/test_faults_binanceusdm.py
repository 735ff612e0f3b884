"""Every Binance USD-M fault back to back against one real daemon, every published payload checked against ground
truth (issue 10 items 1-2).

Timeline. A `BinanceUsdmSimulator` (in this process, at 2x speed: ~38 depth diffs/s per symbol) serves BTCUSDT
and ETHUSDT; `flowgauge run` (a real subprocess, one payload per applied message: `publish.min_interval_ms: 0`,
`publish.conflate: off`; watchdog `stale_after_s` 1 s; REST depth limit 100) connects to it: a `/public`
connection for both books (REST depth snapshot + buffered diffs, `pu` continuity) and a `/market` one for
trades. Once both books are VALID the scenario below (a YAML scenario file, `after_s` counted from then) is
applied: the book-stream faults alternate between BTCUSDT and ETHUSDT, a slow and two rate-limited (429, 418)
REST snapshots follow a dropped diff each, then the clock faults and the connection faults (a 17 MiB frame, a
SUBSCRIBE refused on the reconnect after an abrupt disconnect, a half-open connection). This test subscribes to
the daemon's embedded bus for all of it, then fetches the simulator's truth. About 20 s.

Asserted: zero wrong payloads (best levels, depth_imb_5/10, ofi) against the truth at each payload's `book_seq`
(a diff's `u`, or the REST snapshot's `lastUpdateId`); each fault's books go INVALID (or the connection drops) and
are VALID again within the fault's bound (the resync interval + the snapshot latency + 2 s, plus what the fault
adds); a duplicated diff leaves the book VALID (Binance's rule drops it); every INVALID period has a fault aimed
at that book or its connection, and the other book keeps publishing through each instrument fault; the daemon
waits out Retry-After.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fault_scenarios import Bus, fired, periods
from tests.integration.fault_harness import Rules, check_payloads, check_recovery, timeline
from tests.procs import TIMEOUT_FACTOR, flowgauge, free_port, wait_for

from flowgauge.feeds import RESYNC_MIN_INTERVAL_NS
from flowgauge.simulate import DATA_DIR, SIMULATORS
from flowgauge.simulate.binanceusdm import BinanceUsdmSimulator
from flowgauge.simulate.faults import load_scenario
from flowgauge.simulate.truth import fetch_truth

pytestmark = pytest.mark.integration

SPEED = 2.0
STALE_AFTER_S = 1.0  # the daemon's watchdog (config): what finds a half-open connection
BACKOFF_MAX_S = 0.3  # the daemon's reconnect delay cap (config)
RESYNC_S = RESYNC_MIN_INTERVAL_NS / 1e9  # the daemon's resync interval
SNAPSHOT_LATENCY_S = 0.1  # a REST depth answer on loopback, plus slow_snapshot's delay where it fires
MARGIN_S = 2.0 * TIMEOUT_FACTOR
DETECT_S = 1.0 * TIMEOUT_FACTOR  # a fault on the stream shows as INVALID within this (the next diff finds it)
SLOW_DELAY_S = 1.0
HALF_OPEN_S = 2.0
REFUSE = 2
RETRY_AFTER_S = 1.0
REST_RETRY_S = 1.0  # the REST scheduler's first retry delay after a failed snapshot

SYMBOLS = {"BTC/USDT:USDT": "BTCUSDT", "ETH/USDT:USDT": "ETHUSDT"}
DEPTH = "/fapi/v1/depth"

# after_s from the moment both books are VALID. The book faults alternate between the books every 0.6 s, so each
# book gets one every 1.2 s (> the resync interval); the connection faults come every ~1 s.
SCENARIO: list[dict[str, Any]] = [
    {"fault": "drop_diff", "instrument": "BTCUSDT", "after_s": 0.2},
    {"fault": "duplicate_diff", "instrument": "ETHUSDT", "after_s": 0.2},
    {"fault": "seq_gap", "instrument": "ETHUSDT", "after_s": 0.8, "by": 500},
    {"fault": "reorder_diff", "instrument": "BTCUSDT", "after_s": 1.4},
    {"fault": "malformed_json", "instrument": "ETHUSDT", "after_s": 2.0},
    {"fault": "truncated_frame", "instrument": "BTCUSDT", "after_s": 2.6},
    # A dropped diff makes the daemon ask for a snapshot, which comes late / is refused with Retry-After.
    {"fault": "slow_snapshot", "instrument": "ETHUSDT", "after_s": 3.2, "delay_s": SLOW_DELAY_S},
    {"fault": "drop_diff", "instrument": "ETHUSDT", "after_s": 3.2},
    {"fault": "rate_limit", "instrument": "BTCUSDT", "after_s": 3.8, "path": DEPTH, "retry_after": RETRY_AFTER_S},
    {"fault": "drop_diff", "instrument": "BTCUSDT", "after_s": 3.8},
    {
        "fault": "rate_limit",
        "instrument": "ETHUSDT",
        "after_s": 4.6,
        "path": DEPTH,
        "status": 418,
        "retry_after": RETRY_AFTER_S,
    },
    {"fault": "drop_diff", "instrument": "ETHUSDT", "after_s": 4.6},
    {"fault": "clock_skew", "after_s": 5.0, "seconds": 2},
    {"fault": "clock_jump", "after_s": 5.3, "seconds": -2},  # and back: a clock that jumps backwards
    {"fault": "disconnect", "after_s": 7.0},
    {"fault": "forced_disconnect", "after_s": 8.0},
    {"fault": "conn_limit", "after_s": 9.0, "refuse": REFUSE},
    {"fault": "oversized_frame", "instrument": "ETHUSDT", "after_s": 10.5},  # 17 MiB: over the daemon's 16 MiB
    # The reconnect after this disconnect has its SUBSCRIBE rejected (the whole request, as Binance answers).
    {"fault": "disconnect", "after_s": 11.5},
    {"fault": "sub_error", "instrument": "BTCUSDT", "after_s": 11.5},
    {"fault": "half_open", "after_s": 13.5, "for_s": HALF_OPEN_S},
]

GAP_BOUND_S = RESYNC_S + SNAPSHOT_LATENCY_S + MARGIN_S
RECONNECT_BOUND_S = BACKOFF_MAX_S + GAP_BOUND_S
# The watchdog ticks every stale_after/4; the books go INVALID once the close handshake the frozen peer never
# answers has timed out (the session's close_timeout, 1 s).
CLOSE_TIMEOUT_S = 1.0
HALF_OPEN_DETECT_S = 1.25 * STALE_AFTER_S + CLOSE_TIMEOUT_S + 0.5
RULES = Rules(
    symbols=SYMBOLS,
    venue="binanceusdm",
    bounds={
        **dict.fromkeys(("drop_diff", "reorder_diff", "seq_gap", "malformed_json", "truncated_frame"), GAP_BOUND_S),
        "slow_snapshot": SLOW_DELAY_S + GAP_BOUND_S,
        "rate_limit": RETRY_AFTER_S + REST_RETRY_S + GAP_BOUND_S,
        "disconnect": RECONNECT_BOUND_S,
        "forced_disconnect": RECONNECT_BOUND_S,
        "oversized_frame": RECONNECT_BOUND_S,
        "conn_limit": (REFUSE + 1) * BACKOFF_MAX_S + GAP_BOUND_S,
        # The rejected SUBSCRIBE is sent again with the book's resync (at most one per resync interval).
        "sub_error": RESYNC_S + GAP_BOUND_S,
        "half_open": HALF_OPEN_DETECT_S + RECONNECT_BOUND_S,
    },
    detect={
        **dict.fromkeys(("drop_diff", "reorder_diff", "seq_gap", "malformed_json", "truncated_frame"), DETECT_S),
        "duplicate_diff": 0.4,  # must stay VALID: checked over the diffs right after it
        **dict.fromkeys(("disconnect", "forced_disconnect", "conn_limit", "oversized_frame"), DETECT_S),
        "slow_snapshot": DETECT_S,
        "rate_limit": DETECT_S,
        "sub_error": DETECT_S,
        "half_open": HALF_OPEN_DETECT_S,
    },
    # sub_error: Binance answers per request, and the daemon's request carries both books.
    connection_kinds=("disconnect", "forced_disconnect", "conn_limit", "oversized_frame", "half_open", "sub_error"),
    never_invalidate=("duplicate_diff",),
    min_took={"slow_snapshot": SLOW_DELAY_S - 0.1, "rate_limit": RETRY_AFTER_S - 0.1},
)


def _config(path: Path, sim: BinanceUsdmSimulator, bus_port: int, http_port: int) -> Path:
    config = {
        "venues": {
            "binanceusdm": {
                "symbols": list(SYMBOLS),
                "ws_url": sim.ws_base,
                "rest_url": sim.http_url,
                "stale_after_s": STALE_AFTER_S,
                "backoff_initial_s": 0.1,
                "backoff_max_s": BACKOFF_MAX_S,
                # REST depth limit 100 (weight 5, not 20): the daemon's REST budget (1200 weight/min) then never
                # holds a snapshot back, however close the scenario packs its resyncs and reconnects.
                "book_depth": 100,
            }
        },
        "publish": {"min_interval_ms": 0, "conflate": "off"},  # one payload per applied message: OFI comparable
        "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port}},
        "http": {"host": "127.0.0.1", "port": http_port},
        "log_level": "INFO",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_every_binanceusdm_fault_back_to_back_against_the_truth(tmp_path: Path) -> None:
    # Arrange: the simulator, the daemon, the bus; the scenario from a YAML file.
    sim = BinanceUsdmSimulator(DATA_DIR / SIMULATORS["binanceusdm"].recording, port=0, speed=SPEED)
    sim.configure([], truth_capacity=50_000)
    scenario_file = tmp_path / "binanceusdm-faults.yaml"
    scenario_file.write_text(yaml.safe_dump({"faults": SCENARIO}))
    scenario = load_scenario(scenario_file)
    bus_port, http_port = free_port(), free_port()
    log_path = tmp_path / "daemon.log"
    async with sim:
        config = _config(tmp_path / "daemon.yaml", sim, bus_port, http_port)
        with flowgauge(["run", "-c", str(config)], log_path) as daemon:
            bus = Bus(bus_port)
            try:
                await wait_for(bus.open, "the embedded bus", timeout_s=20)
                await wait_for(lambda: bus.valid() == set(SYMBOLS), "both books VALID", timeout_s=30)
                # Act: the scenario, then until every fault fired and both books are VALID again.
                sim.configure(scenario)
                applied = time.time()
                await wait_for(
                    lambda: sum(sim.faults.fired.values()) == len(SCENARIO), "every fault fired", timeout_s=40
                )
                # The last fault (half-open) shows late, when the watchdog finds the silence: wait for both books
                # to have gone INVALID after it and come back (a loaded machine finds it later than an idle one).
                last = max(f.t for f in fired(sim.faults))
                await wait_for(
                    lambda: all(
                        p and p[-1][1] < math.inf for p in (periods(bus.messages, symbol, last) for symbol in SYMBOLS)
                    ),
                    "both books INVALID and VALID again after the last fault",
                    timeout_s=30,
                )
                # The simulator records a message's truth before sending it: all received so far have theirs.
                received = len(bus.messages)
                truth = {symbol: await fetch_truth(sim.http_url, venue_id) for symbol, venue_id in SYMBOLS.items()}
            finally:
                await bus.close()
            assert daemon.poll() is None, log_path.read_text()[-3000:]
        requests = list(sim.requests_log)

    messages = bus.messages[:received]
    # Assert 1: every payload against the truth at its book_seq.
    comparator = check_payloads(messages, truth, RULES)
    # A floor, not a rate: ~600-1,000 unloaded, 463 seen with two test workers and a busy core beside them.
    assert comparator.checked > 300 and comparator.ofi_checked > 150, (comparator.checked, comparator.ofi_checked)

    # Assert 2 and 3: recovery within bounds, other books untouched.
    faults = list(fired(sim.faults))
    assert sorted(f.kind for f in faults) == sorted(s.kind for s in scenario)
    problems = check_recovery(messages, faults, applied, RULES)
    assert problems == [], "\n".join([*problems, timeline(messages, faults, applied, RULES)])

    # Assert 4: after each rate-limited snapshot the daemon asked nothing of the venue's REST before Retry-After.
    for refused_at, path, status in requests:
        if status not in (418, 429):
            continue
        later = [t for t, p, _ in requests if t > refused_at and p.startswith("/fapi/")]
        assert not later or later[0] - refused_at >= RETRY_AFTER_S - 0.1, (path, status, later[:3])
