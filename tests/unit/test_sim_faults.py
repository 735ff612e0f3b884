"""The simulators' fault catalogue, spec parsing, scenario files, scheduler and truth store (issue 10 items 1-2).

Pure units: no sockets. The simulators' use of them is tested against real daemons in tests/integration.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from flowgauge.simulate.faults import (
    FAULT_KINDS,
    FaultError,
    FaultScheduler,
    FaultSpec,
    check_supported,
    load_scenario,
    parse_fault,
    specs_for_venue,
)
from flowgauge.simulate.truth import (
    Comparator,
    TruthRecord,
    TruthStore,
    depth_imbalance,
    ofi_contribution,
)


def test_parse_fault_with_schedule_and_params() -> None:
    spec = parse_fault("drop_diff:every=50,instrument=BTCUSDT")
    assert spec == FaultSpec("drop_diff", instrument="BTCUSDT", every=50)
    assert spec.limit == math.inf
    gap = parse_fault("seq_gap:by=7,after_s=2.5,count=2")
    assert (gap.param("by"), gap.after_s, gap.count) == (7, 2.5, 2)
    assert parse_fault("half_open").param("for_s") == 30.0  # the catalogue's default
    assert parse_fault("half_open").limit == 1  # neither every nor every_s: once


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown fault 'nope'"),
        ("drop_diff:every=0", "every must be >= 1"),
        ("drop_diff:every=x", "every must be an integer"),
        ("drop_diff:every=2,every_s=1", "not both"),
        ("drop_diff:by=3", "unknown key 'by'"),
        ("seq_gap:by=1", "by must be >= 2"),
        ("rate_limit:status=500", "status must be 429 or 418"),
        ("clock_jump:seconds=nan", "seconds must be a finite number"),
        ("drop_diff:every", "expected key=value"),
        ("drop_diff:after_s=-1", "after_s must be >= 0"),
    ],
)
def test_bad_fault_specs_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(FaultError, match=message) as info:
        parse_fault(text)
    assert "\n" not in str(info.value)


def test_scenario_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "faults:\n"
        "  - {fault: drop_diff, instrument: BTCUSDT, after_s: 1, every: 10, count: 3}\n"
        "  - fault: rate_limit\n    status: 418\n    retry_after: 2\n    venue: bybit\n"
    )
    specs = load_scenario(path)
    assert [s.kind for s in specs] == ["drop_diff", "rate_limit"]
    assert specs[1].param("status") == 418 and specs[1].venue == "bybit"
    assert specs_for_venue(specs, "okx") == [specs[0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- fault: drop_diff\n  every: [3\n", "not valid YAML at line"),
        ("{}\n", "expected a non-empty list"),
        ("- 3\n", "entry 1: expected a mapping"),
        ("- every: 3\n", "entry 1: missing `fault: KIND`"),
        ("- fault: drop_diff\n- fault: seq_gap\n  by: -4\n", "entry 2: seq_gap: by must be >= 2"),
        ("- fault: drop_diff\n  count: true\n", "count must be a number"),
    ],
)
def test_bad_scenarios_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(FaultError, match=message) as info:
        load_scenario(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(FaultError, match="cannot read"):
        load_scenario(tmp_path / "absent.yaml")


def test_unsupported_kind_names_the_venue_and_what_it_supports() -> None:
    with pytest.raises(FaultError, match=r"the okx simulator does not inject bad_checksum \(it supports: none yet\)"):
        check_supported([parse_fault("bad_checksum")], (), "okx")
    check_supported([parse_fault("drop_diff")], FAULT_KINDS, "bybit")


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_scheduler_every_n_frames_per_instrument() -> None:
    sched = FaultScheduler([parse_fault("drop_diff:every=3,instrument=BTCUSDT,count=2")])
    fired = []
    for n in range(1, 13):
        for symbol in ("BTCUSDT", "ETHUSDT"):
            sched.frame(symbol)
            if sched.take("drop_diff", symbol) is not None:
                fired.append((n, symbol))
    assert fired == [(3, "BTCUSDT"), (6, "BTCUSDT")]  # every 3rd BTC message, twice, never ETH
    assert sched.fired["drop_diff"] == 2 and len(sched.log) == 2


def test_scheduler_after_s_and_every_s() -> None:
    clock = _Clock()
    sched = FaultScheduler([parse_fault("disconnect:after_s=5,every_s=2")], clock=clock)
    times = []
    for _ in range(100):
        clock.now += 0.5
        sched.frame("X")
        if sched.take("disconnect", "X"):
            times.append(clock.now - 100.0)
    assert times[:3] == [7.0, 9.0, 11.0]  # first one every_s after the start point


def test_scheduler_rotate_fires_on_the_instruments_in_turn() -> None:
    """Books played in the same order every time: a timed spec for any instrument always caught the first one (a
    soak's 50 Bybit books: one took every book fault). With rotate=1 each takes its turn; a turn whose book has
    gone silent passes to whichever comes next once `ROTATE_GRACE_S` has gone by."""

    def firings(text: str, silent: str | None = None) -> list[str]:
        clock = _Clock()
        sched = FaultScheduler([parse_fault(text)], clock=clock)
        hit = []
        for _ in range(200):
            clock.now += 0.1
            for name in ("A", "B", "C"):
                if name == silent and sched.frames[name]:
                    continue
                sched.frame(name)
                if sched.take("drop_diff", name):
                    hit.append(name)
        return hit

    assert set(firings("drop_diff:every_s=1")) == {"A"}
    assert firings("drop_diff:every_s=1,rotate=1")[:6] == ["A", "B", "C", "A", "B", "C"]
    assert parse_fault("drop_diff:every_s=1,rotate=1").describe() == "drop_diff:every_s=1.0,rotate=1"
    # B sends one message, then none: its turns go to the next book after the grace period.
    late = firings("drop_diff:every_s=3,rotate=1", silent="B")
    assert late[:4] == ["A", "A", "C", "A"] and "B" not in late  # B's turn went to A, the next to send
    # By message count too: the turn's grace runs from when the spec fell due, not from its last firing.
    assert firings("drop_diff:every=99,rotate=1")[:6] == ["A", "B", "C", "A", "B", "C"]
    with pytest.raises(FaultError, match="rotate must be 0 or 1"):
        parse_fault("drop_diff:rotate=2")
    with pytest.raises(FaultError, match="cannot go with instrument="):
        parse_fault("drop_diff:rotate=1,instrument=A")


def test_scheduler_count_back_to_back_and_accept() -> None:
    sched = FaultScheduler([parse_fault("rate_limit:count=2,path=/orderbook")])
    assert sched.take("rate_limit", accept=lambda s: s.param("path") in "/v5/market/time") is None
    assert sched.take("rate_limit", accept=lambda s: s.param("path") in "/v5/market/orderbook") is not None
    assert sched.take("rate_limit") is not None
    assert sched.take("rate_limit") is None  # count exhausted
    assert not sched.wants("drop_diff") and sched.wants("rate_limit")


def test_truth_store_ring_evicts_and_counts() -> None:
    store = TruthStore(capacity=3)
    for key in range(10, 15):
        store.record("BTCUSDT", key, key * 1000, [(100.0 - i, 1.0 + i) for i in range(12)], [(101.0, 2.0)])
    stats = store.stats()["instruments"]["BTCUSDT"]
    assert stats == {"records": 3, "evicted": 2, "repeated": 0, "first": 3, "last": 5}
    record = store.get("BTCUSDT", 13)
    assert record is not None and record.index == 4 and len(record.bids) == 10 and record.asks == ((101.0, 2.0),)
    assert store.get("BTCUSDT", 10) is None  # evicted
    assert [r.key for r in store.since("BTCUSDT", 0)] == [12, 13, 14]
    assert [r.key for r in store.since("BTCUSDT", 4)] == [14]
    status, body = store.answer({"instrument": "BTCUSDT", "since": "3", "limit": "1"})
    assert status == 200 and [r["key"] for r in body["records"]] == [13] and body["next"] == 4
    assert store.answer({"instrument": "BTCUSDT", "seq": "99"})[0] == 404
    assert store.answer({"instrument": "BTCUSDT", "seq": "x"})[0] == 400
    assert TruthRecord.from_json(store.answer({"instrument": "BTCUSDT", "seq": "14"})[1]) == store.get("BTCUSDT", 14)


def test_truth_store_counts_a_key_recorded_again_while_held() -> None:
    store = TruthStore(capacity=4)
    for key in (1, 2, 3, 1):  # Bybit's u=1 restart: ids start again
        store.record("BTCUSDT", key, None, [(100.0, 1.0)], [(101.0, 1.0)])
    assert store.holds("BTCUSDT", 1) and not store.holds("BTCUSDT", 9) and not store.holds("ETHUSDT", 1)
    assert store.stats()["instruments"]["BTCUSDT"]["repeated"] == 1
    for key in (4, 5):  # the ring of 4 now holds 3 1 4 5: 2 is gone
        store.record("BTCUSDT", key, None, [(100.0, 1.0)], [(101.0, 1.0)])
    store.record("BTCUSDT", 2, None, [(100.0, 1.0)], [(101.0, 1.0)])  # no longer held: not a repeat
    assert store.stats()["instruments"]["BTCUSDT"]["repeated"] == 1


def test_truth_formulas_from_metrics_md() -> None:
    bids = [(100.0, 2.0), (99.0, 1.0)]
    asks = [(101.0, 1.0)]
    assert depth_imbalance(bids, asks, 5) == pytest.approx((3 - 1) / 4)
    assert depth_imbalance([], [], 5) is None
    # bid improves (+q new), ask same price grows (-(dq))
    assert ofi_contribution((100.0, 1.0, 101.0, 1.0), (100.5, 3.0, 101.0, 2.0)) == 3.0 - 1.0
    # bid retreats (-q old), ask retreats (+q old)
    assert ofi_contribution((100.0, 1.5, 101.0, 2.5), (99.0, 9.0, 102.0, 9.0)) == -1.5 + 2.5


def _record(index: int, key: int, bid: float, bid_sz: float) -> TruthRecord:
    return TruthRecord(index, key, None, ((bid, bid_sz), (bid - 1, 1.0)), ((bid + 1, 1.0),))


def _payload(book_seq: int, bid: float, bid_sz: float, ofi: float | None, state: str = "VALID") -> dict[str, object]:
    imb5 = depth_imbalance(((bid, bid_sz), (bid - 1, 1.0)), ((bid + 1, 1.0),), 5)
    return {
        "symbol": "BTC/USDT:USDT", "trigger": "book", "book_state": state, "book_seq": book_seq, "seq": book_seq,
        "bid_px": bid, "bid_sz": bid_sz, "ask_px": bid + 1, "ask_sz": 1.0,
        "depth_imb_5": imb5, "depth_imb_10": imb5, "ofi": ofi,
    }  # fmt: skip


def test_comparator_catches_wrong_books_and_ofi() -> None:
    comparator = Comparator({"BTC/USDT:USDT": "BTCUSDT"})
    comparator.add_truth(
        "BTC/USDT:USDT", [_record(1, 5, 100.0, 2.0), _record(2, 6, 100.0, 3.0), _record(3, 7, 101.0, 1.0)]
    )
    assert comparator.check(_payload(5, 100.0, 2.0, 0.25))  # first one seen: its ofi cannot be verified
    assert comparator.check(_payload(6, 100.0, 3.0, 1.0))  # same bid price, +1 size
    assert not comparator.check(_payload(7, 101.0, 1.5, 1.0))  # wrong size
    assert comparator.check(_payload(6, 100.0, 3.0, None, state="INVALID"))
    assert not comparator.check(_payload(7, 101.0, 1.0, 0.5))  # first state after INVALID carries no ofi
    assert not comparator.check(_payload(99, 101.0, 1.0, None))  # no such sequence id
    assert comparator.checked == 5 and comparator.unverified_ofi == 1 and len(comparator.wrong) == 3


def test_comparator_tells_a_repeated_id_apart_by_its_exchange_time() -> None:
    """Two `u=1` restarts 30 s apart while the daemon published nothing (its connection was down): ids 1-3 are
    held twice from the cursor on. The payload of the second restart's id 2 is that restart's book, found by its
    exchange time; by the id alone it was compared with the first restart's book (two wrong payloads in a soak)."""
    comparator = Comparator({"BTC/USDT:USDT": "BTCUSDT"})

    def record(index: int, key: int, ts_ms: int, bid_sz: float) -> TruthRecord:
        return TruthRecord(index, key, ts_ms, ((100.0, bid_sz), (99.0, 1.0)), ((101.0, 1.0),))

    first = [record(1 + i, 1 + i, 1_000 + i, 2.0 + i) for i in range(3)]
    second = [record(4 + i, 1 + i, 31_000 + i, 7.0 + i) for i in range(3)]
    comparator.add_truth("BTC/USDT:USDT", first + second)
    payload = {**_payload(2, 100.0, 8.0, None), "ts_exchange": 31_001_000_000}
    assert comparator.check(payload), comparator.wrong
    assert comparator.check({**_payload(3, 100.0, 9.0, 1.0), "ts_exchange": 31_002_000_000}), comparator.wrong
    assert not comparator.check({**_payload(3, 100.0, 4.0, None), "ts_exchange": 1_002_000_000})  # behind the cursor


def test_comparator_ofi_sums_every_truth_step_between_two_payloads() -> None:
    # The top moves up and back between two payloads: the payload's ofi is e_n summed over the truth steps
    # (metrics.md 1.2), not e_n between the two end states; an ofi from the end states alone is wrong.
    comparator = Comparator({"BTC/USDT:USDT": "BTCUSDT"})
    comparator.add_truth(
        "BTC/USDT:USDT", [_record(1, 5, 100.0, 2.0), _record(2, 6, 101.0, 3.0), _record(3, 7, 100.0, 4.0)]
    )
    assert comparator.check(_payload(5, 100.0, 2.0, None))
    steps = ofi_contribution((100.0, 2.0, 101.0, 1.0), (101.0, 3.0, 102.0, 1.0)) + ofi_contribution(
        (101.0, 3.0, 102.0, 1.0), (100.0, 4.0, 101.0, 1.0)
    )
    ends = ofi_contribution((100.0, 2.0, 101.0, 1.0), (100.0, 4.0, 101.0, 1.0))
    assert steps != ends
    assert not comparator.check(_payload(7, 100.0, 4.0, ends))
    comparator = Comparator({"BTC/USDT:USDT": "BTCUSDT"})
    comparator.add_truth(
        "BTC/USDT:USDT", [_record(1, 5, 100.0, 2.0), _record(2, 6, 101.0, 3.0), _record(3, 7, 100.0, 4.0)]
    )
    assert comparator.check(_payload(5, 100.0, 2.0, None))
    assert comparator.check(_payload(7, 100.0, 4.0, steps))
    assert comparator.ofi_checked == 1 and comparator.ofi_multi == 1


def test_comparator_of_a_whole_book_stream_takes_ofi_between_the_books_the_client_held() -> None:
    # Hyperliquid: a whole book between two payloads that never reached the client (withheld, or refused as older
    # than its book) leaves nothing to sum over: the flow runs from the previous payload's book to this one's.
    truth = [_record(1, 5, 100.0, 2.0), _record(2, 6, 101.0, 3.0), _record(3, 7, 100.0, 4.0)]
    ends = ofi_contribution((100.0, 2.0, 101.0, 1.0), (100.0, 4.0, 101.0, 1.0))
    for published, right in ((ends, True), (ends + 1.0, False)):  # the flow is still checked
        whole = Comparator({"BTC/USDC:USDC": "BTC"}, whole_books=True)
        whole.add_truth("BTC/USDC:USDC", truth)
        assert whole.check({**_payload(5, 100.0, 2.0, None), "symbol": "BTC/USDC:USDC"})
        assert whole.check({**_payload(7, 100.0, 4.0, published), "symbol": "BTC/USDC:USDC"}) is right
    diffs = Comparator({"BTC/USDC:USDC": "BTC"})
    diffs.add_truth("BTC/USDC:USDC", truth)
    assert diffs.check({**_payload(5, 100.0, 2.0, None), "symbol": "BTC/USDC:USDC"})
    assert not diffs.check({**_payload(7, 100.0, 4.0, ends), "symbol": "BTC/USDC:USDC"})  # a diff stream sums


def test_comparator_counts_payloads_of_an_untracked_symbol() -> None:
    comparator = Comparator({"BTC/USDT:USDT": "BTCUSDT"})
    comparator.add_truth("BTC/USDT:USDT", [_record(1, 5, 100.0, 2.0)])
    assert comparator.check({**_payload(5, 100.0, 2.0, None), "symbol": "BTC/USDT:USDT "})
    assert comparator.untracked == 1 and comparator.checked == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--venue", "bybit", "--fault", "bad_checksum"], "the bybit simulator does not inject bad_checksum"),
        (["--venue", "bybit", "--fault", "drop_diff:every=0"], "every must be >= 1"),
        (["--venue", "bybit", "--fault", "drop_diff:venue=okx"], "venue=okx is not served"),
        (["--venue", "bybit", "--scenario", "/nonexistent/s.yaml"], "cannot read"),
    ],
)
def test_simulate_refuses_bad_faults_in_one_line_exit_2(args: list[str], message: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "flowgauge", "simulate", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
