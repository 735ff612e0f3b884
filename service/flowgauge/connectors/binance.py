"""Binance USDⓈ-M futures (ccxt `binanceusdm`) public market data, sans-I/O.

Turns raw websocket frames and REST answers into typed events, and builds what must be sent
(SUBSCRIBE frames, REST depth snapshots, scheduled REST polls). Must not import asyncio or touch
sockets: `connectors.session` and `connectors.rest` do the I/O.

Venue facts this module relies on (../shared/exchanges.md §1 and "Differences that bite" 1-5):
* Routed URLs (mandatory since 2026-04-23; legacy unrouted URLs are retired): `/public` carries
  `@depth*` and `@bookTicker`, `/market` carries `@aggTrade`, `@markPrice`, `@forceOrder`. A stream
  asked for on the wrong path is accepted and then silently never delivered, so every instrument
  group gets two connections. Frames from a legacy unrouted URL (the 2021 recording) still parse:
  the parser dispatches on the payload, never on the URL.
* Books: REST `/fapi/v1/depth?limit=N` snapshot (`lastUpdateId` = L) plus `<s>@depth@100ms` diffs
  (`U` first id, `u` last id, `pu` = previous event's `u`). The futures rule (drop `u < L`, first
  applied `U <= L <= u`, then `pu == previous u`) lives in `book.sequencing.binance_futures`; the
  book sync buffers diffs until the snapshot arrives (`buffer_deltas`). Quantities are absolute,
  "0" deletes. No checksum, no resync signal: a `pu` break is the only gap evidence.
* Best quote: `<s>@bookTicker` on `/public` (every change of the best bid/ask, real time), fields `u` (update
  id), `b`/`B` best bid price/qty, `a`/`A` best ask price/qty, `T` transaction time, `E` event time. It feeds the
  L1 OFI only (`BestQuote`); subscribed beside the depth stream unless `best_quote=False`.
* Trades: `@aggTrade`; `m` = "the buyer is the maker", so m=true means the TAKER SOLD.
* `@markPrice@1s`: mark `p`, index `i`, funding rate `r`, next funding time `T`.
* `@forceOrder`: `o.S` is the liquidation ORDER side, so SELL means a LONG was liquidated (inferred
  from order semantics: UNCONFIRMED wording). Binance pushes only the latest liquidation per symbol
  per 1000 ms: a sample, so downstream metrics flag it SAMPLED_INPUT.
* No open-interest stream: `/fapi/v1/openInterest` is polled (weight 1; base-asset quantity, one
  side: UNCONFIRMED as an explicit doc statement). Long/short ratios are polled from
  `/futures/data/*` (5-minute buckets; weight 0 but capped at 1000 requests / 5 min / IP).
* Keepalive: the server sends ping frames (every 3 min, pong within 10 min), so there is no
  application ping. Every connection is cut at 24 h.
* A SUBSCRIBE is answered per request (`{"result":null,"id":N}`, or an error carrying the id). The REST
  snapshot arrives whether or not the diff stream was subscribed, so a book whose depth stream was refused
  would turn VALID and then never move: the parser remembers which books each SUBSCRIBE carried, invalidates
  them when it is refused, refuses their snapshots until they are subscribed again, and subscribes their
  depth stream again with the book's resync.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
import orjson

from flowgauge.book.sequencing import binance_futures
from flowgauge.book.sync import SequenceRule
from flowgauge.connectors import levels as shared_levels
from flowgauge.connectors.base import Action, FetchSnapshot, PollRequest
from flowgauge.connectors.levels import to_base
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
    InvalidReason,
    Level,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
)

VENUE = "binanceusdm"
DEFAULT_WS_URL = "wss://fstream.binance.com"
DEFAULT_REST_URL = "https://fapi.binance.com"

ROUTE_PUBLIC = "public"  # books
ROUTE_MARKET = "market"  # trades, mark price / funding, liquidations
ROUTE_LEGACY = "legacy"  # an unrouted URL (retired 2026-04-23): only seen when replaying old recordings
ROUTES = (ROUTE_PUBLIC, ROUTE_MARKET, ROUTE_LEGACY)

DEPTH_PATH = "/fapi/v1/depth"
# REST depth `limit` -> request weight (Binance USD-M "Order Book" page).
DEPTH_WEIGHTS: Mapping[int, int] = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
DEPTH_STREAM = "depth@100ms"
BOOK_TICKER_STREAM = "bookTicker"

MAX_OPEN_REQUESTS = 1000  # SUBSCRIBE requests remembered until answered (oldest forgotten beyond)

# Venue limits. Binance allows 1024 streams per connection since 2025-07-02 (200 before; nautilus still
# documents 200): we stay at the old figure so a reconnect resubscribes little at a time.
MAX_STREAMS_PER_CONNECTION = 1024
STREAMS_PER_CONNECTION = 200
MAX_INCOMING_PER_S = 10  # client frames per second per connection; more gets the connection dropped
SUBSCRIBE_BATCH = 50  # streams per SUBSCRIBE frame: a 66-instrument /market connection needs 4 frames
FORCED_DISCONNECT_S = 24 * 3600.0  # Binance cuts every connection at 24 h
RECONNECT_BEFORE_S = 23.5 * 3600.0  # reconnect on our terms before that

# Funding: 8 h unless Binance adjusted the symbol (then `/fapi/v1/fundingInfo` lists it). The 8 h default
# is UNCONFIRMED per symbol until the first fundingInfo answer arrives.
DEFAULT_FUNDING_HOURS = 8.0

# REST polls. Our budget is half of Binance's 2400 weight/min per IP (leave room for other clients on the
# IP); polls may use half of that, the rest is for depth snapshots (20 weight each at limit=1000).
REST_WEIGHT_PER_MINUTE = 1200
POLL_WEIGHT_PER_MINUTE = 600
OPEN_INTEREST_PATH = "/fapi/v1/openInterest"  # weight 1
OI_MIN_INTERVAL_S = 10.0
FUNDING_INFO_PATH = "/fapi/v1/fundingInfo"
FUNDING_INFO_INTERVAL_S = 600.0
# Long/short endpoint -> LongShortRatio.kind. `topLongShortPositionRatio` answers in fields named
# `longAccount`/`shortAccount` even though they are position shares.
LONG_SHORT_PATHS: Mapping[str, str] = {
    "/futures/data/globalLongShortAccountRatio": "accounts",
    "/futures/data/topLongShortPositionRatio": "top_positions",
}
LONG_SHORT_PERIOD = "5m"
LS_MIN_INTERVAL_S = 60.0
# The /futures/data endpoints are weight 0 but limited to 1000 requests / 5 min / IP (possibly shared
# between them: UNCONFIRMED). We use at most half of that, and charge weight 1 per request so the
# scheduler's budget also bounds their count.
LS_REQUESTS_PER_5MIN = 500
COUNT_CHARGE = 1

_MS = 1_000_000  # ns per ms
# `@trade` execution types that are not ordinary market fills (values UNCONFIRMED for USD-M: the
# 2024 recording only shows "MARKET").
_FORCED_EXECUTIONS = frozenset({"LIQUIDATION", "INSURANCE_FUND", "ADL"})


class FrameError(ValueError):
    """A frame whose event type we know but whose content is unusable."""


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise FrameError(f"expected an integer id, got {value!r}")
    return value


class _DepthData(msgspec.Struct):
    e: str  # event type: depthUpdate
    E: int  # event time, ms
    s: str  # symbol
    U: int  # first update id in this event
    u: int  # final update id in this event
    pu: int  # final update id of the previous event: the continuity link
    b: tuple[tuple[float, float], ...]  # bids to update (decimal strings, decoded to float)
    a: tuple[tuple[float, float], ...]  # asks to update
    T: int = 0  # transaction (matching-engine) time, ms


class _DepthCombined(msgspec.Struct):
    stream: str  # <symbol>@depth@100ms
    data: _DepthData


class _BookTickerData(msgspec.Struct):
    e: str  # event type: bookTicker
    u: int  # update id
    s: str  # symbol
    b: float  # best bid price (decimal string, decoded to float)
    B: float  # best bid qty
    a: float  # best ask price
    A: float  # best ask qty
    T: int = 0  # transaction time, ms
    E: int = 0  # event time, ms


class _BookTickerCombined(msgspec.Struct):
    stream: str  # <symbol>@bookTicker
    data: _BookTickerData


_BOOK_TICKER_COMBINED = msgspec.json.Decoder(_BookTickerCombined, strict=False)
_BOOK_TICKER_RAW = msgspec.json.Decoder(_BookTickerData, strict=False)


# The hot path: depth diffs are most of the traffic and carry ~65 levels each, so they are decoded
# straight into typed structs (strings to floats in C) instead of generic JSON plus a Python loop per
# value. Anything that does not fit goes down the generic path, which reports it precisely.
_DEPTH_COMBINED = msgspec.json.Decoder(_DepthCombined, strict=False)
_DEPTH_RAW = msgspec.json.Decoder(_DepthData, strict=False)


def _number(value: Any) -> float:
    """A venue decimal string (or number) that must be a finite float."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FrameError(f"expected a decimal, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise FrameError(f"not finite: {value!r}")
    return out


def _opt_number(value: Any) -> float | None:
    # Delivery contracts send `"r": ""` and `"T": 0` in markPrice: no funding.
    if value is None or value == "":
        return None
    return _number(value)


def _levels(raw: Any, instrument: Instrument) -> tuple[Level, ...]:
    if not isinstance(raw, list):
        raise FrameError("levels are not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 2:
            raise FrameError(f"bad level {level!r}")
        price = _number(level[0])
        size = _number(level[1])
        if not shared_levels.valid_level(price, size):
            raise FrameError(f"bad level {level!r}")
        out.append((price, instrument.base_size(size, price)))
    return tuple(out)


def _exchange_ns(data: Mapping[str, Any]) -> int:
    """Matching-engine time `T` where the event has it, else event time `E` (ms) -> ns."""
    stamp = data.get("T")
    if stamp is None or stamp == 0:
        stamp = data["E"]
    return _int(stamp) * _MS


def depth_weight(limit: int) -> int:
    try:
        return DEPTH_WEIGHTS[limit]
    except KeyError:
        raise ValueError(f"binance depth limit must be one of {tuple(DEPTH_WEIGHTS)}, got {limit}") from None


# -------------------------------------------------------------------------------------------------
# URLs


def base_url(ws_url: str) -> str:
    """The venue base of a configured websocket URL: routes, stream modes and queries are stripped.

    `wss://fstream.binance.com/public/stream?streams=x` and `wss://fstream.binance.com` both give
    `wss://fstream.binance.com`.
    """
    parts = urlsplit(ws_url)
    segments = [s for s in parts.path.split("/") if s]
    for i, segment in enumerate(segments):
        if segment in ("ws", "stream", ROUTE_PUBLIC, ROUTE_MARKET, "private"):
            segments = segments[:i]
            break
    path = "/" + "/".join(segments) if segments else ""
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def routed_url(ws_url: str, route: str) -> str:
    """The combined-stream URL of one route: `<base>/<route>/stream` (payloads wrapped with the stream name)."""
    if route not in (ROUTE_PUBLIC, ROUTE_MARKET):
        raise ValueError(f"not a routed path: {route!r}")
    return f"{base_url(ws_url)}/{route}/stream"


def route_of_url(url: str) -> str:
    """`public`, `market`, or `legacy` for an unrouted URL (old recordings)."""
    segments = [s for s in urlsplit(url).path.split("/") if s]
    for segment in segments:
        if segment in (ROUTE_PUBLIC, ROUTE_MARKET):
            return segment
    return ROUTE_LEGACY


# -------------------------------------------------------------------------------------------------
# Parser


class BinanceUsdmParser:
    """Parser for one Binance USD-M connection.

    Args:
        instruments: this connection's instruments (venue ids like `BTCUSDT`).
        route: `public` (books), `market` (trades, mark/funding, liquidations) or `legacy` (an
            unrouted URL carrying everything; replay of pre-2026 recordings only).
        snapshot_limit: REST depth `limit` (5..1000); the diff stream itself is full depth.
        funding_hours: venue id -> funding interval, shared with the adapter, which refreshes it from
            `/fapi/v1/fundingInfo`; symbols missing from it use 8 h.
        subscribe_batch: streams per SUBSCRIBE frame.
        best_quote: also subscribe `<s>@bookTicker` on `/public` (the L1 OFI's real-time source).
    """

    venue = VENUE

    def __init__(
        self,
        instruments: Iterable[Instrument],
        route: str = ROUTE_PUBLIC,
        snapshot_limit: int = 1000,
        funding_hours: Mapping[str, float] | None = None,
        subscribe_batch: int = SUBSCRIBE_BATCH,
        best_quote: bool = True,
    ) -> None:
        if route not in ROUTES:
            raise ValueError(f"binance route must be one of {ROUTES}, got {route!r}")
        self.snapshot_weight = depth_weight(snapshot_limit)
        self.route = route
        self.snapshot_limit = snapshot_limit
        self.subscribe_batch = subscribe_batch
        self.best_quote = best_quote
        self.instruments: dict[str, Instrument] = {i.venue_id: i for i in instruments}
        self._by_symbol = {i.symbol: i for i in self.instruments.values()}
        self.funding_hours: Mapping[str, float] = funding_hours if funding_hours is not None else {}
        self._request_id = 0
        # SUBSCRIBE request id -> the books whose depth stream it carries, until the venue answers it.
        self._open_requests: dict[int, list[str]] = {}
        self._refused: set[str] = set()  # books whose depth subscription the venue refused on this connection
        self._handlers = {
            "depthUpdate": self._on_depth,
            "aggTrade": self._on_agg_trade,
            "trade": self._on_trade,
            "markPriceUpdate": self._on_mark_price,
            "forceOrder": self._on_force_order,
            "bookTicker": self._on_book_ticker,
        }

    @property
    def carries_books(self) -> bool:
        """True when this connection's frames build books (so its loss makes them unknown)."""
        return self.route != ROUTE_MARKET

    @property
    def book_symbols(self) -> list[str]:
        """Unified symbols whose books this connection carries (none on `/market`)."""
        return list(self._by_symbol) if self.carries_books else []

    # ----------------------------------------------------------------- frames and requests to send

    def streams(self) -> list[str]:
        out = []
        for venue_id in self.instruments:
            name = venue_id.lower()
            if self.route != ROUTE_MARKET:
                out.append(f"{name}@{DEPTH_STREAM}")
                if self.best_quote:
                    out.append(f"{name}@{BOOK_TICKER_STREAM}")
            if self.route != ROUTE_PUBLIC:
                out += [f"{name}@aggTrade", f"{name}@markPrice@1s", f"{name}@forceOrder"]
        return out

    def subscribe_frames(self) -> list[str]:
        streams = self.streams()
        return [
            self._subscribe(streams[i : i + self.subscribe_batch]) for i in range(0, len(streams), self.subscribe_batch)
        ]

    def _subscribe(self, streams: list[str]) -> str:
        """One SUBSCRIBE frame; the books whose depth stream it carries are remembered until it is answered."""
        self._request_id += 1
        depth = [self.instruments.get(n.partition("@")[0].upper()) for n in streams if n.endswith(DEPTH_STREAM)]
        books = [instrument.symbol for instrument in depth if instrument is not None]
        if books:
            if len(self._open_requests) >= MAX_OPEN_REQUESTS:
                del self._open_requests[next(iter(self._open_requests))]
            self._open_requests[self._request_id] = books
        return orjson.dumps({"method": "SUBSCRIBE", "params": streams, "id": self._request_id}).decode()

    def snapshot_request(self, instrument: Instrument) -> FetchSnapshot:
        return FetchSnapshot(
            instrument.symbol,
            DEPTH_PATH,
            {"symbol": instrument.venue_id, "limit": str(self.snapshot_limit)},
            self.snapshot_weight,
        )

    def on_connected(self) -> list[Action]:
        """Subscribe, then ask for every book's REST snapshot (the book sync buffers diffs meanwhile).

        The subscriptions go first so the diff stream is already flowing when the snapshot is taken;
        a snapshot that still predates the first diff fails the bridge rule and is simply retried.
        """
        actions: list[Action] = list(self.subscribe_frames())
        if self.carries_books:
            actions += [self.snapshot_request(i) for i in self.instruments.values()]
        return actions

    def resync(self, symbol: str) -> list[Action]:
        """A fresh REST snapshot; the stream stays subscribed (Binance has no websocket snapshot), unless the
        venue refused its subscription: then it is subscribed again first."""
        instrument = self._by_symbol.get(symbol)
        if instrument is None or not self.carries_books:
            return []
        actions: list[Action] = []
        if symbol in self._refused:
            self._refused.discard(symbol)
            actions.append(self._subscribe([f"{instrument.venue_id.lower()}@{DEPTH_STREAM}"]))
        actions.append(self.snapshot_request(instrument))
        return actions

    def ping_frame(self) -> str | None:
        return None  # the server pings with websocket ping frames; the client library answers them

    def reset(self) -> None:
        """Forget the requests of the last connection (the next one subscribes everything afresh); nothing is
        merged across frames on Binance, and request ids just keep increasing."""
        self._open_requests.clear()
        self._refused.clear()

    # ----------------------------------------------------------------- REST snapshot

    def on_snapshot(self, symbol: str, body: str | bytes, ts_recv: int) -> list[Event]:
        """`GET /fapi/v1/depth` answer -> BookSnapshot with seq = `lastUpdateId`."""
        instrument = self._by_symbol.get(symbol)
        if instrument is None:
            return [BadFrame(VENUE, f"snapshot for an unknown symbol {symbol!r}", None, False, ts_recv)]
        if symbol in self._refused:
            # No diff will ever follow it: a VALID book that never moves. Its resync subscribes again.
            reason = "depth snapshot for a book whose stream subscription was refused"
            return [BadFrame(VENUE, reason, symbol, True, ts_recv, InvalidReason.BAD_FRAME)]
        try:
            doc = orjson.loads(body)
            if not isinstance(doc, dict):
                raise FrameError("snapshot is not a JSON object")
            if "lastUpdateId" not in doc and "code" in doc:
                raise FrameError(f"snapshot rejected: {doc.get('code')} {doc.get('msg', '')}")
            seq = _int(doc["lastUpdateId"])
            stamp = doc.get("T") or doc.get("E")
            ts_exchange = _int(stamp) * _MS if stamp is not None else ts_recv
            bids = _levels(doc["bids"], instrument)
            asks = _levels(doc["asks"], instrument)
        except (orjson.JSONDecodeError, FrameError, KeyError, TypeError, ValueError) as exc:
            reason = f"depth snapshot: {exc!r}"[:200]
            return [BadFrame(VENUE, reason, instrument.symbol, True, ts_recv, InvalidReason.BAD_FRAME)]
        return [BookSnapshot(VENUE, instrument.symbol, bids, asks, seq, ts_exchange, ts_recv)]

    # ----------------------------------------------------------------- frames received

    def feed(self, raw: str | bytes, ts_recv: int) -> list[Event | str]:
        """Parse one frame (combined `{"stream","data"}` or raw payload). Never raises: returns BadFrame."""
        head = raw[:48] if isinstance(raw, str) else raw[:48].decode("ascii", "replace")
        if "@depth" in head or '"e":"depthUpdate"' in head:
            fast = self._fast_depth(raw, ts_recv, combined="@depth" in head)
            if fast is not None:
                return fast
        elif "@bookTicker" in head or '"e":"bookTicker"' in head:
            fast = self._fast_book_ticker(raw, ts_recv, combined="@bookTicker" in head)
            if fast is not None:
                return fast
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [BadFrame(VENUE, "not JSON", None, False, ts_recv)]
        if not isinstance(message, dict):
            return [BadFrame(VENUE, "not a JSON object", None, False, ts_recv)]
        stream = message.get("stream")
        data = message.get("data") if "data" in message and isinstance(stream, str) else message
        if not isinstance(data, dict):
            return [BadFrame(VENUE, f"payload of {stream!r} is not an object"[:200], None, False, ts_recv)]
        kind = data.get("e")
        if kind is None:
            return self._on_control(message, ts_recv)
        if not isinstance(kind, str):
            return [BadFrame(VENUE, "event type is not a string", None, False, ts_recv)]
        handler = self._handlers.get(kind)
        if handler is None:
            return []  # a stream we do not consume (kline on an old shared connection)
        instrument = self._instrument_of(stream, data)
        if instrument is None:
            if isinstance(_symbol_field(data), str):
                return []  # not one of ours (a recording can hold more symbols than we track)
            return [BadFrame(VENUE, f"{kind}: no usable symbol", None, False, ts_recv)]
        try:
            return handler(data, instrument, ts_recv)
        except (FrameError, KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            touches_book = kind == "depthUpdate"
            return [
                BadFrame(
                    VENUE,
                    f"{kind}: {exc!r}"[:200],
                    instrument.symbol,
                    touches_book,
                    ts_recv,
                    InvalidReason.BAD_FRAME if touches_book else None,
                )
            ]

    def _fast_depth(self, raw: str | bytes, ts_recv: int, combined: bool) -> list[Event | str] | None:
        """Typed decode of a depth diff; None sends the frame down the generic path."""
        try:
            if combined:
                frame = _DEPTH_COMBINED.decode(raw)
                data = frame.data
                instrument = self.instruments.get(frame.stream.partition("@")[0].upper())
            else:
                data = _DEPTH_RAW.decode(raw)
                instrument = None
        except msgspec.DecodeError:
            return None
        if data.e != "depthUpdate" or data.u < data.U:
            return None
        if instrument is None:
            instrument = self.instruments.get(data.s)
            if instrument is None:
                return []  # not one of ours
        bids = data.b
        asks = data.a
        if not shared_levels.valid_sides(bids, asks):
            return None
        ts_exchange = (data.T or data.E) * 1_000_000
        return [
            BookDelta(
                VENUE,
                instrument.symbol,
                to_base(bids, instrument),
                to_base(asks, instrument),
                data.u,
                data.pu,
                ts_exchange,
                ts_recv,
                data.U,
            )
        ]

    def _fast_book_ticker(self, raw: str | bytes, ts_recv: int, combined: bool) -> list[Event | str] | None:
        """Typed decode of a bookTicker (~150-190 a second per busy symbol); None sends it down the generic path,
        which reports what is wrong with it."""
        try:
            if combined:
                frame = _BOOK_TICKER_COMBINED.decode(raw)
                data = frame.data
                instrument = self.instruments.get(frame.stream.partition("@")[0].upper())
            else:
                data = _BOOK_TICKER_RAW.decode(raw)
                instrument = None
        except msgspec.DecodeError:
            return None
        if data.e != "bookTicker" or not (data.T or data.E):
            return None
        if instrument is None:
            instrument = self.instruments.get(data.s)
            if instrument is None:
                return []  # not one of ours
        quote = self._quote(instrument, data.b, data.B, data.a, data.A, data.u, (data.T or data.E) * _MS, ts_recv)
        return [quote] if quote is not None else None

    def _quote(
        self,
        instrument: Instrument,
        bid_px: float,
        bid_qty: float,
        ask_px: float,
        ask_qty: float,
        seq: int,
        ts_exchange: int,
        ts_recv: int,
    ) -> BestQuote | None:
        """A BestQuote in base units, or None when a value is unusable. A side with no quote is taken to come as
        price and qty 0 (an empty side; the shape is UNCONFIRMED for USD-M)."""
        bid = _quote_side(instrument, bid_px, bid_qty)
        ask = _quote_side(instrument, ask_px, ask_qty)
        if bid is None or ask is None or seq < 0:
            return None
        return BestQuote(VENUE, instrument.symbol, bid[0], bid[1], ask[0], ask[1], seq, ts_exchange, ts_recv)

    def _on_book_ticker(self, data: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event | str]:
        quote = self._quote(
            instrument,
            _number(data["b"]),
            _number(data["B"]),
            _number(data["a"]),
            _number(data["A"]),
            _int(data["u"]),
            _exchange_ns(data),
            ts_recv,
        )
        if quote is None:
            raise FrameError("unusable best quote")
        return [quote]

    def _instrument_of(self, stream: Any, data: Mapping[str, Any]) -> Instrument | None:
        # The stream name is what we subscribed to, so it still names the book when the payload's
        # own symbol field is damaged.
        if isinstance(stream, str):
            instrument = self.instruments.get(stream.partition("@")[0].upper())
            if instrument is not None:
                return instrument
        venue_id = _symbol_field(data)
        return self.instruments.get(venue_id) if isinstance(venue_id, str) else None

    def _on_control(self, message: Mapping[str, Any], ts_recv: int) -> list[Event | str]:
        # `{"result":null,"id":1}` acknowledges a SUBSCRIBE; errors come as `{"code","msg"}` or
        # `{"error":{"code","msg"}}` (the exact shape is UNCONFIRMED for USD-M, so both are read).
        req_id = message.get("id")
        books = None
        if isinstance(req_id, int) and not isinstance(req_id, bool):
            books = self._open_requests.pop(req_id, None)
        if "result" in message and "id" in message:
            return []
        error = message.get("error")
        detail = error if isinstance(error, dict) else message
        if "code" in detail or "msg" in detail:
            reason = f"request rejected: {detail.get('code')} {detail.get('msg', '')}"[:200]
            if not books:
                return [BadFrame(VENUE, reason, None, False, ts_recv)]
            # A refused SUBSCRIBE of depth streams: those books get no diffs on this connection.
            self._refused.update(books)
            return [BadFrame(VENUE, reason, symbol, True, ts_recv, InvalidReason.BAD_FRAME) for symbol in books]
        return [BadFrame(VENUE, "message with no event type", None, False, ts_recv)]

    def _on_depth(self, data: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event | str]:
        first = _int(data["U"])
        last = _int(data["u"])
        prev = _int(data["pu"])
        if first > last:
            raise FrameError(f"U {first} > u {last}")
        bids = _levels(data["b"], instrument)
        asks = _levels(data["a"], instrument)
        return [BookDelta(VENUE, instrument.symbol, bids, asks, last, prev, _exchange_ns(data), ts_recv, first)]

    def _taker_side(self, data: Mapping[str, Any]) -> int:
        maker_is_buyer = data["m"]
        if not isinstance(maker_is_buyer, bool):
            raise FrameError(f"m is not a boolean: {maker_is_buyer!r}")
        return SELL if maker_is_buyer else BUY  # buyer was the maker => the taker sold

    def _on_agg_trade(self, data: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event | str]:
        # aggTrade carries no liquidation/ADL tag (those fills are just not aggregated): never `forced`.
        price = _number(data["p"])
        size = _number(data["q"])
        if price <= 0.0 or size <= 0.0:
            raise FrameError("non-positive price or quantity")
        side = self._taker_side(data)
        trade_id = str(_int(data["a"]))
        ts = _exchange_ns(data)
        return [
            Trade(
                VENUE, instrument.symbol, price, instrument.base_size(size, price), side, trade_id, False, ts, ts_recv
            )
        ]

    def _on_trade(self, data: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event | str]:
        # Per-fill `@trade` (the 2024 recording uses it; we subscribe aggTrade). `X` is the execution type.
        price = _number(data["p"])
        size = _number(data["q"])
        if price <= 0.0 or size <= 0.0:
            raise FrameError("non-positive price or quantity")
        side = self._taker_side(data)
        forced = data.get("X") in _FORCED_EXECUTIONS
        ts = _exchange_ns(data)
        return [
            Trade(
                VENUE,
                instrument.symbol,
                price,
                instrument.base_size(size, price),
                side,
                str(_int(data["t"])),
                forced,
                ts,
                ts_recv,
            )
        ]

    def _on_mark_price(self, data: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event | str]:
        next_funding = data.get("T")
        next_ns = _int(next_funding) * _MS if next_funding else None
        hours = self.funding_hours.get(instrument.venue_id, DEFAULT_FUNDING_HOURS)
        return [
            FundingRate(
                VENUE,
                instrument.symbol,
                _opt_number(data.get("r")),
                hours,
                next_ns,
                _opt_number(data.get("p")),
                _opt_number(data.get("i")),
                _int(data["E"]) * _MS,
                ts_recv,
            )
        ]

    def _on_force_order(self, data: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event | str]:
        order = data["o"]
        order_side = order["S"]
        liquidated: Literal["long", "short"]
        if order_side == "SELL":
            liquidated = "long"  # a forced sell closes a long
        elif order_side == "BUY":
            liquidated = "short"
        else:
            raise FrameError(f"unknown liquidation order side {order_side!r}")
        # The average fill price and the filled quantity describe what was forced through the book;
        # fall back to the order's price / quantity when nothing is filled yet.
        price = _opt_number(order.get("ap")) or _number(order["p"])
        size = _opt_number(order.get("z")) or _number(order["q"])
        if price <= 0.0 or size <= 0.0:
            raise FrameError("non-positive liquidation price or quantity")
        stamp = order.get("T") or data["E"]
        return [
            Liquidation(
                VENUE,
                instrument.symbol,
                liquidated,
                price,
                instrument.base_size(size, price),
                _int(stamp) * _MS,
                ts_recv,
            )
        ]


def _quote_side(instrument: Instrument, price: float, qty: float) -> tuple[float | None, float | None] | None:
    """(price, base size) of one best-quote side, (None, None) for an empty side (price 0), None if unusable."""
    if price == 0.0:
        return (None, None) if qty == 0.0 else None
    if not shared_levels.valid_level(price, qty):
        return None
    return price, instrument.base_size(qty, price)


def _symbol_field(data: Mapping[str, Any]) -> Any:
    order = data.get("o")
    if isinstance(order, dict) and "s" in order:
        return order["s"]  # forceOrder nests the symbol in the order
    return data.get("s")


# -------------------------------------------------------------------------------------------------
# Adapter


def poll_intervals(n_instruments: int) -> tuple[float, float]:
    """(open-interest interval, long/short interval) in seconds for `n_instruments`.

    Long/short: at least every 60 s (the data are 5-minute buckets), slower when the 1000 requests /
    5 min / IP cap needs it (we keep to half, for both endpoints together). Open interest: every 10 s,
    slower when the polls' weight would pass POLL_WEIGHT_PER_MINUTE. Worst case with every interval at
    its formula: LS charges <= 100/min, fundingInfo 0.1/min, OI <= the rest of 600/min.
    """
    n = max(1, n_instruments)
    per_endpoint = len(LONG_SHORT_PATHS)
    ls_interval = max(LS_MIN_INTERVAL_S, n * per_endpoint * 300.0 / LS_REQUESTS_PER_5MIN)
    ls_weight = n * per_endpoint * COUNT_CHARGE * 60.0 / ls_interval
    funding_weight = COUNT_CHARGE * 60.0 / FUNDING_INFO_INTERVAL_S
    oi_budget = POLL_WEIGHT_PER_MINUTE - ls_weight - funding_weight
    oi_interval = max(OI_MIN_INTERVAL_S, n * 60.0 / oi_budget)
    return oi_interval, ls_interval


class BinanceUsdmAdapter:
    """Binance USD-M: routed websocket pairs per instrument group, REST snapshots, OI / long-short polls.

    Budget (`rest_weight_per_minute` = 1200, half of Binance's 2400/min per IP): polls take at most 600
    (see `poll_intervals`), leaving at least 600/min for depth snapshots (30 per minute at limit 1000).
    """

    venue: ClassVar[str] = VENUE
    default_ws_url: ClassVar[str] = DEFAULT_WS_URL
    default_rest_url: ClassVar[str] = DEFAULT_REST_URL
    rest_weight_per_minute: ClassVar[int] = REST_WEIGHT_PER_MINUTE
    sequence_rule: ClassVar[SequenceRule] = staticmethod(binance_futures)  # type: ignore[assignment]
    buffer_deltas: ClassVar[bool] = True
    # The venue drops every connection at 24 h: a session should reconnect itself before that.
    max_connection_age_s: ClassVar[float] = RECONNECT_BEFORE_S

    def __init__(
        self,
        streams_per_connection: int = STREAMS_PER_CONNECTION,
        subscribe_batch: int = SUBSCRIBE_BATCH,
        best_quote: bool = True,
    ) -> None:
        if not 4 <= streams_per_connection <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"streams_per_connection must be in 4..{MAX_STREAMS_PER_CONNECTION}")
        self.streams_per_connection = streams_per_connection
        self.subscribe_batch = subscribe_batch
        self.best_quote = best_quote  # subscribe `@bookTicker` beside the depth stream (config venues.<id>.best_quote)
        # venue id -> funding interval (h), refreshed by the fundingInfo poll and read by market parsers.
        self.funding_hours: MutableMapping[str, float] = {}
        self._instruments: dict[str, Instrument] = {}  # unified symbol -> instrument (poll answers)

    def connections(
        self, instruments: Sequence[Instrument], ws_url: str, book_depth: int
    ) -> list[tuple[str, BinanceUsdmParser]]:
        """Per group of instruments a `/public` connection (books) and a `/market` one (the rest).

        A group holds as many instruments as the busier route allows: 3 streams each on `/market` (on `/public`
        2 with the best quote: depth and bookTicker).
        `book_depth` is the REST snapshot limit (5..1000); the diff stream itself is unbounded.
        """
        depth_weight(book_depth)  # validate early: a bad depth is a configuration error
        group = max(1, self.streams_per_connection // 3)
        public, market = routed_url(ws_url, ROUTE_PUBLIC), routed_url(ws_url, ROUTE_MARKET)
        out: list[tuple[str, BinanceUsdmParser]] = []
        for i in range(0, len(instruments), group):
            members = instruments[i : i + group]
            self._remember(members)
            out.append((public, self._parser(members, ROUTE_PUBLIC, book_depth)))
            out.append((market, self._parser(members, ROUTE_MARKET, book_depth)))
        return out

    def replay_parser(self, url: str, instruments: Sequence[Instrument]) -> BinanceUsdmParser:
        """The parser for a recorded connection: its route comes from the recorded URL (legacy = all)."""
        self._remember(instruments)
        return self._parser(instruments, route_of_url(url), 1000)

    def _parser(self, members: Sequence[Instrument], route: str, book_depth: int) -> BinanceUsdmParser:
        return BinanceUsdmParser(
            members, route, book_depth, self.funding_hours, self.subscribe_batch, best_quote=self.best_quote
        )

    def _remember(self, instruments: Iterable[Instrument]) -> None:
        for instrument in instruments:
            self._instruments[instrument.symbol] = instrument

    def polls(self, instruments: Sequence[Instrument]) -> list[PollRequest]:
        """Open interest per symbol, two long/short ratios per symbol, and fundingInfo once."""
        self._remember(instruments)
        oi_interval, ls_interval = poll_intervals(len(instruments))
        out = []
        for instrument in instruments:
            venue_id = instrument.venue_id
            out.append(
                PollRequest(
                    f"oi:{venue_id}",
                    instrument.symbol,
                    "open_interest",
                    OPEN_INTEREST_PATH,
                    {"symbol": venue_id},
                    1,
                    oi_interval,
                )
            )
            for path, kind in LONG_SHORT_PATHS.items():
                out.append(
                    PollRequest(
                        f"ls_{kind}:{venue_id}",
                        instrument.symbol,
                        "long_short",
                        path,
                        {"symbol": venue_id, "period": LONG_SHORT_PERIOD, "limit": "1"},
                        COUNT_CHARGE,
                        ls_interval,
                    )
                )
        if instruments:
            out.append(
                PollRequest(
                    "funding_info", "", "funding_info", FUNDING_INFO_PATH, {}, COUNT_CHARGE, FUNDING_INFO_INTERVAL_S
                )
            )
        return out

    def parse_poll(self, request: PollRequest, body: str | bytes, ts_recv: int) -> list[Event]:
        """Events from one poll answer. Never raises: a bad or rejected answer is a BadFrame."""
        try:
            doc = orjson.loads(body)
            if isinstance(doc, dict) and "code" in doc and "msg" in doc:
                raise FrameError(f"rejected: {doc.get('code')} {doc.get('msg')}")
            if request.kind == "funding_info":
                return self._funding_info(doc, ts_recv)
            instrument = self._instruments.get(request.symbol)
            if instrument is None:
                raise FrameError(f"poll for an unknown symbol {request.symbol!r}")
            if request.kind == "open_interest":
                return self._open_interest(doc, instrument, ts_recv)
            if request.kind == "long_short":
                return self._long_short(doc, instrument, LONG_SHORT_PATHS[request.path], ts_recv)
            raise FrameError(f"unknown poll kind {request.kind!r}")
        except (orjson.JSONDecodeError, FrameError, KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            symbol = request.symbol or None
            return [BadFrame(VENUE, f"poll {request.key}: {exc!r}"[:200], symbol, False, ts_recv)]

    def _open_interest(self, doc: Any, instrument: Instrument, ts_recv: int) -> list[Event]:
        if not isinstance(doc, dict):
            raise FrameError("openInterest answer is not an object")
        if doc.get("symbol", instrument.venue_id) != instrument.venue_id:
            raise FrameError(f"answer is about {doc.get('symbol')!r}")
        value = _number(doc["openInterest"])
        if value < 0:
            raise FrameError("negative open interest")
        # Base-asset quantity, one side (every long has a short); linear, so no price is needed.
        return [
            OpenInterest(VENUE, instrument.symbol, instrument.base_size(value, 0.0), _int(doc["time"]) * _MS, ts_recv)
        ]

    def _long_short(self, doc: Any, instrument: Instrument, kind: str, ts_recv: int) -> list[Event]:
        if not isinstance(doc, list):
            raise FrameError("long/short answer is not a list")
        if not doc:
            return []  # no bucket yet (a new listing)
        latest = max(doc, key=lambda row: int(row["timestamp"]))
        longs = _number(latest["longAccount"])  # position shares for topLongShortPositionRatio, despite the name
        shorts = _number(latest["shortAccount"])
        ratio = _opt_number(latest.get("longShortRatio"))
        if ratio is None:
            ratio = longs / shorts
        if not ratio > 0 or not math.isfinite(ratio):
            raise FrameError(f"unusable ratio {ratio!r}")
        return [LongShortRatio(VENUE, instrument.symbol, kind, ratio, int(latest["timestamp"]) * _MS, ts_recv)]

    def _funding_info(self, doc: Any, ts_recv: int) -> list[Event]:
        # Lists only the symbols whose cap/floor/interval Binance adjusted; the others stay at 8 h.
        if not isinstance(doc, list):
            raise FrameError("fundingInfo answer is not a list")
        listed: dict[str, float] = {}
        for row in doc:
            hours = row.get("fundingIntervalHours") if isinstance(row, dict) else None
            if isinstance(row, dict) and isinstance(row.get("symbol"), str) and hours is not None:
                listed[row["symbol"]] = _number(hours)
        events: list[Event] = []
        for instrument in self._instruments.values():
            hours = listed.get(instrument.venue_id, DEFAULT_FUNDING_HOURS)
            if hours <= 0:
                raise FrameError(f"funding interval {hours} for {instrument.venue_id}")
            self.funding_hours[instrument.venue_id] = hours
            # Only the interval is known here; the None fields leave the last mark/rate unchanged.
            events.append(FundingRate(VENUE, instrument.symbol, None, hours, None, None, None, ts_recv, ts_recv))
        return events
