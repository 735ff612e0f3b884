"""OKX v5 public websocket protocol (SWAP and FUTURES), sans-I/O: `OkxParser` per connection, `OkxAdapter`.

Turns raw frames into typed events and builds what must be sent (subscriptions, resyncs, the text
keepalive) or fetched (REST book snapshots, rubik long/short polls). Must not import asyncio or
touch sockets: the session runner and the REST scheduler do the I/O.

Venue facts this module relies on (../shared/exchanges.md §3 and "Differences that bite" 6-11):
* Everything used here lives on `/ws/v5/public` (candles, which we do not use, are on `/business`).
  The keepalive is the TEXT frame `ping`, answered by the text `pong`; OKX drops a connection that
  has carried nothing for 30 s.
* `books` (400 levels): `action` `snapshot` then `update`s. Levels are `[px, sz, "0", numOrders]`:
  sz is in CONTRACTS, the 3rd field is deprecated and always "0", the 4th is an order count (never
  read as a size or a count of anything we use); sz "0" deletes the level.
  Two generations of the stream, both accepted:
    - current: `seqId`/`prevSeqId` (snapshot prevSeqId = -1) link every update to the one before,
      and `checksum` is always 0 (dead since 2026-06-23).
    - 2022 (the recording): no ids at all; the only integrity check is `checksum`, a signed CRC32
      over the interleaved top-25 `bidPx:bidSz:askPx:askSz` raw strings after applying the message.
  The parser verifies the checksum whenever it is non-zero, against its own string mirror of the
  book (the exact strings as received: "5.16" and "5.160" hash differently), and reports a
  mismatch as BadFrame(CHECKSUM). For the 2022 generation it numbers the messages itself (each
  update's prev_seq is the previous message's number), so the continuity rule always passes and
  the checksum alone decides whether the book is right.
* Bootstraps. Default: the WS snapshot OKX sends on subscribe. OKX announced (Feb 2026, "early
  August 2026") that `books` will stop sending it; if the first push after a subscribe ack is an
  update, the parser switches this venue to the documented REST bootstrap
  (`GET /api/v5/market/books?instId=&sz=400&source=0` + seqId bridging:
  `prevSeqId <= snapshot seqId < seqId` for the first applied update), see `okx_books` in
  `book.sequencing`. `bootstrap="rest"` forces the REST path from the start.
* Resync (a gap, a checksum mismatch, a bad frame): when the stream carries seqIds, a REST snapshot
  (the path that survives the snapshot removal, costs none of OKX's 480 subscribe/unsubscribe
  requests per connection-hour, and leaves the stream running while BookSync buffers its deltas);
  without seqIds (2022) a REST snapshot cannot be placed in the stream, so unsubscribe + subscribe
  for a fresh WS snapshot.
* `bbo-tbt` (public, tick-by-tick level 1): the best-quote stream, one push per change of the best bid/ask, in
  the `books` shape (`asks`/`bids` with at most one `[px, sz, "0", n]` each, sz in contracts, `ts`, and `seqId`
  where sent: UNCONFIRMED for bbo-tbt). It feeds the L1 OFI only (`BestQuote`); subscribed beside `books` unless
  `best_quote=False` (one more arg per instrument in the same subscribe requests).
* `trades`: `side` is the TAKER side; sz in contracts. `open-interest`: `oi` contracts, `oiCcy` coin
  (= base for both linear and inverse); we publish oiCcy. `funding-rate`, `mark-price`,
  `index-tickers` (keyed by the index, e.g. BTC-USDT, shared by every contract on it).
  `liquidation-orders` is subscribed per instType and filtered on the OUTER instId;
  `posSide` names the liquidated position (`side:"sell", posSide:"long"` = a long was closed).
* Long/short: REST rubik endpoints (5-minute data), polled.
* A refused subscribe arg is answered with `{"event":"error","code",...}`, which names no arg (and our
  requests carry no id), while every arg taken gets its own ack. So when an error comes, every `books` arg
  not acknowledged yet is taken as refused: its book is invalidated (a BadFrame), its REST snapshots are
  refused (a VALID book no update would move), and its resync subscribes it again. A book taken for refused
  wrongly (its ack was still on its way) costs one extra snapshot. Without this a refused book waited for the
  stuck-book retry (10 s).
"""

from __future__ import annotations

import bisect
import math
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
import orjson

from flowgauge.book.sequencing import okx_books
from flowgauge.book.sync import SequenceRule
from flowgauge.connectors import levels as shared_levels
from flowgauge.connectors.base import Action, FetchSnapshot, PollRequest
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
    InvalidReason,
    Level,
    Liquidation,
    LongShortRatio,
    OpenInterest,
    Trade,
)

__all__ = [
    "BOOK_DEPTHS",
    "DEFAULT_REST_URL",
    "DEFAULT_WS_URL",
    "OkxAdapter",
    "OkxParser",
    "checksum",
    "okx_instrument",
    "public_url",
]

VENUE = "okx"
DEFAULT_WS_URL = "wss://ws.okx.com:8443/ws/v5/public"
DEFAULT_REST_URL = "https://www.okx.com"
WS_PUBLIC_PATH = "/ws/v5/public"
BOOK_CHANNEL = "books"  # 400 levels, snapshot + updates; the tbt variants need a VIP login
BEST_QUOTE_CHANNEL = "bbo-tbt"  # tick-by-tick level 1, public
BOOK_DEPTHS = (400,)  # the only depth `books` serves (books5 is snapshots only, a different protocol)
PING_FRAME = "ping"
PONG_FRAME = "pong"
CHECKSUM_LEVELS = 25
REST_BOOKS_PATH = "/api/v5/market/books"
# OKX limits (exchanges.md §3.1): 64 KB per subscribe request, 480 subscribe/unsubscribe/login requests
# per connection per hour. 50 args of ~60 characters is ~3 KB: far below the size cap, and a whole
# connection's subscriptions take a handful of requests.
MAX_ARGS_PER_REQUEST = 50
# Our own bound: 30 books of 400 levels per socket keeps one connection's frame rate and decode cost
# modest; the venue states no per-connection channel cap.
MAX_INSTRUMENTS_PER_CONNECTION = 30
# The parser's checksum mirror keeps more than OKX's 400 levels (levels pushed out of the 400 are
# not always deleted explicitly), bounded; trimmed levels are counted.
MAX_MIRROR_LEVELS = 1_000
# Deltas kept while a REST snapshot is awaited, to bring the checksum mirror up to the snapshot.
MAX_PENDING_DELTAS = 2_000

# REST budget. OKX limits per endpoint and IP, not by weight: market/books 40 req/2 s (1,200/min),
# rubik statistics 5 req/2 s (150/min). Weights scale to the books limit (rubik = 1,200/150 = 8),
# and we allow ourselves half of it, leaving room for other clients on the same IP.
BOOKS_WEIGHT = 1
RUBIK_WEIGHT = 8
REST_WEIGHT_PER_MINUTE = 600
# Rubik long/short series (params instId, period, limit; rows `[ts, ratio]`), our kind names first.
LONG_SHORT_ENDPOINTS: dict[str, str] = {
    "accounts": "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract",
    "top_accounts": "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract-top-trader",
    "top_positions": "/api/v5/rubik/stat/contracts/long-short-position-ratio-contract-top-trader",
}
LONG_SHORT_PERIOD = "5m"
LONG_SHORT_INTERVAL_S = 120.0  # 5-minute buckets: polling every 2 minutes sees each one without waste

_MS = 1_000_000  # ns per ms
_HOUR_MS = 3_600_000

Bootstrap = Literal["ws", "rest"]


class FrameError(ValueError):
    """A frame that does not match the schema it claims (channel known, content unusable)."""


# --------------------------------------------------------------------------------------------------
# Pure helpers


def checksum(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    """OKX book checksum: signed CRC32 of `bidPx:bidSz:askPx:askSz:...` over the top 25 of each side.

    `bids` best (highest) first, `asks` best (lowest) first, as the raw strings received. When one
    side is shorter, the other side's remaining levels continue alone.
    """
    parts: list[str] = []
    for i in range(CHECKSUM_LEVELS):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def public_url(ws_url: str) -> str:
    """The public stream URL for a configured OKX base (`wss://host:port`, or any `/ws/v5/<x>` sibling)."""
    parts = urlsplit(ws_url)
    path = parts.path.rstrip("/")
    head, sep, _ = path.rpartition("/ws/v5/")
    if sep:
        path = head + WS_PUBLIC_PATH
    elif not path.endswith(WS_PUBLIC_PATH):
        path = path + WS_PUBLIC_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def okx_instrument(market: Mapping[str, Any]) -> Instrument:
    """`markets.instrument_from_market` plus OKX's contract multiplier and its own ctType.

    ccxt's contractSize is `ctVal` alone; the venue's contract is `ctVal x ctMult` (every 2022
    SWAP/FUTURES instrument has ctMult 1, so the two agree today). ctType says linear vs inverse.
    """
    from flowgauge.connectors.markets import generic_instrument_from_market

    instrument = generic_instrument_from_market(VENUE, market)
    info = market.get("info") or {}
    try:
        ct_val = float(info.get("ctVal") or instrument.contract_size)
        ct_mult = float(info.get("ctMult") or 1.0)
    except (TypeError, ValueError):
        return instrument
    ct_type = info.get("ctType")
    kind = instrument.kind
    if ct_type == "linear":
        kind = ContractKind.LINEAR
    elif ct_type == "inverse":
        kind = ContractKind.INVERSE
    size = ct_val * ct_mult if ct_val > 0 and ct_mult > 0 else instrument.contract_size
    return msgspec.structs.replace(instrument, contract_size=size, kind=kind)


def index_id(instrument: Instrument) -> str:
    """The index an instrument tracks: `BTC-USDT-SWAP` and `BTC-USDT-250627` -> `BTC-USDT`."""
    parts = instrument.venue_id.split("-")
    return "-".join(parts[:2])


def inst_type(instrument: Instrument) -> str:
    """OKX instType of a derivative id: `...-SWAP` is SWAP, a dated id is FUTURES."""
    return "SWAP" if instrument.venue_id.endswith("-SWAP") else "FUTURES"


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise FrameError(f"not an integer: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value)
    raise FrameError(f"not an integer: {value!r}")


def _finite(value: Any) -> float:
    result = float(value)
    if not math.isfinite(result):
        raise FrameError(f"not a finite number: {value!r}"[:100])
    return result


def _opt_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return _finite(value)


def _raw_levels(raw: Any) -> list[tuple[str, str, float, float]]:
    """Validate `[[px, sz, "0", numOrders], ...]` -> (px string, sz string, px, sz in contracts)."""
    fast = shared_levels.string_levels(raw)  # the compiled core's C loop (same result), None otherwise
    if fast is not None:
        return fast
    if not isinstance(raw, list):
        raise FrameError("levels are not a list")
    out = []
    for level in raw:
        if not isinstance(level, list) or len(level) < 2:
            raise FrameError(f"bad level {level!r}"[:100])
        px_s, sz_s = level[0], level[1]
        if not isinstance(px_s, str) or not isinstance(sz_s, str):
            raise FrameError(f"level fields are not strings: {level!r}"[:100])
        price = float(px_s)
        size = float(sz_s)
        # NaN fails every comparison and inf the upper bounds, so both are refused here.
        if not shared_levels.valid_level(price, size):
            raise FrameError(f"bad level {level!r}"[:100])
        out.append((px_s, sz_s, price, size))
    return out


def _to_base(levels: list[tuple[str, str, float, float]], instrument: Instrument) -> tuple[Level, ...]:
    return tuple((price, instrument.base_size(size, price)) for _, _, price, size in levels)


# --------------------------------------------------------------------------------------------------
# The checksum mirror


class _Side:
    """One side of the mirror: raw strings by price, plus the prices kept sorted best first."""

    __slots__ = ("_keys", "_levels", "_sign")

    def __init__(self, bids: bool) -> None:
        self._sign = -1.0 if bids else 1.0  # sort key: bids by -price so ascending = best first
        self._keys: list[float] = []
        self._levels: dict[float, tuple[str, str]] = {}

    def apply(self, levels: list[tuple[str, str, float, float]]) -> int:
        """Apply levels; returns how many worst levels were trimmed to keep the side bounded."""
        keys, by_key, sign = self._keys, self._levels, self._sign
        for px_s, sz_s, price, size in levels:
            # Keyed by price VALUE, keeping the strings as received: a deletion sent as "5.160" still
            # removes "5.16", and the checksum uses whatever string the venue sent last.
            key = sign * price
            if size == 0.0:
                if by_key.pop(key, None) is not None:
                    del keys[bisect.bisect_left(keys, key)]
                continue
            if key not in by_key:
                bisect.insort(keys, key)
            by_key[key] = (px_s, sz_s)
        trimmed = 0
        while len(keys) > MAX_MIRROR_LEVELS:
            del by_key[keys.pop()]
            trimmed += 1
        return trimmed

    def top(self, n: int) -> list[tuple[str, str]]:
        by_key = self._levels
        return [by_key[k] for k in self._keys[:n]]

    def __len__(self) -> int:
        return len(self._keys)


class _Mirror:
    __slots__ = ("asks", "bids", "seq")

    def __init__(self, seq: int | None) -> None:
        self.bids = _Side(bids=True)
        self.asks = _Side(bids=False)
        self.seq = seq

    def apply(self, bids: list[tuple[str, str, float, float]], asks: list[tuple[str, str, float, float]]) -> int:
        return self.bids.apply(bids) + self.asks.apply(asks)

    def checksum(self) -> int:
        return checksum(self.bids.top(CHECKSUM_LEVELS), self.asks.top(CHECKSUM_LEVELS))


# Pending delta while a REST snapshot is awaited: (seq, prev_seq, bids, asks, checksum).
_Pending = tuple[int, int | None, list[tuple[str, str, float, float]], list[tuple[str, str, float, float]], int]


class _BookState:
    """What the parser knows about one instrument's `books` subscription on this connection."""

    __slots__ = ("acked", "awaiting_first", "has_seq_ids", "last_id", "mirror", "pending", "refused", "subscribed_by")

    def __init__(self) -> None:
        self.mirror: _Mirror | None = None  # None: not in step with the venue, checksums not verifiable
        self.pending: deque[_Pending] | None = None  # set while a REST snapshot is awaited
        self.awaiting_first = False  # a subscribe ack came; the next push tells if a WS snapshot is sent
        self.subscribed_by = ""  # "connect" | "resync": which subscribe the ack answers
        self.acked = False  # the last `books` subscribe of this book was acknowledged
        self.refused = False  # an error came while that subscribe was unacknowledged: subscribe again
        self.has_seq_ids = False  # the venue sent seqId on this stream (current generation)
        self.last_id: int | None = None  # last id handed out (real seqId, or our own number for 2022)


# --------------------------------------------------------------------------------------------------
# The parser


class OkxParser:
    """Parser for one OKX public connection (`/ws/v5/public`).

    Args:
        instruments: this connection's instruments (SWAP / FUTURES), keyed internally by instId.
        book_depth: must be 400 (`books`).
        bootstrap: "ws" (WS snapshot, switching to REST by itself if OKX stops sending it) or
            "rest" (always REST snapshot + seqId bridging; WS snapshots are ignored).
        best_quote: also subscribe `bbo-tbt` (the L1 OFI's best-quote stream).
    """

    venue = VENUE

    def __init__(
        self,
        instruments: Iterable[Instrument],
        book_depth: int = 400,
        bootstrap: Bootstrap = "ws",
        best_quote: bool = True,
    ) -> None:
        if book_depth not in BOOK_DEPTHS:
            raise ValueError(f"okx book depth must be one of {BOOK_DEPTHS}, got {book_depth}")
        if bootstrap not in ("ws", "rest"):
            raise ValueError(f"okx bootstrap must be 'ws' or 'rest', got {bootstrap!r}")
        self.book_depth = book_depth
        self.bootstrap: Bootstrap = bootstrap
        self.best_quote = best_quote  # subscribe `bbo-tbt` beside `books`
        self.instruments: dict[str, Instrument] = {i.venue_id: i for i in instruments}
        self._by_symbol = {i.symbol: i for i in self.instruments.values()}
        self._by_index: dict[str, list[Instrument]] = {}
        for instrument in self.instruments.values():
            self._by_index.setdefault(index_id(instrument), []).append(instrument)
        self._books: dict[str, _BookState] = {vid: _BookState() for vid in self.instruments}
        self._marks: dict[str, float] = {}  # last mark price per instId: converts oi contracts if oiCcy is absent
        self._next_id = 0  # our own message numbers for the 2022 generation (monotonic, never reset)
        # Venue facts learnt on this connection; kept across reset() (they are not per-connection).
        self.ws_snapshot_gone = False  # a books subscription started with an update: use REST snapshots
        self.rest_bridgeable = True  # False once a REST snapshot came without seqId
        # counters
        self.checksums_verified = 0
        self.checksum_mismatches = 0
        self.mirror_trimmed = 0
        self.pending_dropped = 0
        self.notices = 0  # `event: notice` (service upgrade in 60 s)
        self._handlers = {
            BOOK_CHANNEL: self._on_books,
            "trades": self._on_trades,
            "open-interest": self._on_open_interest,
            "funding-rate": self._on_funding,
            "mark-price": self._on_mark,
            "liquidation-orders": self._on_liquidations,
            BEST_QUOTE_CHANNEL: self._on_bbo,
        }

    # ----------------------------------------------------------------- actions

    def subscription_args(self) -> list[dict[str, str]]:
        args: list[dict[str, str]] = []
        for venue_id, instrument in self.instruments.items():
            args.append({"channel": BOOK_CHANNEL, "instId": venue_id})
            if self.best_quote:
                args.append({"channel": BEST_QUOTE_CHANNEL, "instId": venue_id})
            args.append({"channel": "trades", "instId": venue_id})
            args.append({"channel": "open-interest", "instId": venue_id})
            if inst_type(instrument) == "SWAP":
                args.append({"channel": "funding-rate", "instId": venue_id})
            args.append({"channel": "mark-price", "instId": venue_id})
        for index in self._by_index:
            args.append({"channel": "index-tickers", "instId": index})
        for kind in sorted({inst_type(i) for i in self.instruments.values()}):
            args.append({"channel": "liquidation-orders", "instType": kind})
        return args

    def on_connected(self) -> list[Action]:
        """Subscribe everything; with the REST bootstrap, also fetch every book's snapshot."""
        args = self.subscription_args()
        actions: list[Action] = [
            _op("subscribe", args[i : i + MAX_ARGS_PER_REQUEST]) for i in range(0, len(args), MAX_ARGS_PER_REQUEST)
        ]
        for venue_id, state in self._books.items():
            state.subscribed_by = "connect"
            if self._rest_first():
                actions.append(self._fetch(venue_id, state))
        return actions

    def resync(self, symbol: str) -> list[Action]:
        instrument = self._by_symbol.get(symbol)
        if instrument is None:
            return []
        venue_id = instrument.venue_id
        state = self._books[venue_id]
        state.mirror = None
        arg = {"channel": BOOK_CHANNEL, "instId": venue_id}
        if state.refused:
            # Its subscription was refused: subscribe again (a WS snapshot follows the ack, or a REST one).
            state.refused = state.acked = False
            state.pending = None
            state.subscribed_by = "resync"
            actions: list[Action] = [_op("subscribe", [arg])]
            if self._rest_first():
                actions.append(self._fetch(venue_id, state))
            return actions
        if self._rest_first() or (state.has_seq_ids and self.rest_bridgeable):
            return [self._fetch(venue_id, state)]
        # No seqIds (2022 generation): only a fresh WS snapshot can restart the book.
        state.pending = None
        state.subscribed_by = "resync"
        state.acked = False
        return [_op("unsubscribe", [arg]), _op("subscribe", [arg])]

    def ping_frame(self) -> str:
        return PING_FRAME

    def reset(self) -> None:
        """Forget per-connection state before a reconnect (mirrors, pending snapshots, marks)."""
        self._books = {vid: _BookState() for vid in self.instruments}
        self._marks.clear()

    def _rest_first(self) -> bool:
        return self.bootstrap == "rest" or (self.ws_snapshot_gone and self.rest_bridgeable)

    def _fetch(self, venue_id: str, state: _BookState) -> FetchSnapshot:
        state.pending = deque(maxlen=MAX_PENDING_DELTAS)
        instrument = self.instruments[venue_id]
        # `source=0`: the regular book, as in OKX's documented REST bootstrap (2026 changelog; UNCONFIRMED
        # what other values select). sz=400 matches the depth of the `books` stream.
        params = {"instId": venue_id, "sz": str(self.book_depth), "source": "0"}
        return FetchSnapshot(instrument.symbol, REST_BOOKS_PATH, params, BOOKS_WEIGHT)

    # ----------------------------------------------------------------- frames received

    def feed(self, raw: str | bytes, ts_recv: int) -> list[Event | str]:
        """Parse one received frame. Never raises on bad input: returns BadFrame."""
        if raw == PONG_FRAME or raw == b"pong":
            return []
        if raw == PING_FRAME or raw == b"ping":
            return [PONG_FRAME]  # OKX does not ping clients; answering one costs nothing
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return [BadFrame(VENUE, "not JSON", None, False, ts_recv)]
        if not isinstance(message, dict):
            return [BadFrame(VENUE, "not a JSON object", None, False, ts_recv)]
        if "event" in message:
            return self._on_event(message, ts_recv)
        arg = message.get("arg")
        if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
            return [BadFrame(VENUE, "push without arg.channel", None, False, ts_recv)]
        channel = arg["channel"]
        if channel == "index-tickers":
            return self._guard(channel, None, self._on_index, message, ts_recv)
        handler = self._handlers.get(channel)
        if handler is None:
            return []  # a channel we do not consume (tickers in a recording)
        if channel == "liquidation-orders":
            return self._guard(channel, None, self._on_liquidations, message, ts_recv)
        inst_id = arg.get("instId")
        instrument = self.instruments.get(inst_id) if isinstance(inst_id, str) else None
        if instrument is None:
            return []  # not one of ours (a recording can hold spot books on the same socket)
        return self._guard(channel, instrument, handler, message, ts_recv)

    def _guard(
        self, channel: str, instrument: Instrument | None, handler: Any, message: dict[str, Any], ts_recv: int
    ) -> list[Event | str]:
        try:
            if instrument is None:
                return list(handler(message, ts_recv))
            return list(handler(message, instrument, ts_recv))
        except (FrameError, KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
            touches_book = channel == BOOK_CHANNEL
            if touches_book and instrument is not None:
                self._books[instrument.venue_id].mirror = None  # the mirror missed this message
            symbol = instrument.symbol if instrument is not None else None
            return [BadFrame(VENUE, f"{channel}: {exc!r}"[:200], symbol, touches_book, ts_recv)]

    def _on_event(self, message: Mapping[str, Any], ts_recv: int) -> list[Event | str]:
        kind = message.get("event")
        if kind == "error":
            reason = f"request rejected: {message.get('code', '')} {message.get('msg', '')}"[:200]
            refused: list[Event | str] = []
            for venue_id, book in self._books.items():
                if book.subscribed_by and not book.acked and not book.refused:
                    book.refused = True  # the error may be this book's subscribe (see the module doc)
                    symbol = self.instruments[venue_id].symbol
                    refused.append(BadFrame(VENUE, reason, symbol, True, ts_recv, InvalidReason.BAD_FRAME))
            return refused or [BadFrame(VENUE, reason, None, False, ts_recv)]
        if kind == "notice":
            self.notices += 1  # a service upgrade disconnects us in 60 s; the session reconnects
            return []
        if kind == "subscribe":
            arg = message.get("arg")
            if isinstance(arg, dict) and arg.get("channel") == BOOK_CHANNEL:
                inst_id = arg.get("instId")
                state = self._books.get(inst_id) if isinstance(inst_id, str) else None
                if state is not None:
                    state.awaiting_first = True
                    state.acked = True
                    state.refused = False  # it was not this book's subscribe the error refused
        return []  # unsubscribe acks, channel-conn-count, ...

    # ----------------------------------------------------------------- books

    def _on_books(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        action = message["action"]
        data = message["data"]
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            raise FrameError("books data is not a one-item list")
        item = data[0]
        ts_exchange = _int(item["ts"]) * _MS
        bids = _raw_levels(item["bids"])
        asks = _raw_levels(item["asks"])
        venue_crc = _int(item.get("checksum", 0))
        seq_id = item.get("seqId")
        state = self._books[instrument.venue_id]
        first_push = state.awaiting_first
        state.awaiting_first = False
        if action == "snapshot":
            return self._on_book_snapshot(instrument, state, item, bids, asks, venue_crc, ts_exchange, ts_recv)
        if action != "update":
            raise FrameError(f"unknown books action {action!r}")
        events: list[Event] = []
        if first_push and state.pending is None:
            # The subscription started with an update and no REST snapshot is on its way for this book:
            # OKX no longer sends the WS snapshot. Switch to REST snapshots and make the engine ask for
            # one (for every book whose subscription starts this way, not only the first noticed). The
            # BadFrame's reason must differ from the book's current one or the engine ignores it: after
            # connect that is RESET (disconnect) or none yet, after a resync it is the resync's cause
            # (never RESET).
            self.ws_snapshot_gone = True
            reason = InvalidReason.BAD_FRAME if state.subscribed_by == "connect" else InvalidReason.RESET
            events.append(
                BadFrame(
                    VENUE,
                    "books: no initial snapshot; bootstrapping from REST",
                    instrument.symbol,
                    True,
                    ts_recv,
                    reason,
                )
            )
        if seq_id is not None:
            seq = _int(seq_id)
            prev: int | None = _int(item["prevSeqId"])
            state.has_seq_ids = True
        else:
            # 2022 generation: number the messages ourselves so that the continuity rule links them;
            # the checksum is the integrity check.
            prev = state.last_id
            seq = self._new_id()
        state.last_id = seq
        mismatch = self._mirror_update(state, seq, prev, bids, asks, venue_crc)
        if mismatch is not None:
            events.append(self._checksum_bad(instrument, mismatch, ts_recv))
            return events  # the book is wrong whatever this delta says; the engine resyncs
        events.append(
            BookDelta(
                VENUE,
                instrument.symbol,
                _to_base(bids, instrument),
                _to_base(asks, instrument),
                seq,
                prev,
                ts_exchange,
                ts_recv,
            )
        )
        return events

    def _on_book_snapshot(
        self,
        instrument: Instrument,
        state: _BookState,
        item: Mapping[str, Any],
        bids: list[tuple[str, str, float, float]],
        asks: list[tuple[str, str, float, float]],
        venue_crc: int,
        ts_exchange: int,
        ts_recv: int,
    ) -> list[Event]:
        seq_id = item.get("seqId")
        if seq_id is not None:
            seq = _int(seq_id)
            state.has_seq_ids = True
        else:
            seq = self._new_id()
        state.last_id = seq
        if self.bootstrap == "rest":
            return []  # forced REST bootstrap: OKX's procedure ignores the WS snapshot
        state.pending = None  # a WS snapshot supersedes a REST one still in flight
        mirror = _Mirror(seq)
        self.mirror_trimmed += mirror.apply(bids, asks)
        state.mirror = mirror
        if venue_crc != 0:
            ours = mirror.checksum()
            self.checksums_verified += 1
            if ours != venue_crc:
                state.mirror = None
                return [self._checksum_bad(instrument, (venue_crc, ours), ts_recv)]
        return [
            BookSnapshot(
                VENUE,
                instrument.symbol,
                _to_base(bids, instrument),
                _to_base(asks, instrument),
                seq,
                ts_exchange,
                ts_recv,
            )
        ]

    def _mirror_update(
        self,
        state: _BookState,
        seq: int,
        prev: int | None,
        bids: list[tuple[str, str, float, float]],
        asks: list[tuple[str, str, float, float]],
        venue_crc: int,
    ) -> tuple[int, int] | None:
        """Keep the mirror in step and verify a non-zero checksum; (venue's, ours) on mismatch."""
        mirror = state.mirror
        if mirror is None:
            if state.pending is not None:
                if len(state.pending) == state.pending.maxlen:
                    self.pending_dropped += 1
                state.pending.append((seq, prev, bids, asks, venue_crc))
            return None
        if state.has_seq_ids and mirror.seq is not None and prev != mirror.seq:
            if seq <= mirror.seq:
                return None  # stale: BookSync drops it too
            state.mirror = None  # a gap: BookSync sees it and resyncs; checksums wait for the new book
            return None
        self.mirror_trimmed += mirror.apply(bids, asks)
        mirror.seq = seq
        if venue_crc == 0:
            return None  # 0 = "no checksum" (OKX since 2026-06-23): never a failure
        ours = mirror.checksum()
        self.checksums_verified += 1
        if ours != venue_crc:
            state.mirror = None
            return venue_crc, ours
        return None

    def _checksum_bad(self, instrument: Instrument, crcs: tuple[int, int], ts_recv: int) -> BadFrame:
        self.checksum_mismatches += 1
        reason = f"checksum mismatch {instrument.venue_id}: venue {crcs[0]}, ours {crcs[1]}"
        return BadFrame(VENUE, reason, instrument.symbol, True, ts_recv, InvalidReason.CHECKSUM)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def on_snapshot(self, symbol: str, body: str | bytes, ts_recv: int) -> list[Event]:
        """A REST `/api/v5/market/books` answer. Never raises on bad input."""
        instrument = self._by_symbol.get(symbol)
        if instrument is None:
            return [BadFrame(VENUE, f"snapshot for unknown symbol {symbol!r}"[:200], None, False, ts_recv)]
        state = self._books[instrument.venue_id]
        if state.refused:
            # No update will follow it until the book is subscribed again (its resync does that).
            state.pending = None
            reason = "rest books: snapshot for a book whose subscription was refused"
            return [BadFrame(VENUE, reason, symbol, True, ts_recv, InvalidReason.BAD_FRAME)]
        try:
            doc = orjson.loads(body)
            if not isinstance(doc, dict):
                raise FrameError("not a JSON object")
            if str(doc.get("code")) != "0":
                raise FrameError(f"error answer {doc.get('code')} {doc.get('msg', '')}"[:120])
            data = doc["data"]
            if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
                raise FrameError("data is not a one-item list")
            item = data[0]
            bids = _raw_levels(item["bids"])
            asks = _raw_levels(item["asks"])
            ts_exchange = _int(item["ts"]) * _MS
            seq_raw = item.get("seqId")
            # REST seqId is documented only in the 2026 changelog; its JSON type is UNCONFIRMED (int or str).
            if seq_raw is None or seq_raw == "":
                self.rest_bridgeable = False  # later resyncs use WS snapshots
                raise FrameError("REST snapshot without seqId cannot be placed in the stream")
            seq = _int(seq_raw)
        except (orjson.JSONDecodeError, FrameError, KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            state.pending = None
            return [BadFrame(VENUE, f"rest books: {exc!r}"[:200], symbol, True, ts_recv)]
        self._bring_mirror_up(state, seq, bids, asks)
        return [
            BookSnapshot(
                VENUE, symbol, _to_base(bids, instrument), _to_base(asks, instrument), seq, ts_exchange, ts_recv
            )
        ]

    def _bring_mirror_up(
        self,
        state: _BookState,
        seq: int,
        bids: list[tuple[str, str, float, float]],
        asks: list[tuple[str, str, float, float]],
    ) -> None:
        """Load the REST book into the mirror and replay the deltas that came after it (same bridge as BookSync)."""
        pending = state.pending or deque()
        state.pending = None
        mirror = _Mirror(seq)
        self.mirror_trimmed += mirror.apply(bids, asks)
        first = True
        for d_seq, d_prev, d_bids, d_asks, d_crc in pending:
            if d_seq <= mirror.seq:  # type: ignore[operator]
                continue
            linked = d_prev == mirror.seq or (first and d_prev is not None and d_prev <= seq < d_seq)
            if not linked:
                state.mirror = None  # BookSync will report the same gap
                return
            self.mirror_trimmed += mirror.apply(d_bids, d_asks)
            mirror.seq = d_seq
            first = False
            if d_crc != 0:
                self.checksums_verified += 1
                if mirror.checksum() != d_crc:
                    state.mirror = None  # verified again on the next live message; resync follows then
                    return
        state.mirror = mirror

    # ----------------------------------------------------------------- best quote

    def _on_bbo(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        """`bbo-tbt` -> BestQuote per pushed item (sizes from contracts to base units; an empty list is an empty
        side)."""
        data = message["data"]
        if not isinstance(data, list):
            raise FrameError("bbo-tbt data is not a list")
        events: list[Event] = []
        for item in data:
            bids = _to_base(_raw_levels(item["bids"]), instrument)
            asks = _to_base(_raw_levels(item["asks"]), instrument)
            if len(bids) > 1 or len(asks) > 1:
                raise FrameError("more than one level on the best-quote stream")
            seq_id = item.get("seqId")
            seq = _int(seq_id) if seq_id is not None else None
            bid_px, bid_sz = bids[0] if bids else (None, None)
            ask_px, ask_sz = asks[0] if asks else (None, None)
            ts_exchange = _int(item["ts"]) * _MS
            events.append(
                BestQuote(VENUE, instrument.symbol, bid_px, bid_sz, ask_px, ask_sz, seq, ts_exchange, ts_recv)
            )
        return events

    # ----------------------------------------------------------------- other channels

    def _on_trades(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        events: list[Event] = []
        for fill in message["data"]:
            price = _finite(fill["px"])
            size = _finite(fill["sz"])
            if not (price > 0.0 and size >= 0.0):
                raise FrameError(f"bad trade {fill!r}"[:100])
            side_text = fill["side"]  # the TAKER's side
            side: int  # BUY or SELL
            if side_text == "buy":
                side = BUY
            elif side_text == "sell":
                side = SELL
            else:
                raise FrameError(f"unknown taker side {side_text!r}")
            events.append(
                Trade(
                    VENUE,
                    instrument.symbol,
                    price,
                    instrument.base_size(size, price),
                    side,
                    str(fill["tradeId"]),
                    False,
                    _int(fill["ts"]) * _MS,
                    ts_recv,
                )
            )
        return events

    def _on_open_interest(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        events: list[Event] = []
        for item in message["data"]:
            # oiCcy is in coin, which is the base for linear (BTC-USDT-SWAP: BTC) and inverse (BTC-USD-SWAP:
            # BTC) alike. OKX's figure is taken as one-sided (open contracts, not longs + shorts):
            # UNCONFIRMED in a doc, consistent with its size next to Binance's one-sided figure.
            base = _opt_float(item.get("oiCcy"))
            if base is None:
                contracts = _opt_float(item.get("oi"))
                if contracts is None:
                    raise FrameError("open-interest without oi or oiCcy")
                mark = self._marks.get(instrument.venue_id, 0.0)
                if instrument.kind is ContractKind.INVERSE and mark <= 0.0:
                    continue  # no price yet to convert USD contracts; the next push will have one
                base = instrument.base_size(contracts, mark)
            events.append(OpenInterest(VENUE, instrument.symbol, base, _int(item["ts"]) * _MS, ts_recv))
        return events

    def _on_funding(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        events: list[Event] = []
        for item in message["data"]:
            funding_time = _opt_float(item.get("fundingTime"))
            next_time = _opt_float(item.get("nextFundingTime"))
            # `fundingTime` is the settlement the current rate applies to (the next one to happen);
            # `nextFundingTime` the one after, so their distance is the interval (OKX varies it: 8 h, 4 h,...).
            interval = None
            if funding_time is not None and next_time is not None and next_time > funding_time:
                interval = (next_time - funding_time) / _HOUR_MS
            ts = item.get("ts")
            # `ts` is in the 2025 docs; older pushes lack it (cadence and field set UNCONFIRMED).
            ts_exchange = _int(ts) * _MS if ts not in (None, "") else ts_recv
            events.append(
                FundingRate(
                    VENUE,
                    instrument.symbol,
                    _opt_float(item.get("fundingRate")),
                    interval,
                    None if funding_time is None else int(funding_time) * _MS,
                    None,
                    None,
                    ts_exchange,
                    ts_recv,
                )
            )
        return events

    def _on_mark(self, message: Mapping[str, Any], instrument: Instrument, ts_recv: int) -> list[Event]:
        events: list[Event] = []
        for item in message["data"]:
            mark = _opt_float(item["markPx"])
            if mark is None or mark <= 0.0:
                raise FrameError(f"bad markPx {item.get('markPx')!r}")
            self._marks[instrument.venue_id] = mark
            events.append(
                FundingRate(VENUE, instrument.symbol, None, None, None, mark, None, _int(item["ts"]) * _MS, ts_recv)
            )
        return events

    def _on_index(self, message: Mapping[str, Any], ts_recv: int) -> list[Event]:
        instruments = self._by_index.get(message["arg"].get("instId"))
        if not instruments:
            return []
        events: list[Event] = []
        for item in message["data"]:
            index = _opt_float(item["idxPx"])
            if index is None or index <= 0.0:
                raise FrameError(f"bad idxPx {item.get('idxPx')!r}")
            ts_exchange = _int(item["ts"]) * _MS
            for instrument in instruments:
                events.append(
                    FundingRate(VENUE, instrument.symbol, None, None, None, None, index, ts_exchange, ts_recv)
                )
        return events

    def _on_liquidations(self, message: Mapping[str, Any], ts_recv: int) -> list[Event]:
        events: list[Event] = []
        for item in message["data"]:
            # The instrument is on the OUTER item; details[].instId is absent or null.
            instrument = self.instruments.get(item.get("instId"))
            if instrument is None:
                continue  # the channel carries every SWAP (or FUTURES) liquidation of the venue
            for detail in item["details"]:
                price = _finite(detail["bkPx"])  # bankruptcy price
                if not price > 0.0:
                    raise FrameError(f"bad bkPx {detail.get('bkPx')!r}")
                pos_side = detail.get("posSide")
                order_side = detail.get("side")
                if pos_side in ("long", "short"):
                    liquidated = pos_side
                elif order_side in ("sell", "buy"):
                    # One-way (net) mode: the forced order closes the position, so a sell closes a long.
                    liquidated = "long" if order_side == "sell" else "short"
                else:
                    raise FrameError(f"unknown liquidation side {order_side!r}/{pos_side!r}")
                events.append(
                    Liquidation(
                        VENUE,
                        instrument.symbol,
                        liquidated,
                        price,
                        instrument.base_size(_finite(detail["sz"]), price),
                        _int(detail["ts"]) * _MS,
                        ts_recv,
                    )
                )
        return events


def _op(op: str, args: Sequence[Mapping[str, str]]) -> str:
    return orjson.dumps({"op": op, "args": list(args)}).decode()


# --------------------------------------------------------------------------------------------------
# The adapter


class OkxAdapter:
    """OKX v5: static venue facts and the factories the runtime calls.

    Args:
        bootstrap: "ws" (default) or "rest", passed to every parser (see `OkxParser`).
        instruments_per_connection: books per websocket connection.
        long_short_interval_s: rubik poll period per (instrument, series).
        best_quote: also subscribe `bbo-tbt`, the best-quote stream of the L1 OFI (config venues.<id>.best_quote).
    """

    venue: ClassVar[str] = VENUE
    default_ws_url: ClassVar[str] = DEFAULT_WS_URL
    default_rest_url: ClassVar[str] = DEFAULT_REST_URL
    rest_weight_per_minute: ClassVar[int] = REST_WEIGHT_PER_MINUTE
    sequence_rule: ClassVar[SequenceRule] = staticmethod(okx_books)
    # REST snapshots (resyncs, and every bootstrap once the WS snapshot is gone) need the deltas that
    # arrive while they are in flight; with a WS snapshot the buffered deltas are simply older than it.
    buffer_deltas: ClassVar[bool] = True

    def __init__(
        self,
        bootstrap: Bootstrap = "ws",
        instruments_per_connection: int = MAX_INSTRUMENTS_PER_CONNECTION,
        long_short_interval_s: float = LONG_SHORT_INTERVAL_S,
        best_quote: bool = True,
    ) -> None:
        if instruments_per_connection < 1:
            raise ValueError("instruments_per_connection must be >= 1")
        self.bootstrap: Bootstrap = bootstrap
        self.instruments_per_connection = instruments_per_connection
        self.long_short_interval_s = long_short_interval_s
        self.best_quote = best_quote  # subscribe `bbo-tbt` beside `books` (config venues.<id>.best_quote)

    def connections(
        self, instruments: Sequence[Instrument], ws_url: str, book_depth: int
    ) -> list[tuple[str, OkxParser]]:
        url = public_url(ws_url)
        chunk = self.instruments_per_connection
        return [
            (url, OkxParser(instruments[i : i + chunk], book_depth, self.bootstrap, self.best_quote))
            for i in range(0, len(instruments), chunk)
        ]

    def replay_parser(self, url: str, instruments: Sequence[Instrument]) -> OkxParser | None:
        """Offline, one parser holds every recorded derivative: a recorded connection may carry any."""
        if not url.split("?", 1)[0].rstrip("/").endswith("/ws/v5/public"):
            return None
        return OkxParser(list(instruments), 400, self.bootstrap)

    def polls(self, instruments: Sequence[Instrument]) -> list[PollRequest]:
        """Rubik long/short ratios (5-minute data) for each derivative instrument."""
        requests = []
        for instrument in instruments:
            if not instrument.derivative:
                continue
            for kind, path in LONG_SHORT_ENDPOINTS.items():
                requests.append(
                    PollRequest(
                        key=f"ls:{kind}:{instrument.venue_id}",
                        symbol=instrument.symbol,
                        kind="long_short",
                        path=path,
                        params={"instId": instrument.venue_id, "period": LONG_SHORT_PERIOD, "limit": "2"},
                        weight=RUBIK_WEIGHT,
                        interval_s=self.long_short_interval_s,
                    )
                )
        return requests

    def parse_poll(self, request: PollRequest, body: str | bytes, ts_recv: int) -> list[Event]:
        """The newest `[ts, ratio]` row of a rubik answer -> LongShortRatio. Never raises on bad input."""
        kind = request.key.split(":", 2)[1] if request.key.startswith("ls:") else request.kind
        try:
            doc = orjson.loads(body)
            if not isinstance(doc, dict):
                raise FrameError("not a JSON object")
            if str(doc.get("code")) != "0":
                raise FrameError(f"error answer {doc.get('code')} {doc.get('msg', '')}"[:120])
            rows = doc["data"]
            if not isinstance(rows, list):
                raise FrameError("data is not a list")
            newest: tuple[int, float] | None = None
            for row in rows:
                ts, ratio = _ratio_row(row)
                if newest is None or ts > newest[0]:
                    newest = (ts, ratio)
        except (orjson.JSONDecodeError, FrameError, KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
            return [BadFrame(VENUE, f"{request.path}: {exc!r}"[:200], request.symbol, False, ts_recv)]
        if newest is None:
            return []  # no bucket yet (a new listing)
        return [LongShortRatio(VENUE, request.symbol, kind, newest[1], newest[0] * _MS, ts_recv)]


def _ratio_row(row: Any) -> tuple[int, float]:
    """`["1786412700000", "1.66"]` as documented; an object row (`ts` + `*Ratio`) is accepted defensively."""
    if isinstance(row, list) and len(row) >= 2:
        ts, value = row[0], row[1]
    elif isinstance(row, dict):
        ts = row["ts"]
        value = next(v for k, v in row.items() if k.endswith("Ratio"))
    else:
        raise FrameError(f"bad row {row!r}"[:100])
    ratio = float(value)
    if not (0.0 <= ratio < math.inf):
        raise FrameError(f"bad ratio {value!r}")
    return _int(ts), ratio
