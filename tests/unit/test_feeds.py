"""VenueFeed: REST snapshot bookkeeping across reconnects (one in flight per book, none from a dead connection)."""

from __future__ import annotations

from tests.conftest import linear_instrument

from flowgauge.book.sequencing import binance_futures
from flowgauge.connectors.base import FetchSnapshot
from flowgauge.engine import Engine
from flowgauge.feeds import VenueFeed
from flowgauge.types import BookSnapshot

SYM = "BTC/USDT:USDT"


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
