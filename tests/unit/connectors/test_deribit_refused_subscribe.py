"""A Deribit subscribe refused with a JSON-RPC error names the books it asked for, so a resync whose subscribe is
refused is asked again at the resync interval instead of after the stuck-book retry (issue 10, `sub_error`).

Before: the refusal was a BadFrame without a symbol, the book stayed INVALID with nothing on its way, and only the
feed's stuck-book retry (10 s after the resync) asked again: far beyond the stated recovery bound (resync interval +
snapshot latency + 2 s). Real parser, engine and feed; frames shaped as Deribit sends them.
"""

from __future__ import annotations

import time

import orjson

from flowgauge.book.sequencing import chained_ids
from flowgauge.connectors.deribit import DeribitParser
from flowgauge.engine import Engine
from flowgauge.feeds import RESYNC_MIN_INTERVAL_NS, RESYNC_RETRY_NS, VenueFeed
from flowgauge.types import BadFrame, BookState, ContractKind, Instrument, InvalidReason

S = 1_000_000_000


def _perpetual(base: str) -> Instrument:
    return Instrument(
        venue="deribit", symbol=f"{base}/USD:{base}", venue_id=f"{base}-PERPETUAL", category="inverse",
        kind=ContractKind.INVERSE, contract_size=10.0, tick_size=0.5, base=base, quote="USD", settle=base,
        derivative=True,
    )  # fmt: skip


BTC, ETH = _perpetual("BTC"), _perpetual("ETH")


def _book(kind: str, change_id: int, prev: int | None = None) -> bytes:
    data: dict[str, object] = {
        "type": kind, "timestamp": 1_700_000_000_000, "instrument_name": "ETH-PERPETUAL", "change_id": change_id,
        "bids": [["new", 2000.0, 10000.0]], "asks": [["new", 2000.5, 20000.0]],
    }  # fmt: skip
    if prev is not None:
        data["prev_change_id"] = prev
    note = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": "book.ETH-PERPETUAL.100ms", "data": data}}
    return orjson.dumps(note)


def _refusal(req_id: int) -> bytes:
    # Deribit's error shape (10040 "retry": the request can't be processed right now and should be retried).
    body = {"jsonrpc": "2.0", "id": req_id, "error": {"message": "retry", "code": 10040}, "usIn": 1, "usOut": 2,
            "usDiff": 1, "testnet": False}  # fmt: skip
    return orjson.dumps(body)


def test_a_refused_subscribe_names_its_books() -> None:
    parser = DeribitParser([BTC, ETH])
    frames = [orjson.loads(f) for f in parser.on_connected()]  # type: ignore[arg-type]
    subscribe = frames[-1]
    refused = parser.feed(_refusal(subscribe["id"]), 1)
    assert {b.symbol for b in refused if isinstance(b, BadFrame)} == {BTC.symbol, ETH.symbol}
    assert all(isinstance(b, BadFrame) and b.touches_book and "10040 retry" in b.reason for b in refused)
    # A refused request that asked for no book (or one we never sent) still says so, without a book.
    (other,) = parser.feed(_refusal(424242), 1)
    assert isinstance(other, BadFrame) and other.symbol is None and not other.touches_book


def test_a_resync_whose_subscribe_is_refused_is_asked_again_at_the_resync_interval() -> None:
    engine = Engine(lambda topic, payload: None)
    for instrument in (BTC, ETH):
        engine.add_instrument(instrument, chained_ids)
    parser = DeribitParser([BTC, ETH])
    feed = VenueFeed("deribit", [BTC.symbol, ETH.symbol], parser, engine)
    feed.on_connected()
    t0 = time.time_ns() + 2 * S  # past the connect's own resync interval
    feed.on_frame(_book("snapshot", 100), t0)
    state = engine.state("deribit", ETH.symbol)
    assert state is not None and state.sync.state is BookState.VALID
    # A change that does not follow: GAP, and the resync goes out at once (unsubscribe + subscribe).
    resync = [orjson.loads(f) for f in feed.on_frame(_book("change", 300, prev=200), t0)]
    assert [r["method"] for r in resync] == ["public/unsubscribe", "public/subscribe"]
    # The subscribe is refused: the book is still INVALID, and the next resync waits for the resync interval ...
    assert feed.on_frame(_refusal(resync[1]["id"]), t0 + S // 10) == []
    assert state.sync.state is BookState.INVALID and state.sync.reason is InvalidReason.BAD_FRAME
    # ... not for the stuck-book retry.
    again = [orjson.loads(f) for f in feed.on_idle(t0 + RESYNC_MIN_INTERVAL_NS + S // 10)]
    assert RESYNC_MIN_INTERVAL_NS + S // 10 < RESYNC_RETRY_NS
    assert [(r["method"], r["params"]["channels"]) for r in again] == [
        ("public/unsubscribe", ["book.ETH-PERPETUAL.100ms"]),
        ("public/subscribe", ["book.ETH-PERPETUAL.100ms"]),
    ]
    feed.on_frame(_book("snapshot", 400), t0 + 2 * S)
    assert state.sync.state is BookState.VALID
