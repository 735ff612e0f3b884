"""Best-quote streams (issue 11 item 1): each venue's parser turns its best-quote frames into `BestQuote` events in
base units, subscribes the stream by default and not with `best_quote=False`, and never lets a bad quote touch the
book. Binance frames are real (tests/fixtures/best_quote/binance-ethusdt-bookticker.jsonl, from the 2024 ETHUSDT
recording); the others are in their venue's documented shape (tests/fixtures/best_quote/venue-frames.json)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from flowgauge.connectors.binance import BinanceUsdmAdapter, BinanceUsdmParser
from flowgauge.connectors.bybit import BybitAdapter, BybitParser
from flowgauge.connectors.deribit import DeribitAdapter, DeribitParser
from flowgauge.connectors.hyperliquid import HyperliquidAdapter
from flowgauge.connectors.okx import OkxAdapter, OkxParser
from flowgauge.types import BadFrame, BestQuote, ContractKind, Instrument

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "best_quote"
FRAMES = json.loads((FIXTURES / "venue-frames.json").read_text())
BINANCE_FRAMES = (FIXTURES / "binance-ethusdt-bookticker.jsonl").read_text().splitlines()
_MS = 1_000_000

ETH_BINANCE = Instrument(
    "binanceusdm", "ETH/USDT:USDT", "ETHUSDT", "linear", ContractKind.LINEAR, 1.0, 0.01, "ETH", "USDT", "USDT", True
)
BTC_BYBIT = Instrument(
    "bybit", "BTC/USDT:USDT", "BTCUSDT", "linear", ContractKind.LINEAR, 1.0, 0.1, "BTC", "USDT", "USDT", True
)
UNI_OKX = Instrument(  # inverse: 10 USD a contract
    "okx", "UNI/USD:UNI", "UNI-USD-SWAP", "SWAP", ContractKind.INVERSE, 10.0, 0.001, "UNI", "USD", "UNI", True
)
BTC_DERIBIT = Instrument(  # inverse: amounts in USD
    "deribit", "BTC/USD:BTC", "BTC-PERPETUAL", "future", ContractKind.INVERSE, 10.0, 0.5, "BTC", "USD", "BTC", True
)


def test_binance_book_ticker_real_frames() -> None:
    parser = BinanceUsdmParser([ETH_BINANCE], route="public")
    quotes = [event for frame in BINANCE_FRAMES for event in parser.feed(frame, 7)]
    assert len(quotes) == len(BINANCE_FRAMES) == 40
    assert all(isinstance(q, BestQuote) for q in quotes)
    first = quotes[0]
    assert first == BestQuote(
        "binanceusdm", "ETH/USDT:USDT", 2681.62, 1.165, 2681.63, 73.077, 5123107838717, 1723161256310 * _MS, 7
    )
    assert [q.seq for q in quotes] == sorted(q.seq for q in quotes)  # type: ignore[union-attr]
    # The generic path (a raw, unwrapped payload) gives the same event as the typed fast path.
    raw = json.dumps(json.loads(BINANCE_FRAMES[0])["data"])
    assert parser.feed(raw, 7) == [first]
    assert parser.feed(json.dumps({"stream": "ethusdt@bookTicker", "data": json.loads(raw)}), 7) == [first]


@pytest.mark.parametrize(
    "broken",
    [
        ('"b":"2681.62"', '"b":"-1"'),
        ('"B":"1.165"', '"B":"NaN"'),
        ('"u":5123107838717', '"u":"x"'),
        ('"a":"2681.63"', '"a":[1]'),
    ],
)
def test_binance_bad_book_ticker_is_a_bad_frame_that_spares_the_book(broken: tuple[str, str]) -> None:
    parser = BinanceUsdmParser([ETH_BINANCE], route="public")
    frame = BINANCE_FRAMES[0].replace(*broken)
    assert frame != BINANCE_FRAMES[0]
    (event,) = parser.feed(frame, 1)
    assert isinstance(event, BadFrame)
    assert event.symbol == "ETH/USDT:USDT" and not event.touches_book


def test_binance_subscribes_book_ticker_on_public_only_and_can_be_switched_off() -> None:
    on = BinanceUsdmAdapter().connections([ETH_BINANCE], "wss://fstream.binance.com", 1000)
    streams = {url.rsplit("/", 2)[1]: parser.streams() for url, parser in on}
    assert streams["public"] == ["ethusdt@depth@100ms", "ethusdt@bookTicker"]
    assert "ethusdt@bookTicker" not in streams["market"]
    off = BinanceUsdmAdapter(best_quote=False).connections([ETH_BINANCE], "wss://fstream.binance.com", 1000)
    assert next(p.streams() for _, p in off) == ["ethusdt@depth@100ms"]


def test_bybit_orderbook_1_frames() -> None:
    parser = BybitParser("linear", [BTC_BYBIT], book_depth=200)
    events = [event for frame in FRAMES["bybit"] for event in parser.feed(frame, 3)]
    assert all(isinstance(e, BestQuote) for e in events)
    q = events[0]
    assert q == BestQuote("bybit", "BTC/USDT:USDT", 65114.2, 6.054, 65114.3, 10.486, 15076952, 1786310818027 * _MS, 3)
    assert events[2].seq == events[1].seq  # the unchanged re-send every 3 s, same u  # type: ignore[union-attr]
    empty_bid = events[3]
    assert isinstance(empty_bid, BestQuote) and empty_bid.bid_px is None and empty_bid.bid_sz is None
    restart = events[4]
    assert isinstance(restart, BestQuote) and restart.seq == 1 and restart.reset
    # The generic path reads it the same (a frame the typed decoder refuses: a level with a third field).
    odd = FRAMES["bybit"][0].replace('["65114.20","6.054"]', '["65114.20","6.054","x"]')
    assert parser._fast_book(odd, 3) is None
    assert parser.feed(odd, 3) == [q]


def test_bybit_best_quote_topic_subscribed_unless_off_or_the_book_is_l1() -> None:
    ((url, parser),) = BybitAdapter().connections([BTC_BYBIT], "wss://stream.bybit.com/v5/public/linear", 200)
    assert "orderbook.1.BTCUSDT" in parser.topics() and "orderbook.200.BTCUSDT" in parser.topics()
    ((_, off),) = BybitAdapter(best_quote=False).connections([BTC_BYBIT], url, 200)
    assert "orderbook.1.BTCUSDT" not in off.topics()
    l1_book = BybitParser("linear", [BTC_BYBIT], book_depth=1)
    assert l1_book.topics().count("orderbook.1.BTCUSDT") == 1
    # With a depth-1 book, orderbook.1 IS the book.
    assert type(l1_book.feed(FRAMES["bybit"][0], 1)[0]).__name__ == "BookSnapshot"


def test_bybit_bad_best_quote_spares_the_book() -> None:
    parser = BybitParser("linear", [BTC_BYBIT], book_depth=200)
    two_levels = FRAMES["bybit"][0].replace('"b":[["65114.20","6.054"]]', '"b":[["65114.20","6.054"],["65114.1","1"]]')
    bad = FRAMES["bybit"][0].replace('"6.054"', '"-6"')
    for frame in (two_levels, bad):
        (event,) = parser.feed(frame, 1)
        assert isinstance(event, BadFrame) and not event.touches_book


def test_okx_bbo_tbt_frames_in_base_units() -> None:
    parser = OkxParser([UNI_OKX])
    events = [event for frame in FRAMES["okx"] for event in parser.feed(frame, 5)]
    assert len(events) == 3 and all(isinstance(e, BestQuote) for e in events)
    q = events[0]
    assert q == BestQuote(
        "okx", "UNI/USD:UNI", 5.14, 251 * 10.0 / 5.14, 5.148, 60 * 10.0 / 5.148, 332842418754, 1652459225363 * _MS, 5
    )
    assert events[1].seq is None  # type: ignore[union-attr]
    assert events[2].ask_px is None and events[2].ask_sz is None  # type: ignore[union-attr]
    subscribed = [a["channel"] for a in parser.subscription_args() if a.get("instId") == "UNI-USD-SWAP"]
    assert "bbo-tbt" in subscribed
    ((_, off),) = OkxAdapter(best_quote=False).connections([UNI_OKX], "wss://ws.okx.com:8443/ws/v5/public", 400)
    assert "bbo-tbt" not in [a["channel"] for a in off.subscription_args()]
    (event,) = parser.feed(FRAMES["okx"][0].replace('"5.148"', '"abc"'), 5)
    assert isinstance(event, BadFrame) and not event.touches_book


def test_deribit_quote_frames_in_base_units() -> None:
    parser = DeribitParser([BTC_DERIBIT])
    events = [event for frame in FRAMES["deribit"] for event in parser.feed(frame, 9)]
    q, empty_bid = events
    assert q == BestQuote(
        "deribit", "BTC/USD:BTC", 3914.97, 40.0 / 3914.97, 3996.61, 50.0 / 3996.61, None, 1550658624149 * _MS, 9
    )
    assert isinstance(empty_bid, BestQuote) and empty_bid.bid_px is None
    channels = [c for frame in parser.on_connected() for c in orjson.loads(frame).get("params", {}).get("channels", [])]  # type: ignore[arg-type]
    assert "quote.BTC-PERPETUAL" in channels
    ((_, off),) = DeribitAdapter(best_quote=False).connections([BTC_DERIBIT], "wss://www.deribit.com/ws/api/v2", 1000)
    assert not any(c.startswith("quote.") for c in off.channels())
    (event,) = parser.feed(FRAMES["deribit"][0].replace("3914.97", '"x"'), 9)
    assert isinstance(event, BadFrame) and not event.touches_book


def test_hyperliquid_takes_the_setting_and_subscribes_no_best_quote() -> None:
    assert HyperliquidAdapter(best_quote=True).best_quote is False
