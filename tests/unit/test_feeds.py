"""VenueFeed: REST snapshot bookkeeping across reconnects (one in flight per book, none from a dead connection)."""

from __future__ import annotations

import orjson
from tests.conftest import linear_instrument

from flowgauge.book.sequencing import binance_futures
from flowgauge.connectors.base import FetchSnapshot
from flowgauge.engine import Engine
from flowgauge.feeds import VenueFeed
from flowgauge.types import BookSnapshot

SYM = "BTC/USDT:USDT"
S = 1_000_000_000


class RestParser:
    """A parser whose books start from a REST snapshot (our own protocol, not a network peer)."""

    venue = "bybit"

    def __init__(self) -> None:
        self.instruments = {"BTCUSDT": linear_instrument()}

    def on_connected(self):
        return ["subscribe", FetchSnapshot(SYM, "/depth", {"symbol": "BTCUSDT"})]

    def resync(self, symbol):
        return [FetchSnapshot(symbol, "/depth", {"symbol": "BTCUSDT"})]

    def ping_frame(self):
        return None

    def feed(self, raw, ts_recv):
        return []

    def on_snapshot(self, symbol, body, ts_recv):
        return [BookSnapshot("bybit", symbol, ((100.0, 1.0),), ((101.0, 1.0),), int(body), ts_recv, ts_recv)]

    def reset(self) -> None:
        pass


class Requests:
    def __init__(self) -> None:
        self.callbacks = []

    def request_snapshot(self, fetch, callback) -> None:
        self.callbacks.append(callback)


def make():
    engine = Engine(lambda topic, payload: None)
    engine.add_instrument(linear_instrument(), binance_futures, buffer_deltas=True)
    requests = Requests()
    feed = VenueFeed("bybit", [SYM], RestParser(), engine, requests)
    return engine, requests, feed


def test_one_snapshot_in_flight_per_book_even_when_retries_come_due() -> None:
    engine, requests, feed = make()
    assert feed.on_connected() == ["subscribe"]
    assert len(requests.callbacks) == 1
    # The stuck-book retry comes due while the first snapshot is still queued: no second request.
    feed.on_idle(10**30)
    assert len(requests.callbacks) == 1
    requests.callbacks[0]("500", 1)
    assert engine.state("bybit", SYM).sync.valid


def test_a_snapshot_answered_after_the_connection_died_is_ignored() -> None:
    engine, requests, feed = make()
    feed.on_connected()
    feed.on_disconnected("closed")
    requests.callbacks[0]("500", 1)  # the answer lands during the reconnect backoff
    assert not engine.state("bybit", SYM).sync.valid
    assert not engine.ready()


# -- backlog conflation: frames whose receive time is older than the threshold (issue 8 item 6) -------------

BYBIT_SNAPSHOT = (
    '{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1786310818129,"data":{"s":"BTCUSDT",'
    '"b":[["65114.20","6.054"],["65114.10","0.002"]],"a":[["65114.30","10.486"],["65114.40","0.5"]],'
    '"u":15076952,"seq":753843911359},"cts":1786310818027}'
)
NOW = 1_786_310_900_000_000_000
MS = 1_000_000


def bybit_delta(u: int, bid_size: float) -> str:
    ts = 1786310818129 + (u - 15076952)
    return (
        f'{{"topic":"orderbook.200.BTCUSDT","type":"delta","ts":{ts},"data":{{"s":"BTCUSDT",'
        f'"b":[["65114.20","{bid_size}"]],"a":[],"u":{u},"seq":{753843911359 + u}}},"cts":{ts}}}'
    )


def conflating_feed(after_ms: float | None) -> tuple[Engine, list, list]:
    """Engine, published payloads (live list), and the end-of-turn callbacks scheduled (not yet run)."""
    from flowgauge.conflation import BacklogConflation
    from flowgauge.connectors.bybit import BybitParser

    payloads: list = []
    engine = Engine(lambda topic, payload: payloads.append(orjson.loads(payload)), clock=lambda: 1)
    engine.add_instrument(linear_instrument())
    turn_ends: list = []
    conflation = None if after_ms is None else BacklogConflation(engine, after_ms, turn_ends.append, lambda: NOW)
    feed = VenueFeed("bybit", [SYM], BybitParser("linear", [linear_instrument()]), engine, None, conflation)
    feed.on_frame(BYBIT_SNAPSHOT, NOW)  # handled as it arrived
    for i in range(5):
        feed.on_frame(bybit_delta(15076953 + i, 7.0 + i), NOW - 100 * MS)  # waited 100 ms in the queue
    return engine, payloads, turn_ends


def books(payloads: list) -> list:
    return [p for p in payloads if p.get("trigger") == "book"]


def test_frames_queued_beyond_the_threshold_publish_once_per_turn() -> None:
    engine, payloads, turn_ends = conflating_feed(after_ms=50)
    (fresh,) = books(payloads)  # the snapshot, handled as it arrived: published at once
    assert "CONFLATED" not in fresh["quality"]
    assert engine.conflate is False  # nothing outside a queued frame is deferred
    assert len(turn_ends) == 1  # one flush scheduled for the turn, however many frames were behind
    turn_ends[0]()
    _, last = books(payloads)
    assert last["book_seq"] == 15076957 and last["bid_sz"] == 11.0 and last["book_state"] == "VALID"
    assert "CONFLATED" in last["quality"]
    assert engine.conflated == 4


def test_frames_within_the_threshold_or_with_conflation_off_publish_every_state() -> None:
    for after_ms in (500.0, None):
        engine, payloads, turn_ends = conflating_feed(after_ms)
        assert len(books(payloads)) == 1 + 5 and turn_ends == []
        assert engine.conflated == 0 and not any("CONFLATED" in p["quality"] for p in books(payloads))


def _bybit_book(kind: str, u: int, t_ms: int, bid_size: str) -> str:
    data = {"s": "BTCUSDT", "b": [["100", bid_size]], "a": [["101", "1"]], "u": u, "seq": u}
    return orjson.dumps({"topic": "orderbook.50.BTCUSDT", "type": kind, "ts": t_ms, "cts": t_ms, "data": data}).decode()


def test_a_deferred_resync_is_dropped_when_the_book_came_back_by_itself() -> None:
    """Found by the soak (issue 10 item 6): a second gap within RESYNC_MIN_INTERVAL defers the resync; when a
    snapshot the venue sends on its own (Bybit: a service restart, u=1) restores the book first, the deferred
    resubscribe must not run. It did: its snapshot then reset the flow of a correct book (ofi null, windows
    flagged RESET) on a state the truth had as unchanged."""
    from flowgauge.connectors.bybit import BybitParser

    engine = Engine(lambda topic, payload: None)
    engine.add_instrument(linear_instrument())
    feed = VenueFeed("bybit", [SYM], BybitParser("linear", [linear_instrument()], book_depth=50), engine, None)
    feed.on_connected()
    t0, ms = 1_800_000_000 * S, 1_800_000_000_000
    feed.on_frame(_bybit_book("snapshot", 10, ms, "1"), t0)
    assert feed.on_frame(_bybit_book("delta", 12, ms + 100, "2"), t0 + 2 * S)  # gap: resubscribes at once
    feed.on_frame(_bybit_book("snapshot", 20, ms + 200, "3"), t0 + 2 * S + 100_000_000)
    assert not feed.on_frame(_bybit_book("delta", 22, ms + 300, "4"), t0 + 2 * S + 200_000_000)  # deferred
    feed.on_frame(_bybit_book("snapshot", 1, ms + 400, "5"), t0 + 2 * S + 300_000_000)  # the venue restarts
    assert engine.state("bybit", SYM).sync.valid  # type: ignore[union-attr]
    assert feed.on_idle(t0 + 4 * S) == []  # was: unsubscribe + subscribe of the restored book
    assert feed.resync_requests == 1

