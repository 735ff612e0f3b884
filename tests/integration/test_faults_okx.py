"""Every OKX fault back to back against one real daemon, every published payload checked against ground truth
(issue 10 items 1-2).

Timeline. An `OkxSimulator` (in this process, at 4x speed: ~35 `books` updates/s per instrument, seqId/prevSeqId
and the real CRC32 checksum on every update) serves BTC-USDT-SWAP and ETH-USDT-SWAP; `flowgauge run` (a real
subprocess, one payload per applied message: `publish.min_interval_ms: 0`, `publish.conflate: off`; watchdog
`stale_after_s` 1 s) connects to it: one connection, WS snapshot on subscribe, REST `/api/v5/market/books`
snapshots for resyncs, every non-zero checksum verified. Once both books are VALID the scenario below (a YAML
scenario file, `after_s` counted from then) is applied: the book-stream faults alternate between the two books,
a slow and two rate-limited (429, 418) REST snapshots follow a dropped update each, then the clock faults and the
connection faults (a 17 MiB frame, a subscribe whose ETH `books` arg is refused on the reconnect after an abrupt
disconnect, a half-open connection). This test subscribes to the daemon's embedded bus for all of it, then
fetches the simulator's truth. About 20 s.

Asserted: zero wrong payloads (best levels, depth_imb_5/10, ofi; sizes in base units: contracts x ctVal) against
the truth at each payload's `book_seq` (the seqId); each fault's books go INVALID (or the connection drops) and are
VALID again within the fault's bound (the resync interval + the snapshot latency + 2 s, plus what the fault adds);
a duplicated update leaves the book VALID; every INVALID period has a fault aimed at that book or its connection,
and the other book keeps publishing through each book fault; the daemon waits out Retry-After.
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
from flowgauge.simulate.faults import load_scenario
from flowgauge.simulate.okx import OkxSimulator
from flowgauge.simulate.truth import fetch_truth

pytestmark = pytest.mark.integration

SPEED = 4.0
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

SYMBOLS = {"BTC/USDT:USDT": "BTC-USDT-SWAP", "ETH/USDT:USDT": "ETH-USDT-SWAP"}
SIZE_FACTOR = {"BTC/USDT:USDT": 0.01, "ETH/USDT:USDT": 0.1}  # ctVal x ctMult (the recorded instruments)
BOOKS = "/api/v5/market/books"

# after_s from the moment both books are VALID, plus T0 (the connect's resync counts as each book's last one: a
# fault sooner would have its resync deferred). The book faults alternate between the books every 0.6 s, so each
# book gets one every 1.2 s (> the resync interval); the connection faults come every ~0.9 s.
B, E = "BTC-USDT-SWAP", "ETH-USDT-SWAP"
T0 = 0.8
SCENARIO: list[dict[str, Any]] = [
    {"fault": "drop_diff", "instrument": B, "after_s": T0 + 0.2},
    {"fault": "duplicate_diff", "instrument": E, "after_s": T0 + 0.2},
    {"fault": "seq_gap", "instrument": E, "after_s": T0 + 0.8, "by": 500},
    {"fault": "reorder_diff", "instrument": B, "after_s": T0 + 1.4},
    {"fault": "bad_checksum", "instrument": E, "after_s": T0 + 2.0},
    {"fault": "malformed_json", "instrument": B, "after_s": T0 + 2.6},
    {"fault": "truncated_frame", "instrument": E, "after_s": T0 + 3.2},
    # A dropped update makes the daemon ask for a REST snapshot, which comes late / is refused with Retry-After.
    {"fault": "slow_snapshot", "instrument": B, "after_s": T0 + 3.8, "delay_s": SLOW_DELAY_S},
    {"fault": "drop_diff", "instrument": B, "after_s": T0 + 3.8},
    {"fault": "rate_limit", "instrument": E, "after_s": T0 + 4.4, "path": BOOKS, "retry_after": RETRY_AFTER_S},
    {"fault": "drop_diff", "instrument": E, "after_s": T0 + 4.4},
    {
        "fault": "rate_limit",
        "instrument": B,
        "after_s": T0 + 5.2,
        "path": BOOKS,
        "status": 418,
        "retry_after": RETRY_AFTER_S,
    },
    {"fault": "drop_diff", "instrument": B, "after_s": T0 + 5.2},  # VALID again ~2.5 s later (Retry-After, retry)
    {"fault": "clock_skew", "after_s": T0 + 5.6, "seconds": 2},
    {"fault": "clock_jump", "after_s": T0 + 5.9, "seconds": -2},  # and back: a clock that jumps backwards
    {"fault": "disconnect", "after_s": T0 + 7.6},
    {"fault": "forced_disconnect", "after_s": T0 + 8.5},
    {"fault": "conn_limit", "after_s": T0 + 9.4, "refuse": REFUSE},
    {"fault": "oversized_frame", "instrument": E, "after_s": T0 + 10.8},  # 17 MiB: over the daemon's 16 MiB
    # The reconnect after this disconnect has ETH's `books` arg refused (OKX answers per arg).
    {"fault": "disconnect", "after_s": T0 + 11.7},
    {"fault": "sub_error", "instrument": E, "after_s": T0 + 11.7},
    {"fault": "half_open", "after_s": T0 + 13.5, "for_s": HALF_OPEN_S},
]

GAP_KINDS = ("drop_diff", "reorder_diff", "seq_gap", "bad_checksum", "malformed_json", "truncated_frame")
GAP_BOUND_S = RESYNC_S + SNAPSHOT_LATENCY_S + MARGIN_S
RECONNECT_BOUND_S = BACKOFF_MAX_S + GAP_BOUND_S
# The watchdog ticks every stale_after/4; the books go INVALID once the close handshake the frozen peer never
# answers has timed out (the session's close_timeout, 1 s).
CLOSE_TIMEOUT_S = 1.0
HALF_OPEN_DETECT_S = 1.25 * STALE_AFTER_S + CLOSE_TIMEOUT_S + 0.5
RULES = Rules(
    symbols=SYMBOLS,
    venue="okx",
    bounds={
        **dict.fromkeys(GAP_KINDS, GAP_BOUND_S),
        "slow_snapshot": SLOW_DELAY_S + GAP_BOUND_S,
        "rate_limit": RETRY_AFTER_S + REST_RETRY_S + GAP_BOUND_S,
        "disconnect": RECONNECT_BOUND_S,
        "forced_disconnect": RECONNECT_BOUND_S,
        "oversized_frame": RECONNECT_BOUND_S,
        "conn_limit": (REFUSE + 1) * BACKOFF_MAX_S + GAP_BOUND_S,
        # The refused `books` arg is subscribed again with the book's resync (at most one per resync interval).
        "sub_error": RESYNC_S + GAP_BOUND_S,
        "half_open": HALF_OPEN_DETECT_S + RECONNECT_BOUND_S,
    },
    detect={
        **dict.fromkeys(GAP_KINDS, DETECT_S),
        "duplicate_diff": 0.4,  # must stay VALID: checked over the diffs right after it
        **dict.fromkeys(("disconnect", "forced_disconnect", "conn_limit", "oversized_frame"), DETECT_S),
        "slow_snapshot": DETECT_S,
        "rate_limit": DETECT_S,
        "sub_error": DETECT_S,
        "half_open": HALF_OPEN_DETECT_S,
    },
    connection_kinds=("disconnect", "forced_disconnect", "conn_limit", "oversized_frame", "half_open"),
    never_invalidate=("duplicate_diff",),
    min_took={"slow_snapshot": SLOW_DELAY_S - 0.1, "rate_limit": RETRY_AFTER_S - 0.1},
    size_factor=SIZE_FACTOR,
)


def _config(path: Path, sim: OkxSimulator, bus_port: int, http_port: int) -> Path:
    config = {
        "venues": {
            "okx": {
                "symbols": list(SYMBOLS),
                "ws_url": sim.ws_url(),
                "rest_url": sim.http_url,
                "stale_after_s": STALE_AFTER_S,
                "backoff_initial_s": 0.1,
                "backoff_max_s": BACKOFF_MAX_S,
            }
        },
        "publish": {"min_interval_ms": 0, "conflate": "off"},  # one payload per applied message: OFI comparable
        "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port}},
        "http": {"host": "127.0.0.1", "port": http_port},
        "log_level": "INFO",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def test_every_okx_fault_back_to_back_against_the_truth(tmp_path: Path) -> None:
    # Arrange: the simulator, the daemon, the bus; the scenario from a YAML file.
    sim = OkxSimulator(DATA_DIR / SIMULATORS["okx"].recording, port=0, speed=SPEED, checksum=True)
    sim.configure([], truth_capacity=50_000)
    scenario_file = tmp_path / "okx-faults.yaml"
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
        later = [t for t, p, _ in requests if t > refused_at and p.startswith("/api/v5/")]
        assert not later or later[0] - refused_at >= RETRY_AFTER_S - 0.1, (path, status, later[:3])
