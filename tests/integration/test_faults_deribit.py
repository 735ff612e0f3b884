"""Every Deribit fault back to back against one real daemon, every published payload checked against ground truth
(issue 10 items 1-2).

Timeline. A `DeribitSimulator` (in this process, at 8x speed) serves the relabelled BTC-PERPETUAL and ETH-PERPETUAL;
`flowgauge run` (a real subprocess, one payload per applied message: `publish.min_interval_ms: 0`, `publish.conflate:
off`, a 1.5 s stale-feed watchdog) connects to it. Once both books are VALID the scenario below (a YAML scenario
file, `after_s` counted from then) is applied:

* +0 s: ETH-PERPETUAL loses a change; the resync's subscribe is answered with Deribit's JSON-RPC error (`sub_error`),
  so ETH stays INVALID until the daemon asks again (at the resync interval: the refusal names the book).
* +0.5 .. +8 s, one every 1.1 s on BTC-PERPETUAL: a withheld, duplicated and reordered change, a `change_id` jump
  (the next `prev_change_id` names nothing sent), a malformed and a truncated notification, then a lost change whose
  resubscribe meets a snapshot held back 1 s.
* +2 / +5 s, alongside: the exchange clock set 3 s ahead, then jumping 3 s back.
* +8.6 .. +13 s, the connection: an abrupt reset, a scheduled (clean) close, a reset with the next two upgrades refused
  (HTTP 429), a 17 MiB notification (over the daemon's 16 MiB bound), and a half-open connection (silent, not
  closed, `test_request`s and pongs gone) that only the watchdog can find.

Asserted: zero wrong payloads (best levels, depth_imb_5/10, ofi) against the truth at each payload's `book_seq`
(`change_id`); each fault's book goes INVALID (or the connection drops) and is VALID again within its bound (the
daemon's resync interval + snapshot latency (0 here: the snapshot is the subscribe's first answer) + 2 s, plus what
the fault itself adds: the held snapshot, the retry of a rejected subscribe, reconnect backoff, the watchdog); every
INVALID period of a book is explained by a fault aimed at it or at the connection (ETH is untouched by BTC's faults).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import yaml
from tests.fault_scenarios import Bus, Fired, check_recovery, compare, fired, periods
from tests.procs import TIMEOUT_FACTOR, flowgauge, free_port, wait_for

from flowgauge.feeds import RESYNC_MIN_INTERVAL_NS
from flowgauge.simulate import DATA_DIR, SIMULATORS
from flowgauge.simulate.deribit import DeribitSimulator
from flowgauge.simulate.faults import load_scenario
from flowgauge.simulate.truth import fetch_truth

pytestmark = pytest.mark.integration

SPEED = 8.0
STALE_AFTER_S = 1.5  # the daemon's watchdog (config): what finds a half-open connection
PING_S = 0.5  # the daemon's application ping (public/test), answered by the simulator while the connection lives
BACKOFF_MAX_S = 0.5  # the daemon's reconnect delay cap (config)
RESYNC_S = RESYNC_MIN_INTERVAL_NS / 1e9
SNAPSHOT_LATENCY_S = 0.0  # Deribit has no REST snapshot: the resubscribe's first answer is the snapshot
MARGIN_S = 2.0 * TIMEOUT_FACTOR
DETECT_S = 1.5 * TIMEOUT_FACTOR  # a fault on the stream shows as INVALID within this
SLOW_DELAY_S = 1.0
HALF_OPEN_S = 3.0
LOOP_S = 31 / SPEED  # the recording's span (30.4 s) played at SPEED
REFUSE = 2

BTC, ETH = "BTC-PERPETUAL", "ETH-PERPETUAL"
SYMBOLS = {"BTC/USD:BTC": BTC, "ETH/USD:ETH": ETH}
BY_ID = {v: k for k, v in SYMBOLS.items()}

SCENARIO = [
    {"fault": "drop_diff", "instrument": ETH, "after_s": 0},  # makes the daemon resubscribe ETH ...
    {"fault": "sub_error", "instrument": ETH, "after_s": 0},  # ... and that subscribe is refused
    {"fault": "drop_diff", "instrument": BTC, "after_s": 0.5},
    {"fault": "duplicate_diff", "instrument": BTC, "after_s": 1.6},
    {"fault": "reorder_diff", "instrument": BTC, "after_s": 2.7},
    {"fault": "seq_gap", "instrument": BTC, "after_s": 3.8, "by": 500},
    {"fault": "malformed_json", "instrument": BTC, "after_s": 4.9},
    {"fault": "truncated_frame", "instrument": BTC, "after_s": 6.0},
    {"fault": "slow_snapshot", "instrument": BTC, "after_s": 7.1, "delay_s": SLOW_DELAY_S},
    {"fault": "drop_diff", "instrument": BTC, "after_s": 7.1},  # its resubscribe meets the slow snapshot
    {"fault": "clock_skew", "after_s": 2, "seconds": 3},  # the book is untouched: alongside BTC's faults
    {"fault": "clock_jump", "after_s": 5, "seconds": -3},  # and back: a clock that jumps backwards
    {"fault": "disconnect", "after_s": 8.6},
    {"fault": "forced_disconnect", "after_s": 9.6},
    {"fault": "conn_limit", "after_s": 10.6, "refuse": REFUSE},
    {"fault": "oversized_frame", "instrument": BTC, "after_s": 12},  # 17 MiB: over the daemon's 16 MiB
    {"fault": "half_open", "after_s": 13, "for_s": HALF_OPEN_S},
]
GAP_KINDS = {"drop_diff", "reorder_diff", "seq_gap", "malformed_json", "truncated_frame"}
CONNECTION_KINDS = {"disconnect", "forced_disconnect", "conn_limit", "oversized_frame", "half_open"}
CLOCK_KINDS = {"clock_skew", "clock_jump"}

GAP_BOUND_S = RESYNC_S + SNAPSHOT_LATENCY_S + MARGIN_S
BOUNDS = {
    **dict.fromkeys(GAP_KINDS | {"duplicate_diff"}, GAP_BOUND_S),
    "slow_snapshot": SLOW_DELAY_S + GAP_BOUND_S,
    "sub_error": RESYNC_S + GAP_BOUND_S,  # the refused subscribe names the book: asked again at the resync interval
    "disconnect": BACKOFF_MAX_S + GAP_BOUND_S,
    "forced_disconnect": BACKOFF_MAX_S + GAP_BOUND_S,
    "oversized_frame": BACKOFF_MAX_S + GAP_BOUND_S,
    "conn_limit": (REFUSE + 1) * BACKOFF_MAX_S + GAP_BOUND_S,
    "half_open": 1.25 * STALE_AFTER_S + BACKOFF_MAX_S + GAP_BOUND_S,  # the watchdog ticks every stale_after / 4
}


def _detect(fault: Fired) -> float:
    if fault.kind == "half_open":
        return 1.25 * STALE_AFTER_S + 1
    if fault.instrument == ETH:
        return LOOP_S + DETECT_S  # ETH's book changes twice per loop: a lost change shows at the next loop's
    return DETECT_S


def _targets(fault: Fired) -> set[str]:
    """The books a fault may invalidate (an oversized frame drops the daemon's whole connection)."""
    if fault.kind in CLOCK_KINDS:
        return set()  # the book is untouched; only the payloads' clock flags change
    if fault.kind in CONNECTION_KINDS:
        return set(SYMBOLS)
    assert fault.instrument is not None
    return {BY_ID[fault.instrument]}


def _config(path: Path, sim_port: int, bus_port: int, http_port: int) -> Path:
    config = {
        "venues": {
            "deribit": {
                "symbols": list(SYMBOLS),
                "ws_url": f"ws://127.0.0.1:{sim_port}/ws/api/v2",
                "rest_url": f"http://127.0.0.1:{sim_port}",
                "stale_after_s": STALE_AFTER_S,
                "ping_interval_s": PING_S,
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


async def test_every_deribit_fault_back_to_back_against_the_truth(tmp_path: Path) -> None:
    # Arrange: the simulator, the daemon, the bus.
    sim = DeribitSimulator(DATA_DIR / SIMULATORS["deribit"].recording, port=0, speed=SPEED)
    scenario_file = tmp_path / "deribit-faults.yaml"
    scenario_file.write_text(yaml.safe_dump({"faults": SCENARIO}))
    scenario = load_scenario(scenario_file)
    bus_port, http_port = free_port(), free_port()
    async with sim:
        config = _config(tmp_path / "daemon.yaml", sim.bound_port, bus_port, http_port)
        log_path = tmp_path / "daemon.log"
        with flowgauge(["run", "-c", str(config)], log_path) as daemon:
            bus = Bus(bus_port)
            try:
                await wait_for(bus.open, "the embedded bus", timeout_s=20)
                await wait_for(lambda: bus.valid() == set(SYMBOLS), "both books VALID", timeout_s=20)
                # Act: the scenario, until every fault fired and both books are VALID again.
                sim.configure(scenario)
                applied = time.time()
                await wait_for(
                    lambda: sum(sim.faults.fired.values()) == len(SCENARIO), "every fault fired", timeout_s=40
                )
                # The last fault (half-open) shows late, when the watchdog finds the silence: wait for its periods.
                [last] = [f for f in fired(sim.faults) if f.kind == "half_open"]
                await wait_for(
                    lambda: (
                        all(
                            any(start >= last.t and end < math.inf for start, end in periods(bus.messages, s, last.t))
                            for s in SYMBOLS
                        )
                        and bus.valid() == set(SYMBOLS)
                    ),
                    "both books through the half-open connection and VALID again",
                    timeout_s=20,
                )
            finally:
                await bus.close()
            # After the bus stopped: every payload recorded is of a message the simulator had applied by then.
            truth = {symbol: await fetch_truth(sim.http_url, venue_id) for symbol, venue_id in SYMBOLS.items()}
            assert daemon.poll() is None, log_path.read_text()[-3000:]

    # Assert 1: every payload against the truth at its book_seq (change_id).
    comparator = compare(bus.messages, truth, SYMBOLS, "deribit")
    assert comparator.wrong == [], f"{len(comparator.wrong)} wrong payloads, first: {comparator.wrong[:5]}"
    assert comparator.checked > 150 and comparator.ofi_checked > 50, (comparator.checked, comparator.ofi_checked)

    # Assert 2: each fault's books INVALID (or their connection dropped) and VALID again within its bound; every
    # INVALID period explained by a fault aimed at that book (the other book untouched).
    faults = list(fired(sim.faults))
    assert sorted(f.kind for f in faults) == sorted(s.kind for s in scenario)
    problems = check_recovery(
        bus.messages,
        faults,
        SYMBOLS,
        applied,
        _targets,
        BOUNDS,
        _detect,
        inside=frozenset({"sub_error", "slow_snapshot"}),  # fired at the resubscribe of a book already INVALID
        optional=frozenset({"duplicate_diff"}),  # an id already applied: dropped, the book stays VALID
    )
    assert problems == [], "\n".join(problems)
    # The duplicate left BTC VALID (dropped as stale), and ETH kept publishing through BTC's stream faults.
    [dup] = [f for f in faults if f.kind == "duplicate_diff"]
    assert not any(
        p.get("symbol") == "BTC/USD:BTC" and p.get("book_state") not in (None, "VALID")
        for t, _, p in bus.messages
        if dup.t <= t <= dup.t + 0.5
    )
    btc_faults = [f.t for f in faults if f.instrument == BTC and f.kind not in CONNECTION_KINDS]
    eth_during = [
        t
        for t, topic, p in bus.messages
        if topic.startswith("flowgauge.v1.deribit.")
        and p.get("symbol") == "ETH/USD:ETH"
        and p.get("book_state") == "VALID"
        and min(btc_faults) <= t <= max(btc_faults)
    ]
    assert eth_during, "ETH published nothing VALID while BTC's stream faults ran"
