"""Deribit JSON-RPC 2.0 public websocket protocol (perpetuals, dated futures, options), sans-I/O.

Turns raw text frames into typed events and builds the frames to send (heartbeat setup, subscribe,
resync). Must not import asyncio or touch sockets: `connectors.session` does the I/O. It also holds the
two Deribit-specific metadata helpers the shared ccxt path needs (`instrument_from_deribit_market`,
`recorded_market_responses`), because ccxt's generic reading of Deribit markets is not enough here.

Venue facts this module relies on (../shared/exchanges.md §4 and "Differences that bite" 9, 16-18, 22):
* Everything is JSON-RPC 2.0 on one URL. Requests carry `id`; notifications are
  `{"method":"subscription","params":{"channel":..,"data":..}}`.
* `public/set_heartbeat` (interval >= 10 s) makes the server send `heartbeat` messages; one of
  `type: test_request` must be answered with a `public/test` call or the server closes the connection.
  `feed()` returns that answer as a `str` to send.
* `.raw` channels need authentication since January 2022 (error 13778
  `raw_subscriptions_not_available_for_unauthorized`), so we subscribe `.100ms`. Old recordings hold
  `.raw` frames with the same message shape; they parse the same.
* `book.{instrument}.{interval}`: the first notification is `type: snapshot`, later ones `type: change`
  with `prev_change_id` equal to the previous `change_id` (ids jump, never +1: rule
  `book.sequencing.chained_ids`). Rows are `[action, price, amount]`, action new/change/delete, and a
  delete carries amount 0.0. There is no REST bootstrap: resync = unsubscribe + subscribe the channel.
* Prices and amounts are JSON numbers. Amounts (book, trades, ticker `open_interest`) are USD for inverse
  perpetuals/futures (BTC-PERPETUAL: contract_size 10 USD) and coin for linear `*_USDC-*` contracts and
  options. Base size is therefore amount / price (inverse, at each level's own price) or amount.
* Trades: `direction` is the taker's side; `liquidation` is "M" (maker side liquidated), "T" (taker
  side) or "MT" (both). A liquidated party's forced order closes its position, so a forced BUY means a
  SHORT position was liquidated. `block_trade_id` marks block trades. Both are kept out of TFI (forced).
* `quote.{instrument}` (no interval suffix): the best-quote stream, `{"best_bid_price", "best_bid_amount",
  "best_ask_price", "best_ask_amount", "instrument_name", "timestamp"}`, a price null for an empty side; amounts
  follow the unit rule above. It feeds the L1 OFI only (`BestQuote`); subscribed with the other channels unless
  `best_quote=False`. Whether an unauthenticated connection gets every change or an aggregation is UNCONFIRMED.
* Ticker: `open_interest` (unit rule above), `mark_price`, `index_price`, and for perpetuals
  `current_funding` / `funding_8h`. Deribit documents `open_interest` as "the total amount of outstanding
  contracts", which reads as one side (each contract has one long and one short holder); no document
  says so outright, so ONE-SIDED is UNCONFIRMED and the figure is published as is, not halved.
* `instrument.state.{kind}.{currency}` (we take `any.any`, one channel per connection) announces an order book's
  state: created, started, settled, closed, terminated (and deactivated, seen in third-party code: UNCONFIRMED).
  Any of the last four for one of ours is its end: an `InstrumentRetired` (EXPIRED when settled, else
  DELISTED), so its book retires without waiting for the next metadata refresh.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson

from flowgauge.book.sequencing import chained_ids
from flowgauge.book.sync import SequenceRule
from flowgauge.connectors import levels as shared_levels
from flowgauge.connectors.base import Action, PollRequest
from flowgauge.types import (
    BUY,
    SELL,
    BadFrame,
    BestQuote,
    BookDelta,
    BookSnapshot,
    ContractKind,
    Event,
    FundingRate,
    Instrument,
    InstrumentRetired,
    Level,
    Liquidation,
    OpenInterest,
    RetireReason,
    Trade,
)

VENUE = "deribit"
DEFAULT_WS_URL = "wss://www.deribit.com/ws/api/v2"
DEFAULT_REST_URL = "https://www.deribit.com"
# Notification intervals. `raw` needs an authenticated connection; `agg2` is a slower aggregation.
INTERVALS = ("100ms", "agg2", "raw")
MIN_HEARTBEAT_S = 10  # Deribit refuses shorter heartbeat intervals
# Channels per subscribe request and instruments per connection are our own bounds: Deribit documents
# no per-request or per-connection channel cap (UNCONFIRMED), only 32 connections per IP.
DEFAULT_SUBSCRIBE_BATCH = 100
MAX_INSTRUMENTS_PER_CONNECTION = 200  # 3 channels each
FUNDING_8H = 8.0  # `funding_8h` is the funding over 8 hours
_CHANNEL_KINDS = ("book", "trades", "ticker")
QUOTE_KIND = "quote"  # `quote.{instrument}`: best bid/ask, no interval suffix
STATE_CHANNEL = "instrument.state.any.any"  # every instrument's book state changes (one channel for all)
# Book states that end an instrument (Deribit: created, started, settled, closed, terminated).
_ENDED_STATES = {"settled": RetireReason.EXPIRED, "closed": RetireReason.DELISTED,
                 "terminated": RetireReason.DELISTED, "deactivated": RetireReason.DELISTED}  # fmt: skip
_PENDING_REQUESTS_MAX = 1024  # our own subscribe requests awaiting an answer; bounded against leaks

_MS = 1_000_000  # ns per ms
_MAX_MS = 10**13  # a venue time beyond this (year 2286) is garbage


class FrameError(ValueError):
    """A frame that does not match the schema it claims (channel known, content unusable)."""


def is_option(venue_id: str) -> bool:
    """Deribit option ids are `BASE-DDMMMYY-STRIKE-C|P` (e.g. BTC-24SEP21-8000-P, XRP_USDC-...-C)."""
    parts = venue_id.split("-")
    return len(parts) == 4 and parts[3] in ("C", "P")


def amounts_in_usd(instrument: Instrument) -> bool:
    """True when Deribit amounts of `instrument` are USD (inverse futures/perps), False when coin.

    Decided from the id as well as the kind: ccxt marks coin-settled options inverse (quote USD, settle
    BTC), yet their amounts are coin.
    """
    return instrument.kind is ContractKind.INVERSE and not is_option(instrument.venue_id)


def _number(value: Any, what: str) -> float:
    # JSON numbers only: a bool is an int to Python but never a price, and NaN/inf never a size.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError(f"{what} is not a number: {value!r}")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond any double: orjson parses big JSON integers exactly
        raise FrameError(f"{what} is out of range") from None
    if not math.isfinite(out):
        raise FrameError(f"{what} is not finite")
    return out


def _opt_number(value: Any, what: str) -> float | None:
    return None if value is None else _number(value, what)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"{what} is not an integer: {value!r}")
    return value


class DeribitParser:
    """Parser for one Deribit public websocket connection.

    Args:
        instruments: this connection's instruments (venue ids like `BTC-PERPETUAL`).
        interval: notification interval of every channel; `100ms` unless the connection is authenticated.
        heartbeat_s: the `public/set_heartbeat` interval asked for (>= 10 s).
        subscribe_batch: channels per `public/subscribe` request.
        best_quote: also subscribe `quote.{instrument}` (the L1 OFI's best-quote stream).
    """

    venue = VENUE

    def __init__(
        self,
        instruments: Iterable[Instrument],
        interval: str = "100ms",
        heartbeat_s: int = 30,
        subscribe_batch: int = DEFAULT_SUBSCRIBE_BATCH,
        best_quote: bool = True,
    ) -> None:
        if interval not in INTERVALS:
            raise ValueError(f"deribit interval must be one of {INTERVALS}, got {interval!r}")
        if heartbeat_s < MIN_HEARTBEAT_S:
            raise ValueError(f"deribit heartbeat interval must be >= {MIN_HEARTBEAT_S} s, got {heartbeat_s}")
        if subscribe_batch < 1:
            raise ValueError("subscribe_batch must be >= 1")
        self.interval = interval
        self.heartbeat_s = heartbeat_s
        self.subscribe_batch = subscribe_batch
        self.best_quote = best_quote
        self.instruments: dict[str, Instrument] = {i.venue_id: i for i in instruments}
        self._by_symbol = {i.symbol: i for i in self.instruments.values()}
        self._usd = {venue_id: amounts_in_usd(i) for venue_id, i in self.instruments.items()}
        self._next_id = 1
        self._pending: dict[int, tuple[str, tuple[str, ...]]] = {}  # request id -> (method, channels)
        self._handlers = {"book": self._on_book, "trades": self._on_trades, "ticker": self._on_ticker}

    # ----------------------------------------------------------------- frames to send

    def channels(self) -> list[str]:
        channels = []
        for venue_id in self.instruments:
            channels += [f"{kind}.{venue_id}.{self.interval}" for kind in _CHANNEL_KINDS]
            if self.best_quote:
                channels.append(f"{QUOTE_KIND}.{venue_id}")
        return [*channels, STATE_CHANNEL] if channels else channels

    def retire(self, symbol: str) -> None:
        """Its book retired: the next connection does not subscribe its channels (nor resyncs it)."""
        instrument = self._by_symbol.pop(symbol, None)
        if instrument is not None:
            self.instruments.pop(instrument.venue_id, None)

    def on_connected(self) -> list[Action]:
        """Heartbeat first (the server drops connections that ignore test requests), then subscriptions."""
        self.reset()
        frames: list[Action] = [self._request("public/set_heartbeat", {"interval": self.heartbeat_s})]
        channels = self.channels()
        for i in range(0, len(channels), self.subscribe_batch):
            frames.append(self._subscription("public/subscribe", channels[i : i + self.subscribe_batch]))
        return frames

    def resync(self, symbol: str) -> list[Action]:
        """No REST bootstrap: unsubscribing and subscribing the book channel yields a fresh snapshot."""
        instrument = self._by_symbol.get(symbol)
        if instrument is None:
            return []
        channel = f"book.{instrument.venue_id}.{self.interval}"
        return [self._subscription("public/unsubscribe", [channel]), self._subscription("public/subscribe", [channel])]

    def ping_frame(self) -> str:
        """An application-level round trip; the heartbeat set up on connect is the venue's real keepalive."""
        return orjson.dumps({"jsonrpc": "2.0", "id": 0, "method": "public/test", "params": {}}).decode()

    def on_snapshot(self, symbol: str, body: str | bytes, ts_recv: int) -> list[Event]:
        return []  # books start from the websocket snapshot; no REST snapshot is ever requested

    def reset(self) -> None:
        """A new connection: forget requests the old one never answered."""
        self._pending.clear()

    def _request(self, method: str, params: Mapping[str, Any]) -> str:
        req_id = self._next_id
        self._next_id += 1
        return orjson.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}).decode()

    def _subscription(self, method: str, channels: Sequence[str]) -> str:
        req_id = self._next_id
        if len(self._pending) >= _PENDING_REQUESTS_MAX:
            self._pending.pop(next(iter(self._pending)))  # a venue that never answers must not grow us
        self._pending[req_id] = (method, tuple(channels))
        return self._request(method, {"channels": list(channels)})

    # ----------------------------------------------------------------- frames received

    def feed(self, raw: str | bytes, ts_recv: int) -> list[Event | str]:
        """Parse one received frame. Never raises on bad input: returns BadFrame. A `str` is a frame to send."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [BadFrame(VENUE, "not JSON", None, False, ts_recv)]
        if not isinstance(message, dict):
            return [BadFrame(VENUE, "not a JSON object", None, False, ts_recv)]
        method = message.get("method")
        if method == "subscription":
            return self._on_notification(message, ts_recv)
        if method == "heartbeat":
            params = message.get("params")
            if isinstance(params, dict) and params.get("type") == "test_request":
                return [self._request("public/test", {})]  # unanswered, the server closes the connection
            return []
        if "id" in message:
            return self._on_answer(message, ts_recv)
        return []  # other notifications (e.g. announcements) are not market data

    def _on_answer(self, message: Mapping[str, Any], ts_recv: int) -> list[Event | str]:
        req_id = message.get("id")
        pending = self._pending.pop(req_id, None) if isinstance(req_id, int) else None
        error = message.get("error")
        if error is not None:
            detail = error if not isinstance(error, dict) else f"{error.get('code')} {error.get('message')}"
            asked = f" ({pending[0]} {','.join(pending[1])})" if pending else ""
            reason = f"request {req_id!r} rejected: {detail}{asked}"[:200]
            books = self._books_in(pending[1]) if pending is not None and pending[0] == "public/subscribe" else []
            # A refused subscribe (e.g. 10040 "retry") brings its books no snapshot and no changes: naming them
            # makes each one's resync ask again at the resync interval, not after the stuck-book retry.
            return [BadFrame(VENUE, reason, symbol, True, ts_recv) for symbol in books] or [
                BadFrame(VENUE, reason, None, False, ts_recv)
            ]
        if pending is None or pending[0] != "public/subscribe":
            return []
        granted = message.get("result")
        # Deribit answers a subscribe with the channels it took; one we asked for and did not get will
        # never deliver, which would otherwise only show up as a stale book.
        missing = [c for c in pending[1] if not isinstance(granted, list) or c not in granted]
        if not missing:
            return []
        return [BadFrame(VENUE, f"not subscribed: {','.join(missing)}"[:200], None, False, ts_recv)]

    def _books_in(self, channels: Sequence[str]) -> list[str]:
        """The symbols of ours whose `book` channel is among `channels`."""
        out = []
        for channel in channels:
            parts = channel.split(".")
            instrument = self.instruments.get(parts[1]) if len(parts) == 3 and parts[0] == "book" else None
            if instrument is not None:
                out.append(instrument.symbol)
        return out

    def _on_notification(self, message: Mapping[str, Any], ts_recv: int) -> list[Event | str]:
        params = message.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
            return [BadFrame(VENUE, "notification without a channel", None, False, ts_recv)]
        parts = params["channel"].split(".")
        if parts[:2] == ["instrument", "state"]:
            return self._on_state(params.get("data"), ts_recv)
        if parts[0] == QUOTE_KIND and len(parts) == 2:
            return self._on_quote(params.get("data"), parts[1], ts_recv)
        handler = self._handlers.get(parts[0])
        # `book.X.interval`, `trades.X.interval`, `ticker.X.interval`; grouped books
        # (`book.X.group.depth.interval`) and per-kind trades (`trades.future.BTC.100ms`) are never
        # subscribed here and fall through as "not ours".
        if handler is None or len(parts) != 3:
            return []
        instrument = self.instruments.get(parts[1])
        if instrument is None:
            return []  # not one of ours (a recording can hold more than we track)
        try:
            return list(handler(params.get("data"), instrument, ts_recv))
        except (FrameError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            touches_book = parts[0] == "book"
            return [BadFrame(VENUE, f"{parts[0]}: {exc!r}"[:200], instrument.symbol, touches_book, ts_recv)]

    def _on_quote(self, data: Any, venue_id: str, ts_recv: int) -> list[Event | str]:
        """`quote.{instrument}` -> BestQuote in base units; a bad one is reported without touching the book."""
        instrument = self.instruments.get(venue_id)
        if instrument is None:
            return []
        try:
            if not isinstance(data, dict):
                raise FrameError("quote data is not an object")
            bid = self._quote_side(instrument, data.get("best_bid_price"), data.get("best_bid_amount"))
            ask = self._quote_side(instrument, data.get("best_ask_price"), data.get("best_ask_amount"))
            ts_exchange = _int(data["timestamp"], "timestamp") * _MS
        except (FrameError, KeyError, TypeError, ValueError) as exc:
            return [BadFrame(VENUE, f"quote: {exc!r}"[:200], instrument.symbol, False, ts_recv)]
        return [BestQuote(VENUE, instrument.symbol, bid[0], bid[1], ask[0], ask[1], None, ts_exchange, ts_recv)]

    def _quote_side(self, instrument: Instrument, price: Any, amount: Any) -> tuple[float | None, float | None]:
        """(price, base size) of one side of a quote; (None, None) for an empty side (price null, or 0 amount)."""
        px = _opt_number(price, "price")
        size = _opt_number(amount, "amount")
        if px is None or size is None or (size == 0.0 and px == 0.0):
            return None, None
        if not shared_levels.valid_level(px, size):
            raise FrameError(f"bad quote side {price!r} x {amount!r}")
        return px, self._base(instrument, size, px)

    def _on_state(self, data: Any, ts_recv: int) -> list[Event | str]:
        """`instrument.state`: `{"instrument_name", "state", "timestamp"}`; an ended state retires one of ours."""
        if not isinstance(data, dict) or not isinstance(data.get("instrument_name"), str):
            return [BadFrame(VENUE, "instrument.state: no instrument_name", None, False, ts_recv)]
        instrument = self.instruments.get(data["instrument_name"])
        state = data.get("state")
        reason = _ENDED_STATES.get(state) if isinstance(state, str) else None  # a list or object is no state
        if instrument is None or reason is None:
            return []
        stamp = data.get("timestamp")
        ts_exchange = ts_recv
        if isinstance(stamp, int) and not isinstance(stamp, bool) and 0 < stamp < _MAX_MS:
            ts_exchange = stamp * _MS
        detail = f"deribit instrument.state {data['state']}"
        return [InstrumentRetired(VENUE, instrument.symbol, reason, detail, ts_exchange, ts_recv)]

    def _base(self, instrument: Instrument, amount: float, price: float) -> float:
        """Deribit amount -> base units: USD amounts are divided by that level's own price.

        This is `instrument.base_size(amount / contract_size, price)` without the float round trip.
        """
        if self._usd[instrument.venue_id]:
            return amount / price
        return amount

    def _levels(self, rows: Any, instrument: Instrument) -> tuple[Level, ...]:
        usd = self._usd.get(instrument.venue_id)
        if usd is not None:
            fast = shared_levels.action_levels(rows, usd)  # the compiled core's C loop (same result), or None
            if fast is not None:
                return fast  # type: ignore[no-any-return]
        if not isinstance(rows, list):
            raise FrameError("levels are not a list")
        out = []
        for row in rows:
            if not isinstance(row, list) or len(row) != 3:
                raise FrameError(f"bad level {row!r}")
            action = row[0]
            price = _number(row[1], "price")
            amount = _number(row[2], "amount")
            if not shared_levels.valid_level(price, amount):
                raise FrameError(f"bad level {row!r}")
            if action == "delete":
                out.append((price, 0.0))  # sent with amount 0.0; never trust it to be anything else
            elif action in ("new", "change"):
                out.append((price, self._base(instrument, amount, price)))
            else:
                raise FrameError(f"unknown level action {action!r}")
        return tuple(out)

    def _on_book(self, data: Any, instrument: Instrument, ts_recv: int) -> list[Event]:
        if not isinstance(data, dict):
            raise FrameError("book data is not an object")
        kind = data["type"]
        change_id = _int(data["change_id"], "change_id")
        ts_exchange = _int(data["timestamp"], "timestamp") * _MS
        bids = self._levels(data["bids"], instrument)
        asks = self._levels(data["asks"], instrument)
        if kind == "snapshot":
            return [BookSnapshot(VENUE, instrument.symbol, bids, asks, change_id, ts_exchange, ts_recv)]
        if kind != "change":
            raise FrameError(f"unknown book type {kind!r}")
        # Every message but the first carries prev_change_id; a change without it cannot be chained.
        prev = _int(data["prev_change_id"], "prev_change_id")
        return [BookDelta(VENUE, instrument.symbol, bids, asks, change_id, prev, ts_exchange, ts_recv)]

    def _on_trades(self, data: Any, instrument: Instrument, ts_recv: int) -> list[Event]:
        if not isinstance(data, list):
            raise FrameError("trades data is not a list")
        events: list[Event] = []
        for fill in data:
            price = _number(fill["price"], "price")
            amount = _number(fill["amount"], "amount")
            if price <= 0.0 or amount < 0.0:
                raise FrameError(f"bad trade price/amount {price!r}/{amount!r}")
            direction = fill["direction"]
            side: int  # BUY or SELL
            if direction == "buy":
                side = BUY
            elif direction == "sell":
                side = SELL
            else:
                raise FrameError(f"unknown taker direction {direction!r}")
            liquidation = fill.get("liquidation")
            if liquidation not in (None, "M", "T", "MT"):
                raise FrameError(f"unknown liquidation marker {liquidation!r}")
            ts_exchange = _int(fill["timestamp"], "timestamp") * _MS
            size = self._base(instrument, amount, price)
            forced = liquidation is not None or fill.get("block_trade_id") is not None
            events.append(
                Trade(VENUE, instrument.symbol, price, size, side, str(fill["trade_id"]), forced, ts_exchange, ts_recv)
            )
            if liquidation is None:
                continue
            # The taker traded `direction`, the maker the opposite. A liquidated party was closing: a
            # forced buy closes a short, a forced sell closes a long.
            taker_closed: Literal["long", "short"] = "short" if side == BUY else "long"
            maker_closed: Literal["long", "short"] = "long" if side == BUY else "short"
            for marker, closed in (("T", taker_closed), ("M", maker_closed)):
                if marker in liquidation:
                    events.append(Liquidation(VENUE, instrument.symbol, closed, price, size, ts_exchange, ts_recv))
        return events

    def _on_ticker(self, data: Any, instrument: Instrument, ts_recv: int) -> list[Event]:
        if not isinstance(data, dict):
            raise FrameError("ticker data is not an object")
        ts_exchange = _int(data["timestamp"], "timestamp") * _MS
        mark = _opt_number(data.get("mark_price"), "mark_price")
        index = _opt_number(data.get("index_price"), "index_price")
        events: list[Event] = []
        open_interest = _opt_number(data.get("open_interest"), "open_interest")
        if open_interest is not None:
            if open_interest < 0.0:
                raise FrameError("negative open_interest")
            if not self._usd[instrument.venue_id]:
                events.append(OpenInterest(VENUE, instrument.symbol, open_interest, ts_exchange, ts_recv))
            else:
                # USD open interest -> base at the mark price of the same message (metrics.md §6.2 rule 4).
                price = mark if mark is not None and mark > 0.0 else index
                if price is not None and price > 0.0:
                    events.append(
                        OpenInterest(VENUE, instrument.symbol, open_interest / price, ts_exchange, ts_recv)
                    )
        # An option's mark price is a premium in coin while its index is USD: a "premium over index"
        # computed from them would be meaningless, so options report no funding/mark observation.
        if not is_option(instrument.venue_id) and (mark is not None or index is not None):
            funding_8h = _opt_number(data.get("funding_8h"), "funding_8h")
            events.append(
                FundingRate(
                    VENUE,
                    instrument.symbol,
                    funding_8h,
                    FUNDING_8H if funding_8h is not None else None,
                    None,  # Deribit funding accrues continuously: there is no next funding time
                    mark,
                    index,
                    ts_exchange,
                    ts_recv,
                )
            )
        return events


class DeribitAdapter:
    """Deribit public streams: books, trades and tickers (OI, funding, mark) all stream; nothing is polled.

    Args:
        interval: channel interval (`100ms` for unauthenticated connections).
        heartbeat_s: `public/set_heartbeat` interval, >= 10 s.
        subscribe_batch: channels per subscribe request.
        max_instruments_per_connection: instruments per websocket (3 channels each, 4 with the best quote).
        best_quote: also subscribe `quote.{instrument}` (config venues.<id>.best_quote).
    """

    venue: ClassVar[str] = VENUE
    default_ws_url: ClassVar[str] = DEFAULT_WS_URL
    default_rest_url: ClassVar[str] = DEFAULT_REST_URL
    # Deribit's non-matching-engine budget is 20 requests/s (ccxt's rateLimit 50 ms). We only load
    # instrument metadata (get_currencies + get_instruments), so half of it is plenty.
    rest_weight_per_minute: ClassVar[int] = 600
    sequence_rule: ClassVar[SequenceRule] = staticmethod(chained_ids)  # type: ignore[assignment]
    buffer_deltas: ClassVar[bool] = False  # the websocket snapshot starts every book

    def __init__(
        self,
        interval: str = "100ms",
        heartbeat_s: int = 30,
        subscribe_batch: int = DEFAULT_SUBSCRIBE_BATCH,
        max_instruments_per_connection: int = MAX_INSTRUMENTS_PER_CONNECTION,
        best_quote: bool = True,
    ) -> None:
        if max_instruments_per_connection < 1:
            raise ValueError("max_instruments_per_connection must be >= 1")
        DeribitParser([], interval, heartbeat_s, subscribe_batch)  # validate the options once, here
        self.interval = interval
        self.heartbeat_s = heartbeat_s
        self.subscribe_batch = subscribe_batch
        self.max_instruments_per_connection = max_instruments_per_connection
        self.best_quote = best_quote  # subscribe `quote.{instrument}` (config venues.<id>.best_quote)

    def connections(
        self, instruments: Sequence[Instrument], ws_url: str, book_depth: int
    ) -> list[tuple[str, DeribitParser]]:
        """One URL for every kind; instruments are split into chunks. `book_depth` does not apply: the
        `book.{instrument}.{interval}` channel always carries the full book."""
        step = self.max_instruments_per_connection
        return [
            (
                ws_url,
                DeribitParser(
                    instruments[i : i + step], self.interval, self.heartbeat_s, self.subscribe_batch, self.best_quote
                ),
            )
            for i in range(0, len(instruments), step)
        ]

    def replay_parser(self, url: str, instruments: Sequence[Instrument]) -> DeribitParser | None:
        """Offline every recorded instrument goes to one parser: a recording's connection may carry any."""
        if not url.rstrip("/").endswith("/ws/api/v2"):
            return None
        return DeribitParser(instruments, self.interval, self.heartbeat_s, self.subscribe_batch)

    def polls(self, instruments: Sequence[Instrument]) -> list[PollRequest]:
        return []  # OI and funding stream in `ticker`; Deribit publishes no long/short ratio (UNCONFIRMED absence)

    def parse_poll(self, request: PollRequest, body: str | bytes, ts_recv: int) -> list[Event]:
        return []


# --------------------------------------------------------------------------------------------------
# Instrument metadata: the Deribit-specific parts of the ccxt path


def instrument_from_deribit_market(market: Mapping[str, Any]) -> Instrument | None:
    """Map one ccxt deribit market to our `Instrument`; None for spot pairs and combos.

    Differs from the generic `markets.instrument_from_market` in two ways: options count as derivatives
    (ccxt marks them `option`/`contract`, not `swap`/`future`), and an option is sized LINEAR in coin
    (contract_size 1 coin) although ccxt marks coin-settled options `inverse`. Futures keep ccxt's reading:
    BTC-PERPETUAL is INVERSE with contract_size 10 (USD per contract), BTC_USDC-PERPETUAL LINEAR with 0.001.
    """
    if market.get("spot") or (market.get("linear") is None and market.get("inverse") is None):
        return None  # spot pairs, and combos (ccxt leaves linear/inverse unset for them)
    option = bool(market.get("option"))
    inverse = bool(market.get("inverse")) and not bool(market.get("linear"))
    if option:
        kind, category = ContractKind.LINEAR, "option"
    elif inverse:
        kind, category = ContractKind.INVERSE, "inverse"
    else:
        kind, category = ContractKind.LINEAR, "linear"
    tick = (market.get("precision") or {}).get("price")
    return Instrument(
        venue=VENUE,
        symbol=str(market["symbol"]),
        venue_id=str(market["id"]),
        category=category,
        kind=kind,
        contract_size=float(market.get("contractSize") or 1.0),
        tick_size=float(tick) if tick else 0.0,
        base=str(market["base"]),
        quote=str(market["quote"]),
        settle=market.get("settle"),
        derivative=bool(market.get("swap") or market.get("future") or option),
    )


_INSTRUMENTS_PATH = "/api/v2/public/get_instruments"
_CURRENCIES_PATH = "/api/v2/public/get_currencies"


def recorded_market_responses(responses: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Recorded Deribit REST answers reshaped so that ccxt's current `load_markets` finds every market.

    ccxt (4.5) asks `public/get_currencies`, then ONE `public/get_instruments` without `currency`; older
    recordings (cryptofeed's 2021 session) hold one `get_instruments?currency=X` answer per currency and no
    `get_currencies`. And ccxt reads the quote from `counter_currency` and the settle currency from
    `settlement_currency`, fields Deribit added in 2022: on 2021 rows ccxt finds no quote and silently
    skips every market. This returns, in front of the recorded lines, one merged all-currency
    `get_instruments` answer and a `get_currencies` answer listing the currencies seen, with the two
    missing fields filled from what the 2021 rows imply (quote "USD"; futures and options settle in
    their base coin; futures are `reversed`, i.e. inverse). Rows that carry the fields are untouched.
    Pass the result to `markets.markets_from_recording("deribit", ...)`.
    """
    responses = list(responses)
    merged: list[dict[str, Any]] = []
    seen: set[str | None] = set()
    currencies: list[str] = []
    origin = DEFAULT_REST_URL
    for url, body in responses:
        parts = urlsplit(url)
        if parts.path != _INSTRUMENTS_PATH:
            continue
        origin = f"{parts.scheme}://{parts.netloc}"
        try:
            rows = orjson.loads(body).get("result")
        except (orjson.JSONDecodeError, AttributeError):
            continue  # an error answer or an unreadable body holds no instruments
        if not isinstance(rows, list):
            continue
        currency = dict(parse_qsl(parts.query)).get("currency")
        if currency and currency != "any" and currency not in currencies:
            currencies.append(currency)
        for row in rows:
            if isinstance(row, dict) and row.get("instrument_name") not in seen:
                seen.add(row.get("instrument_name"))
                merged.append(_complete_2021_row(row))
    if not merged:
        return responses
    instruments = orjson.dumps({"jsonrpc": "2.0", "result": merged, "testnet": False}).decode()
    listed = [{"currency": c, "currency_long": c} for c in currencies]
    currency_body = orjson.dumps({"jsonrpc": "2.0", "result": listed, "testnet": False}).decode()
    # The merged answer goes first: a request without query parameters takes the first answer on its path.
    return [(origin + _INSTRUMENTS_PATH, instruments), (origin + _CURRENCIES_PATH, currency_body), *responses]


def _complete_2021_row(row: dict[str, Any]) -> dict[str, Any]:
    if "counter_currency" in row and "settlement_currency" in row:
        return row
    out = dict(row)
    kind = out.get("kind")
    base = out.get("base_currency")
    # In 2021 every Deribit future and option was quoted against USD and settled in its base coin
    # (BTC, ETH); USDC-settled linear contracts arrived in 2022 already carrying both fields.
    out.setdefault("counter_currency", "USD")
    out.setdefault("settlement_currency", base)
    if kind == "future":
        out.setdefault("future_type", "reversed")
    return out


def instruments_from_recording(
    http: Iterable[tuple[str, str]], symbols: Iterable[str] | None = None
) -> list[Instrument]:
    """Replay metadata: ccxt over the recorded instrument lists, completed where 2021 rows lack fields."""
    from flowgauge.connectors.markets import markets_from_recording  # pulls in ccxt: only when replaying

    wanted = None if symbols is None else set(symbols)
    out = []
    for market in markets_from_recording(VENUE, recorded_market_responses(http)):
        instrument = instrument_from_deribit_market(market)
        if instrument is not None and (wanted is None or instrument.symbol in wanted):
            out.append(instrument)
    return out
