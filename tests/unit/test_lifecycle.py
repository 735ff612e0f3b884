"""Book lifecycle (issue 10 item 9): the RETIRED state of the sync state machine (both cores), the engine's
retirement (one final status, then nothing; out of readiness and the signal series), the feed never resyncing a
retired book, and reading retirement from each venue's instrument metadata."""

from __future__ import annotations

import logging

import orjson
import pytest
from tests.conftest import linear_instrument
from tests.unit.test_feeds import Requests, RestParser

from flowgauge import core
from flowgauge.book.sequencing import binance_futures
from flowgauge.book.sync import consecutive_ids
from flowgauge.connectors.markets import (
    NEVER_MS,
    UnlistedGuard,
    delivered_by_name,
    delivered_instrument,
    retire_time,
    retirement,
)
from flowgauge.engine import Engine
from flowgauge.feeds import RESYNC_RETRY_NS, VenueFeed
from flowgauge.types import (
    BadFrame,
    BookDelta,
    BookSnapshot,
    BookState,
    ContractKind,
    InstrumentRetired,
    InvalidReason,
    OpenInterest,
    RetireReason,
    Trade,
)

SYM = "BTC/USDT:USDT"
OTHER = "ETH/USDT:USDT"
S = 1_000_000_000
CORES = [c for c in core.CORES if c == core.PYTHON or core.fallback_reason() is None]


def snap(seq: int, symbol: str = SYM) -> BookSnapshot:
    return BookSnapshot("bybit", symbol, ((100.0, 5.0),), ((100.1, 3.0),), seq, seq * S, seq * S)


def delta(seq: int, symbol: str = SYM) -> BookDelta:
    return BookDelta("bybit", symbol, ((100.0, 7.0),), (), seq, None, seq * S, seq * S)


# ------------------------------------------------------------------------------------------ state machine


@pytest.mark.parametrize("core_name", CORES)
def test_retired_is_terminal_and_never_asks_for_a_resync(core_name: str) -> None:
    sync = core.new_sync(core_name, consecutive_ids)
    sync.on_snapshot(snap(10))
    sync.on_delta(delta(11))
    result = sync.retire(RetireReason.DELISTED, "bybit status is Closed")
    assert result.changed and not result.needs_resync and not result.applied
    assert (sync.state, sync.reason) == (BookState.RETIRED, RetireReason.DELISTED)
    assert sync.detail == "bybit status is Closed"
    assert sync.retired and not sync.valid
    assert len(sync.book.bids) == 0 and len(sync.book.asks) == 0  # nothing left to compute from
    # Nothing brings it back: a snapshot, the next delta, a gap, an invalidation, retiring again.
    for step in (
        lambda: sync.on_snapshot(snap(20)),
        lambda: sync.on_delta(delta(12)),
        lambda: sync.on_delta(delta(30)),
        lambda: sync.invalidate(InvalidReason.RESET, "disconnected"),
        lambda: sync.retire(RetireReason.EXPIRED, "again"),
    ):
        result = step()
        assert not (result.applied or result.changed or result.needs_resync)
        assert sync.state is BookState.RETIRED and sync.reason is RetireReason.DELISTED
    assert len(sync.book.bids) == 0 and sync.resyncs == 0


@pytest.mark.parametrize("state", ["SYNCING", "INVALID"])
def test_any_state_can_retire_and_buffered_deltas_are_dropped(state: str) -> None:
    sync = core.new_sync(core.PYTHON, binance_futures, buffer_deltas=True)
    if state == "INVALID":
        sync.on_snapshot(BookSnapshot("bybit", SYM, ((100.0, 1.0),), ((101.0, 1.0),), 10, S, S))
        sync.invalidate(InvalidReason.GAP, "gap")
    sync.on_delta(BookDelta("bybit", SYM, ((100.0, 2.0),), (), 12, 11, S, S, 11))  # buffered
    assert sync.retire(RetireReason.EXPIRED, "expired").changed
    sync.on_delta(BookDelta("bybit", SYM, ((100.0, 2.0),), (), 13, 12, S, S, 13))  # not buffered any more
    assert sync.on_snapshot(BookSnapshot("bybit", SYM, ((100.0, 1.0),), ((101.0, 1.0),), 12, S, S)).changed is False
    assert sync.state is BookState.RETIRED and len(sync.book.bids) == 0


# ------------------------------------------------------------------------------------------ engine


class Out:
    """The engine's sink and hooks: what it published and which books it said were retired."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict]] = []
        self.retired_books: list[tuple[str, str]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, orjson.loads(payload)))

    def resync(self, venue: str, symbol: str, reason: str) -> None:
        pass

    def bad_frame(self, venue: str) -> None:
        pass

    def published(self, venue: str, ts_exchange: int, ts_recv: int, ts_publish: int) -> None:
        pass

    def conflated(self, venue: str, shed: int) -> None:
        pass

    def retired(self, venue: str, symbol: str) -> None:
        self.retired_books.append((venue, symbol))


def engine_with_two_books(core_name: str) -> tuple[Engine, Out]:
    out = Out()
    engine = Engine(out, clock=lambda: 42, hooks=out, core_name=core_name)
    engine.add_instrument(linear_instrument())
    engine.add_instrument(linear_instrument(OTHER, "ETHUSDT"))
    for symbol in (SYM, OTHER):
        engine.handle(snap(10, symbol))
    return engine, out


@pytest.mark.parametrize("core_name", CORES)
def test_a_retired_book_publishes_one_final_status_and_then_nothing(
    core_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine, out = engine_with_two_books(core_name)
    caplog.set_level(logging.INFO, logger="flowgauge.engine")
    out.messages.clear()
    assert engine.retire("bybit", SYM, RetireReason.DELISTED, "bybit status is Closed")
    assert not engine.retire("bybit", SYM, RetireReason.DELISTED, "again")  # once only
    [(topic, status)] = out.messages
    assert topic == "flowgauge.v1.status.bybit.BTC-USDT-USDT"
    assert (status["state"], status["reason"], status["detail"]) == ("RETIRED", "DELISTED", "bybit status is Closed")
    assert status["heartbeat"] is False and status["ts_last_update"] == 10 * S
    assert out.retired_books == [("bybit", SYM)]
    assert [r.getMessage() for r in caplog.records].count("book_retired") == 1
    # Everything the venue still sends about it is ignored: no payload, no resync request.
    out.messages.clear()
    events = [
        delta(11), snap(20), Trade("bybit", SYM, 100.0, 1.0, 1, "t1", False, 21 * S, 21 * S),
        OpenInterest("bybit", SYM, 5.0, 22 * S, 22 * S), BadFrame("bybit", "garbage", SYM, True, 23 * S),
        InstrumentRetired("bybit", SYM, RetireReason.EXPIRED, "stream says so", 24 * S, 24 * S),
    ]  # fmt: skip
    assert engine.handle_all(events) == []
    engine.invalidate("bybit", [SYM], InvalidReason.RESET, "disconnected")
    assert engine.publish_heartbeats() == 1  # the other book's heartbeat only
    assert [t for t, _ in out.messages] == ["flowgauge.v1.status.bybit.ETH-USDT-USDT"]
    # Out of readiness and of the signal series; still in /status.
    assert [s.instrument.symbol for s in engine.states()] == [OTHER]
    assert [symbol for _, symbol, _ in engine.book_states()] == [OTHER]
    assert [symbol for _, symbol, _ in engine.latest_signals()] == [OTHER]
    assert engine.state("bybit", SYM) is None and engine.is_retired("bybit", SYM)
    book = engine.status()["venues"]["bybit"][SYM]
    assert (book["state"], book["reason"], book["resyncs"]) == ("RETIRED", "DELISTED", 0)
    assert engine.ready()  # the other book is VALID
    engine.retire("bybit", OTHER, RetireReason.EXPIRED, "expired")
    assert not engine.ready()  # no book VALID


def test_a_stream_signal_retires_the_book() -> None:
    engine, out = engine_with_two_books(core.PYTHON)
    out.messages.clear()
    engine.handle(InstrumentRetired("bybit", SYM, RetireReason.EXPIRED, "deribit state settled", 30 * S, 31 * S))
    [(_, status)] = out.messages
    assert (status["state"], status["reason"], status["ts_exchange"]) == ("RETIRED", "EXPIRED", 30 * S)


def test_the_feed_never_resyncs_a_retired_book() -> None:
    """A REST-snapshot venue: no snapshot is asked for a retired book, not by the stuck-book retry, not by a
    deferred resync, not after a reconnect (which asks for every other book's)."""
    engine = Engine(lambda topic, payload: None)
    engine.add_instrument(linear_instrument(), binance_futures, buffer_deltas=True)
    requests = Requests()
    feed = VenueFeed("bybit", [SYM], RestParser(), engine, requests)
    feed.on_connected()
    assert len(requests.callbacks) == 1  # the first snapshot, as ever
    feed.on_disconnected("test")
    engine.retire("bybit", SYM, RetireReason.DELISTED, "gone")
    assert feed.on_connected() == ["subscribe"]
    assert feed.on_idle(10 * RESYNC_RETRY_NS) == []
    assert feed._resync(SYM, 20 * RESYNC_RETRY_NS) == []
    assert len(requests.callbacks) == 1 and feed.resync_requests == 0 and feed.stuck_retries == 0


# ------------------------------------------------------------------------------------------ venue metadata

NOW = 1_780_000_000_000  # ms


def market(info: dict, expiry: int | None = None, swap: bool = True) -> dict:
    return {"symbol": SYM, "swap": swap, "future": not swap, "expiry": expiry, "info": info}


@pytest.mark.parametrize(
    ("venue", "m", "expected"),
    [
        ("bybit", market({"status": "Trading", "deliveryTime": "0"}), None),
        ("bybit", market({"status": "PreLaunch", "deliveryTime": "0"}), None),  # not started is not retired
        ("bybit", market({"status": "Closed", "deliveryTime": "0"}), (RetireReason.DELISTED, "bybit status is Closed")),
        ("bybit", market({"status": "Delivering"}), (RetireReason.DELISTED, "bybit status is Delivering")),
        # A perpetual's deliveryTime is its scheduled delisting time (ccxt reads it for futures only).
        ("bybit", market({"status": "Trading", "deliveryTime": str(NOW - 1)}), (RetireReason.EXPIRED, None)),
        ("binanceusdm", market({"status": "TRADING", "deliveryDate": 4133404800000}), None),
        ("binanceusdm", market({"contractStatus": "PENDING_TRADING"}), None),
        ("binanceusdm", market({"contractStatus": "SETTLING"}), (RetireReason.DELISTED, None)),
        ("binanceusdm", market({"status": "CLOSE"}), (RetireReason.DELISTED, "binanceusdm status is CLOSE")),
        ("binanceusdm", market({"contractStatus": "TRADING"}, expiry=NOW), (RetireReason.EXPIRED, None)),
        ("okx", market({"state": "suspend", "expTime": ""}), None),  # temporary
        ("okx", market({"state": "live", "expTime": str(NOW - 5)}), (RetireReason.EXPIRED, None)),
        ("deribit", market({"is_active": True, "expiration_timestamp": 32503708800000}, 32503708800000), None),
        ("deribit", market({"is_active": False}), (RetireReason.DELISTED, "deribit is_active is false")),
        ("hyperliquid", market({"name": "BTC"}), None),
        ("hyperliquid", market({"name": "BTC", "isDelisted": True}), (RetireReason.DELISTED, None)),
        ("okx", None, (RetireReason.DELISTED, f"okx no longer lists {SYM}")),
    ],
)
def test_retirement_from_venue_metadata(
    venue: str, m: dict | None, expected: tuple[RetireReason, str | None] | None
) -> None:
    got = retirement(venue, SYM, m, NOW)
    if expected is None:
        assert got is None
        return
    assert got is not None and got[0] is expected[0]
    if expected[1] is not None:
        assert got[1] == expected[1]


def test_a_malformed_status_field_is_no_status() -> None:
    """Metadata is venue input: a status that is not a string (a list, an object) must not raise out of the
    lifecycle check (it would end the venue's task group and the daemon), it says nothing."""
    for status in (["Closed"], {"a": 1}, 3, None):
        assert retirement("bybit", SYM, market({"status": status}), NOW) is None
        assert retirement("binanceusdm", SYM, market({"status": status, "contractStatus": status}), NOW) is None


def test_retire_time_of_dated_futures_and_scheduled_delistings() -> None:
    assert retire_time("binanceusdm", market({"deliveryDate": 4133404800000})) is None  # "never"
    assert retire_time("deribit", market({}, expiry=32503708800000)) is None
    assert NEVER_MS > NOW
    assert retire_time("deribit", market({}, expiry=NOW + 60_000, swap=False)) == NOW + 60_000
    assert retire_time("bybit", market({"deliveryTime": str(NOW + 5)})) == NOW + 5
    assert retire_time("bybit", market({"deliveryTime": "0"})) is None
    assert retire_time("okx", market({"expTime": ""})) is None
    assert retire_time("hyperliquid", market({"deliveryTime": str(NOW)})) is None  # not a field of that venue
    assert retirement("bybit", SYM, market({"status": "Trading", "deliveryTime": str(NOW + 5)}), NOW) is None


def test_a_dated_contract_delivered_before_today_is_known_by_its_name() -> None:
    day = 86_400_000
    assert delivered_by_name("BTC/USDT:USDT-250328", NOW) == "2025-03-28"
    # NOW is 2026-05-28 20:26 UTC
    assert delivered_by_name("BTC/USD:BTC-260527", NOW) == "2026-05-27"
    assert delivered_by_name("BTC/USD:BTC-260528", NOW) is None  # today: not surely delivered (the timer's job)
    assert delivered_by_name("BTC/USD:BTC-260604", NOW) is None  # ahead
    assert delivered_by_name("BTC/USDT:USDT", NOW) is None  # a perpetual: unknown stays a configuration error
    assert delivered_by_name("BTC/USD:BTC-250328-50000-C", NOW) is None  # an option is not ours
    assert delivered_by_name("BTC/USDT:USDT-251399", NOW + day) is None  # not a date
    instrument = delivered_instrument("okx", "ETH/USD:ETH-250328")
    assert (instrument.kind, instrument.settle, instrument.derivative) == (ContractKind.INVERSE, "ETH", True)


def test_unlisted_retires_only_after_two_usable_answers_in_a_row() -> None:
    """A metadata answer that leaves an instrument out may be a truncated page, a filter or a glitch, and a retired
    book never comes back: one absence waits, an empty or shrunken answer proves nothing either way."""
    listing = {s: {"symbol": s} for s in (SYM, OTHER, "A/USDT:USDT", "B/USDT:USDT")}
    without_other = {s: m for s, m in listing.items() if s != OTHER}
    guard = UnlistedGuard(len(listing))
    live = [SYM, OTHER]
    assert guard.unlisted(without_other, live) == ([], [OTHER])  # first absence: wait
    assert guard.unlisted(listing, live) == ([], [])  # back: forgotten
    assert guard.unlisted(without_other, live) == ([], [OTHER])
    assert guard.unlisted({}, live) == ([], [])  # empty: proves nothing (and the daemon counts a failed refresh)
    assert guard.unlisted({SYM: listing[SYM]}, live) == ([], [])  # 1 of 4 markets: truncated, proves nothing
    assert guard.unlisted(without_other, live) == ([OTHER], [])  # two usable answers in a row: delisted
    # A listing that really halves is believed at the third such answer in a row.
    guard = UnlistedGuard(100)
    assert guard.unlisted({SYM: {}}, live) == ([], [])
    assert guard.unlisted({SYM: {}}, live) == ([], [])
    assert guard.unlisted({SYM: {}}, live) == ([], [OTHER])
    assert guard.unlisted({SYM: {}}, live) == ([OTHER], [])


# ------------------------------------------------------------------------------------------ SDK


def test_the_sdk_knows_a_retired_instrument_is_final_not_stale() -> None:
    """The subscription's staleness: an instrument whose final status said RETIRED sends nothing more, and that is
    not a daemon gone quiet. (No connection is opened: `_note` is what every received message goes through.)"""
    from flowgauge.sdk.message import Message
    from flowgauge.sdk.subscription import Subscription

    sub = Subscription("ws://127.0.0.1:1", ["flowgauge.v1.bybit.>"], stale_after_s=0.001)
    book, status = "flowgauge.v1.bybit.ETH-USDT-USDT", "flowgauge.v1.status.bybit.ETH-USDT-USDT"
    sub._note(Message(status, payload={"state": "VALID", "heartbeat": True}))
    assert not sub.is_retired(book)
    sub._note(Message(status, data=b"not json"))  # another publisher's bytes: ignored, no error
    sub._note(Message(status, payload={"state": "RETIRED", "reason": "DELISTED", "heartbeat": False}))
    assert sub.is_retired(book) and sub.is_retired(status)
    assert not sub.is_stale(book)  # however long it stays silent
    assert sub.is_stale("flowgauge.v1.bybit.BTC-USDT-USDT")  # never heard of: stale, as before


def test_the_sdk_forgets_a_retirement_when_the_instrument_is_live_again() -> None:
    """A daemon restarted after the venue listed the instrument again publishes it anew: from its first newer message
    the instrument is no longer retired, and staleness applies again (else a dead daemon would never show stale for
    it). A current value replayed on subscribe that is older than the RETIRED status does not undo it."""
    import time

    from flowgauge.sdk.message import Message
    from flowgauge.sdk.subscription import Subscription

    sub = Subscription("ws://127.0.0.1:1", ["flowgauge.v1.bybit.>"], stale_after_s=60)
    book, status = "flowgauge.v1.bybit.ETH-USDT-USDT", "flowgauge.v1.status.bybit.ETH-USDT-USDT"
    sub._note(Message(status, payload={"state": "RETIRED", "reason": "DELISTED", "heartbeat": False}))
    older = time.time_ns() - 3_600_000_000_000
    sub._note(Message(book, payload={"ts_publish": older}, snapshot=True))  # its last metrics, replayed
    assert sub.is_retired(book)
    sub._note(Message(status, payload={"state": "SYNCING", "heartbeat": False}))  # a new daemon, listed again
    assert not sub.is_retired(book) and not sub.is_retired(status)


def test_a_retired_book_leaves_the_rest_schedule() -> None:
    from flowgauge.connectors.base import FetchSnapshot, PollRequest
    from flowgauge.connectors.rest import RestScheduler

    rest = RestScheduler("binanceusdm", "http://127.0.0.1:1", 1200.0)
    for symbol, venue_id in ((SYM, "BTCUSDT"), (OTHER, "ETHUSDT")):
        rest.add_poll(PollRequest(f"oi:{venue_id}", symbol, "open_interest", "/oi", {}, 1, 10.0), lambda b, t: None)
        rest.request_snapshot(FetchSnapshot(symbol, "/depth", {"symbol": venue_id}), lambda b, t: None)
    rest.forget(OTHER)
    assert rest.budget_per_minute() == 6.0  # BTC's poll only: weight 1 every 10 s
    assert rest.pending_snapshots() == 1
