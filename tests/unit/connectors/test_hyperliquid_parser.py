"""Hyperliquid parser and adapter: real frames (2025-01 recording) -> typed events, the snapshot-only sync
rule through BookSync, bad input -> BadFrame, the `/info` poll, connection planning and metadata."""

from __future__ import annotations

import orjson
import pytest

from flowgauge.book.sequencing import snapshots_only
from flowgauge.book.sync import BookSync
from flowgauge.connectors.base import PollRequest
from flowgauge.connectors.hyperliquid import (
    ASSET_CTXS_BODY,
    COINS_PER_CONNECTION,
    MAX_BOOK_LEVELS,
    HyperliquidAdapter,
    HyperliquidParser,
    coin_of,
    fallback_instruments,
    instrument_from_market,
    instruments_from_recording,
    market_responses,
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
    OpenInterest,
    Trade,
)

MS = 1_000_000
BTC = "BTC/USDC:USDC"
# The recording's first l2Book push, cut to three levels per side.
BOOK = (
    '{"channel":"l2Book","data":{"coin":"BTC","levels":[[{"n":5,"px":"105055.0","sz":"3.03622"},'
    '{"n":1,"px":"105054.0","sz":"0.1428"},{"n":2,"px":"105053.0","sz":"0.16179"}],[{"n":13,"px":"105056.0",'
    '"sz":"6.34472"},{"n":1,"px":"105057.0","sz":"0.0001"},{"n":1,"px":"105058.0","sz":"0.0001"}]],'
    '"time":1737918843542}}'
)
TRADE_BUY = (
    '{"channel":"trades","data":[{"coin":"BTC","hash":"0x00","px":"105056.0","side":"B","sz":"0.02222",'
    '"tid":917211710228416,"time":1737918847000,"users":["0x8a43b5424eb06a3e79bc6036c8cae55417fada0e",'
    '"0x6802b4267f7f2bf7003dcf993c51542245b38329"]}]}'
)
TRADE_SELL = (
    '{"channel":"trades","data":[{"coin":"BTC","hash":"0x00","px":"105055.0","side":"A","sz":"0.00036",'
    '"tid":181211126211835,"time":1737918857033,"users":["0xecb63caa47c7c4e77f60f1ce858cf28dc2b82b00",'
    '"0xe077db2039e1e39ada32be23e35dccb4cf0cf53b"]}]}'
)
# The recording's first trades message (the batch the venue sends on subscribing), first three prints.
TRADE_BATCH = (
    '{"channel":"trades","data":[{"coin":"BTC","hash":"0xde47","px":"105056.0","side":"B","sz":"0.00219",'
    '"tid":121451470284048,"time":1737918794873,"users":["0xe9","0x68"]},{"coin":"BTC","hash":"0x2b25",'
    '"px":"105056.0","side":"B","sz":"0.00015","tid":588047386913648,"time":1737918796007,"users":["0xb0",'
    '"0x68"]},{"coin":"BTC","hash":"0x5392","px":"105055.0","side":"A","sz":"0.00219","tid":85392298469503,'
    '"time":1737918796079,"users":["0x6f","0x6b"]}]}'
)
# activeAssetCtx in the SDK's PerpAssetCtx shape, values of ccxt's 2024-12 fetchOpenInterest demo.
CTX = (
    '{"channel":"activeAssetCtx","data":{"coin":"BTC","ctx":{"funding":"0.00003094","openInterest":"9942.2624",'
    '"prevDayPx":"103950.0","dayNtlVlm":"1551602431.44650126","premium":"0.00087887","oraclePx":"106956.0",'
    '"markPx":"107043.0","midPx":"107050.5","impactPxs":["107050.0","107051.0"],"dayBaseVlm":"14598.15467"}}}'
)


def hl_instrument(coin: str = "BTC", tick: float = 1.0) -> Instrument:
    return Instrument(
        venue="hyperliquid",
        symbol=f"{coin}/USDC:USDC",
        venue_id=coin,
        category="linear",
        kind=ContractKind.LINEAR,
        contract_size=1.0,
        tick_size=tick,
        base=coin,
        quote="USDC",
        settle="USDC",
        derivative=True,
    )


@pytest.fixture
def parser() -> HyperliquidParser:
    return HyperliquidParser([hl_instrument("BTC"), hl_instrument("ETH", 0.1)])


Levels = list[tuple[str, str]]


def book_frame(time_ms: int, bids: Levels, asks: Levels, coin: str = "BTC") -> str:
    def side(levels: Levels) -> list[dict[str, object]]:
        return [{"px": p, "sz": s, "n": 1} for p, s in levels]

    data = {"coin": coin, "time": time_ms, "levels": [side(bids), side(asks)]}
    return orjson.dumps({"channel": "l2Book", "data": data}).decode()


# ---------------------------------------------------------------------------------------- books


def test_every_book_push_is_a_snapshot_keyed_by_its_time(parser: HyperliquidParser) -> None:
    (snap,) = parser.feed(BOOK, 7)
    assert isinstance(snap, BookSnapshot)
    assert snap.symbol == "BTC/USDC:USDC"
    assert snap.bids == ((105055.0, 3.03622), (105054.0, 0.1428), (105053.0, 0.16179))
    assert snap.asks == ((105056.0, 6.34472), (105057.0, 0.0001), (105058.0, 0.0001))
    assert snap.seq == 1737918843542  # the push's `time`: the only ordering the venue gives
    assert snap.ts_exchange == 1737918843542 * MS
    assert snap.ts_recv == 7
    # The same push again (the recording starts with the subscription snapshot and an identical push).
    (again,) = parser.feed(BOOK, 8)
    assert isinstance(again, BookSnapshot) and again.bids == snap.bids and again.seq == snap.seq


def test_book_depth_truncates_and_is_capped_at_twenty() -> None:
    levels = [(str(100 - i), "1") for i in range(25)]
    frame = book_frame(5, levels, [(str(101 + i), "2") for i in range(25)])
    (shallow,) = HyperliquidParser([hl_instrument()], book_depth=5).feed(frame, 1)
    assert isinstance(shallow, BookSnapshot)
    assert [p for p, _ in shallow.bids] == [100.0, 99.0, 98.0, 97.0, 96.0]
    assert len(shallow.asks) == 5
    deep_parser = HyperliquidParser([hl_instrument()], book_depth=200)
    assert deep_parser.book_depth == MAX_BOOK_LEVELS
    (deep,) = deep_parser.feed(frame, 1)
    assert isinstance(deep, BookSnapshot) and len(deep.bids) == MAX_BOOK_LEVELS
    with pytest.raises(ValueError):
        HyperliquidParser([hl_instrument()], book_depth=0)


def test_sizes_are_coin_units(parser: HyperliquidParser) -> None:
    # Linear, 1 contract = 1 coin: base size is the venue's `sz` at any price level.
    (snap,) = parser.feed(book_frame(1, [("3299.9", "96.6574")], [("3300.0", "0.0032")], coin="ETH"), 1)
    assert isinstance(snap, BookSnapshot)
    assert snap.symbol == "ETH/USDC:USDC"
    assert snap.bids == ((3299.9, 96.6574),) and snap.asks == ((3300.0, 0.0032),)


def test_other_coins_and_control_frames_yield_nothing(parser: HyperliquidParser) -> None:
    assert parser.feed(BOOK.replace('"coin":"BTC"', '"coin":"SOL"'), 1) == []
    assert parser.feed("Websocket connection established.", 1) == []
    assert parser.feed('{"channel":"pong"}', 1) == []
    sub = (
        '{"channel":"subscriptionResponse","data":{"method":"subscribe",'
        '"subscription":{"type":"l2Book","coin":"BTC"}}}'
    )
    assert parser.feed(sub, 1) == []
    assert parser.feed('{"channel":"allMids","data":{"mids":{"BTC":"1"}}}', 1) == []


def test_venue_error_is_reported(parser: HyperliquidParser) -> None:
    (bad,) = parser.feed('{"channel":"error","data":"Invalid subscription {\\"type\\":\\"l2Book\\"}"}', 3)
    assert isinstance(bad, BadFrame)
    assert "Invalid subscription" in bad.reason and bad.touches_book is False


# ---------------------------------------------------------------------------------------- sync rule


def snapshot(seq: int, bid: float, ask: float) -> BookSnapshot:
    return BookSnapshot("hyperliquid", "BTC/USDC:USDC", ((bid, 1.0),), ((ask, 1.0),), seq, seq * MS, seq * MS)


def test_snapshots_only_rule_through_book_sync() -> None:
    adapter = HyperliquidAdapter()
    assert adapter.sequence_rule is snapshots_only and adapter.buffer_deltas is False
    sync = BookSync(adapter.sequence_rule, buffer_deltas=adapter.buffer_deltas)
    assert sync.on_snapshot(snapshot(10, 100.0, 101.0)).applied and sync.state is BookState.VALID
    # Duplicate (same time, the recording's first two pushes): reloaded, still valid, nothing counted.
    result = sync.on_snapshot(snapshot(10, 100.0, 101.0))
    assert result.applied and not result.changed and sync.state is BookState.VALID and sync.gaps == 0
    # Out of order (an older time): dropped and counted, so the book never goes back in time; no gap exists here
    # (tests/unit/book/test_snapshot_stream_order.py: a run of older pushes is followed, the venue's clock went back).
    result = sync.on_snapshot(snapshot(9, 99.0, 100.0))
    assert not result.applied and not result.needs_resync and sync.stale_snapshots == 1
    assert sync.book.bids.best() == (100.0, 1.0) and sync.book.seq == 10 and sync.gaps == 0
    # A delta can only be a protocol error on this venue: GAP, book cleared, resync asked for.
    delta = BookDelta("hyperliquid", "BTC/USDC:USDC", ((99.5, 1.0),), (), 11, None, 11 * MS, 11 * MS)
    result = sync.on_delta(delta)
    assert result.needs_resync and sync.state is BookState.INVALID and sync.reason is InvalidReason.GAP
    assert sync.gaps == 1 and len(sync.book.bids) == 0
    # While invalid a delta is neither applied nor buffered; the next push heals the book.
    assert not sync.on_delta(delta).applied
    result = sync.on_snapshot(snapshot(12, 100.0, 101.0))
    assert result.applied and result.changed and sync.state is BookState.VALID
    assert sync.book.bids.levels() == [(100.0, 1.0)]
    # A crossed push invalidates (CROSSED); the following good push restores the book.
    assert sync.on_snapshot(snapshot(13, 102.0, 101.0)).needs_resync and sync.reason is InvalidReason.CROSSED
    assert sync.on_snapshot(snapshot(14, 100.0, 101.0)).applied and sync.state is BookState.VALID


def test_parsed_pushes_keep_a_book_sync_valid(parser: HyperliquidParser) -> None:
    sync = BookSync(snapshots_only)
    for t, bid in ((1, "100.0"), (2, "100.5"), (2, "100.5"), (3, "99.0")):
        (event,) = parser.feed(book_frame(t, [(bid, "1.5")], [("101.0", "2")]), t)
        assert isinstance(event, BookSnapshot)
        assert sync.on_snapshot(event).applied
        assert sync.book.bids.levels() == [(float(bid), 1.5)]
    assert sync.gaps == 0 and sync.state is BookState.VALID


# ---------------------------------------------------------------------------------------- trades


def test_trade_side_is_the_taker(parser: HyperliquidParser) -> None:
    (buy,) = parser.feed(TRADE_BUY, 5)
    assert isinstance(buy, Trade)
    assert buy.side == BUY and buy.price == 105056.0 and buy.size == pytest.approx(0.02222)
    assert buy.trade_id == "917211710228416" and buy.forced is False
    assert buy.ts_exchange == 1737918847000 * MS and buy.ts_recv == 5
    (sell,) = parser.feed(TRADE_SELL, 6)
    assert isinstance(sell, Trade) and sell.side == SELL and sell.price == 105055.0


def test_trades_re_sent_after_a_reconnect_are_dropped(parser: HyperliquidParser) -> None:
    first = parser.feed(TRADE_BATCH, 1)
    assert [t.trade_id for t in first if isinstance(t, Trade)] == [
        "121451470284048",
        "588047386913648",
        "85392298469503",
    ]
    # Reconnect: the feed resets the parser and subscribes again; the venue replays its recent trades.
    parser.reset()
    assert len(parser.on_connected()) == 6
    assert parser.feed(TRADE_BATCH, 2) == []
    assert parser.duplicate_trades == 3
    # A print in the same millisecond as the newest one seen, with a new id, is new.
    same_ms = TRADE_BATCH.replace("85392298469503", "85392298469504")
    (fresh,) = parser.feed(same_ms, 3)
    assert isinstance(fresh, Trade) and fresh.trade_id == "85392298469504"
    (later,) = parser.feed(TRADE_BUY, 4)
    assert isinstance(later, Trade)
    # Older than the newest trade seen: a replay, dropped.
    assert parser.feed(TRADE_BATCH.replace('"time":1737918796079', '"time":1737918796080'), 5) == []


def test_a_bad_trade_frame_leaves_the_high_water_mark_alone(parser: HyperliquidParser) -> None:
    broken = TRADE_BUY.replace('"side":"B"', '"side":"X"')
    two = broken.replace("[{", '[{"coin":"BTC","hash":"0x1","px":"105056.0","side":"B","sz":"1","tid":1,'
                         '"time":1737918999999,"users":[]},{', 1)
    (bad,) = parser.feed(two, 1)
    assert isinstance(bad, BadFrame) and not bad.touches_book
    # The valid first print of the broken frame did not move the mark: an older trade still passes.
    (trade,) = parser.feed(TRADE_BUY, 2)
    assert isinstance(trade, Trade)


# ---------------------------------------------------------------------------------------- asset context


def test_asset_context_gives_open_interest_and_funding(parser: HyperliquidParser) -> None:
    oi, funding = parser.feed(CTX, 42)
    assert isinstance(oi, OpenInterest) and isinstance(funding, FundingRate)
    assert oi.symbol == "BTC/USDC:USDC"
    assert oi.open_interest == pytest.approx(9942.2624)  # coin units, published as is (one-sided by default)
    assert oi.ts_exchange == 42 and oi.ts_recv == 42  # the venue sends no time with a context
    assert funding.rate == pytest.approx(0.00003094)
    assert funding.interval_hours == 1.0  # hourly funding
    assert funding.mark_price == 107043.0
    assert funding.index_price == 106956.0  # oraclePx
    assert funding.next_funding_ts is None


def test_two_sided_open_interest_is_halved_when_configured() -> None:
    adapter = HyperliquidAdapter(oi_two_sided=True)
    ((_, parser),) = adapter.connections([hl_instrument()], "wss://api.hyperliquid.xyz/ws", 20)
    oi = next(e for e in parser.feed(CTX, 1) if isinstance(e, OpenInterest))
    assert oi.open_interest == pytest.approx(9942.2624 / 2)


def test_no_liquidation_or_long_short_feed_exists(parser: HyperliquidParser) -> None:
    # No public market-wide liquidation channel: nothing is subscribed, and a user-fill-like frame is ignored.
    frames = parser.on_connected()
    kinds = {orjson.loads(f)["subscription"]["type"] for f in frames}
    assert kinds == {"l2Book", "trades", "activeAssetCtx"}
    user_fill = '{"channel":"userFills","data":{"fills":[{"coin":"BTC","liquidation":{"method":"market"}}]}}'
    events = parser.feed(user_fill, 1)
    assert events == [] and not any(isinstance(e, Liquidation) for e in events)


# ---------------------------------------------------------------------------------------- bad frames


@pytest.mark.parametrize(
    ("frame", "touches_book", "symbol"),
    [
        (b"\x00\xffnot json", False, None),
        ("[1,2,3]", False, None),
        ('{"data":{}}', False, None),
        (BOOK.replace('"time":1737918843542', '"time":"NaN"'), True, BTC),
        (BOOK.replace('"px":"105054.0"', '"px":"-1"'), True, BTC),
        (BOOK.replace('"sz":"0.1428"', '"sz":"nan"'), True, BTC),
        ('{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":"not-a-list"}}', True, BTC),
        ('{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[]]}}', True, BTC),
        ('{"channel":"l2Book","data":{"time":1,"levels":[[],[]]}}', False, None),
        ('{"channel":"l2Book","data":"x"}', False, None),
        (TRADE_BUY.replace('"side":"B"', '"side":"Sideways"'), False, None),
        (TRADE_BUY.replace('"tid":917211710228416,', ""), False, None),
        (TRADE_BUY.replace('"sz":"0.02222"', '"sz":"0"'), False, None),
        ('{"channel":"trades","data":{"coin":"BTC"}}', False, BTC),
        ('{"channel":"activeAssetCtx","data":{"coin":"BTC","ctx":[]}}', False, BTC),
        ('{"channel":"activeAssetCtx","data":{"coin":"BTC","ctx":{"openInterest":"x"}}}', False, BTC),
    ],
)
def test_bad_frames_never_raise(
    parser: HyperliquidParser, frame: str | bytes, touches_book: bool, symbol: str | None
) -> None:
    (event,) = parser.feed(frame, 9)
    assert isinstance(event, BadFrame)
    assert event.venue == "hyperliquid"
    assert event.touches_book is touches_book
    assert event.symbol == symbol
    assert event.ts_recv == 9


def test_rest_l2book_snapshot_body(parser: HyperliquidParser) -> None:
    body = orjson.dumps(orjson.loads(BOOK)["data"])
    (snap,) = parser.on_snapshot("BTC/USDC:USDC", body, 3)
    assert isinstance(snap, BookSnapshot) and snap.seq == 1737918843542
    (bad,) = parser.on_snapshot("BTC/USDC:USDC", b"null", 3)
    assert isinstance(bad, BadFrame) and bad.touches_book and bad.symbol == "BTC/USDC:USDC"


# ---------------------------------------------------------------------------------------- frames sent


def test_subscriptions_resync_and_ping(parser: HyperliquidParser) -> None:
    frames = [orjson.loads(f) for f in parser.on_connected()]
    assert frames[0] == {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "BTC"}}
    assert {(f["subscription"]["type"], f["subscription"]["coin"]) for f in frames} == {
        (kind, coin) for kind in ("l2Book", "trades", "activeAssetCtx") for coin in ("BTC", "ETH")
    }
    assert [orjson.loads(f) for f in parser.resync("ETH/USDC:USDC")] == [
        {"method": "unsubscribe", "subscription": {"type": "l2Book", "coin": "ETH"}},
        {"method": "subscribe", "subscription": {"type": "l2Book", "coin": "ETH"}},
    ]
    assert parser.resync("SOL/USDC:USDC") == []
    assert orjson.loads(parser.ping_frame()) == {"method": "ping"}


# ---------------------------------------------------------------------------------------- adapter


def test_connections_share_the_one_url_within_per_ip_limits() -> None:
    adapter = HyperliquidAdapter()
    url = "ws://127.0.0.1:9784/ws"
    ((got_url, parser),) = adapter.connections([hl_instrument("BTC"), hl_instrument("ETH")], url, 200)
    assert got_url == url and set(parser.instruments) == {"BTC", "ETH"} and parser.book_depth == 20
    many = [hl_instrument(f"C{i}") for i in range(COINS_PER_CONNECTION + 1)]
    plan = adapter.connections(many, url, 20)
    assert [len(p.instruments) for _, p in plan] == [COINS_PER_CONNECTION, 1]
    assert sum(len(p.subscribe_frames()) for _, p in plan) == 3 * len(many)
    with pytest.raises(ValueError, match="connections"):
        HyperliquidAdapter(coins_per_connection=1, max_connections=2).connections(many[:3], url, 20)


def test_poll_asset_contexts_once_for_all_instruments() -> None:
    adapter = HyperliquidAdapter()
    assert adapter.rest_weight_per_minute <= 1200
    (poll,) = adapter.polls([hl_instrument("BTC"), hl_instrument("ETH")])
    assert poll.method == "POST" and poll.path == "/info" and poll.params == {}
    assert orjson.loads(poll.body or "") == {"type": "metaAndAssetCtxs"} and poll.body == ASSET_CTXS_BODY
    assert poll.weight * 60 / poll.interval_s <= adapter.rest_weight_per_minute / 10
    ctx = orjson.loads(CTX)["data"]["ctx"]
    body = orjson.dumps(
        [
            {"universe": [{"name": "BTC"}, {"name": "ETH"}, {"name": "SOL"}]},
            [ctx, {**ctx, "openInterest": "250000.5", "markPx": "3300.1"}, ctx],
        ]
    )
    events = adapter.parse_poll(poll, body, 77)
    ois = {e.symbol: e.open_interest for e in events if isinstance(e, OpenInterest)}
    assert ois == {"BTC/USDC:USDC": pytest.approx(9942.2624), "ETH/USDC:USDC": pytest.approx(250000.5)}
    marks = {e.symbol: e.mark_price for e in events if isinstance(e, FundingRate)}
    assert marks == {"BTC/USDC:USDC": 107043.0, "ETH/USDC:USDC": 3300.1}
    assert all(e.ts_recv == 77 and e.ts_exchange == 77 for e in events if not isinstance(e, BadFrame))
    assert HyperliquidAdapter(poll_interval_s=0).polls([hl_instrument()]) == []


@pytest.mark.parametrize(
    "body",
    [b"<html>", b"{}", b"[1]", b'[{"universe":[{"name":"BTC"}]},[]]', b'[{"universe":[{"name":"BTC"}]},[1]]'],
)
def test_bad_poll_answers_are_bad_frames(body: bytes) -> None:
    adapter = HyperliquidAdapter()
    (poll,) = adapter.polls([hl_instrument()])
    (bad,) = adapter.parse_poll(poll, body, 1)
    assert isinstance(bad, BadFrame) and not bad.touches_book and "asset_ctxs" in bad.reason


def test_parse_poll_without_polls_knows_no_instrument() -> None:
    request = PollRequest("asset_ctxs", "BTC/USDC:USDC", "open_interest", "/info", {}, 20, 60.0, "POST", "{}")
    body = orjson.dumps([{"universe": [{"name": "BTC"}]}, [orjson.loads(CTX)["data"]["ctx"]]])
    assert HyperliquidAdapter().parse_poll(request, body, 1) == []


# ---------------------------------------------------------------------------------------- metadata


def test_instrument_from_ccxt_market_uses_the_coin_not_the_asset_index() -> None:
    market = {
        "id": "0",
        "symbol": "BTC/USDC:USDC",
        "base": "BTC",
        "quote": "USDC",
        "settle": "USDC",
        "baseName": "BTC",
        "swap": True,
        "linear": True,
        "inverse": False,
        "contractSize": 1.0,
        "precision": {"amount": 1e-05, "price": 1.0},
        "info": {"name": "BTC", "szDecimals": "5"},
    }
    instrument = instrument_from_market(market)
    assert instrument.venue_id == "BTC" and coin_of(instrument) == "BTC"
    assert instrument.kind is ContractKind.LINEAR and instrument.contract_size == 1.0
    assert instrument.tick_size == 1.0 and instrument.derivative
    # An instrument built by the generic mapping (venue_id = asset index) still subscribes the right coin.
    generic = Instrument("hyperliquid", "ETH/USDC:USDC", "1", "linear", ContractKind.LINEAR, 1.0, 0.1, "ETH",
                         "USDC", "USDC", True)
    assert coin_of(generic) == "ETH"


def test_fallback_metadata() -> None:
    btc, eth = fallback_instruments(["BTC/USDC:USDC", "ETH/USDC:USDC"])
    assert (btc.venue_id, btc.tick_size, eth.venue_id, eth.tick_size) == ("BTC", 1.0, "ETH", 0.1)
    for instrument in (btc, eth):
        assert instrument.kind is ContractKind.LINEAR and instrument.contract_size == 1.0
        assert instrument.settle == "USDC" and instrument.derivative
    assert [i.symbol for i in fallback_instruments()] == ["BTC/USDC:USDC", "ETH/USDC:USDC"]
    with pytest.raises(KeyError, match="SOL"):
        fallback_instruments(["SOL/USDC:USDC"])


def test_recorded_metadata_through_ccxt_and_the_fallback() -> None:
    url = "https://api.hyperliquid.xyz/info"
    meta_and_ctxs = orjson.dumps(
        [
            {"universe": [{"szDecimals": 5, "name": "BTC", "maxLeverage": 50},
                          {"szDecimals": 4, "name": "ETH", "maxLeverage": 50}]},
            [{"markPx": "105055.0", "openInterest": "1.0"}, {"markPx": "3300.1", "openInterest": "2.0"}],
        ]
    ).decode()
    spot_meta = '{"universe":[],"tokens":[]}'
    # ccxt asks spotMeta first; recordings keep no request bodies, so only the [meta, ctxs] answer is kept.
    assert market_responses([(url, spot_meta), (url, meta_and_ctxs), ("https://x/other", "[]")]) == [
        (url, meta_and_ctxs)
    ]
    (eth,) = instruments_from_recording([(url, spot_meta), (url, meta_and_ctxs)], ["ETH/USDC:USDC"])
    assert (eth.venue_id, eth.tick_size, eth.contract_size) == ("ETH", 0.1, 1.0)
    # The 2025-01 recording has no REST lines: the documented fallback answers.
    assert [i.symbol for i in instruments_from_recording([], ["BTC/USDC:USDC"])] == ["BTC/USDC:USDC"]
