"""Hyperliquid perpetuals public websocket protocol, sans-I/O: frames in, typed events out.

Sits beside `bybit.py` under `service/connectors`; `connectors.session` does the socket I/O and
`connectors.rest` performs the `/info` poll this module describes. It must not import asyncio, open
sockets or read files.

Venue facts relied on (../shared/exchanges.md §5 and "Differences that bite" 19, 20, 22):
* One websocket URL (`wss://api.hyperliquid.xyz/ws`). Subscribe with
  `{"method":"subscribe","subscription":{"type":"l2Book","coin":"BTC"}}`; data arrives as
  `{"channel":<type>,"data":...}`; acks on channel `subscriptionResponse`; errors on channel `error`.
  The server greets with the plain text "Websocket connection established." (ignored).
* Keepalive is client driven: `{"method":"ping"}`, answered by `{"channel":"pong"}`.
* `l2Book` pushes are FULL snapshots of at most 20 levels per side, best first, with no sequence
  number, no diff and no checksum. Each one becomes a `BookSnapshot` (rule
  `book.sequencing.snapshots_only`, no delta buffering). The push's `time` (ms) is the snapshot's
  `seq`: it is non-decreasing on a connection (checked over the 2025-01 recording, where the
  subscription snapshot and the first push even carry the same time), which is all a snapshot-only
  book needs; it is not a gap detector. A push older than the book is dropped (`book.sync`: a book is never
  published older than one already published), unless a few come in a row (the venue's clock went back).
* `trades`: `side` "B" = the taker bought, "A" = the taker sold (that it is the aggressor side is
  UNCONFIRMED wording in the docs; the 2025-01 recording is consistent with it: "A" prints at the bid,
  "B" at the ask). The first message after subscribing replays recent trades (the recording's first
  batch starts 49 s before the connection), so on a reconnect the venue re-sends trades we have seen.
  A per-coin high-water mark (time, ids at that time) drops them; it survives `reset()` on purpose.
* `activeAssetCtx` carries `{"coin","ctx":{funding, openInterest, markPx, oraclePx, ...}}` with no
  timestamp, so `ts_exchange` is the receive time. `openInterest` is in coin units; whether it counts
  one side or both is UNCONFIRMED (a third-party vendor says two-sided). We publish it as one-sided
  unless the adapter is built with `oi_two_sided=True`, which halves it. `funding` is taken as the
  hourly rate (interval_hours = 1; hourly payment is UNCONFIRMED in exchanges.md). `oraclePx` is the
  index price.
* No public liquidation or long/short feed exists (UNCONFIRMED absence): nothing is emitted for them.
* REST is `POST /info` with a JSON body. `{"type":"metaAndAssetCtxs"}` answers `[meta, ctxs]` with
  `ctxs[i]` belonging to `meta.universe[i]`; it is polled as a fallback source of open interest and
  funding (weight 20 of the venue's 1200 per minute per IP).
* Limits are per IP: docs say 100 connections and 1000 subscriptions, a 2026 SDK encodes 10
  connections, so we stay well under both (`MAX_CONNECTIONS`, `COINS_PER_CONNECTION`).

Instrument metadata: ccxt's market `id` for a Hyperliquid perp is the asset INDEX ("0" for BTC), not
the coin name the websocket wants, so `instrument_from_market` here maps a ccxt market with the coin
(`info.name`) as `venue_id`. Recordings without REST lines (the 2025-01 one has none) get their
metadata from `fallback_instruments`, a documented minimal universe (BTC, ETH).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import orjson

from flowgauge.book.sequencing import snapshots_only
from flowgauge.book.sync import SequenceRule
from flowgauge.connectors import levels as shared_levels
from flowgauge.connectors.base import Action, PollRequest
from flowgauge.types import (
    BUY,
    SELL,
    BadFrame,
    BookSnapshot,
    ContractKind,
    Event,
    FundingRate,
    Instrument,
    Level,
    OpenInterest,
    Trade,
)

__all__ = [
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "FALLBACK_UNIVERSE",
    "HyperliquidAdapter",
    "HyperliquidParser",
    "coin_of",
    "fallback_instruments",
    "instrument_from_market",
    "instruments_from_recording",
    "market_responses",
]

VENUE = "hyperliquid"
DEFAULT_WS_URL = "wss://api.hyperliquid.xyz/ws"
DEFAULT_REST_URL = "https://api.hyperliquid.xyz"
INFO_PATH = "/info"
PING_FRAME = '{"method":"ping"}'
GREETING = "Websocket connection established."
MAX_BOOK_LEVELS = 20  # l2Book never sends more per side
FUNDING_INTERVAL_HOURS = 1.0
# Three subscriptions per coin (l2Book, trades, activeAssetCtx). 40 coins = 120 subscriptions per
# connection, and at most 5 connections = 600 subscriptions: inside the documented 1000 per IP and the
# 10 connections per IP a 2026 SDK encodes, with room left for other clients on the same address.
COINS_PER_CONNECTION = 40
MAX_CONNECTIONS = 5
SUBSCRIPTIONS_PER_COIN = 3
# The venue's REST budget is 1200 weight per minute per IP; we allow ourselves a quarter of it.
REST_WEIGHT_PER_MINUTE = 300
ASSET_CTXS_WEIGHT = 20  # metaAndAssetCtxs is one of the "most other info requests" (weight 20)
ASSET_CTXS_INTERVAL_S = 60.0
ASSET_CTXS_BODY = '{"type":"metaAndAssetCtxs"}'
# Trade ids remembered at the newest trade time, per coin: one block's prints share a millisecond.
_MAX_IDS_AT_MARK = 4096

_MS = 1_000_000  # ns per ms


class FrameError(ValueError):
    """A frame whose channel we know but whose content is unusable."""


# --------------------------------------------------------------------------------------------------
# Instrument metadata


# Minimal perp universe for replays whose recording holds no REST metadata (the 2025-01 one). Facts
# from Hyperliquid's `meta` as seen through ccxt (PR ccxt#24577, 2024-12: BTC szDecimals 5): BTC is
# asset 0, ETH asset 1. Ticks follow the venue's 5-significant-figure rule at the prices of the time
# (BTC ~105,000 -> 1; ETH ~3,300 -> 0.1). Sizes are coin units (1 contract = 1 coin).
FALLBACK_UNIVERSE: tuple[dict[str, Any], ...] = (
    {"name": "BTC", "szDecimals": 5, "maxLeverage": 50, "tick": 1.0},
    {"name": "ETH", "szDecimals": 4, "maxLeverage": 50, "tick": 0.1},
)


def _perp_instrument(coin: str, tick: float) -> Instrument:
    return Instrument(
        venue=VENUE,
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


def fallback_instruments(symbols: Iterable[str] | None = None) -> list[Instrument]:
    """The fallback universe's instruments (all, or those of `symbols`, in the order asked).

    For replay only, when `markets_from_recording` finds no Hyperliquid markets. Raises KeyError naming
    a symbol the fallback does not know.
    """
    known = {i.symbol: i for i in (_perp_instrument(u["name"], u["tick"]) for u in FALLBACK_UNIVERSE)}
    if symbols is None:
        return list(known.values())
    out = []
    for symbol in symbols:
        if symbol not in known:
            raise KeyError(f"hyperliquid fallback metadata has no {symbol!r}; known: {', '.join(known)}")
        out.append(known[symbol])
    return out


def instrument_from_market(market: Mapping[str, Any]) -> Instrument:
    """Map a ccxt Hyperliquid perp market to an `Instrument` whose `venue_id` is the coin name.

    ccxt's generic mapping would take `market["id"]`, the asset index ("0"), which the websocket does not
    accept. The coin is `info.name` (`baseName` in ccxt's market); HIP-3 markets keep their
    "<dex>:<COIN>" name, which is what their subscriptions use (UNCONFIRMED).
    """
    info = market.get("info") or {}
    coin = info.get("name") or market.get("baseName") or market["base"]
    tick = (market.get("precision") or {}).get("price")
    return Instrument(
        venue=VENUE,
        symbol=str(market["symbol"]),
        venue_id=str(coin),
        category="linear",
        kind=ContractKind.LINEAR,  # USDC-margined, sizes in coin: 1 contract = 1 coin
        contract_size=float(market.get("contractSize") or 1.0),
        tick_size=float(tick) if tick else 0.0,
        base=str(market["base"]),
        quote=str(market["quote"]),
        settle=market.get("settle"),
        derivative=bool(market.get("swap") or market.get("future")),
    )


def market_responses(http: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The recorded `/info` answers ccxt's market loading can use: the last `metaAndAssetCtxs` one.

    Every Hyperliquid REST call is `POST /info`, told apart only by its JSON body, which recordings do not
    keep; `markets.RecordedTransport` matches on the URL, so with both ccxt answers recorded (`spotMeta`
    first) it would hand `spotMeta`'s body to the `metaAndAssetCtxs` request and find no perps. Given only
    the `[meta, ctxs]` answer (recognised by its shape), ccxt parses the perps and shrugs off that same body
    as the `spotMeta` answer (no tokens).
    """
    chosen: list[tuple[str, str]] = []
    for url, body in http:
        if not url.split("?", 1)[0].rstrip("/").endswith(INFO_PATH):
            continue
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        if (
            isinstance(answer, list)
            and len(answer) == 2
            and isinstance(answer[0], dict)
            and isinstance(answer[0].get("universe"), list)
            and isinstance(answer[1], list)
        ):
            chosen = [(url, body)]
    return chosen


def instruments_from_recording(
    http: Iterable[tuple[str, str]], symbols: Iterable[str] | None = None
) -> list[Instrument]:
    """Replay metadata: ccxt over the recorded `metaAndAssetCtxs` answer, else `fallback_instruments`.

    `symbols` (None = all) filters and orders the result; a symbol found in neither source raises KeyError.
    """
    from flowgauge.connectors.markets import markets_from_recording  # pulls in ccxt: only when replaying

    wanted = None if symbols is None else list(symbols)
    markets = markets_from_recording(VENUE, market_responses(http))
    instruments = {m["symbol"]: instrument_from_market(m) for m in markets if m.get("swap")}
    if not instruments:
        return fallback_instruments(wanted)
    if wanted is None:
        return list(instruments.values())
    missing = [s for s in wanted if s not in instruments]
    if missing:
        raise KeyError(f"hyperliquid: recorded metadata has no {', '.join(missing)}")
    return [instruments[s] for s in wanted]


def coin_of(instrument: Instrument) -> str:
    """The coin name used on the wire. An all-digit `venue_id` is ccxt's asset index (an instrument built
    by the generic mapping): fall back to the base currency, which equals the coin for plain perps."""
    venue_id = instrument.venue_id
    return instrument.base if venue_id.isdigit() else venue_id


# --------------------------------------------------------------------------------------------------
# Parsing helpers


def _book_side(raw: Any, instrument: Instrument, depth: int) -> tuple[Level, ...]:
    if instrument.kind is ContractKind.LINEAR and depth >= 0:
        # The compiled core's C loop (same result: size * contract_size is base_size for a linear contract), or None.
        fast = shared_levels.dict_levels(raw, depth, instrument.contract_size)
        if fast is not None:
            return fast  # type: ignore[no-any-return]
    if not isinstance(raw, list):
        raise FrameError("book side is not a list")
    out = []
    for level in raw[:depth]:
        if not isinstance(level, dict):
            raise FrameError(f"level is not an object: {level!r}")
        price = float(level["px"])
        size = float(level["sz"])
        # NaN fails every comparison; infinities and absurd magnitudes are as unusable.
        if not shared_levels.valid_level(price, size):
            raise FrameError(f"bad level {level!r}")
        out.append((price, instrument.base_size(size, price)))
    return tuple(out)


def _time_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise FrameError(f"bad time {value!r}")
    return value


def _opt_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    return number if math.isfinite(number) else None  # "NaN" and "Infinity" parse as floats: unusable


def _coin(data: Any) -> str:
    if not isinstance(data, dict):
        raise FrameError("data is not an object")
    coin = data.get("coin")
    if not isinstance(coin, str):
        raise FrameError("coin is not a string")
    return coin


def _subscription(method: str, kind: str, coin: str) -> str:
    return orjson.dumps({"method": method, "subscription": {"type": kind, "coin": coin}}).decode()


class _TradeMark:
    """Newest trade time seen for one coin and the trade ids seen at exactly that time."""

    __slots__ = ("ids", "time")

    def __init__(self, time_ms: int) -> None:
        self.time = time_ms
        self.ids: set[int | str] = set()


def _ctx_events(
    instrument: Instrument, ctx: Any, ts_exchange: int, ts_recv: int, oi_two_sided: bool
) -> list[Event]:
    """OpenInterest + FundingRate from one perp asset context (stream or metaAndAssetCtxs)."""
    if not isinstance(ctx, dict):
        raise FrameError("ctx is not an object")
    events: list[Event] = []
    oi = _opt_float(ctx.get("openInterest"))
    if oi is not None:
        if oi < 0.0:
            raise FrameError(f"negative open interest {oi!r}")
        # Coin units, contract = 1 coin. Sidedness UNCONFIRMED: halved only when configured two-sided.
        one_sided = oi / 2.0 if oi_two_sided else oi
        events.append(OpenInterest(VENUE, instrument.symbol, one_sided, ts_exchange, ts_recv))
    rate = _opt_float(ctx.get("funding"))
    mark = _opt_float(ctx.get("markPx"))
    index = _opt_float(ctx.get("oraclePx"))
    if rate is not None or mark is not None or index is not None:
        events.append(
            FundingRate(
                VENUE,
                instrument.symbol,
                rate,
                FUNDING_INTERVAL_HOURS if rate is not None else None,
                None,  # paid every hour; the venue sends no next-funding time and we do not invent one
                mark,
                index,
                ts_exchange,
                ts_recv,
            )
        )
    return events


# --------------------------------------------------------------------------------------------------
# The parser


class HyperliquidParser:
    """Parser for one Hyperliquid websocket connection.

    Args:
        instruments: this connection's perps (their coins are subscribed).
        book_depth: levels per side kept from each `l2Book` push (the venue sends at most 20).
        oi_two_sided: halve `openInterest` (set it if the venue's figure proves to count both sides).
    """

    venue = VENUE

    def __init__(
        self,
        instruments: Iterable[Instrument],
        book_depth: int = MAX_BOOK_LEVELS,
        *,
        oi_two_sided: bool = False,
    ) -> None:
        if book_depth < 1:
            raise ValueError(f"hyperliquid book depth must be >= 1, got {book_depth}")
        self.book_depth = min(book_depth, MAX_BOOK_LEVELS)
        self.oi_two_sided = oi_two_sided
        self.instruments: dict[str, Instrument] = {i.venue_id: i for i in instruments}
        self._by_coin: dict[str, Instrument] = {coin_of(i): i for i in self.instruments.values()}
        self._by_symbol: dict[str, str] = {i.symbol: coin for coin, i in self._by_coin.items()}
        # Survives reset(): a reconnect's subscription replays trades we already passed on.
        self._trade_marks: dict[str, _TradeMark] = {}
        self.duplicate_trades = 0  # trades dropped as already seen (re-sent after a (re)subscribe)
        self._handlers = {
            "l2Book": self._on_book,
            "trades": self._on_trades,
            "activeAssetCtx": self._on_asset_ctx,
        }

    # ----------------------------------------------------------------- frames to send

    def coins(self) -> list[str]:
        return list(self._by_coin)

    def subscribe_frames(self) -> list[str]:
        """One subscribe request per (channel, coin): the venue takes one subscription per message."""
        frames = []
        for coin in self._by_coin:
            frames += [
                _subscription("subscribe", "l2Book", coin),  # no nSigFigs: full price precision
                _subscription("subscribe", "trades", coin),
                _subscription("subscribe", "activeAssetCtx", coin),
            ]
        return frames

    def on_connected(self) -> list[Action]:
        self.reset()
        return list(self.subscribe_frames())

    def resync(self, symbol: str) -> list[Action]:
        """Every push is a full book, so the next one heals the book by itself; re-subscribing only gets a
        snapshot at once instead of at the next push (and revives a subscription the venue dropped)."""
        coin = self._by_symbol.get(symbol)
        if coin is None:
            return []
        return [_subscription("unsubscribe", "l2Book", coin), _subscription("subscribe", "l2Book", coin)]

    def ping_frame(self) -> str:
        return PING_FRAME

    def reset(self) -> None:
        """Nothing per connection to forget: books are full snapshots and contexts are complete. The
        trade high-water marks are kept on purpose (see the module docstring)."""

    # ----------------------------------------------------------------- frames received

    def feed(self, raw: str | bytes, ts_recv: int) -> list[Event | str]:
        """Parse one received frame. Never raises on bad input: returns BadFrame."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            if raw == GREETING or raw == GREETING.encode():
                return []
            return [BadFrame(VENUE, "not JSON", None, False, ts_recv)]
        if not isinstance(message, dict):
            return [BadFrame(VENUE, "not a JSON object", None, False, ts_recv)]
        channel = message.get("channel")
        if not isinstance(channel, str):
            return [BadFrame(VENUE, "no channel", None, False, ts_recv)]
        handler = self._handlers.get(channel)
        if handler is None:
            return self._on_control(channel, message, ts_recv)
        data = message.get("data")
        try:
            return handler(data, ts_recv)  # type: ignore[return-value]  # list[Event], read-only to the caller
        except (FrameError, KeyError, TypeError, ValueError, IndexError) as exc:
            symbol = self._symbol_in(data)
            # A broken book push leaves the book one push behind; say which book when we can tell.
            touches_book = channel == "l2Book" and symbol is not None
            return [BadFrame(VENUE, f"{channel}: {exc!r}"[:200], symbol, touches_book, ts_recv)]

    def on_snapshot(self, symbol: str, body: str | bytes, ts_recv: int) -> list[Event]:
        """A REST `l2Book` answer (same shape as the websocket's data). Not requested by this adapter
        (the stream's pushes are snapshots already), accepted for completeness."""
        try:
            data = orjson.loads(body)
            events = self._on_book(data, ts_recv)
        except (orjson.JSONDecodeError, FrameError, KeyError, TypeError, ValueError, IndexError) as exc:
            return [BadFrame(VENUE, f"l2Book snapshot: {exc!r}"[:200], symbol, True, ts_recv)]
        return [e for e in events if e.symbol == symbol]

    def _on_control(self, channel: str, message: Mapping[str, Any], ts_recv: int) -> list[Event | str]:
        if channel == "error":
            # e.g. an invalid or repeated subscription (wording of the venue's texts UNCONFIRMED).
            return [BadFrame(VENUE, f"venue error: {message.get('data')!r}"[:200], None, False, ts_recv)]
        return []  # pong, subscriptionResponse, and channels we do not consume

    def _on_book(self, data: Any, ts_recv: int) -> list[Event]:
        instrument = self._by_coin.get(_coin(data))
        if instrument is None:
            return []  # not one of ours
        levels = data["levels"]
        if not isinstance(levels, list) or len(levels) != 2:
            raise FrameError("levels is not [bids, asks]")
        time_ms = _time_ms(data["time"])
        bids = _book_side(levels[0], instrument, self.book_depth)
        asks = _book_side(levels[1], instrument, self.book_depth)
        return [BookSnapshot(VENUE, instrument.symbol, bids, asks, time_ms, time_ms * _MS, ts_recv)]

    def _on_trades(self, data: Any, ts_recv: int) -> list[Event]:
        if not isinstance(data, list):
            raise FrameError("trades data is not a list")
        parsed: list[tuple[Instrument, str, int | str, float, float, int, int]] = []
        for fill in data:
            instrument = self._by_coin.get(_coin(fill))
            if instrument is None:
                continue
            side_text = fill["side"]
            side: int  # BUY or SELL
            if side_text == "B":
                side = BUY  # taker bought
            elif side_text == "A":
                side = SELL  # taker sold
            else:
                raise FrameError(f"unknown taker side {side_text!r}")
            price = float(fill["px"])
            size = float(fill["sz"])
            if not (0.0 < price < float("inf")) or not (0.0 < size < float("inf")):
                raise FrameError(f"bad trade price/size {fill.get('px')!r} {fill.get('sz')!r}")
            tid = fill["tid"]
            if isinstance(tid, bool) or not isinstance(tid, int | str):
                raise FrameError(f"bad trade id {tid!r}")
            parsed.append((instrument, fill["coin"], tid, price, size, side, _time_ms(fill["time"])))
        # The whole frame is validated before the high-water marks move: a bad frame leaves them as they were.
        events: list[Event] = []
        for instrument, coin, tid, price, size, side, time_ms in parsed:
            if not self._first_sight(coin, tid, time_ms):
                self.duplicate_trades += 1
                continue
            events.append(
                Trade(
                    VENUE,
                    instrument.symbol,
                    price,
                    instrument.base_size(size, price),
                    side,
                    str(tid),
                    False,  # public trades carry no liquidation / ADL marker
                    time_ms * _MS,
                    ts_recv,
                )
            )
        return events

    def _first_sight(self, coin: str, tid: int | str, time_ms: int) -> bool:
        """True if this trade is newer than every trade passed on for `coin` (trades arrive in time order)."""
        mark = self._trade_marks.get(coin)
        if mark is None or time_ms > mark.time:
            mark = self._trade_marks[coin] = _TradeMark(time_ms)
        elif time_ms < mark.time or tid in mark.ids:
            return False
        if len(mark.ids) < _MAX_IDS_AT_MARK:
            mark.ids.add(tid)
        return True

    def _on_asset_ctx(self, data: Any, ts_recv: int) -> list[Event]:
        instrument = self._by_coin.get(_coin(data))
        if instrument is None:
            return []
        # The venue sends no time with a context: receive time is the best exchange-time estimate we have.
        return _ctx_events(instrument, data["ctx"], ts_recv, ts_recv, self.oi_two_sided)

    def _symbol_in(self, data: Any) -> str | None:
        coin = data.get("coin") if isinstance(data, dict) else None
        instrument = self._by_coin.get(coin) if isinstance(coin, str) else None
        return instrument.symbol if instrument is not None else None


# --------------------------------------------------------------------------------------------------
# The adapter


class HyperliquidAdapter:
    """Hyperliquid perps: books, trades and asset contexts stream; asset contexts are also polled as a
    fallback source of open interest and funding.

    Args:
        coins_per_connection: coins per websocket connection (3 subscriptions each).
        max_connections: refuse configurations needing more connections than this (limits are per IP).
        oi_two_sided: halve the venue's `openInterest` (its sidedness is UNCONFIRMED; default: one-sided).
        poll_interval_s: seconds between `metaAndAssetCtxs` polls; 0 disables the fallback poll.
        best_quote: accepted for every venue's config (`venues.<id>.best_quote`) and without effect here: no
            best-quote stream is subscribed, the L1 OFI fields derive from each `l2Book`'s top. (`bbo` exists;
            both it and `l2Book` are believed to push per block, so it would add no granularity: UNCONFIRMED.)
    """

    venue: ClassVar[str] = VENUE
    default_ws_url: ClassVar[str] = DEFAULT_WS_URL
    default_rest_url: ClassVar[str] = DEFAULT_REST_URL
    rest_weight_per_minute: ClassVar[int] = REST_WEIGHT_PER_MINUTE
    sequence_rule: ClassVar[SequenceRule] = staticmethod(snapshots_only)  # type: ignore[assignment]
    buffer_deltas: ClassVar[bool] = False

    def __init__(
        self,
        coins_per_connection: int = COINS_PER_CONNECTION,
        max_connections: int = MAX_CONNECTIONS,
        *,
        oi_two_sided: bool = False,
        poll_interval_s: float = ASSET_CTXS_INTERVAL_S,
        best_quote: bool = False,
    ) -> None:
        if coins_per_connection < 1 or max_connections < 1:
            raise ValueError("coins_per_connection and max_connections must be >= 1")
        if poll_interval_s < 0:
            raise ValueError("poll_interval_s must be >= 0")
        self.coins_per_connection = coins_per_connection
        self.max_connections = max_connections
        self.oi_two_sided = oi_two_sided
        self.poll_interval_s = poll_interval_s
        self.best_quote = False  # see the docstring: the setting changes nothing on Hyperliquid
        self._polled: dict[str, Instrument] = {}  # coin -> instrument, filled by polls()

    def connections(
        self, instruments: Sequence[Instrument], ws_url: str, book_depth: int
    ) -> list[tuple[str, HyperliquidParser]]:
        """All coins share the one websocket URL; they are spread over as few connections as the
        per-connection share allows, and a configuration beyond `max_connections` is refused."""
        unique = list({coin_of(i): i for i in instruments}.values())
        size = self.coins_per_connection
        chunks = [unique[i : i + size] for i in range(0, len(unique), size)]
        if len(chunks) > self.max_connections:
            raise ValueError(
                f"hyperliquid: {len(unique)} coins need {len(chunks)} connections, more than the "
                f"{self.max_connections} we allow ourselves per IP"
            )
        return [
            (ws_url, HyperliquidParser(chunk, book_depth, oi_two_sided=self.oi_two_sided)) for chunk in chunks
        ]

    def polls(self, instruments: Sequence[Instrument]) -> list[PollRequest]:
        """One `metaAndAssetCtxs` request covers every asset: poll it once for all instruments."""
        self._polled = {coin_of(i): i for i in instruments}
        if not instruments or self.poll_interval_s == 0:
            return []
        return [
            PollRequest(
                key="asset_ctxs",
                symbol=instruments[0].symbol,  # the request is about all of `instruments`
                kind="open_interest",
                path=INFO_PATH,
                params={},
                weight=ASSET_CTXS_WEIGHT,
                interval_s=self.poll_interval_s,
                method="POST",
                body=ASSET_CTXS_BODY,
            )
        ]

    def parse_poll(self, request: PollRequest, body: str | bytes, ts_recv: int) -> list[Event]:
        """OpenInterest + FundingRate per polled instrument from a `[meta, ctxs]` answer."""
        try:
            answer = orjson.loads(body)
            if not isinstance(answer, list) or len(answer) != 2:
                raise FrameError("metaAndAssetCtxs answer is not [meta, ctxs]")
            meta, ctxs = answer
            universe = meta["universe"]
            if not isinstance(universe, list) or not isinstance(ctxs, list) or len(universe) != len(ctxs):
                raise FrameError("universe and ctxs do not pair up")
            events: list[Event] = []
            for asset, ctx in zip(universe, ctxs, strict=True):
                instrument = self._polled.get(asset.get("name", "")) if isinstance(asset, dict) else None
                if instrument is not None:
                    events += _ctx_events(instrument, ctx, ts_recv, ts_recv, self.oi_two_sided)
        except (orjson.JSONDecodeError, FrameError, KeyError, TypeError, ValueError, IndexError) as exc:
            return [BadFrame(VENUE, f"poll {request.key}: {exc!r}"[:200], None, False, ts_recv)]
        return events
