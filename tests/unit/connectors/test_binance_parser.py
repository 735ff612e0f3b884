"""Binance USD-M parser and adapter: real frames (2021 and 2024 recordings) -> typed events, the futures book
rule through BookSync (bridge, gaps, stale and out-of-order diffs), bad input -> BadFrame, polls and budget."""

from __future__ import annotations

import orjson
import pytest

from flowgauge.book.sequencing import binance_futures
from flowgauge.book.sync import BookSync
from flowgauge.connectors.base import FetchSnapshot, PollRequest
from flowgauge.connectors.binance import (
    DEFAULT_FUNDING_HOURS,
    LONG_SHORT_PATHS,
    POLL_WEIGHT_PER_MINUTE,
    BinanceUsdmAdapter,
    BinanceUsdmParser,
    base_url,
    poll_intervals,
    route_of_url,
    routed_url,
)
from flowgauge.connectors.markets import point_ccxt_at
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

# -- real frames ([REC:BINANCE_FUTURES] 2021-07-22 unless noted) -------------------------------------------
SUSHI_DEPTH = (
    '{"stream":"sushiusdt@depth@100ms","data":{"e":"depthUpdate","E":1626992741037,"T":1626992741024,'
    '"s":"SUSHIUSDT","U":600859599090,"u":600859600917,"pu":600859598061,'
    '"b":[["7.5040","813"],["7.6090","0"],["7.6110","2"]],"a":[["7.6150","1563"],["7.6220","3284"]]}}'
)
AKRO_AGG_TRADE = (
    '{"stream":"akrousdt@aggTrade","data":{"e":"aggTrade","E":1626992742291,"a":14888302,"s":"AKROUSDT",'
    '"p":"0.01731","q":"312","f":27931348,"l":27931348,"T":1626992742134,"m":true}}'
)
SUSHI_BOOK_TICKER = (
    '{"stream":"sushiusdt@bookTicker","data":{"e":"bookTicker","u":600859600576,"s":"SUSHIUSDT","b":"7.6110",'
    '"B":"2","a":"7.6120","A":"297","T":1626992741012,"E":1626992741017}}'
)
AKRO_KLINE = (
    '{"stream":"akrousdt@kline_1m","data":{"e":"kline","E":1626992742139,"s":"AKROUSDT","k":{"t":1626992700000,'
    '"T":1626992759999,"s":"AKROUSDT","i":"1m","f":27931328,"L":27931348,"o":"0.01731","c":"0.01731",'
    '"h":"0.01733","l":"0.01731","v":"156058","n":21,"x":false,"q":"2702.20770","V":"68508","Q":"1186.71720",'
    '"B":"0"}}}'
)
# 2024-08-08 ETHUSDT session (hftbacktest capture): per-fill `@trade`.
ETH_TRADE = (
    '{"stream":"ethusdt@trade","data":{"e":"trade","E":1723161256560,"T":1723161256560,"s":"ETHUSDT",'
    '"t":4308068523,"p":"2681.62","q":"1.000","X":"MARKET","m":true}}'
)
# AKROUSDT REST snapshot and the diffs around it: the bridging diff ends exactly on lastUpdateId.
AKRO_L = 600859605486
AKRO_SNAPSHOT = (
    '{"lastUpdateId":600859605486,"E":1626992741242,"T":1626992741238,'
    '"bids":[["0.01731","57618"],["0.01730","183887"],["0.01729","712308"]],'
    '"asks":[["0.01732","72524"],["0.01733","355270"],["0.01734","396300"]]}'
)
AKRO_BEFORE = {"U": 600859599831, "u": 600859599831, "pu": 600859598737, "b": [], "a": [["0.01737", "437848"]]}
AKRO_BRIDGE = {"U": 600859603597, "u": 600859605486, "pu": 600859599831, "b": [["0.01730", "183887"]],
               "a": [["0.01736", "874535"]]}  # fmt: skip
AKRO_NEXT = {"U": 600859609657, "u": 600859609902, "pu": 600859605486, "b": [["0.01714", "1474950"]], "a": []}
AKRO_AFTER = {"U": 600859611301, "u": 600859611654, "pu": 600859609902, "b": [["0.01729", "700000"]], "a": []}
# Documented shapes (no recording has them): markPrice@1s (a real 2021 EOSUSDT frame's layout) and forceOrder.
MARK_PRICE = (
    '{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT",'
    '"p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"0.00038167","T":1562306400000}}'
)
FORCE_ORDER = (
    '{"stream":"btcusdt@forceOrder","data":{"e":"forceOrder","E":1568014460893,"o":{"s":"BTCUSDT","S":"SELL",'
    '"o":"LIMIT","f":"IOC","q":"0.014","p":"9910","ap":"9911","X":"FILLED","l":"0.014","z":"0.014",'
    '"T":1568014460891}}}'
)


def usdm(symbol: str, venue_id: str, tick: float) -> Instrument:
    base, rest = symbol.split("/")
    quote, settle = rest.split(":")
    return Instrument("binanceusdm", symbol, venue_id, "linear", ContractKind.LINEAR, 1.0, tick, base, quote, settle,
                      True)  # fmt: skip


SUSHI = usdm("SUSHI/USDT:USDT", "SUSHIUSDT", 0.001)
AKRO = usdm("AKRO/USDT:USDT", "AKROUSDT", 0.00001)
BTC = usdm("BTC/USDT:USDT", "BTCUSDT", 0.1)
ETH = usdm("ETH/USDT:USDT", "ETHUSDT", 0.01)


@pytest.fixture
def parser() -> BinanceUsdmParser:
    # A legacy (unrouted) connection carries everything, like the 2021 recording.
    return BinanceUsdmParser([SUSHI, AKRO, BTC, ETH], route="legacy")


def akro_delta(parser: BinanceUsdmParser, ids: dict, ts: int = 1) -> BookDelta:
    data = {"e": "depthUpdate", "E": 1626992741257, "T": 1626992741238, "s": "AKROUSDT", **ids}
    (event,) = parser.feed(orjson.dumps({"stream": "akrousdt@depth@100ms", "data": data}), ts)
    assert isinstance(event, BookDelta)
    return event


def akro_snapshot(parser: BinanceUsdmParser) -> BookSnapshot:
    (snap,) = parser.on_snapshot(AKRO.symbol, AKRO_SNAPSHOT, 5)
    assert isinstance(snap, BookSnapshot)
    return snap


# -- frames -> events ------------------------------------------------------------------------------------


def test_depth_diff_carries_the_u_chain_and_absolute_sizes(parser: BinanceUsdmParser) -> None:
    (delta,) = parser.feed(SUSHI_DEPTH, 7)
    assert isinstance(delta, BookDelta)
    assert delta.symbol == "SUSHI/USDT:USDT"
    assert (delta.first_seq, delta.seq, delta.prev_seq) == (600859599090, 600859600917, 600859598061)
    assert delta.ts_exchange == 1626992741024 * MS  # T, the matching-engine time
    assert delta.ts_recv == 7
    assert delta.bids == ((7.504, 813.0), (7.609, 0.0), (7.611, 2.0))  # linear: quantities are base units
    assert delta.asks == ((7.615, 1563.0), (7.622, 3284.0))
    # The same payload without the combined-stream envelope (a `/ws` connection) parses identically.
    raw = orjson.dumps(orjson.loads(SUSHI_DEPTH)["data"])
    assert parser.feed(raw, 7) == [delta]


def test_agg_trade_m_true_means_the_taker_sold(parser: BinanceUsdmParser) -> None:
    (trade,) = parser.feed(AKRO_AGG_TRADE, 3)
    assert isinstance(trade, Trade)
    assert (trade.symbol, trade.price, trade.size, trade.trade_id) == ("AKRO/USDT:USDT", 0.01731, 312.0, "14888302")
    assert trade.side == SELL  # buyer was the maker
    assert trade.forced is False
    assert trade.ts_exchange == 1626992742134 * MS
    (buy,) = parser.feed(AKRO_AGG_TRADE.replace('"m":true', '"m":false'), 3)
    assert isinstance(buy, Trade) and buy.side == BUY


def test_per_fill_trade_stream_and_forced_execution_types(parser: BinanceUsdmParser) -> None:
    (trade,) = parser.feed(ETH_TRADE, 1)
    assert isinstance(trade, Trade)
    assert (trade.trade_id, trade.side, trade.size, trade.forced) == ("4308068523", SELL, 1.0, False)
    (adl,) = parser.feed(ETH_TRADE.replace('"X":"MARKET"', '"X":"ADL"'), 1)
    assert isinstance(adl, Trade) and adl.forced is True  # kept out of TFI


def test_mark_price_is_funding_with_an_interval(parser: BinanceUsdmParser) -> None:
    (funding,) = parser.feed(MARK_PRICE, 2)
    assert isinstance(funding, FundingRate)
    assert funding.rate == pytest.approx(0.00038167)
    assert funding.interval_hours == DEFAULT_FUNDING_HOURS == 8.0
    assert funding.next_funding_ts == 1562306400000 * MS
    assert funding.mark_price == pytest.approx(11794.15)
    assert funding.index_price == pytest.approx(11784.62659091)
    assert funding.ts_exchange == 1562305380000 * MS
    # A delivery contract: no funding rate, no next funding time.
    (quarterly,) = parser.feed(MARK_PRICE.replace('"r":"0.00038167","T":1562306400000', '"r":"","T":0'), 2)
    assert isinstance(quarterly, FundingRate)
    assert quarterly.rate is None and quarterly.next_funding_ts is None and quarterly.mark_price is not None


def test_force_order_sell_means_a_long_was_liquidated(parser: BinanceUsdmParser) -> None:
    (liq,) = parser.feed(FORCE_ORDER, 4)
    assert isinstance(liq, Liquidation)
    assert liq.liquidated_side == "long"
    assert (liq.price, liq.size) == (9911.0, 0.014)  # average fill price, filled quantity
    assert liq.ts_exchange == 1568014460891 * MS
    unfilled = FORCE_ORDER.replace('"S":"SELL"', '"S":"BUY"').replace('"ap":"9911"', '"ap":"0"')
    (short,) = parser.feed(unfilled.replace('"z":"0.014"', '"z":"0"'), 4)
    assert isinstance(short, Liquidation)
    assert short.liquidated_side == "short"
    assert (short.price, short.size) == (9910.0, 0.014)  # falls back to the order's price and quantity


def test_streams_we_do_not_consume_and_acks_are_silent(parser: BinanceUsdmParser) -> None:
    assert parser.feed(AKRO_KLINE, 1) == []
    assert parser.feed('{"result":null,"id":1}', 1) == []
    assert parser.feed('{"result":["btcusdt@aggTrade"],"id":2}', 1) == []
    # A symbol this connection does not track (recordings can hold more).
    other = BinanceUsdmParser([BTC], route="legacy")
    assert other.feed(SUSHI_DEPTH, 1) == []


@pytest.mark.parametrize(
    ("frame", "symbol", "touches_book"),
    [
        (b"\x00\xffnot json", None, False),
        ("[1,2,3]", None, False),
        ('{"error":{"code":2,"msg":"Invalid request"},"id":3}', None, False),
        ('{"code":-1121,"msg":"Invalid symbol."}', None, False),
        ('{"stream":"x@y","data":[1]}', None, False),
        ('{"e":["depthUpdate"]}', None, False),
        (SUSHI_DEPTH.replace('"u":600859600917', '"u":"NaN"'), "SUSHI/USDT:USDT", True),
        (SUSHI_DEPTH.replace('"u":600859600917', '"u":600859599000'), "SUSHI/USDT:USDT", True),  # u < U
        (SUSHI_DEPTH.replace('["7.5040","813"]', '["-7.5","813"]'), "SUSHI/USDT:USDT", True),
        (SUSHI_DEPTH.replace('["7.5040","813"]', '["inf","813"]'), "SUSHI/USDT:USDT", True),
        (
            SUSHI_DEPTH.replace('"b":[["7.5040","813"],["7.6090","0"],["7.6110","2"]]', '"b":{"x":1}'),
            "SUSHI/USDT:USDT",
            True,
        ),
        # A damaged symbol field: the stream name still says which book was touched.
        (
            SUSHI_DEPTH.replace('"s":"SUSHIUSDT"', '"s":12345').replace('"pu":600859598061', '"pu":null'),
            "SUSHI/USDT:USDT",
            True,
        ),
        (AKRO_AGG_TRADE.replace('"m":true', '"m":"maybe"'), "AKRO/USDT:USDT", False),
        (AKRO_AGG_TRADE.replace('"p":"0.01731"', '"p":[1]'), "AKRO/USDT:USDT", False),
        (FORCE_ORDER.replace('"S":"SELL"', '"S":"SIDEWAYS"'), "BTC/USDT:USDT", False),
        (MARK_PRICE.replace('"E":1562305380000', '"E":"soon"'), "BTC/USDT:USDT", False),
        # Unwrapped and without a usable symbol: cannot tie it to a book.
        ('{"e":"depthUpdate","s":12345,"U":1,"u":2,"pu":0,"b":[],"a":[]}', None, False),
    ],
)
def test_bad_frames_never_raise(
    parser: BinanceUsdmParser, frame: str | bytes, symbol: str | None, touches_book: bool
) -> None:
    (event,) = parser.feed(frame, 9)
    assert isinstance(event, BadFrame)
    assert event.venue == "binanceusdm"
    assert event.symbol == symbol
    assert event.touches_book is touches_book
    assert event.invalid_reason is (InvalidReason.BAD_FRAME if touches_book else None)
    assert event.ts_recv == 9


# -- REST snapshot ---------------------------------------------------------------------------------------


def test_rest_snapshot_and_its_failures(parser: BinanceUsdmParser) -> None:
    snap = akro_snapshot(parser)
    assert snap.seq == AKRO_L
    assert snap.bids[0] == (0.01731, 57618.0) and snap.asks[-1] == (0.01734, 396300.0)
    assert snap.ts_exchange == 1626992741238 * MS
    for body in (
        '{"code":-1121,"msg":"Invalid symbol."}',
        "<html>502</html>",
        '{"lastUpdateId":"x","bids":[],"asks":[]}',
    ):
        (bad,) = parser.on_snapshot(AKRO.symbol, body, 5)
        assert isinstance(bad, BadFrame)
        assert (bad.symbol, bad.touches_book, bad.invalid_reason) == (AKRO.symbol, True, InvalidReason.BAD_FRAME)
    (unknown,) = parser.on_snapshot("DOGE/USDT:USDT", AKRO_SNAPSHOT, 5)
    assert isinstance(unknown, BadFrame) and unknown.touches_book is False


# -- the futures book rule through BookSync ---------------------------------------------------------------


def test_buffered_bridge_where_u_equals_last_update_id(parser: BinanceUsdmParser) -> None:
    """AKROUSDT as recorded: the diff that bridges the snapshot ends exactly on lastUpdateId (u == L) and must
    be applied (the spot rule, `u <= L` dropped, would skip it). Older buffered diffs are dropped."""
    sync = BookSync(binance_futures, buffer_deltas=True)
    for ids in (AKRO_BEFORE, AKRO_BRIDGE, AKRO_NEXT):
        assert not sync.on_delta(akro_delta(parser, ids)).applied  # buffered while SYNCING
    result = sync.on_snapshot(akro_snapshot(parser))
    assert result.applied and sync.state is BookState.VALID
    assert sync.book.seq == AKRO_NEXT["u"]  # bridge and next were replayed from the buffer
    assert sync.book.asks.best() == (0.01732, 72524.0)
    assert len(sync.book.asks) == 4  # 0.01736 came with the bridging diff
    assert (0.01714, 1474950.0) in sync.book.bids.top(10)
    assert sync.on_delta(akro_delta(parser, AKRO_AFTER)).applied
    assert sync.gaps == 0


def test_live_bridge_where_u_equals_last_update_id(parser: BinanceUsdmParser) -> None:
    """The snapshot first, then the stream: diffs with u < L are stale, the u == L one bridges."""
    sync = BookSync(binance_futures, buffer_deltas=True)
    sync.on_snapshot(akro_snapshot(parser))
    assert not sync.on_delta(akro_delta(parser, AKRO_BEFORE)).applied
    assert sync.stale_dropped == 1
    assert sync.on_delta(akro_delta(parser, AKRO_BRIDGE)).applied
    assert sync.on_delta(akro_delta(parser, AKRO_NEXT)).applied
    assert sync.book.seq == AKRO_NEXT["u"] and sync.gaps == 0


def test_bridge_where_first_id_equals_last_update_id(parser: BinanceUsdmParser) -> None:
    """SUSHIUSDT as recorded: the first synced diff starts exactly on lastUpdateId (U == L)."""
    snap = akro_snapshot(parser)
    sync = BookSync(binance_futures, buffer_deltas=True)
    sync.on_snapshot(snap)
    starts_on_l = {"U": AKRO_L, "u": AKRO_L + 1500, "pu": AKRO_L - 900, "b": [], "a": []}
    assert sync.on_delta(akro_delta(parser, starts_on_l)).applied
    assert sync.book.seq == AKRO_L + 1500


def test_snapshot_older_than_the_stream_is_a_gap(parser: BinanceUsdmParser) -> None:
    sync = BookSync(binance_futures, buffer_deltas=True)
    sync.on_delta(akro_delta(parser, AKRO_NEXT))  # U > L: nothing bridges the snapshot
    result = sync.on_snapshot(akro_snapshot(parser))
    assert result.needs_resync and (sync.state, sync.reason) == (BookState.INVALID, InvalidReason.GAP)


def test_pu_break_is_a_gap_then_a_fresh_snapshot_recovers(parser: BinanceUsdmParser) -> None:
    sync = BookSync(binance_futures, buffer_deltas=True)
    sync.on_snapshot(akro_snapshot(parser))
    sync.on_delta(akro_delta(parser, AKRO_BRIDGE))
    # AKRO_NEXT is lost: AKRO_AFTER's pu names it, not the book's id.
    result = sync.on_delta(akro_delta(parser, AKRO_AFTER))
    assert result.needs_resync and sync.reason is InvalidReason.GAP and sync.gaps == 1
    assert len(sync.book.bids) == 0  # a book known wrong is cleared
    # While INVALID diffs are buffered; a snapshot taken inside the next diff's range bridges with it.
    later = {"U": 600859611301, "u": 600859611654, "pu": 600859609902, "b": [["0.01700", "5"]], "a": []}
    sync.on_delta(akro_delta(parser, later))
    body = AKRO_SNAPSHOT.replace(str(AKRO_L), "600859611400")
    (fresh,) = parser.on_snapshot(AKRO.symbol, body, 6)
    assert isinstance(fresh, BookSnapshot)
    result = sync.on_snapshot(fresh)
    assert result.applied and sync.state is BookState.VALID and sync.book.seq == later["u"]
    assert (0.017, 5.0) in sync.book.bids.top(10)


def test_duplicate_and_out_of_order_diffs(parser: BinanceUsdmParser) -> None:
    sync = BookSync(binance_futures, buffer_deltas=True)
    sync.on_snapshot(akro_snapshot(parser))
    sync.on_delta(akro_delta(parser, AKRO_BRIDGE))
    sync.on_delta(akro_delta(parser, AKRO_NEXT))
    # A repeated diff and an older one arriving late are dropped without harm.
    assert not sync.on_delta(akro_delta(parser, AKRO_NEXT)).applied
    assert not sync.on_delta(akro_delta(parser, AKRO_BRIDGE)).applied
    assert sync.stale_dropped == 2 and sync.state is BookState.VALID and sync.book.seq == AKRO_NEXT["u"]
    # Out of order the other way: a diff from the future (its predecessor not seen yet) is a gap.
    future = {"U": 600859615248, "u": 600859616677, "pu": 600859611654, "b": [], "a": []}
    assert sync.on_delta(akro_delta(parser, future)).needs_resync
    assert sync.reason is InvalidReason.GAP


def test_buffer_overflow_is_counted_and_caught_by_the_bridge(parser: BinanceUsdmParser) -> None:
    sync = BookSync(binance_futures, buffer_deltas=True, max_buffered=2)
    for ids in (AKRO_BRIDGE, AKRO_NEXT, AKRO_AFTER):
        sync.on_delta(akro_delta(parser, ids))
    assert sync.buffer_dropped == 1  # the bridging diff fell out of the buffer
    result = sync.on_snapshot(akro_snapshot(parser))
    assert result.needs_resync and sync.reason is InvalidReason.GAP


# -- requests --------------------------------------------------------------------------------------------


def test_public_connection_subscribes_books_and_asks_for_snapshots() -> None:
    parser = BinanceUsdmParser([BTC, ETH], route="public", snapshot_limit=1000)
    actions = parser.on_connected()
    frames = [a for a in actions if isinstance(a, str)]
    fetches = [a for a in actions if isinstance(a, FetchSnapshot)]
    assert [orjson.loads(f) for f in frames] == [
        {
            "method": "SUBSCRIBE",
            "params": ["btcusdt@depth@100ms", "btcusdt@bookTicker", "ethusdt@depth@100ms", "ethusdt@bookTicker"],
            "id": 1,
        }
    ]
    assert actions.index(frames[0]) < actions.index(fetches[0])  # subscribe first, then snapshot
    assert fetches == [
        FetchSnapshot("BTC/USDT:USDT", "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": "1000"}, 20),
        FetchSnapshot("ETH/USDT:USDT", "/fapi/v1/depth", {"symbol": "ETHUSDT", "limit": "1000"}, 20),
    ]
    assert parser.resync("ETH/USDT:USDT") == [fetches[1]]
    assert parser.resync("DOGE/USDT:USDT") == []
    assert parser.ping_frame() is None  # the server pings with frames
    assert parser.carries_books and parser.book_symbols == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    assert BinanceUsdmParser([BTC], route="public", snapshot_limit=100).snapshot_request(BTC).weight == 5
    with pytest.raises(ValueError, match="depth limit"):
        BinanceUsdmParser([BTC], snapshot_limit=200)


def test_refused_depth_subscription_invalidates_its_books_until_subscribed_again() -> None:
    """A SUBSCRIBE the venue refuses: its books are invalidated, their snapshots refused (a VALID book no diff
    would ever move), and their resync subscribes the depth stream again. Found by the Binance fault test."""
    parser = BinanceUsdmParser([BTC, ETH], route="public", snapshot_limit=100)
    parser.on_connected()  # SUBSCRIBE id 1: both depth streams
    (btc_bad, eth_bad) = parser.feed('{"error":{"code":2,"msg":"Invalid request"},"id":1}', 7)
    for bad, book in ((btc_bad, BTC), (eth_bad, ETH)):
        assert isinstance(bad, BadFrame)
        assert (bad.symbol, bad.touches_book, bad.invalid_reason) == (book.symbol, True, InvalidReason.BAD_FRAME)
    snapshot = '{"lastUpdateId":10,"E":1,"T":1,"bids":[["1.0","1"]],"asks":[["2.0","1"]]}'
    (refused,) = parser.on_snapshot(ETH.symbol, snapshot, 8)
    assert isinstance(refused, BadFrame) and refused.touches_book and refused.symbol == ETH.symbol
    subscribe, fetch = parser.resync(ETH.symbol)
    assert orjson.loads(subscribe) == {"method": "SUBSCRIBE", "params": ["ethusdt@depth@100ms"], "id": 2}
    assert fetch == parser.snapshot_request(ETH)
    assert parser.feed('{"result":null,"id":2}', 9) == []
    (snap,) = parser.on_snapshot(ETH.symbol, snapshot, 10)
    assert isinstance(snap, BookSnapshot) and snap.seq == 10
    assert parser.resync(ETH.symbol) == [parser.snapshot_request(ETH)]  # subscribed again: a snapshot only
    # An acknowledged request, an error with no request of ours, and a new connection change nothing.
    parser.feed('{"error":{"code":2,"msg":"Invalid request"},"id":2}', 11)
    assert parser.resync(ETH.symbol) == [parser.snapshot_request(ETH)]
    parser.reset()
    assert isinstance(parser.on_snapshot(BTC.symbol, snapshot, 12)[0], BookSnapshot)


def test_market_connection_subscribes_trades_marks_liquidations_in_batches() -> None:
    instruments = [usdm(f"C{i}/USDT:USDT", f"C{i}USDT", 0.01) for i in range(20)]
    parser = BinanceUsdmParser(instruments, route="market", subscribe_batch=50)
    actions = parser.on_connected()
    assert all(isinstance(a, str) for a in actions)  # no books here: no snapshots
    requests = [orjson.loads(a) for a in actions if isinstance(a, str)]
    assert [len(r["params"]) for r in requests] == [50, 10]
    assert [r["id"] for r in requests] == [1, 2]
    assert requests[0]["params"][:3] == ["c0usdt@aggTrade", "c0usdt@markPrice@1s", "c0usdt@forceOrder"]
    assert parser.resync(instruments[0].symbol) == []
    assert not parser.carries_books and parser.book_symbols == []
    again = [orjson.loads(a)["id"] for a in parser.on_connected() if isinstance(a, str)]
    assert again == [3, 4]  # ids keep increasing across reconnects


# -- adapter ---------------------------------------------------------------------------------------------


def test_urls_routes_and_connections() -> None:
    assert base_url("wss://fstream.binance.com") == "wss://fstream.binance.com"
    assert base_url("wss://fstream.binance.com/public/stream?streams=a") == "wss://fstream.binance.com"
    assert base_url("ws://127.0.0.1:9781/stream") == "ws://127.0.0.1:9781"
    assert routed_url("ws://127.0.0.1:9781", "market") == "ws://127.0.0.1:9781/market/stream"
    assert route_of_url("wss://fstream.binance.com/public/ws/btcusdt@depth") == "public"
    assert route_of_url("wss://fstream.binance.com/market/stream") == "market"
    assert route_of_url("wss://fstream.binance.com/stream?streams=sushiusdt@aggTrade") == "legacy"

    adapter = BinanceUsdmAdapter(streams_per_connection=200)
    instruments = [usdm(f"C{i}/USDT:USDT", f"C{i}USDT", 0.01) for i in range(100)]
    connections = adapter.connections(instruments, "wss://fstream.binance.com", 500)
    assert [url for url, _ in connections] == [
        "wss://fstream.binance.com/public/stream", "wss://fstream.binance.com/market/stream",
    ] * 2  # fmt: skip
    assert [len(p.instruments) for _, p in connections] == [66, 66, 34, 34]  # 3 market streams each, <= 200
    assert all(len(p.streams()) <= 200 for _, p in connections)
    assert [p.route for _, p in connections] == ["public", "market", "public", "market"]
    assert connections[0][1].snapshot_request(instruments[0]).params["limit"] == "500"
    assert adapter.replay_parser("wss://fstream.binance.com/stream?streams=x", instruments).route == "legacy"
    assert adapter.sequence_rule is binance_futures and adapter.buffer_deltas is True
    with pytest.raises(ValueError, match="depth limit"):
        adapter.connections(instruments, "wss://fstream.binance.com", 200)


@pytest.mark.parametrize("n", [1, 2, 50, 300, 2000])
def test_polls_stay_inside_the_budget(n: int) -> None:
    adapter = BinanceUsdmAdapter()
    instruments = [usdm(f"C{i}/USDT:USDT", f"C{i}USDT", 0.01) for i in range(n)]
    polls = adapter.polls(instruments)
    assert len(polls) == 3 * n + 1 and len({p.key for p in polls}) == len(polls)
    weight_per_minute = sum(p.weight * 60.0 / p.interval_s for p in polls)
    assert weight_per_minute <= POLL_WEIGHT_PER_MINUTE + 1e-9
    # At least 600/min (30 depth-1000 snapshots) stays for books.
    assert adapter.rest_weight_per_minute - weight_per_minute >= 600 - 1e-9
    ratio_requests_per_5min = sum(300.0 / p.interval_s for p in polls if p.kind == "long_short")
    assert ratio_requests_per_5min <= 500 + 1e-9  # half of Binance's 1000 / 5 min / IP
    oi_interval, ls_interval = poll_intervals(n)
    assert oi_interval >= 10.0 and ls_interval >= 60.0
    if n <= 2:
        assert (oi_interval, ls_interval) == (10.0, 60.0)
    oi = next(p for p in polls if p.kind == "open_interest")
    assert (oi.path, oi.params, oi.weight) == ("/fapi/v1/openInterest", {"symbol": "C0USDT"}, 1)
    ratios = [p for p in polls if p.kind == "long_short" and p.symbol == "C0/USDT:USDT"]
    assert {p.path for p in ratios} == set(LONG_SHORT_PATHS)
    assert all(p.params == {"symbol": "C0USDT", "period": "5m", "limit": "1"} for p in ratios)


def poll_of(adapter: BinanceUsdmAdapter, key: str) -> PollRequest:
    return next(p for p in adapter.polls([BTC, ETH]) if p.key == key)


def test_open_interest_poll() -> None:
    adapter = BinanceUsdmAdapter()
    body = '{"openInterest":"10659.509","symbol":"BTCUSDT","time":1589437530011}'
    (oi,) = adapter.parse_poll(poll_of(adapter, "oi:BTCUSDT"), body, 3)
    assert isinstance(oi, OpenInterest)
    assert (oi.symbol, oi.open_interest, oi.ts_exchange, oi.ts_recv) == (
        "BTC/USDT:USDT", 10659.509, 1589437530011 * MS, 3,
    )  # fmt: skip
    for bad in ('{"code":-1121,"msg":"Invalid symbol."}', '{"openInterest":"1","symbol":"ETHUSDT","time":1}', "x"):
        (event,) = adapter.parse_poll(poll_of(adapter, "oi:BTCUSDT"), bad, 3)
        assert isinstance(event, BadFrame) and event.symbol == "BTC/USDT:USDT" and not event.touches_book


def test_long_short_polls_take_the_latest_bucket() -> None:
    adapter = BinanceUsdmAdapter()
    # Binance's documented topLongShortPositionRatio answer: "Account" field names for position shares.
    body = (
        '[{"symbol":"BTCUSDT","longShortRatio":"1.4342","longAccount":"0.5891","shortAccount":"0.4108",'
        '"timestamp":"1583139600000"},{"symbol":"BTCUSDT","longShortRatio":"0.5584","longAccount":"0.3583",'
        '"shortAccount":"0.6417","timestamp":"1583139900000"}]'
    )
    (ratio,) = adapter.parse_poll(poll_of(adapter, "ls_top_positions:BTCUSDT"), body, 4)
    assert isinstance(ratio, LongShortRatio)
    assert (ratio.kind, ratio.ratio, ratio.ts_exchange) == ("top_positions", 0.5584, 1583139900000 * MS)
    no_ratio = body.replace('"longShortRatio":"0.5584",', "")
    (computed,) = adapter.parse_poll(poll_of(adapter, "ls_accounts:BTCUSDT"), no_ratio, 4)
    assert isinstance(computed, LongShortRatio) and computed.kind == "accounts"
    assert computed.ratio == pytest.approx(0.3583 / 0.6417)
    assert adapter.parse_poll(poll_of(adapter, "ls_accounts:BTCUSDT"), "[]", 4) == []
    zero = body.replace('"shortAccount":"0.6417"', '"shortAccount":"0"').replace('"longShortRatio":"0.5584",', "")
    (bad,) = adapter.parse_poll(poll_of(adapter, "ls_accounts:BTCUSDT"), zero, 4)
    assert isinstance(bad, BadFrame)


def test_funding_info_sets_intervals_for_the_mark_price_parsers() -> None:
    adapter = BinanceUsdmAdapter()
    (_, market_parser) = adapter.connections([BTC, ETH], "wss://fstream.binance.com", 1000)[1]
    body = (
        '[{"symbol":"BTCUSDT","adjustedFundingRateCap":"0.02500000","adjustedFundingRateFloor":"-0.02500000",'
        '"fundingIntervalHours":4,"disclaimer":false}]'
    )
    events = adapter.parse_poll(poll_of(adapter, "funding_info"), body, 8)
    assert {(e.symbol, e.interval_hours) for e in events if isinstance(e, FundingRate)} == {
        ("BTC/USDT:USDT", 4.0), ("ETH/USDT:USDT", 8.0),  # unlisted symbols keep Binance's 8 h
    }  # fmt: skip
    assert all(isinstance(e, FundingRate) and e.rate is None and e.mark_price is None for e in events)
    (funding,) = market_parser.feed(MARK_PRICE, 9)
    assert isinstance(funding, FundingRate) and funding.interval_hours == 4.0
    (bad,) = adapter.parse_poll(poll_of(adapter, "funding_info"), '{"code":-1003,"msg":"Too many requests"}', 8)
    assert isinstance(bad, BadFrame) and bad.symbol is None


def test_point_ccxt_at_keeps_each_api_path() -> None:
    import ccxt

    exchange = ccxt.binanceusdm()
    point_ccxt_at(exchange, "http://127.0.0.1:9781")
    assert exchange.urls["api"]["fapiPublic"] == "http://127.0.0.1:9781/fapi/v1"
    assert exchange.urls["api"]["fapiData"] == "http://127.0.0.1:9781/futures/data"
