"""OKX v5 parser: real frames (2022 recording, 2026 seqId shape) -> typed events, checksums, bootstraps,
sync-rule failure paths through BookSync, bad input -> BadFrame, size conversion, liquidations, polls."""

from __future__ import annotations

import zlib

import orjson
import pytest

from flowgauge.book.sequencing import okx_books
from flowgauge.book.sync import BookSync
from flowgauge.connectors.base import FetchSnapshot, PollRequest
from flowgauge.connectors.okx import (
    LONG_SHORT_ENDPOINTS,
    OkxAdapter,
    OkxParser,
    checksum,
    okx_instrument,
    public_url,
)
from flowgauge.types import (
    BUY,
    SELL,
    BadFrame,
    BookDelta,
    BookSnapshot,
    BookState,
    ContractKind,
    FundingRate,
    Instrument,
    InvalidReason,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
)

MS = 1_000_000


def instrument(venue_id: str, kind: ContractKind, contract_size: float, tick: float) -> Instrument:
    base, quote = venue_id.split("-")[:2]
    settle = base if kind is ContractKind.INVERSE else quote
    return Instrument(
        venue="okx",
        symbol=f"{base}/{quote}:{settle}",
        venue_id=venue_id,
        category=kind.value,
        kind=kind,
        contract_size=contract_size,
        tick_size=tick,
        base=base,
        quote=quote,
        settle=settle,
        derivative=True,
    )


UNI = instrument("UNI-USD-SWAP", ContractKind.INVERSE, 10.0, 0.001)
BTC = instrument("BTC-USDT-SWAP", ContractKind.LINEAR, 0.01, 0.1)
ETH = instrument("ETH-USDT-SWAP", ContractKind.LINEAR, 0.1, 0.01)


def crc(bids: list[list[str]], asks: list[list[str]]) -> int:
    """Independent OKX checksum: interleave the top 25, join with ':', signed CRC32."""
    parts = []
    for i in range(25):
        if i < len(bids):
            parts += bids[i][:2]
        if i < len(asks):
            parts += asks[i][:2]
    value = zlib.crc32(":".join(parts).encode())
    return value - 2**32 if value >= 2**31 else value


def books(
    action: str, inst: str, bids: list[list[str]], asks: list[list[str]], ts: int = 1652459225363, **extra: object
) -> str:
    return orjson.dumps(
        {
            "arg": {"channel": "books", "instId": inst},
            "action": action,
            "data": [{"asks": asks, "bids": bids, "ts": str(ts), **extra}],
        }
    ).decode()


# The 2022 generation (REC:OKX shape): snapshot then update, CRC32 checksum, no seqId.
SNAP_BIDS = [["5.14", "251", "0", "2"], ["5.138", "20", "0", "1"], ["5.117", "5", "0", "1"]]
SNAP_ASKS = [["5.148", "60", "0", "1"], ["5.158", "100", "0", "2"]]
UPD_BIDS = [["5.14", "427", "0", "4"], ["5.138", "26", "0", "2"], ["5.117", "0", "0", "0"]]
UPD_ASKS = [["5.158", "129", "0", "2"], ["5.233", "240", "0", "1"]]
AFTER_BIDS = [["5.14", "427", "0", "4"], ["5.138", "26", "0", "2"]]
AFTER_ASKS = [["5.148", "60", "0", "1"], ["5.158", "129", "0", "2"], ["5.233", "240", "0", "1"]]
SNAP_2022 = books("snapshot", "UNI-USD-SWAP", SNAP_BIDS, SNAP_ASKS, checksum=crc(SNAP_BIDS, SNAP_ASKS))
UPD_2022 = books("update", "UNI-USD-SWAP", UPD_BIDS, UPD_ASKS, 1652459225464, checksum=crc(AFTER_BIDS, AFTER_ASKS))

# The current generation (Qubx live sample shape): seqId/prevSeqId, checksum 0.
BTC_BIDS = [["65000.1", "3.62", "0", "2"], ["65000", "10", "0", "1"]]
BTC_ASKS = [["65000.2", "1", "0", "1"], ["65001", "25", "0", "3"]]


def btc_snap(seq: int = 335226848531) -> str:
    return books("snapshot", "BTC-USDT-SWAP", BTC_BIDS, BTC_ASKS, checksum=0, seqId=seq, prevSeqId=-1)


def btc_update(
    prev: int, seq: int, bids: list[list[str]] | None = None, asks: list[list[str]] | None = None, **extra: object
) -> str:
    return books(
        "update",
        "BTC-USDT-SWAP",
        bids if bids is not None else [["65000", "12", "0", "2"]],
        asks if asks is not None else [],
        checksum=0,
        seqId=seq,
        prevSeqId=prev,
        **extra,
    )


TRADE = (
    '{"arg":{"channel":"trades","instId":"UNI-USD-SWAP"},"data":[{"instId":"UNI-USD-SWAP",'
    '"tradeId":"12883020","px":"5.123","sz":"100","side":"sell","ts":"1652459215150"}]}'
)


@pytest.fixture
def parser() -> OkxParser:
    return OkxParser([UNI, BTC, ETH])


def ack(inst: str) -> str:
    return orjson.dumps({"event": "subscribe", "arg": {"channel": "books", "instId": inst}}).decode()


# -- books: the 2022 generation ------------------------------------------------------------------------


def test_recorded_shape_snapshot_and_update_with_verified_checksum(parser: OkxParser) -> None:
    (snap,) = parser.feed(SNAP_2022, 7)
    assert isinstance(snap, BookSnapshot)
    assert snap.symbol == "UNI/USD:UNI" and snap.ts_exchange == 1652459225363 * MS and snap.ts_recv == 7
    # Inverse: 251 contracts of 10 USD at 5.14 = 488.3 UNI.
    assert snap.bids[0] == (5.14, pytest.approx(251 * 10 / 5.14))
    (delta,) = parser.feed(UPD_2022, 8)
    assert isinstance(delta, BookDelta)
    # No seqId in 2022: the parser numbers messages so that the update links to the snapshot.
    assert delta.prev_seq == snap.seq and delta.seq > snap.seq
    assert (5.117, 0.0) in delta.bids  # sz "0" deletes; the 4th field (order count "0") is not a size
    assert parser.checksums_verified == 2 and parser.checksum_mismatches == 0
    sync = BookSync(okx_books, buffer_deltas=True)
    sync.on_snapshot(snap)
    assert sync.on_delta(delta).applied


def test_checksum_mismatch_is_a_checksum_bad_frame_and_suspends_verification(parser: OkxParser) -> None:
    parser.feed(SNAP_2022, 1)
    wrong = UPD_2022.replace('["5.158","129","0","2"]', '["5.158","128","0","2"]')
    (bad,) = parser.feed(wrong, 2)
    assert isinstance(bad, BadFrame)
    assert bad.touches_book and bad.symbol == "UNI/USD:UNI"
    assert bad.invalid_reason is InvalidReason.CHECKSUM
    assert "checksum mismatch" in bad.reason
    assert parser.checksum_mismatches == 1
    # Until a new snapshot the mirror is unknown: later updates pass through unverified (the book is
    # already invalid in the engine), then a snapshot restarts verification.
    (later,) = parser.feed(UPD_2022, 3)
    assert isinstance(later, BookDelta)
    assert isinstance(parser.feed(SNAP_2022, 4)[0], BookSnapshot)
    assert isinstance(parser.feed(UPD_2022, 5)[0], BookDelta)
    assert parser.checksum_mismatches == 1


def test_checksum_uses_the_raw_strings(parser: OkxParser) -> None:
    parser.feed(SNAP_2022, 1)
    # Same value, different text: "5.1580" hashes differently from "5.158", so the venue's checksum
    # (computed over its own strings) no longer matches: floats would have hidden this.
    reformatted = UPD_2022.replace('["5.233","240"', '["5.2330","240"')
    (bad,) = parser.feed(reformatted, 2)
    assert isinstance(bad, BadFrame) and bad.invalid_reason is InvalidReason.CHECKSUM


def test_checksum_zero_is_never_verified(parser: OkxParser) -> None:
    parser.feed(books("snapshot", "UNI-USD-SWAP", SNAP_BIDS, SNAP_ASKS, checksum=0), 1)
    (delta,) = parser.feed(books("update", "UNI-USD-SWAP", UPD_BIDS, UPD_ASKS, checksum=0), 2)
    assert isinstance(delta, BookDelta)
    assert parser.checksums_verified == 0


def test_checksum_function_interleaves_and_continues_the_longer_side() -> None:
    bids = [("3", "1"), ("2", "1"), ("1", "5")]
    asks = [("4", "2")]
    expected = zlib.crc32(b"3:1:4:2:2:1:1:5")
    assert checksum(bids, asks) == (expected - 2**32 if expected >= 2**31 else expected)
    assert -(2**31) <= checksum([("5.14", "251")], [("5.148", "60")]) < 2**31


# -- books: the current generation (seqId) -------------------------------------------------------------


def test_seq_ids_are_taken_from_the_venue(parser: OkxParser) -> None:
    (snap,) = parser.feed(btc_snap(), 1)
    assert isinstance(snap, BookSnapshot) and snap.seq == 335226848531
    assert snap.bids[0] == (65000.1, pytest.approx(0.0362))  # linear: 3.62 contracts x 0.01 BTC
    (delta,) = parser.feed(btc_update(335226848531, 335226849000), 2)
    assert isinstance(delta, BookDelta)
    assert (delta.prev_seq, delta.seq) == (335226848531, 335226849000)
    assert delta.bids == ((65000.0, pytest.approx(0.12)),)


def run(events: list, sync: BookSync) -> list:
    results = []
    for event in events:
        if isinstance(event, BookSnapshot):
            results.append(sync.on_snapshot(event).applied)
        elif isinstance(event, BookDelta):
            r = sync.on_delta(event)
            results.append("gap" if r.needs_resync else r.applied)
    return results


def test_sync_rule_failure_paths(parser: OkxParser) -> None:
    sync = BookSync(okx_books, buffer_deltas=True)
    events = parser.feed(btc_snap(100), 1) + parser.feed(btc_update(100, 150), 2)
    assert run(events, sync) == [True, True]
    # duplicate (replayed) and out-of-order (older) updates are dropped harmlessly
    assert run(parser.feed(btc_update(100, 150), 3), sync) == [False]
    assert run(parser.feed(btc_update(90, 120), 4), sync) == [False]
    assert sync.state is BookState.VALID and sync.stale_dropped == 2
    # OKX's idle update: empty, seqId == prevSeqId
    assert run(parser.feed(btc_update(150, 150, bids=[]), 5), sync) == [True]
    # a gap: prevSeqId is not the last seqId
    assert run(parser.feed(btc_update(170, 180), 6), sync) == ["gap"]
    assert sync.state is BookState.INVALID and sync.reason is InvalidReason.GAP and sync.gaps == 1


def test_sequence_reset_after_maintenance_is_followed(parser: OkxParser) -> None:
    sync = BookSync(okx_books)
    run(parser.feed(btc_snap(1000), 1), sync)
    # After maintenance the venue may restart its ids lower: linked by prevSeqId, so accepted.
    assert run(parser.feed(btc_update(1000, 5), 2) + parser.feed(btc_update(5, 9), 3), sync) == [True, True]
    assert sync.book.seq == 9


def test_rest_bootstrap_bridges_the_first_buffered_update() -> None:
    parser = OkxParser([BTC], bootstrap="rest")
    actions = parser.on_connected()
    fetch = actions[-1]
    assert isinstance(fetch, FetchSnapshot)
    assert fetch.path == "/api/v5/market/books" and fetch.symbol == "BTC/USDT:USDT"
    assert fetch.params == {"instId": "BTC-USDT-SWAP", "sz": "400", "source": "0"}
    sync = BookSync(okx_books, buffer_deltas=True)
    # The WS snapshot is ignored in REST mode; updates are buffered until the REST snapshot.
    assert parser.feed(btc_snap(100), 1) == []
    buffered = parser.feed(btc_update(100, 110), 2) + parser.feed(btc_update(110, 130), 3)
    buffered += parser.feed(btc_update(130, 140, bids=[["64999", "7", "0", "1"]]), 4)
    assert run(buffered, sync) == [False, False, False]
    body = orjson.dumps(
        {"code": "0", "msg": "", "data": [{"asks": BTC_ASKS, "bids": BTC_BIDS, "ts": "1786412700000", "seqId": 120}]}
    )
    (snap,) = parser.on_snapshot("BTC/USDT:USDT", body, 5)
    assert isinstance(snap, BookSnapshot) and snap.seq == 120
    # 110 <= 120: dropped; 130 bridges (prevSeqId 110 <= 120 < 130); 140 links.
    assert sync.on_snapshot(snap).applied
    assert sync.state is BookState.VALID and sync.book.seq == 140
    assert sync.book.bids.best() == (65000.1, pytest.approx(0.0362))
    assert (64999.0, pytest.approx(0.07)) in sync.book.bids.levels()


def test_rest_snapshot_older_than_the_stream_is_a_gap() -> None:
    parser = OkxParser([BTC], bootstrap="rest")
    parser.on_connected()
    sync = BookSync(okx_books, buffer_deltas=True)
    run(parser.feed(btc_update(130, 140), 1), sync)
    body = orjson.dumps({"code": "0", "data": [{"asks": BTC_ASKS, "bids": BTC_BIDS, "ts": "1", "seqId": "120"}]})
    (snap,) = parser.on_snapshot("BTC/USDT:USDT", body, 2)  # seqId as a string is accepted too
    result = sync.on_snapshot(snap)
    assert result.needs_resync and sync.reason is InvalidReason.GAP  # OKX: refetch


def test_rest_bootstrap_catches_the_checksum_mirror_up() -> None:
    parser = OkxParser([UNI], bootstrap="rest")
    parser.on_connected()
    upd = books(
        "update", "UNI-USD-SWAP", UPD_BIDS, UPD_ASKS, checksum=crc(AFTER_BIDS, AFTER_ASKS), seqId=11, prevSeqId=10
    )
    assert isinstance(parser.feed(upd, 1)[0], BookDelta)
    body = orjson.dumps({"code": "0", "data": [{"asks": SNAP_ASKS, "bids": SNAP_BIDS, "ts": "1", "seqId": 10}]})
    assert isinstance(parser.on_snapshot("UNI/USD:UNI", body, 2)[0], BookSnapshot)
    assert parser.checksums_verified == 1  # the buffered update, replayed into the mirror after the snapshot
    nxt = books(
        "update",
        "UNI-USD-SWAP",
        [["5.14", "1", "0", "1"]],
        [],
        checksum=crc([["5.14", "1"], ["5.138", "26"]], AFTER_ASKS),
        seqId=12,
        prevSeqId=11,
    )
    assert isinstance(parser.feed(nxt, 3)[0], BookDelta)
    assert parser.checksums_verified == 2 and parser.checksum_mismatches == 0


def test_missing_ws_snapshot_switches_to_rest(parser: OkxParser) -> None:
    actions = parser.on_connected()
    assert all(isinstance(a, str) for a in actions)  # WS bootstrap: subscriptions only
    assert parser.feed(ack("BTC-USDT-SWAP"), 1) == []
    # OKX after the announced removal: the subscription starts with an update.
    bad, delta = parser.feed(btc_update(100, 110), 2)
    assert isinstance(bad, BadFrame) and bad.touches_book and bad.symbol == "BTC/USDT:USDT"
    assert bad.invalid_reason is InvalidReason.BAD_FRAME  # differs from the RESET a reconnect leaves
    assert isinstance(delta, BookDelta)
    assert parser.ws_snapshot_gone
    (fetch,) = parser.resync("BTC/USDT:USDT")
    assert isinstance(fetch, FetchSnapshot)
    parser.reset()
    assert any(isinstance(a, FetchSnapshot) for a in parser.on_connected())  # every later connection too


def test_resync_uses_rest_with_seq_ids_and_resubscribes_without(parser: OkxParser) -> None:
    parser.feed(btc_snap(), 1)
    (fetch,) = parser.resync("BTC/USDT:USDT")
    assert isinstance(fetch, FetchSnapshot) and fetch.params["instId"] == "BTC-USDT-SWAP"
    parser.feed(SNAP_2022, 2)  # no seqIds: a REST snapshot could not be placed in the stream
    unsub, sub = parser.resync("UNI/USD:UNI")
    assert orjson.loads(unsub) == {"op": "unsubscribe", "args": [{"channel": "books", "instId": "UNI-USD-SWAP"}]}
    assert orjson.loads(sub) == {"op": "subscribe", "args": [{"channel": "books", "instId": "UNI-USD-SWAP"}]}
    assert parser.resync("XRP/USDT:USDT") == []
    # After a resubscribe the first push is the new snapshot: no false "snapshot gone" detection.
    parser.feed(ack("UNI-USD-SWAP"), 3)
    assert isinstance(parser.feed(SNAP_2022, 4)[0], BookSnapshot)
    assert not parser.ws_snapshot_gone


def test_refused_books_subscription_is_subscribed_again_at_its_resync() -> None:
    """A subscribe whose `books` arg OKX refuses (an error event naming no arg): every books arg not acknowledged
    by then is invalidated, its REST snapshots are refused and its resync subscribes it again, instead of
    waiting for the 10 s stuck-book retry. Found by the OKX fault test."""
    parser = OkxParser([BTC, ETH])
    parser.on_connected()
    parser.feed(ack("BTC-USDT-SWAP"), 1)
    (bad,) = parser.feed('{"event":"error","code":"50001","msg":"Service temporarily unavailable"}', 2)
    assert isinstance(bad, BadFrame)
    assert (bad.symbol, bad.touches_book, bad.invalid_reason) == ("ETH/USDT:USDT", True, InvalidReason.BAD_FRAME)
    rest = orjson.dumps({"code": "0", "data": [{"asks": BTC_ASKS, "bids": BTC_BIDS, "ts": "1", "seqId": 7}]})
    (refused,) = parser.on_snapshot("ETH/USDT:USDT", rest, 3)
    assert isinstance(refused, BadFrame) and refused.touches_book and refused.symbol == "ETH/USDT:USDT"
    (sub,) = parser.resync("ETH/USDT:USDT")
    assert orjson.loads(sub) == {"op": "subscribe", "args": [{"channel": "books", "instId": "ETH-USDT-SWAP"}]}
    # A second error while that subscribe is unacknowledged refuses it again; its ack clears it.
    (again,) = parser.feed('{"event":"error","code":"50001","msg":"Service temporarily unavailable"}', 4)
    assert isinstance(again, BadFrame) and again.symbol == "ETH/USDT:USDT"
    parser.feed(ack("ETH-USDT-SWAP"), 5)
    assert isinstance(parser.on_snapshot("ETH/USDT:USDT", rest, 6)[0], BookSnapshot)
    # Once every books arg is acknowledged an error touches no book.
    (other,) = parser.feed('{"event":"error","code":"60012","msg":"Invalid request"}', 7)
    assert isinstance(other, BadFrame) and other.symbol is None and not other.touches_book


def test_rest_snapshot_without_seq_id_falls_back_to_ws(parser: OkxParser) -> None:
    parser.feed(btc_snap(), 1)
    body = orjson.dumps({"code": "0", "data": [{"asks": BTC_ASKS, "bids": BTC_BIDS, "ts": "1"}]})
    (bad,) = parser.on_snapshot("BTC/USDT:USDT", body, 2)
    assert isinstance(bad, BadFrame) and bad.touches_book
    assert not parser.rest_bridgeable
    unsub, sub = parser.resync("BTC/USDT:USDT")
    assert "unsubscribe" in unsub and "subscribe" in sub


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"code":"51001","msg":"Instrument ID does not exist","data":[]}',
        b'{"code":"0","data":[{"asks":"x","bids":[],"ts":"1","seqId":1}]}',
    ],
)
def test_bad_rest_snapshots_never_raise(parser: OkxParser, body: bytes) -> None:
    (bad,) = parser.on_snapshot("BTC/USDT:USDT", body, 1)
    assert isinstance(bad, BadFrame) and bad.touches_book and bad.symbol == "BTC/USDT:USDT"


# -- other channels ------------------------------------------------------------------------------------


def test_trade_taker_side_and_base_size(parser: OkxParser) -> None:
    (trade,) = parser.feed(TRADE, 1)
    assert isinstance(trade, Trade)
    assert trade.side == SELL and trade.trade_id == "12883020" and not trade.forced
    assert trade.size == pytest.approx(100 * 10 / 5.123)  # 100 inverse contracts of 10 USD
    assert trade.ts_exchange == 1652459215150 * MS
    (buy,) = parser.feed(TRADE.replace('"sell"', '"buy"').replace("UNI-USD-SWAP", "BTC-USDT-SWAP"), 1)
    assert isinstance(buy, Trade) and buy.side == BUY and buy.size == pytest.approx(1.0)  # 100 x 0.01 BTC


def test_open_interest_uses_oi_ccy_or_converts_contracts(parser: OkxParser) -> None:
    frame = {
        "arg": {"channel": "open-interest", "instId": "BTC-USDT-SWAP"},
        "data": [
            {
                "instType": "SWAP",
                "instId": "BTC-USDT-SWAP",
                "oi": "2500000",
                "oiCcy": "25000",
                "oiUsd": "1625000000",
                "ts": "1786412700000",
            }
        ],
    }
    (oi,) = parser.feed(orjson.dumps(frame), 1)
    assert isinstance(oi, OpenInterest) and oi.open_interest == 25000.0 and oi.ts_exchange == 1786412700000 * MS
    del frame["data"][0]["oiCcy"]
    (oi,) = parser.feed(orjson.dumps(frame), 1)
    assert isinstance(oi, OpenInterest) and oi.open_interest == pytest.approx(25000.0)  # 2.5M x 0.01
    # Inverse contracts need a price: none before the first mark, then contracts x 10 USD / mark.
    uni = {
        "arg": {"channel": "open-interest", "instId": "UNI-USD-SWAP"},
        "data": [{"instId": "UNI-USD-SWAP", "oi": "1000", "ts": "1"}],
    }
    assert parser.feed(orjson.dumps(uni), 1) == []
    parser.feed(
        '{"arg":{"channel":"mark-price","instId":"UNI-USD-SWAP"},"data":[{"instId":"UNI-USD-SWAP",'
        '"markPx":"5","ts":"1"}]}',
        1,
    )
    (oi,) = parser.feed(orjson.dumps(uni), 1)
    assert isinstance(oi, OpenInterest) and oi.open_interest == pytest.approx(2000.0)


def test_funding_mark_and_index(parser: OkxParser) -> None:
    funding = {
        "arg": {"channel": "funding-rate", "instId": "BTC-USDT-SWAP"},
        "data": [
            {
                "fundingRate": "0.0001",
                "fundingTime": "1786435200000",
                "instId": "BTC-USDT-SWAP",
                "instType": "SWAP",
                "method": "current_period",
                "nextFundingRate": "",
                "nextFundingTime": "1786464000000",
                "ts": "1786412700000",
            }
        ],
    }
    (rate,) = parser.feed(orjson.dumps(funding), 1)
    assert isinstance(rate, FundingRate)
    assert rate.rate == pytest.approx(0.0001) and rate.interval_hours == 8.0
    assert rate.next_funding_ts == 1786435200000 * MS  # fundingTime: the settlement the rate applies to
    assert rate.mark_price is None and rate.index_price is None
    (mark,) = parser.feed(
        '{"arg":{"channel":"mark-price","instId":"ETH-USDT-SWAP"},"data":[{"instType":"SWAP",'
        '"instId":"ETH-USDT-SWAP","markPx":"2004.61","ts":"1786412700001"}]}',
        2,
    )
    assert isinstance(mark, FundingRate) and mark.mark_price == 2004.61 and mark.rate is None
    # One index feeds every contract on it; an index nobody here tracks yields nothing.
    two = OkxParser([BTC, instrument("BTC-USDT-250627", ContractKind.LINEAR, 0.01, 0.1)])
    events = two.feed(
        '{"arg":{"channel":"index-tickers","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT",'
        '"idxPx":"65010.5","ts":"1786412700002"}]}',
        3,
    )
    assert sorted(e.symbol for e in events) == ["BTC/USDT:USDT", "BTC/USDT:USDT"]
    assert all(isinstance(e, FundingRate) and e.index_price == 65010.5 for e in events)
    assert (
        two.feed(
            '{"arg":{"channel":"index-tickers","instId":"ETH-USDT"},"data":[{"instId":"ETH-USDT",'
            '"idxPx":"2000","ts":"1"}]}',
            3,
        )
        == []
    )


def liquidation(inst: str, side: str, pos_side: str, sz: str = "3", px: str = "65000") -> bytes:
    return orjson.dumps(
        {
            "arg": {"channel": "liquidation-orders", "instType": "SWAP"},
            "data": [
                {
                    "details": [
                        {
                            "bkLoss": "0",
                            "bkPx": px,
                            "ccy": "",
                            "posSide": pos_side,
                            "side": side,
                            "sz": sz,
                            "ts": "1786412700000",
                        }
                    ],
                    "instFamily": "BTC-USDT",
                    "instId": inst,
                    "instType": "SWAP",
                    "uly": "BTC-USDT",
                }
            ],
        }
    )


def test_liquidation_side_is_the_position_and_filtered_on_the_outer_inst_id(parser: OkxParser) -> None:
    (liq,) = parser.feed(liquidation("BTC-USDT-SWAP", "sell", "long"), 1)
    assert isinstance(liq, Liquidation)
    assert liq.liquidated_side == "long" and liq.price == 65000.0
    assert liq.size == pytest.approx(0.03)  # 3 contracts x 0.01 BTC
    assert liq.ts_exchange == 1786412700000 * MS
    (short,) = parser.feed(liquidation("BTC-USDT-SWAP", "buy", "short"), 1)
    assert isinstance(short, Liquidation) and short.liquidated_side == "short"
    # One-way mode reports posSide "net": the forced order's side tells (a sell closes a long).
    (net,) = parser.feed(liquidation("BTC-USDT-SWAP", "sell", "net"), 1)
    assert isinstance(net, Liquidation) and net.liquidated_side == "long"
    # The channel carries every SWAP of the venue: others are dropped.
    assert parser.feed(liquidation("DOGE-USDT-SWAP", "sell", "long"), 1) == []


# -- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "touches_book"),
    [
        (b"\x00\xffnot json", False),
        ("[1,2,3]", False),
        ('{"data":[]}', False),
        (btc_update(1, 2).replace('"65000"', '"-1"'), True),
        (btc_update(1, 2).replace('"65000"', '"NaN"'), True),
        (btc_update(1, 2).replace('"action":"update"', '"action":"weird"'), True),
        (btc_update(1, 2).replace('"seqId":2', '"seqId":"x"'), True),
        (btc_update(1, 2).replace('"bids":[', '"bids":{"x":').replace(',"0","2"]]', ',"0","2"]}'), True),
        ('{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"update","data":[]}', True),
        (TRADE.replace('"sell"', '"sideways"'), False),
        (TRADE.replace('"5.123"', '"1e999"'), False),
        (
            '{"arg":{"channel":"funding-rate","instId":"BTC-USDT-SWAP"},"data":[{"fundingRate":"0.0001",'
            '"fundingTime":"1e999","nextFundingTime":"1","ts":"1"}]}',
            False,
        ),
        ('{"arg":{"channel":"mark-price","instId":"BTC-USDT-SWAP"},"data":[{"markPx":"inf","ts":"1"}]}', False),
        (liquidation("BTC-USDT-SWAP", "hold", "both"), False),
        ('{"event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:X doesn\'t exist."}', False),
    ],
)
def test_bad_frames_never_raise(parser: OkxParser, frame: str | bytes, touches_book: bool) -> None:
    events = parser.feed(frame, 1)
    assert len(events) == 1
    bad = events[0]
    assert isinstance(bad, BadFrame)
    assert bad.touches_book is touches_book
    if touches_book:
        assert bad.symbol == "BTC/USDT:USDT"


def test_keepalive_acks_and_foreign_frames(parser: OkxParser) -> None:
    assert parser.ping_frame() == "ping"
    assert parser.feed("pong", 1) == [] and parser.feed(b"pong", 1) == []
    assert parser.feed("ping", 1) == ["pong"]
    assert parser.feed('{"event":"subscribe","arg":{"channel":"trades","instId":"BTC-USDT-SWAP"}}', 1) == []
    assert parser.feed('{"event":"notice","code":"64008","msg":"upgrade in 60 s"}', 1) == []
    assert parser.notices == 1
    assert parser.feed(SNAP_2022.replace("UNI-USD-SWAP", "BTC-USDT"), 1) == []  # spot, not ours
    assert parser.feed('{"arg":{"channel":"tickers","instId":"UNI-USD-SWAP"},"data":[{"last":"5"}]}', 1) == []
    assert parser.feed('{"event":"subscribe","arg":{"channel":"books","instId":["x"]}}', 1) == []


def test_subscriptions_cover_every_channel_once(parser: OkxParser) -> None:
    frames = [orjson.loads(f) for f in parser.on_connected()]  # type: ignore[arg-type]
    args = [a for f in frames for a in f["args"]]
    assert all(f["op"] == "subscribe" and len(f["args"]) <= 50 for f in frames)
    assert {"channel": "books", "instId": "ETH-USDT-SWAP"} in args
    assert {"channel": "funding-rate", "instId": "UNI-USD-SWAP"} in args
    assert {"channel": "index-tickers", "instId": "BTC-USDT"} in args
    assert {"channel": "index-tickers", "instId": "UNI-USD"} in args
    assert [a for a in args if a["channel"] == "liquidation-orders"] == [
        {"channel": "liquidation-orders", "instType": "SWAP"}
    ]
    assert len(args) == len({orjson.dumps(a) for a in args})
    futures = OkxParser([instrument("BTC-USD-220527", ContractKind.INVERSE, 100.0, 0.1)])
    fargs = [a for f in futures.on_connected() for a in orjson.loads(f)["args"]]  # type: ignore[arg-type]
    assert {"channel": "liquidation-orders", "instType": "FUTURES"} in fargs
    assert not any(a["channel"] == "funding-rate" for a in fargs)  # dated futures have no funding


def test_bad_depth_and_bootstrap_rejected() -> None:
    with pytest.raises(ValueError, match="depth"):
        OkxParser([BTC], book_depth=200)
    with pytest.raises(ValueError, match="bootstrap"):
        OkxParser([BTC], bootstrap="both")  # type: ignore[arg-type]


# -- adapter -------------------------------------------------------------------------------------------


def test_adapter_facts_connections_and_urls() -> None:
    adapter = OkxAdapter(instruments_per_connection=2)
    assert adapter.venue == "okx" and adapter.buffer_deltas is True
    assert OkxAdapter.sequence_rule is okx_books and adapter.sequence_rule is okx_books
    conns = adapter.connections([UNI, BTC, ETH], "wss://ws.okx.com:8443/ws/v5/business", 400)
    assert [url for url, _ in conns] == ["wss://ws.okx.com:8443/ws/v5/public"] * 2
    assert [sorted(p.instruments) for _, p in conns] == [["BTC-USDT-SWAP", "UNI-USD-SWAP"], ["ETH-USDT-SWAP"]]
    assert public_url("ws://127.0.0.1:9782") == "ws://127.0.0.1:9782/ws/v5/public"
    assert public_url("ws://127.0.0.1:9782/ws/v5/public") == "ws://127.0.0.1:9782/ws/v5/public"
    with pytest.raises(ValueError, match="depth"):
        adapter.connections([BTC], "wss://ws.okx.com:8443/ws/v5/public", 50)


def test_polls_and_long_short_parsing() -> None:
    adapter = OkxAdapter()
    polls = adapter.polls([BTC, UNI])
    assert len(polls) == 2 * len(LONG_SHORT_ENDPOINTS)
    assert all(
        p.kind == "long_short" and p.weight * (60 / p.interval_s) < adapter.rest_weight_per_minute for p in polls
    )
    total = sum(p.weight * 60 / p.interval_s for p in polls)
    assert total < adapter.rest_weight_per_minute / 4  # leaves most of the budget for snapshots
    request = next(p for p in polls if p.key == "ls:top_positions:BTC-USDT-SWAP")
    assert request.params == {"instId": "BTC-USDT-SWAP", "period": "5m", "limit": "2"}
    body = '{"code":"0","msg":"","data":[["1786412700000","1.6634118967452301"],["1786412400000","1.5"]]}'
    (ratio,) = adapter.parse_poll(request, body, 9)
    assert isinstance(ratio, LongShortRatio)
    assert ratio.kind == "top_positions" and ratio.symbol == "BTC/USDT:USDT"
    assert ratio.ratio == pytest.approx(1.6634118967452301) and ratio.ts_exchange == 1786412700000 * MS
    assert adapter.parse_poll(request, '{"code":"0","data":[]}', 9) == []
    for bad in ("nope", '{"code":"50011","msg":"Too Many Requests","data":[]}', '{"code":"0","data":[["x"]]}'):
        (frame,) = adapter.parse_poll(request, bad, 9)
        assert isinstance(frame, BadFrame) and not frame.touches_book
    accounts = PollRequest("ls:accounts:BTC-USDT-SWAP", "BTC/USDT:USDT", "long_short", "/x", {}, 8, 120.0)
    (obj,) = adapter.parse_poll(accounts, '{"code":"0","data":[{"ts":"5","longShortAcctRatio":"0.8"}]}', 1)
    assert isinstance(obj, LongShortRatio) and obj.kind == "accounts" and obj.ratio == 0.8


def test_okx_instrument_applies_ct_mult_and_ct_type() -> None:
    market = {
        "symbol": "BTC/USDT:USDT",
        "id": "BTC-USDT-SWAP",
        "base": "BTC",
        "quote": "USDT",
        "settle": "USDT",
        "linear": True,
        "inverse": False,
        "swap": True,
        "contractSize": 0.01,
        "precision": {"price": 0.1},
        "info": {"ctVal": "0.01", "ctMult": "10", "ctType": "linear", "ctValCcy": "BTC"},
    }
    inst = okx_instrument(market)
    assert inst.contract_size == pytest.approx(0.1) and inst.kind is ContractKind.LINEAR and inst.derivative
    inverse = {
        **market,
        "symbol": "BTC/USD:BTC",
        "id": "BTC-USD-SWAP",
        "quote": "USD",
        "settle": "BTC",
        "linear": False,
        "inverse": True,
        "info": {"ctVal": "100", "ctMult": "1", "ctType": "inverse"},
    }
    inst = okx_instrument(inverse)
    assert inst.kind is ContractKind.INVERSE and inst.contract_size == 100.0
    assert inst.base_size(650, 65000.0) == pytest.approx(1.0)
