"""Bybit v5 public websocket protocol (linear and inverse contracts), sans-I/O.

Turns raw text frames into typed events and builds the frames to send (subscribe, resync, ping).
Must not import asyncio or touch sockets: `connectors.session` does the I/O.

Venue facts this module relies on (../shared/exchanges.md §2 and "Differences that bite" 12-14):
* `orderbook.{depth}.{symbol}`: a `snapshot` (also re-sent mid-stream when Bybit resets, and any
  message with `u == 1` after a service restart) replaces the book; a `delta` must carry
  `u == previous u + 1` (checked in `book.sync`). Size "0" deletes a level.
* `orderbook.1.{symbol}` is the best-quote stream (10 ms): snapshots only, re-sent unchanged with the same `u`
  every 3 s (not a gap, no event), `u == 1` after a service restart. Subscribed beside the book's
  `orderbook.{depth}` (unless `best_quote=False`, or the book itself is depth 1) it feeds the L1 OFI only
  (`BestQuote`); a side with no level comes as an empty list.
* `tickers.{symbol}`: snapshot then deltas, and a field absent from a delta is unchanged, so the
  parser keeps the merged state. `openInterest` is TWO-sided; `singleOpenInterest` is one side.
* `publicTrade.{symbol}`: `S` is the taker side. `BT` marks block trades (kept out of TFI).
* `allLiquidation.{symbol}`: `S` is the liquidated POSITION side (`Buy` = a long was closed), the
  opposite of an order-side reading. `data` is documented as an object but sent as a list.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import msgspec
import orjson

from flowgauge.book.sync import SequenceRule, consecutive_ids
from flowgauge.connectors import levels as shared_levels
from flowgauge.connectors.base import Action, PollRequest
from flowgauge.connectors.levels import already_base, to_base
from flowgauge.types import (
    BUY,
    SELL,
    BadFrame,
    BestQuote,
    BookDelta,
    BookSnapshot,
    Event,
    FundingRate,
    Instrument,
    Level,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
)

VENUE = "bybit"
DEFAULT_WS_URL = "wss://stream.bybit.com/v5/public/linear"
DEFAULT_REST_URL = "https://api.bybit.com"
BOOK_DEPTHS = (1, 50, 200, 1000)
# Bybit caps one connection's args at 21,000 characters; staying well below keeps a
# subscribe for hundreds of symbols on one socket without hitting it.
MAX_ARGS_CHARS_PER_CONNECTION = 21_000
PING_FRAME = '{"op":"ping"}'
LONG_SHORT_INTERVAL_S = 120.0

_MS = 1_000_000  # ns per ms

# Ticker fields that describe funding / mark / index (a delta carrying any of them is a funding observation).
_FUNDING_FIELDS = ("fundingRate", "markPrice", "indexPrice", "nextFundingTime", "fundingIntervalHour")


class FrameError(ValueError):
    """A frame that does not match the schema it claims (topic known, content unusable)."""


class _BookData(msgspec.Struct):
    s: str  # venue symbol
    b: tuple[tuple[float, float], ...]  # bids: (price, size) as decimal strings, decoded to float
    a: tuple[tuple[float, float], ...]  # asks
    u: int  # update id: previous + 1, or 1 after a service restart


class _BookFrame(msgspec.Struct):
    topic: str  # orderbook.{depth}.{symbol}
    type: str  # snapshot | delta
    ts: int  # system time, ms
    data: _BookData
    cts: int | None = None  # matching-engine time, ms (correlates with trade T)


# The hot path: book frames are most of the traffic, so they are decoded straight into typed
# structs (strings to floats in C) instead of generic JSON plus a Python loop per level. Lax mode
# converts the venue's decimal strings; anything else malformed falls back to the generic path,
# which reports it precisely.
_BOOK_DECODER = msgspec.json.Decoder(_BookFrame, strict=False)
_BOOK_TOPIC_STR = '"topic":"orderbook.'
_BOOK_TOPIC_BYTES = b'"topic":"orderbook.'
BEST_QUOTE_TOPIC = "orderbook.1."  # + symbol: the best-quote stream (when the book is deeper)


def _levels(raw: Any, instrument: Instrument) -> tuple[Level, ...]:
    if not isinstance(raw, list):
        raise FrameError("levels are not a list")
    out = []
    for level in raw:
        price = float(level[0])
        size = float(level[1])
        if not shared_levels.valid_level(price, size):  # NaN, infinities and absurd magnitudes included
            raise FrameError(f"bad level {level!r}")
        out.append((price, instrument.base_size(size, price)))
    return tuple(out)


def _opt_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    number = float(value)
    if not math.isfinite(number):  # "NaN" and "Infinity" parse as floats; no venue means them
        raise FrameError(f"not finite: {value!r}")
    return number


class BybitParser:
    """Parser for one Bybit public connection (one category: "linear" or "inverse").

    Args:
        category: the Bybit category of the connection's URL (`/v5/public/<category>`).
        instruments: this connection's instruments, keyed by venue id (`BTCUSDT`).
        book_depth: the `orderbook.N` depth to subscribe.
        best_quote: also subscribe `orderbook.1` as the best-quote stream (ignored when `book_depth` is 1: the
            book is then L1 itself).
    """

    venue = VENUE

    def __init__(
        self,
        category: str,
        instruments: Iterable[Instrument],
        book_depth: int = 200,
        subscribe_batch: int = 10,
        best_quote: bool = True,
    ) -> None:
        if book_depth not in BOOK_DEPTHS:
            raise ValueError(f"bybit book depth must be one of {BOOK_DEPTHS}, got {book_depth}")
        self.category = category
        self.subscribe_batch = subscribe_batch
        self.book_depth = book_depth
        self.best_quote = best_quote and book_depth != 1
        self.instruments: dict[str, Instrument] = {i.venue_id: i for i in instruments}
        self._by_symbol = {i.symbol: i for i in self.instruments.values()}
        self._convert_sizes = {i.venue_id for i in self.instruments.values() if not already_base(i)}
        self._tickers: dict[str, dict[str, Any]] = {}
        self._handlers = {
            "orderbook": self._on_orderbook,
            "publicTrade": self._on_trades,
            "tickers": self._on_ticker,
            "allLiquidation": self._on_liquidation,
        }

    # ----------------------------------------------------------------- frames to send

    def topics(self) -> list[str]:
        topics = []
        for venue_id in self.instruments:
            topics += [
                f"orderbook.{self.book_depth}.{venue_id}",
                f"publicTrade.{venue_id}",
                f"tickers.{venue_id}",
                f"allLiquidation.{venue_id}",
            ]
            if self.best_quote:
                topics.append(f"{BEST_QUOTE_TOPIC}{venue_id}")
        return topics

    def subscribe_frames(self, batch: int | None = None) -> list[str]:
        """Subscribe requests for every topic, `batch` args per request."""
        batch = batch or self.subscribe_batch
        topics = self.topics()
        return [
            _op("subscribe", topics[i : i + batch], req_id=f"sub-{i // batch}")
            for i in range(0, len(topics), batch)
        ]

    def on_connected(self) -> list[Action]:
        self.reset()
        return list(self.subscribe_frames())

    def retire(self, symbol: str) -> None:
        """Its book retired: the next connection does not subscribe its topics (nor resyncs it)."""
        instrument = self._by_symbol.pop(symbol, None)
        if instrument is not None:
            self.instruments.pop(instrument.venue_id, None)

    def resync(self, symbol: str) -> list[Action]:
        return list(self.resync_frames(symbol))

    def on_snapshot(self, symbol: str, body: str | bytes, ts_recv: int) -> list[Event]:
        return []  # Bybit books start from the websocket snapshot; no REST snapshot is ever requested

    def resync_frames(self, symbol: str) -> list[str]:
        """Bybit has no REST/WS sequence bootstrap for `orderbook.N`: re-subscribing yields a fresh snapshot."""
        instrument = self._by_symbol.get(symbol)
        if instrument is None:
            return []
        topic = f"orderbook.{self.book_depth}.{instrument.venue_id}"
        return [_op("unsubscribe", [topic], "resync-unsub"), _op("subscribe", [topic], "resync-sub")]

    def ping_frame(self) -> str:
        return PING_FRAME

    def reset(self) -> None:
        """A new connection starts with fresh ticker snapshots: forget merged ticker state."""
        self._tickers.clear()

    # ----------------------------------------------------------------- frames received

    def feed(self, raw: str | bytes, ts_recv: int) -> list[Event]:
        """Parse one received text frame into events. Never raises on bad input: returns BadFrame."""
        head = raw[:40]
        if (_BOOK_TOPIC_STR in head) if isinstance(head, str) else (_BOOK_TOPIC_BYTES in head):
            fast = self._fast_book(raw, ts_recv)
            if fast is not None:
                return fast
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [BadFrame(VENUE, "not JSON", None, False, ts_recv)]
        if not isinstance(message, dict):
            return [BadFrame(VENUE, "not a JSON object", None, False, ts_recv)]
        topic = message.get("topic")
        if topic is None:
            return self._on_control(message, ts_recv)
        if not isinstance(topic, str):
            return [BadFrame(VENUE, "topic is not a string", None, False, ts_recv)]
        channel, _, rest = topic.partition(".")
        handler = self._handlers.get(channel)
        if handler is None:
            return []  # a channel we do not consume (e.g. kline on a shared connection)
        venue_id = rest.rpartition(".")[2]
        instrument = self.instruments.get(venue_id)
        if instrument is None:
            return []  # not one of ours (a recording can hold more than we track)
        try:
            return handler(message, instrument, ts_recv)
        except (FrameError, KeyError, TypeError, ValueError, IndexError) as exc:
            touches_book = channel == "orderbook" and not (
                self.book_depth != 1 and topic.startswith(BEST_QUOTE_TOPIC)
            )  # a bad best quote leaves the book as it was
            return [BadFrame(VENUE, f"{channel}: {exc!r}"[:200], instrument.symbol, touches_book, ts_recv)]

    def _fast_book(self, raw: str | bytes, ts_recv: int) -> list[Event] | None:
        """Typed decode of an orderbook frame; None sends it down the generic path (errors, odd shapes)."""
        try:
            frame = _BOOK_DECODER.decode(raw)
        except msgspec.DecodeError:
            return None
        data = frame.data
        venue_id = frame.topic.rpartition(".")[2]
        instrument = self.instruments.get(venue_id)
        if instrument is None:
            return []
        bids = data.b
        asks = data.a
        if not shared_levels.valid_sides(bids, asks):
            return None
        if self.book_depth != 1 and frame.topic.startswith(BEST_QUOTE_TOPIC):
            if len(bids) > 1 or len(asks) > 1:
                return None
            return self._best_quote(instrument, bids, asks, data.u, (frame.cts or frame.ts) * _MS, ts_recv)
        if venue_id in self._convert_sizes:
            bids = to_base(bids, instrument)
            asks = to_base(asks, instrument)
        seq = data.u
        ts_exchange = (frame.cts or frame.ts) * _MS
        kind = frame.type
        if kind == "snapshot" or seq == 1:
            return [BookSnapshot(VENUE, instrument.symbol, bids, asks, seq, ts_exchange, ts_recv)]
        if kind != "delta":
            return None
        return [BookDelta(VENUE, instrument.symbol, bids, asks, seq, None, ts_exchange, ts_recv)]

    def _on_control(self, message: Mapping[str, Any], ts_recv: int) -> list[Event]:
        # Acks and pongs. A rejected subscription is reported (it means a bad symbol or topic).
        if message.get("success") is False:
            reason = f"request rejected: {message.get('ret_msg', '')}"[:200]
            return [BadFrame(VENUE, reason, None, False, ts_recv)]
        return []

    def _best_quote(
        self,
        instrument: Instrument,
        bids: Sequence[tuple[float, float]],
        asks: Sequence[tuple[float, float]],
        seq: int,
        ts_exchange: int,
        ts_recv: int,
    ) -> list[Event]:
        """`orderbook.1` -> BestQuote (sizes converted to base units when the venue's are not); `u == 1` is a
        stream restart."""
        if instrument.venue_id in self._convert_sizes:
            bids = to_base(tuple(bids), instrument)
            asks = to_base(tuple(asks), instrument)
        return [_quote(instrument, bids, asks, seq, ts_exchange, ts_recv)]

    def _on_orderbook(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        data = message["data"]
        kind = message["type"]
        seq = int(data["u"])
        ts_exchange = int(message.get("cts") or message["ts"]) * _MS
        bids = _levels(data["b"], instrument)
        asks = _levels(data["a"], instrument)
        if self.book_depth != 1 and str(message["topic"]).startswith(BEST_QUOTE_TOPIC):
            if len(bids) > 1 or len(asks) > 1:
                raise FrameError("more than one level on the best-quote stream")
            return [_quote(instrument, bids, asks, seq, ts_exchange, ts_recv)]  # _levels made them base units
        # `u == 1` is a service restart: the payload is a full book even if typed "delta".
        if kind == "snapshot" or seq == 1:
            return [BookSnapshot(VENUE, instrument.symbol, bids, asks, seq, ts_exchange, ts_recv)]
        if kind != "delta":
            raise FrameError(f"unknown orderbook type {kind!r}")
        return [BookDelta(VENUE, instrument.symbol, bids, asks, seq, None, ts_exchange, ts_recv)]

    def _on_trades(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        events: list[Event] = []
        for fill in message["data"]:
            price = float(fill["p"])
            side_text = fill["S"]
            side: int  # BUY or SELL
            if side_text == "Buy":
                side = BUY
            elif side_text == "Sell":
                side = SELL
            else:
                raise FrameError(f"unknown taker side {side_text!r}")
            events.append(
                Trade(
                    VENUE,
                    instrument.symbol,
                    price,
                    instrument.base_size(float(fill["v"]), price),
                    side,
                    str(fill["i"]),
                    bool(fill.get("BT", False)),
                    int(fill["T"]) * _MS,
                    ts_recv,
                )
            )
        return events

    def _on_ticker(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        data = message["data"]
        if not isinstance(data, dict):
            raise FrameError("ticker data is not an object")
        if message.get("type") == "snapshot":
            state = self._tickers[instrument.venue_id] = dict(data)
        else:
            state = self._tickers.setdefault(instrument.venue_id, {})
            state.update(data)
        ts_exchange = int(message["ts"]) * _MS
        events: list[Event] = []
        if "singleOpenInterest" in data or "openInterest" in data:
            one_sided = _opt_float(state.get("singleOpenInterest"))
            if one_sided is None:
                two_sided = _opt_float(state.get("openInterest"))
                # `openInterest` counts both sides (2x singleOpenInterest, verified 2026-08): halve it.
                one_sided = None if two_sided is None else two_sided / 2.0
            if one_sided is not None:
                mark = _opt_float(state.get("markPrice")) or 0.0
                events.append(
                    OpenInterest(
                        VENUE,
                        instrument.symbol,
                        instrument.base_size(one_sided, mark) if instrument.kind == "inverse" else one_sided,
                        ts_exchange,
                        ts_recv,
                    )
                )
        if any(field in data for field in _FUNDING_FIELDS):
            next_funding = _opt_float(state.get("nextFundingTime"))
            events.append(
                FundingRate(
                    VENUE,
                    instrument.symbol,
                    _opt_float(state.get("fundingRate")),
                    _opt_float(state.get("fundingIntervalHour")),
                    None if next_funding is None else int(next_funding) * _MS,
                    _opt_float(state.get("markPrice")),
                    _opt_float(state.get("indexPrice")),
                    ts_exchange,
                    ts_recv,
                    self._volume_24h(state, instrument),
                )
            )
        return events

    @staticmethod
    def _volume_24h(state: Mapping[str, Any], instrument: Instrument) -> float | None:
        """`volume24h` in base units: linear tickers count the base coin; inverse ones count contracts (USD),
        converted at the mark price. Rides on the funding event (no event of its own)."""
        volume = _opt_float(state.get("volume24h"))
        if volume is None or not volume >= 0.0:
            return None
        if instrument.kind == "inverse":
            mark = _opt_float(state.get("markPrice"))
            return instrument.base_size(volume, mark) if mark else None
        return volume

    def _on_liquidation(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        data = message["data"]
        fills = data if isinstance(data, list) else [data]
        events: list[Event] = []
        for fill in fills:
            price = float(fill["p"])
            position_side = fill["S"]
            if position_side not in ("Buy", "Sell"):
                raise FrameError(f"unknown liquidation side {position_side!r}")
            events.append(
                Liquidation(
                    VENUE,
                    instrument.symbol,
                    "long" if position_side == "Buy" else "short",
                    price,
                    instrument.base_size(float(fill["v"]), price),
                    int(fill["T"]) * _MS,
                    ts_recv,
                )
            )
        return events


class BybitAdapter:
    """Bybit v5 public linear/inverse streams: everything streams except the long/short account ratio (polled)."""

    venue: ClassVar[str] = VENUE
    default_ws_url: ClassVar[str] = DEFAULT_WS_URL
    default_rest_url: ClassVar[str] = DEFAULT_REST_URL
    # Bybit allows 600 requests per 5 s per IP on market endpoints; we load instrument metadata and poll the
    # long/short account ratio, far below that.
    rest_weight_per_minute: ClassVar[int] = 600
    sequence_rule: ClassVar[SequenceRule] = staticmethod(consecutive_ids)  # type: ignore[assignment]
    buffer_deltas: ClassVar[bool] = False

    def __init__(self, subscribe_batch: int = 10, best_quote: bool = True) -> None:
        self.subscribe_batch = subscribe_batch
        self.best_quote = best_quote  # subscribe `orderbook.1` beside the book (config venues.<id>.best_quote)

    def connections(
        self, instruments: Sequence[Instrument], ws_url: str, book_depth: int
    ) -> list[tuple[str, BybitParser]]:
        """One connection per category, split further so no connection's args exceed Bybit's cap."""
        by_category: dict[str, list[Instrument]] = {}
        for instrument in instruments:
            by_category.setdefault(instrument.category, []).append(instrument)
        out = []
        for category, members in by_category.items():
            url = category_url(ws_url, category)
            chunk: list[Instrument] = []
            chars = 0
            for instrument in members:
                # Four or five topics per instrument, each roughly len(topic) + 3 characters in the args array.
                cost = (5 if self.best_quote else 4) * (len(instrument.venue_id) + 24)
                if chunk and chars + cost > MAX_ARGS_CHARS_PER_CONNECTION:
                    out.append((url, self._parser(category, chunk, book_depth)))
                    chunk, chars = [], 0
                chunk.append(instrument)
                chars += cost
            if chunk:
                out.append((url, self._parser(category, chunk, book_depth)))
        return out

    def _parser(self, category: str, members: Sequence[Instrument], book_depth: int) -> BybitParser:
        return BybitParser(category, members, book_depth, self.subscribe_batch, self.best_quote)

    def replay_parser(self, url: str, instruments: Sequence[Instrument]) -> BybitParser | None:
        """Spot and linear share topic names: only the recorded URL's category tells them apart."""
        category = category_of_url(url)
        members = [i for i in instruments if i.category == category]
        return BybitParser(category, members) if category and members else None

    def polls(self, instruments: Sequence[Instrument]) -> list[PollRequest]:
        """Open interest, funding and liquidations stream; only the long/short account ratio is polled.

        `/v5/market/account-ratio` is 5-minute data, so one request per instrument every
        LONG_SHORT_INTERVAL_S keeps it fresh at a negligible share of the REST budget.
        """
        return [
            PollRequest(
                key=f"ls:accounts:{instrument.venue_id}",
                symbol=instrument.symbol,
                kind="long_short",
                path="/v5/market/account-ratio",
                params={"category": instrument.category, "symbol": instrument.venue_id, "period": "5min",
                        "limit": "1"},
                weight=1,
                interval_s=LONG_SHORT_INTERVAL_S,
            )
            for instrument in instruments
            if instrument.derivative
        ]

    def parse_poll(self, request: PollRequest, body: str | bytes, ts_recv: int) -> list[Event]:
        """`{"retCode":0,"result":{"list":[{"symbol","buyRatio","sellRatio","timestamp"}]}}` -> LongShortRatio."""
        try:
            doc = orjson.loads(body)
            if doc.get("retCode") != 0:
                raise FrameError(f"retCode {doc.get('retCode')}: {doc.get('retMsg', '')}")
            rows = doc["result"]["list"]
            if not rows:
                return []
            row = max(rows, key=lambda r: int(r["timestamp"]))  # newest, whatever the order
            buy = float(row["buyRatio"])
            sell = float(row["sellRatio"])
            if not (buy >= 0.0 and sell > 0.0):
                raise FrameError(f"unusable ratios {buy}/{sell}")
            ts_exchange = int(row["timestamp"]) * _MS
        except (orjson.JSONDecodeError, FrameError, KeyError, TypeError, ValueError, AttributeError) as exc:
            return [BadFrame(VENUE, f"account-ratio: {exc!r}"[:200], request.symbol, False, ts_recv)]
        # buyRatio / sellRatio are the shares of accounts long / short: their quotient is L/S.
        return [LongShortRatio(VENUE, request.symbol, "accounts", buy / sell, ts_exchange, ts_recv)]


def _quote(
    instrument: Instrument,
    bids: Sequence[tuple[float, float]],
    asks: Sequence[tuple[float, float]],
    seq: int,
    ts_exchange: int,
    ts_recv: int,
) -> BestQuote:
    """A BestQuote from `orderbook.1` levels already in base units (an empty list is an empty side)."""
    bid_px, bid_sz = bids[0] if bids else (None, None)
    ask_px, ask_sz = asks[0] if asks else (None, None)
    return BestQuote(VENUE, instrument.symbol, bid_px, bid_sz, ask_px, ask_sz, seq, ts_exchange, ts_recv, seq == 1)


def category_url(ws_url: str, category: str) -> str:
    """The configured URL names one category's stream; the others live beside it (`.../v5/public/<cat>`)."""
    head, _, tail = ws_url.rstrip("/").rpartition("/")
    if tail in ("linear", "inverse", "spot", "option"):
        return f"{head}/{category}"
    return ws_url


def _op(op: str, args: Sequence[str], req_id: str) -> str:
    return orjson.dumps({"req_id": req_id, "op": op, "args": list(args)}).decode()


def category_of_url(url: str) -> str | None:
    """`wss://stream.bybit.com/v5/public/linear` -> "linear"; None if the URL is not a public v5 stream."""
    path = url.split("?", 1)[0].rstrip("/")
    head, _, category = path.rpartition("/")
    if not head.endswith("/v5/public"):
        return None
    return category
