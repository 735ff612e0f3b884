"""Bybit v5 parser: real frames (from the 2026-08 recording) -> typed events, and bad input -> BadFrame."""

from __future__ import annotations

import orjson
import pytest

from flowgauge.connectors.bybit import BybitParser, category_of_url
from flowgauge.types import (
    BUY,
    SELL,
    BadFrame,
    BookDelta,
    BookSnapshot,
    ContractKind,
    FundingRate,
    Instrument,
    Liquidation,
    OpenInterest,
    Trade,
)

SNAPSHOT = (
    '{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1786310818129,"data":{"s":"BTCUSDT",'
    '"b":[["65114.20","6.054"],["65114.10","0.002"]],"a":[["65114.30","10.486"],["65114.40","0.5"]],'
    '"u":15076952,"seq":753843911359},"cts":1786310818027}'
)
DELTA = (
    '{"topic":"orderbook.200.BTCUSDT","type":"delta","ts":1786310818130,"data":{"s":"BTCUSDT",'
    '"b":[["65095.30","0.005"],["65093.10","0"]],"a":[["65116.60","0"]],"u":15076953,"seq":753843913870},'
    '"cts":1786310818129}'
)
TRADE = (
    '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1786310819681,"data":[{"T":1786310819680,'
    '"s":"BTCUSDT","S":"Sell","v":"0.004","p":"65114.20","L":"MinusTick","i":"a9188a0a","BT":false,'
    '"RPI":false,"seq":753843954913}]}'
)
TICKER_SNAPSHOT = (
    '{"topic":"tickers.BTCUSDT","type":"snapshot","data":{"symbol":"BTCUSDT","markPrice":"65117.44",'
    '"indexPrice":"65137.76","openInterest":"59891.732","openInterestValue":"3899996265.01",'
    '"fundingIntervalHour":"8","fundingCap":"0.005","singleOpenInterest":"29945.866",'
    '"nextFundingTime":"1786320000000","fundingRate":"0.0001","bid1Price":"65114.20"},'
    '"cs":753843900397,"ts":1786310817583}'
)
TICKER_QUOTE_DELTA = (
    '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","bid1Price":"65114.20",'
    '"bid1Size":"6.054"},"cs":753843907770,"ts":1786310817883}'
)
TICKER_OI_DELTA = (
    '{"topic":"tickers.BTCUSDT","type":"delta","data":{"symbol":"BTCUSDT","openInterest":"59895.976",'
    '"singleOpenInterest":"29947.988"},"cs":753844072165,"ts":1786310824283}'
)
MS = 1_000_000


@pytest.fixture
def parser(btc: Instrument) -> BybitParser:
    return BybitParser("linear", [btc])


def test_snapshot_and_delta(parser: BybitParser) -> None:
    (snap,) = parser.feed(SNAPSHOT, 7)
    assert isinstance(snap, BookSnapshot)
    assert snap.symbol == "BTC/USDT:USDT"
    assert snap.seq == 15076952
    assert snap.bids == ((65114.2, 6.054), (65114.1, 0.002))
    assert snap.ts_exchange == 1786310818027 * MS  # cts: matching-engine time
    assert snap.ts_recv == 7
    (delta,) = parser.feed(DELTA, 8)
    assert isinstance(delta, BookDelta)
    assert delta.seq == 15076953
    assert delta.prev_seq is None
    assert (65093.1, 0.0) in delta.bids


def test_u_equal_one_is_a_restart_snapshot(parser: BybitParser) -> None:
    restart = DELTA.replace('"u":15076953', '"u":1')
    (event,) = parser.feed(restart, 1)
    assert isinstance(event, BookSnapshot)


def test_trade_taker_side(parser: BybitParser) -> None:
    (trade,) = parser.feed(TRADE, 1)
    assert isinstance(trade, Trade)
    assert trade.side == SELL
    assert trade.size == pytest.approx(0.004)
    assert trade.ts_exchange == 1786310819680 * MS
    (buy,) = parser.feed(TRADE.replace('"S":"Sell"', '"S":"Buy"').replace('"BT":false', '"BT":true'), 1)
    assert isinstance(buy, Trade)
    assert buy.side == BUY
    assert buy.forced is True


def test_ticker_open_interest_is_one_sided_and_merged(parser: BybitParser) -> None:
    events = parser.feed(TICKER_SNAPSHOT, 1)
    oi = next(e for e in events if isinstance(e, OpenInterest))
    funding = next(e for e in events if isinstance(e, FundingRate))
    assert oi.open_interest == pytest.approx(29945.866)  # singleOpenInterest, not the two-sided figure
    assert funding.rate == pytest.approx(0.0001)
    assert funding.interval_hours == 8
    assert funding.mark_price == pytest.approx(65117.44)
    assert funding.index_price == pytest.approx(65137.76)
    assert funding.next_funding_ts == 1786320000000 * MS
    # A delta with only quote fields is neither an OI nor a funding observation.
    assert parser.feed(TICKER_QUOTE_DELTA, 2) == []
    (oi2,) = parser.feed(TICKER_OI_DELTA, 3)
    assert isinstance(oi2, OpenInterest)
    assert oi2.open_interest == pytest.approx(29947.988)


def test_two_sided_open_interest_is_halved_when_single_missing(parser: BybitParser) -> None:
    frame = TICKER_OI_DELTA.replace(',"singleOpenInterest":"29947.988"', "")
    parser.feed(TICKER_SNAPSHOT.replace('"singleOpenInterest":"29945.866",', ""), 1)
    (oi,) = parser.feed(frame, 2)
    assert isinstance(oi, OpenInterest)
    assert oi.open_interest == pytest.approx(59895.976 / 2)


def test_liquidation_side_is_the_position(parser: BybitParser) -> None:
    frame = orjson.dumps(
        {
            "topic": "allLiquidation.BTCUSDT",
            "type": "snapshot",
            "ts": 1,
            "data": [{"T": 1786310819680, "s": "BTCUSDT", "S": "Buy", "v": "0.5", "p": "65000"}],
        }
    )
    (liq,) = parser.feed(frame, 1)
    assert isinstance(liq, Liquidation)
    assert liq.liquidated_side == "long"  # Bybit: Buy = a long position was liquidated
    # The documented object form (not a list) is accepted too.
    single = orjson.dumps(
        {
            "topic": "allLiquidation.BTCUSDT",
            "ts": 1,
            "data": {"T": 1, "s": "BTCUSDT", "S": "Sell", "v": "1", "p": "65000"},
        }
    )
    (liq2,) = parser.feed(single, 1)
    assert isinstance(liq2, Liquidation)
    assert liq2.liquidated_side == "short"


@pytest.mark.parametrize(
    ("frame", "touches_book"),
    [
        (b"\x00\xffnot json", False),
        ("[1,2,3]", False),
        (DELTA.replace('"u":15076953', '"u":"abc"'), True),
        (DELTA.replace('["65095.30","0.005"]', '["-1","0.005"]'), True),
        (DELTA.replace('"b":[', '"b":{"x":').replace(',["65093.10","0"]]', "}"), True),
        (DELTA.replace('"type":"delta"', '"type":"weird"'), True),
        (TRADE.replace('"S":"Sell"', '"S":"Sideways"'), False),
        ('{"success":false,"ret_msg":"error:handler not found","op":"subscribe"}', False),
    ],
)
def test_bad_frames_never_raise(parser: BybitParser, frame: str | bytes, touches_book: bool) -> None:
    (bad,) = parser.feed(frame, 1)
    assert isinstance(bad, BadFrame)
    assert bad.touches_book is touches_book
    if touches_book:
        assert bad.symbol == "BTC/USDT:USDT"


def test_frames_for_untracked_symbols_and_channels_are_ignored(parser: BybitParser) -> None:
    assert parser.feed(SNAPSHOT.replace("BTCUSDT", "XRPUSDT"), 1) == []
    assert parser.feed('{"topic":"kline.1.BTCUSDT","data":[],"ts":1,"type":"snapshot"}', 1) == []
    assert parser.feed('{"success":true,"ret_msg":"pong","op":"ping"}', 1) == []


def test_subscribe_batches_and_resync(parser: BybitParser, btc: Instrument) -> None:
    eth = Instrument(
        **{**{f: getattr(btc, f) for f in btc.__struct_fields__}, "symbol": "ETH/USDT:USDT", "venue_id": "ETHUSDT"}
    )
    two = BybitParser("linear", [btc, eth], book_depth=50)
    frames = [orjson.loads(f) for f in two.subscribe_frames(batch=3)]
    args = [a for f in frames for a in f["args"]]
    assert all(f["op"] == "subscribe" and len(f["args"]) <= 3 for f in frames)
    assert "orderbook.50.ETHUSDT" in args and "tickers.BTCUSDT" in args and "allLiquidation.ETHUSDT" in args
    unsub, sub = (orjson.loads(f) for f in two.resync_frames("ETH/USDT:USDT"))
    assert (unsub["op"], unsub["args"]) == ("unsubscribe", ["orderbook.50.ETHUSDT"])
    assert (sub["op"], sub["args"]) == ("subscribe", ["orderbook.50.ETHUSDT"])


def test_inverse_sizes_are_converted_to_base_units() -> None:
    inverse = Instrument(
        venue="bybit",
        symbol="BTC/USD:BTC",
        venue_id="BTCUSD",
        category="inverse",
        kind=ContractKind.INVERSE,
        contract_size=1.0,
        tick_size=0.5,
        base="BTC",
        quote="USD",
        settle="BTC",
        derivative=True,
    )
    parser = BybitParser("inverse", [inverse])
    frame = SNAPSHOT.replace("BTCUSDT", "BTCUSD").replace('"6.054"', '"65114.2"')
    (snap,) = parser.feed(frame, 1)
    assert isinstance(snap, BookSnapshot)
    assert snap.bids[0] == (65114.2, pytest.approx(1.0))  # 65114.2 USD contracts at 65114.2 = 1 BTC


def test_bad_depth_rejected(btc: Instrument) -> None:
    with pytest.raises(ValueError, match="depth"):
        BybitParser("linear", [btc], book_depth=25)


def test_category_of_url() -> None:
    assert category_of_url("wss://stream.bybit.com/v5/public/linear") == "linear"
    assert category_of_url("ws://127.0.0.1:9780/v5/public/spot") == "spot"
    assert category_of_url("wss://example.com/ws") is None


def test_long_short_account_ratio_poll(btc: Instrument) -> None:
    from flowgauge.connectors.bybit import BybitAdapter
    from flowgauge.types import LongShortRatio

    adapter = BybitAdapter()
    (poll,) = adapter.polls([btc])
    assert poll.path == "/v5/market/account-ratio"
    assert poll.params == {"category": "linear", "symbol": "BTCUSDT", "period": "5min", "limit": "1"}
    body = orjson.dumps(
        {
            "retCode": 0,
            "retMsg": "OK",
            "result": {
                "list": [
                    {"symbol": "BTCUSDT", "buyRatio": "0.6", "sellRatio": "0.4", "timestamp": "1786310700000"},
                    {"symbol": "BTCUSDT", "buyRatio": "0.5", "sellRatio": "0.5", "timestamp": "1786310400000"},
                ]
            },
        }
    )
    (ratio,) = adapter.parse_poll(poll, body, 5)
    assert isinstance(ratio, LongShortRatio)
    assert ratio.kind == "accounts"
    assert ratio.ratio == pytest.approx(1.5)  # the newest row, whatever the order
    assert ratio.ts_exchange == 1786310700000 * MS
    for bad in (b"nope", b'{"retCode":10001,"retMsg":"params error"}', b'{"retCode":0,"result":{"list":[{}]}}'):
        (frame,) = adapter.parse_poll(poll, bad, 5)
        assert isinstance(frame, BadFrame)
    assert adapter.parse_poll(poll, b'{"retCode":0,"result":{"list":[]}}', 5) == []


def test_ticker_volume_24h_rides_on_the_funding_event(parser: BybitParser) -> None:
    """`volume24h` (base coin on linear) reaches the flow_toxicity bucket size on the funding event; absent, None."""
    events = parser.feed(TICKER_SNAPSHOT, 1)
    assert next(e for e in events if isinstance(e, FundingRate)).volume_24h is None
    frame = TICKER_SNAPSHOT.replace('"fundingRate":"0.0001",', '"fundingRate":"0.0001","volume24h":"81234.5",')
    events = parser.feed(frame, 2)
    assert next(e for e in events if isinstance(e, FundingRate)).volume_24h == pytest.approx(81234.5)
