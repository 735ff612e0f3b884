"""Hyperliquid venue simulator: replays a recording over Hyperliquid's websocket and `POST /info` protocol.

Sits in `service/replay` beside the Bybit simulator (`simulator.py`), whose model, API and fault
injection it mirrors; `flowgauge simulate` and the offline demo run it, and the daemon reaches it only
through configured base URLs (ws://host:port/ws, http://host:port). It must not import the daemon's
parsers, books or metrics: it is the independent ground truth the daemon is tested against. It binds
loopback by default and never opens an outbound connection.

Protocol served (the venue's current one, exchanges.md §5):
* websocket `/ws`: greets with the text "Websocket connection established."; `{"method":"ping"}` ->
  `{"channel":"pong"}`; `{"method":"subscribe"|"unsubscribe","subscription":{"type":T,"coin":C}}` with
  T in `l2Book` (full precision only: no nSigFigs/mantissa), `trades`, `activeAssetCtx`, acked on channel
  `subscriptionResponse` with the subscription echoed; problems answered on channel `error` (the
  venue's exact error texts are UNCONFIRMED; ours say what went wrong).
* `POST /info` with a JSON body: `meta`, `metaAndAssetCtxs`, `spotMeta`, `spotMetaAndAssetCtxs`,
  `perpDexs`, `allMids`, `l2Book`. ccxt's `load_markets` for hyperliquid posts `spotMeta` then
  `metaAndAssetCtxs` (with `fetchMarkets.types = ["swap"]`; ccxt's default also posts `perpDexs` for HIP-3,
  answered with no builder dexes).

Model. One market (the venue has one websocket URL) plays the recorded frames in receive-time order,
paced by the recorded gaps divided by `speed` (0 = as fast as the subscribed clients read). Every client
sees the same frames; a client only receives what it subscribed. `l2Book` pushes are full snapshots, so
the market keeps the last one per coin and sends it at once to a new subscriber (as the venue does); a
new `trades` subscriber first gets the most recent trades in one message (the venue does this too: the
recording's first trades message is such a batch, 49 s old, so it seeds that state instead of being
played). The market pauses while nobody is subscribed to anything.

Instruments. The recording's coins are served as recorded. The daemon's default configuration also wants
ETH (and BTC): a wanted coin the recording lacks is driven from a recorded coin's stream RELABELLED:
prices mapped tick-for-tick onto the target's tick around a plausible price (ETH ~3,300 with tick 0.1,
BTC ~100,000 with tick 1), sizes scaled by the price ratio and rounded to the target's size decimals,
trade hashes rewritten. Metadata (`meta.universe`) lists BTC (asset 0, szDecimals 5) and ETH (asset 1,
szDecimals 4), then any other recorded coin.

Asset contexts are SYNTHESISED (the 2025-01 recording has none): every `ctx_every_s` of recorded time
per coin, from the current book: `markPx`/`midPx` = mid, `impactPxs` = best bid/ask, `oraclePx` = mark
less a slowly drifting premium, `funding` = hourly rate from that premium (the venue's 8-hour formula
divided by 8, so ~0.0000125 when calm), `openInterest` (coin) moved by at most the volume traded since the
previous context (|dOI| <= V, one-sided consistent). `metaAndAssetCtxs` answers from the same state.

Timestamps and ids. Exchange times (`l2Book.time`, trade `time`) are shifted by one constant per loop so
the replay looks live (the frame with the smallest recorded latency is stamped "now" at speed 1). When the
recording ends the market loops: trade ids are shifted by a per-loop offset larger than their recorded
span and trade hashes rewritten, so nothing repeats.

Faults. `gap_every=N` withholds every N-th `l2Book` push of each coin from all clients (the market's own
book still moves: the next push is a full snapshot, so a client cannot detect the loss from sequence
numbers; there are none). `garbage_every=N` sends each client a malformed frame after every N data frames
it received, cycling through a non-JSON binary frame, a well-formed `l2Book` frame with wrongly typed
fields, and a truncated copy of the last frame.

Bounds. Each client has one bounded outbound queue drained by one writer task. At speed > 0 a client whose
queue is full is disconnected (close 1008, counted in `slow_disconnects`); at speed 0 the market waits up
to `slow_client_timeout` for room and then disconnects it. Replies to the client's own requests may use a
small extra headroom; a client that floods requests without reading is disconnected the same way. A
client holds at most `MAX_SUBSCRIPTIONS_PER_CLIENT` subscriptions.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import itertools
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from service.replay.recording import Connect, Recv, iter_records

__all__ = ["DEFAULT_PORT", "HyperliquidSimulator", "run_simulator"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9784
WS_PATH = "/ws"
INFO_PATH = "/info"
GREETING = "Websocket connection established."
CHANNELS = ("l2Book", "trades", "activeAssetCtx")
RECENT_TRADES = 30  # trades sent to a new `trades` subscriber (the recording's own batch held 30)
MAX_SUBSCRIPTIONS_PER_CLIENT = 1000  # the venue's per-IP subscription cap, applied per connection here
DEFAULT_CTX_EVERY_S = 3.0
_YIELD_EVERY = 256
_CLOSE_TIMEOUT_S = 1.0
_GARBAGE_KINDS = ("non_json", "bad_types", "truncated")
_MAX_REQUEST_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class _CoinSpec:
    """What the simulator serves for a coin it may have to synthesise."""

    ref_price: Decimal  # plausible price level for a relabelled stream
    tick: Decimal  # price tick at that level (5 significant figures)
    sz_decimals: int
    max_leverage: int
    open_interest: Decimal  # starting open interest, coin units (plausible for 2025-01; synthetic)


# BTC asset 0 and ETH asset 1, as on the venue. Open interest levels are plausible, not recorded: ccxt's
# fetchOpenInterest demo (ccxt PR #24577, 2024-12) shows BTC at ~9,942 coin.
_KNOWN_COINS: dict[str, _CoinSpec] = {
    "BTC": _CoinSpec(Decimal(100000), Decimal(1), 5, 50, Decimal(10000)),
    "ETH": _CoinSpec(Decimal(3300), Decimal("0.1"), 4, 50, Decimal(250000)),
}
WANTED_COINS = ("BTC", "ETH")  # served whether recorded or not (the daemon's default configuration)


# --------------------------------------------------------------------------------------------------
# Decimal formatting in the venue's style


def _fmt(value: Decimal) -> str:
    """The venue's number strings: plain notation, trailing zeros dropped, integers as "105055.0"."""
    text = format(value.normalize(), "f")
    if "." not in text:
        text += ".0"
    return text


def _round_px(value: Decimal, sz_decimals: int) -> Decimal:
    """Round to the venue's perp price rule: 5 significant figures (integers always allowed) and at most
    `6 - szDecimals` decimals."""
    if value <= 0:
        return Decimal(0)
    digits_before = value.adjusted() + 1
    decimals = max(0, min(6 - sz_decimals, 5 - digits_before))
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)


# --------------------------------------------------------------------------------------------------
# The recording, prepared for serving


@dataclass(slots=True)
class _Frame:
    ts: float  # recorded receive time, unix seconds (drives pacing)
    channel: str  # "l2Book" | "trades"
    coin: str  # source coin
    data: Any  # decoded `data` (copied before rewriting)


@dataclass(slots=True)
class _Tape:
    frames: list[_Frame] = field(default_factory=list)
    seed_trades: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # source coin -> batch
    first_books: dict[str, dict[str, Any]] = field(default_factory=dict)  # source coin -> first book data
    sz_decimals: dict[str, int] = field(default_factory=dict)  # recorded coin -> decimals seen in sizes
    ts_span_ms: int = 1
    tid_span: int = 1
    latency_ms: int = 0


def _load(path: Path) -> _Tape:
    """Read a recording into one tape (blocking; run in a thread). Only `/ws` connections are played."""
    addr_of: dict[str, str] = {}
    recvs: list[Recv] = []
    for rec in iter_records(path):
        if isinstance(rec, Connect):
            addr_of[rec.conn] = rec.addr
        elif isinstance(rec, Recv):
            recvs.append(rec)
    recvs.sort(key=lambda r: r.ts)  # stable: one connection's frames keep their order on equal times
    tape = _Tape()
    seeded: set[tuple[str, str]] = set()  # (conn, coin) whose subscription batch was seen
    times: list[int] = []
    tids: list[int] = []
    latency: int | None = None
    for rec in recvs:
        if not addr_of.get(rec.conn, "").rstrip("/").endswith(WS_PATH):
            continue
        try:
            msg = orjson.loads(rec.data)
        except orjson.JSONDecodeError:
            continue  # e.g. the venue's text greeting
        if not isinstance(msg, dict):
            continue
        channel, data = msg.get("channel"), msg.get("data")
        if channel == "l2Book" and isinstance(data, dict) and isinstance(data.get("coin"), str):
            coin = data["coin"]
            tape.first_books.setdefault(coin, data)
            tape.frames.append(_Frame(rec.ts, channel, coin, data))
            if _is_int(data.get("time")):
                times.append(data["time"])
                lat = round(rec.ts * 1000) - data["time"]
                latency = lat if latency is None else min(latency, lat)
            _note_sz_decimals(tape, coin, data.get("levels"))
        elif channel == "trades" and isinstance(data, list) and data and isinstance(data[0], dict):
            coin = data[0].get("coin")
            if not isinstance(coin, str):
                continue
            for trade in data:
                if isinstance(trade, dict):
                    if _is_int(trade.get("time")):
                        times.append(trade["time"])
                    if _is_int(trade.get("tid")):
                        tids.append(trade["tid"])
            if (rec.conn, coin) not in seeded:
                # The first trades message after subscribing is the venue's batch of recent trades.
                seeded.add((rec.conn, coin))
                tape.seed_trades.setdefault(coin, data[-RECENT_TRADES:])
                continue
            tape.frames.append(_Frame(rec.ts, channel, coin, data))
        # acks, pongs and anything else are answered live, not replayed
    tape.ts_span_ms = (max(times) - min(times) + 1) if times else 1
    tape.tid_span = (max(tids) - min(tids) + 1) if tids else 1
    tape.latency_ms = latency or 0
    return tape


def _note_sz_decimals(tape: _Tape, coin: str, levels: Any) -> None:
    if not isinstance(levels, list):
        return
    best = tape.sz_decimals.get(coin, 0)
    for side in levels:
        for level in side if isinstance(side, list) else ():
            size = level.get("sz") if isinstance(level, dict) else None
            if isinstance(size, str) and "." in size:
                best = max(best, len(size.split(".", 1)[1].rstrip("0")))
    tape.sz_decimals[coin] = best


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------------
# Served coins: recorded ones as they are, missing wanted ones relabelled from a recorded one


@dataclass(frozen=True, slots=True)
class _Served:
    coin: str
    source: str  # recorded coin whose stream drives this one
    sz_decimals: int
    max_leverage: int
    open_interest: Decimal
    # Relabelling (identity for a recorded coin): price' = price * scale + offset; size' = size * size_scale.
    scale: Decimal = Decimal(1)
    offset: Decimal = Decimal(0)
    tick: Decimal | None = None  # quantum of relabelled prices
    size_scale: Decimal = Decimal(1)

    @property
    def relabelled(self) -> bool:
        return self.coin != self.source

    def px(self, text: str) -> str:
        if not self.relabelled:
            return text
        assert self.tick is not None
        return _fmt((Decimal(text) * self.scale + self.offset).quantize(self.tick))

    def sz(self, text: str) -> str:
        if not self.relabelled:
            return text
        quantum = Decimal(1).scaleb(-self.sz_decimals)
        return _fmt(max(quantum, (Decimal(text) * self.size_scale).quantize(quantum)))


def _mid_and_tick(book: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """Mid price and price step of a recorded book (smallest gap between adjacent levels)."""
    bids = [Decimal(level["px"]) for level in book["levels"][0]]
    asks = [Decimal(level["px"]) for level in book["levels"][1]]
    mid = (bids[0] + asks[0]) / 2
    prices = sorted(set(bids + asks))
    gaps = [b - a for a, b in itertools.pairwise(prices) if b > a]
    return mid, (min(gaps) if gaps else Decimal(1))


def _plan_coins(tape: _Tape) -> list[_Served]:
    recorded = list(tape.first_books)
    served: list[_Served] = []
    for coin in recorded:
        spec = _KNOWN_COINS.get(coin)
        decimals = spec.sz_decimals if spec else tape.sz_decimals.get(coin, 4)
        served.append(
            _Served(
                coin,
                coin,
                decimals,
                spec.max_leverage if spec else 20,
                spec.open_interest if spec else Decimal(1000),
            )
        )
    if recorded:
        source = "BTC" if "BTC" in recorded else recorded[0]
        src_mid, src_tick = _mid_and_tick(tape.first_books[source])
        for coin in WANTED_COINS:
            if coin in recorded:
                continue
            spec = _KNOWN_COINS[coin]
            scale = spec.tick / src_tick  # one source tick becomes one target tick
            offset = (spec.ref_price - src_mid * scale).quantize(spec.tick)
            size_scale = max(Decimal("0.001"), (src_mid / spec.ref_price).quantize(Decimal("0.001")))
            served.append(
                _Served(
                    coin,
                    source,
                    spec.sz_decimals,
                    spec.max_leverage,
                    spec.open_interest,
                    scale,
                    offset,
                    spec.tick,
                    size_scale,
                )
            )
    # The venue's asset order: BTC 0, ETH 1, then the rest as recorded.
    order = {coin: i for i, coin in enumerate(WANTED_COINS)}
    served.sort(key=lambda s: order.get(s.coin, len(order)))
    return served


# --------------------------------------------------------------------------------------------------
# Per-coin market state


@dataclass(frozen=True, slots=True)
class _Shift:
    loop: int
    ts_ms: int  # added to exchange times
    tid: int  # added to trade ids


class _CoinState:
    """One served coin: its last book, recent trades and synthesised asset context."""

    def __init__(self, spec: _Served) -> None:
        self.spec = spec
        self.book: dict[str, Any] | None = None  # last `l2Book` data (rewritten)
        self.trades: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_TRADES)
        self.book_pushes = 0
        # asset context
        self.ctx: dict[str, Any] | None = None
        self.ctx_count = 0
        self.last_ctx_ts: float | None = None  # recorded time of the last context
        self.open_interest = spec.open_interest
        self.volume_since_ctx = Decimal(0)
        self.day_base = Decimal(0)
        self.day_ntl = Decimal(0)
        self.prev_day_px: Decimal | None = None

    def book_frame(self, data: dict[str, Any], shift: _Shift) -> dict[str, Any]:
        spec = self.spec
        levels = [
            [{"px": spec.px(level["px"]), "sz": spec.sz(level["sz"]), "n": level["n"]} for level in side]
            for side in data["levels"]
        ]
        out = {"coin": spec.coin, "time": data["time"] + shift.ts_ms, "levels": levels}
        self.book = out
        return out

    def trade_frame(self, data: list[dict[str, Any]], shift: _Shift) -> list[dict[str, Any]]:
        spec = self.spec
        out = []
        for trade in data:
            item = dict(trade)
            item["coin"] = spec.coin
            item["px"] = spec.px(trade["px"])
            item["sz"] = spec.sz(trade["sz"])
            item["time"] = trade["time"] + shift.ts_ms
            if _is_int(trade.get("tid")):
                item["tid"] = trade["tid"] + shift.tid
            if (shift.loop or spec.relabelled) and isinstance(trade.get("hash"), str):
                # A looped or relabelled print is a different transaction: it must not repeat a hash.
                seed = f"{trade['hash']}|{spec.coin}|{shift.loop}".encode()
                item["hash"] = "0x" + hashlib.sha256(seed).hexdigest()
            out.append(item)
            size = Decimal(item["sz"])
            self.volume_since_ctx += size
            self.day_base += size
            self.day_ntl += size * Decimal(item["px"])
        self.trades.extend(out)
        return out

    def synth_ctx(self) -> dict[str, Any] | None:
        """A new asset context from the current book; None before the first book."""
        book = self.book
        if book is None or not book["levels"][0] or not book["levels"][1]:
            return None
        spec = self.spec
        bid = Decimal(book["levels"][0][0]["px"])
        ask = Decimal(book["levels"][1][0]["px"])
        mid = (bid + ask) / 2
        n = self.ctx_count
        self.ctx_count += 1
        # Deterministic, bounded drifts: the premium wanders within +-6 bp, open interest moves by a share
        # of the volume traded since the last context in (-0.6, 0.6), so |dOI| <= V always holds.
        premium = Decimal(str(round(0.0002 + 0.0004 * math.sin(n / 5.0), 8)))
        opening = Decimal(str(round(0.6 * math.sin(1.7 * n + 0.3), 4)))
        quantum = Decimal(1).scaleb(-spec.sz_decimals)
        delta = (self.volume_since_ctx * opening).quantize(quantum)
        self.open_interest = max(Decimal(0), self.open_interest + delta)
        self.volume_since_ctx = Decimal(0)
        mark = _round_px(mid, spec.sz_decimals)
        oracle = _round_px(mid / (1 + premium), spec.sz_decimals)
        if self.prev_day_px is None:
            self.prev_day_px = _round_px(mid * Decimal("0.99"), spec.sz_decimals)
        # The venue's 8-hour funding formula (premium + clamp(interest - premium, +-0.05%)) paid hourly.
        interest = Decimal("0.0001")
        clamp = max(Decimal("-0.0005"), min(Decimal("0.0005"), interest - premium))
        funding = ((premium + clamp) / 8).quantize(Decimal("0.00000001"))
        self.ctx = {
            "funding": _fmt(funding),
            "openInterest": _fmt(self.open_interest.quantize(quantum)),
            "prevDayPx": _fmt(self.prev_day_px),
            "dayNtlVlm": _fmt(self.day_ntl.quantize(Decimal("0.00000001"))),
            "premium": _fmt(premium),
            "oraclePx": _fmt(oracle),
            "markPx": _fmt(mark),
            "midPx": _fmt(mid),
            "impactPxs": [_fmt(bid), _fmt(ask)],
            "dayBaseVlm": _fmt(self.day_base.quantize(quantum)),
        }
        return self.ctx

    def current_ctx(self) -> dict[str, Any] | None:
        return self.ctx if self.ctx is not None else self.synth_ctx()


# --------------------------------------------------------------------------------------------------
# Clients


def _key(channel: str, coin: str) -> str:
    return f"{channel}:{coin}"


class _Client:
    """One websocket client: its subscriptions and its bounded outbound queue, drained by `run_writer`."""

    def __init__(self, sim: HyperliquidSimulator, ws: web.WebSocketResponse) -> None:
        self.sim = sim
        self.ws = ws
        self.keys: set[str] = set()
        self.kicked: str | None = None
        self.data_sent = 0
        self.writer_task: asyncio.Task[None] | None = None
        self._queue: collections.deque[tuple[str, str | None]] = collections.deque()  # (text, key or None)
        self._items = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._last_text = ""
        self._last_key = ""
        self._garbage_turn = 0

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.sim.client_queue

    def offer(self, text: str, key: str | None, *, reply: bool = False) -> bool:
        """Queue one frame without waiting; False if there is no room (the caller then disconnects us)."""
        limit = self.sim.client_queue + (self.sim.reply_headroom if reply else 0)
        if self.kicked is not None or len(self._queue) >= limit:
            return False
        self._queue.append((text, key))
        self._items.set()
        if self.full:
            self._room.clear()
        return True

    async def wait_room(self, patience: float) -> bool:
        try:
            async with asyncio.timeout(patience):
                await self._room.wait()
        except TimeoutError:
            return False
        return self.kicked is None

    def kick(self, reason: str) -> None:
        if self.kicked is not None:
            return
        self.kicked = reason
        self._queue.clear()
        self._room.set()
        if self.writer_task is not None:
            self.writer_task.cancel()

    async def run_writer(self) -> None:
        queue = self._queue
        try:
            while True:
                while not queue:
                    self._items.clear()
                    await self._items.wait()
                text, key = queue.popleft()
                if not self.full:
                    self._room.set()
                await self.ws.send_str(text)
                if key is None:
                    continue
                self.data_sent += 1
                self.sim.frames_sent += 1
                self._last_text, self._last_key = text, key
                every = self.sim.garbage_every
                if every and self.data_sent % every == 0:
                    await self._send_garbage()
        except ConnectionError:
            return

    async def _send_garbage(self) -> None:
        kind = _GARBAGE_KINDS[self._garbage_turn % len(_GARBAGE_KINDS)]
        self._garbage_turn += 1
        if kind == "non_json":
            # The venue only sends text: a binary frame of invalid UTF-8 is as wrong as it gets.
            await self.ws.send_bytes(b"\x00\xff\xfe<garbage \x80\x81 not json>")
        elif kind == "bad_types":
            await self.ws.send_str(orjson.dumps(self._bad_book()).decode())
        else:
            last = self._last_text or '{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[{"px"'
            await self.ws.send_str(last[: max(1, len(last) // 2)])
        self.sim.garbage_sent += 1
        self.sim.garbage_by_kind[kind] += 1

    def _bad_book(self) -> dict[str, Any]:
        books = sorted(k for k in self.keys if k.startswith("l2Book:"))
        if self._last_key.startswith("l2Book:"):
            books = [self._last_key]
        coin = books[0].partition(":")[2] if books else "BTC"
        return {"channel": "l2Book", "data": {"coin": coin, "time": "NaN", "levels": "not-a-list"}}


# --------------------------------------------------------------------------------------------------
# The market


class _Market:
    """The shared replay: subscribers, per-coin state, and the player."""

    def __init__(self, sim: HyperliquidSimulator, tape: _Tape, served: list[_Served]) -> None:
        self.sim = sim
        self.tape = tape
        self.coins: dict[str, _CoinState] = {s.coin: _CoinState(s) for s in served}
        self.by_source: dict[str, list[_CoinState]] = collections.defaultdict(list)
        for state in self.coins.values():
            self.by_source[state.spec.source].append(state)
        self.subscribers: dict[str, set[_Client]] = collections.defaultdict(set)
        self.loops_completed = 0
        self._active = asyncio.Event()
        self._shift: _Shift | None = None  # the shift frames are being played with
        first = tape.frames[0].ts if tape.frames else time.time()
        self._first_ts = first

    # -- time shift -------------------------------------------------------------------------------

    def _live_shift_ms(self) -> int:
        return time.time_ns() // 1_000_000 - round(self._first_ts * 1000) + self.tape.latency_ms

    def shift_now(self) -> _Shift:
        """The shift in force, or the one the player would start with now (before anything played)."""
        return self._shift if self._shift is not None else _Shift(0, self._live_shift_ms(), 0)

    # -- subscriptions (synchronous: the snapshot and the pushes after it are queued without a gap) --

    def subscribe(self, client: _Client, channel: str, coin: str) -> None:
        key = _key(channel, coin)
        client.keys.add(key)
        self.subscribers[key].add(client)
        self._active.set()
        state = self.state(coin)
        data: Any = None
        if channel == "l2Book":
            data = state.book
        elif channel == "trades":
            data = list(state.trades) or self._seed_trades(state)
        elif channel == "activeAssetCtx":
            ctx = state.current_ctx()
            data = None if ctx is None else {"coin": coin, "ctx": ctx}
        if data is not None and not client.offer(_frame(channel, data), key, reply=True):
            self.sim.kick(client, "slow")

    def state(self, coin: str) -> _CoinState:
        """A coin's state; before anything was played its book is the recording's first (as of now), so a
        subscriber or `/info` caller gets the venue's immediate snapshot and ccxt sees a real mark price."""
        state = self.coins[coin]
        if self._shift is None:
            first = self.tape.first_books.get(state.spec.source)
            if first is not None:
                state.book_frame(first, self.shift_now())
        return state

    def _seed_trades(self, state: _CoinState) -> list[dict[str, Any]] | None:
        seed = self.tape.seed_trades.get(state.spec.source)
        if not seed:
            return None
        shift = self.shift_now()
        # Rewritten like a played frame, without counting as traded volume or entering the state twice.
        saved = (state.volume_since_ctx, state.day_base, state.day_ntl)
        batch = state.trade_frame(seed, shift)
        state.volume_since_ctx, state.day_base, state.day_ntl = saved
        return batch

    def unsubscribe(self, client: _Client, key: str) -> None:
        client.keys.discard(key)
        subs = self.subscribers.get(key)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self.subscribers[key]
        if not self.subscribers:
            self._active.clear()

    def drop(self, client: _Client) -> None:
        for key in list(client.keys):
            self.unsubscribe(client, key)

    # -- the player ---------------------------------------------------------------------------------

    async def run(self) -> None:
        frames = self.tape.frames
        if not frames:
            return
        sim = self.sim
        first_ts = frames[0].ts
        ts_shift: int | None = None
        loop = 0
        while True:
            await self._active.wait()
            live = self._live_shift_ms()
            ts_shift = live if ts_shift is None else max(live, ts_shift + self.tape.ts_span_ms)
            base = time.monotonic()
            for n, frame in enumerate(frames):
                if not self._active.is_set():
                    paused = time.monotonic()
                    await self._active.wait()
                    idle = time.monotonic() - paused
                    base += idle  # resume where we were, not with a burst
                    ts_shift += round(idle * 1000)
                if sim.speed > 0:
                    delay = base + (frame.ts - first_ts) / sim.speed - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif n % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                else:
                    if n % _YIELD_EVERY == 0:
                        await asyncio.sleep(0)
                    await self._wait_for_room(frame)
                self._shift = _Shift(loop, ts_shift, loop * self.tape.tid_span)
                self._play(frame, self._shift)
            loop += 1
            self.loops_completed += 1
            if not sim.loop:
                return

    async def _wait_for_room(self, frame: _Frame) -> None:
        """Speed 0: let every subscriber this frame goes to drain before it is played (bounded wait)."""
        # A book frame may also bring an asset context: its subscribers must have room too.
        channels = (frame.channel, "activeAssetCtx") if frame.channel == "l2Book" else (frame.channel,)
        keys = [_key(c, s.spec.coin) for s in self.by_source.get(frame.coin, ()) for c in channels]
        while True:
            full = {c for key in keys for c in self.subscribers.get(key, ()) if c.full}
            if not full:
                return
            for client in full:
                if not await client.wait_room(self.sim.slow_client_timeout):
                    self.sim.kick(client, "slow")

    def _play(self, frame: _Frame, shift: _Shift) -> None:
        sim = self.sim
        for state in self.by_source.get(frame.coin, ()):
            coin = state.spec.coin
            if frame.channel == "l2Book":
                data = state.book_frame(frame.data, shift)
                state.book_pushes += 1
                deliver = not (sim.gap_every and state.book_pushes % sim.gap_every == 0)
                if not deliver:
                    sim.gaps_injected += 1  # the market's book moved; no client sees this push
                else:
                    self._send("l2Book", coin, data)
                if state.last_ctx_ts is None or frame.ts - state.last_ctx_ts >= sim.ctx_every_s:
                    ctx = state.synth_ctx()
                    if ctx is not None:
                        state.last_ctx_ts = frame.ts
                        sim.ctx_sent += 1
                        self._send("activeAssetCtx", coin, {"coin": coin, "ctx": ctx})
            else:
                self._send("trades", coin, state.trade_frame(frame.data, shift))

    def _send(self, channel: str, coin: str, data: Any) -> None:
        key = _key(channel, coin)
        subs = self.subscribers.get(key)
        if not subs:
            return
        text = _frame(channel, data)
        for client in list(subs):
            if not client.offer(text, key):
                self.sim.kick(client, "slow")


def _frame(channel: str, data: Any) -> str:
    return orjson.dumps({"channel": channel, "data": data}).decode()


# --------------------------------------------------------------------------------------------------
# The server


class HyperliquidSimulator:
    """Serve a recording as Hyperliquid on one loopback port (`POST /info` and the `/ws` websocket).

    Use as `async with HyperliquidSimulator(path, port=0) as sim:` and connect to `sim.ws_url` and
    `sim.http_url`. Counters (`frames_sent`, `gaps_injected`, `garbage_sent`, `garbage_by_kind`, `ctx_sent`,
    `slow_disconnects`, `bad_requests`, `loops_completed`) let tests assert what was served and injected.
    """

    def __init__(
        self,
        recording_path: str | os.PathLike[str],
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        speed: float = 1.0,
        loop: bool = True,
        garbage_every: int | None = None,
        gap_every: int | None = None,
        *,
        client_queue: int = 4096,
        reply_headroom: int = 256,
        slow_client_timeout: float = 10.0,
        ctx_every_s: float = DEFAULT_CTX_EVERY_S,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        for name, value in (("garbage_every", garbage_every), ("gap_every", gap_every)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        if client_queue < 1 or reply_headroom < 1:
            raise ValueError("client_queue and reply_headroom must be >= 1")
        if ctx_every_s < 0:
            raise ValueError("ctx_every_s must be >= 0")
        self.recording_path = Path(recording_path)
        self.host = host
        self.port = port
        self.speed = speed
        self.loop = loop
        self.garbage_every = garbage_every
        self.gap_every = gap_every
        self.client_queue = client_queue
        self.reply_headroom = reply_headroom
        self.slow_client_timeout = slow_client_timeout
        self.ctx_every_s = ctx_every_s
        # counters
        self.frames_sent = 0  # data frames written to clients (subscription snapshots included, garbage not)
        self.gaps_injected = 0
        self.garbage_sent = 0
        self.garbage_by_kind: collections.Counter[str] = collections.Counter()
        self.ctx_sent = 0  # asset contexts synthesised by the player
        self.slow_disconnects = 0
        self.bad_requests = 0  # client frames / REST bodies answered with an error
        self.connections_total = 0
        self.market: _Market | None = None
        self._clients: set[_Client] = set()
        self._no_clients = asyncio.Event()
        self._no_clients.set()
        self._runner: web.AppRunner | None = None
        self._sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failed: asyncio.Future[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def bound_port(self) -> int:
        if self._sock is None:
            raise RuntimeError("simulator not started")
        return int(self._sock.getsockname()[1])

    @property
    def http_url(self) -> str:
        return f"http://{self._url_host()}:{self.bound_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self._url_host()}:{self.bound_port}{WS_PATH}"

    @property
    def coins(self) -> list[str]:
        """Served coins in asset-index order."""
        return list(self.market.coins) if self.market is not None else []

    @property
    def loops_completed(self) -> int:
        return self.market.loops_completed if self.market is not None else 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        tape = await asyncio.to_thread(_load, self.recording_path)
        self.market = _Market(self, tape, _plan_coins(tape))
        self._failed = asyncio.get_running_loop().create_future()
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        app.router.add_post(INFO_PATH, self._info)
        app.router.add_get(WS_PATH, self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=_CLOSE_TIMEOUT_S)
        await runner.setup()
        self._runner = runner
        try:
            self._sock = _listen(self.host, self.port)
            await web.SockSite(runner, self._sock).start()
        except BaseException:
            await self.close()
            raise
        task = asyncio.create_task(self.market.run(), name="simulator-market:hyperliquid")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        log.info(
            "simulator_started",
            extra={
                "fields": {
                    "venue": "hyperliquid",
                    "host": self.host,
                    "port": self.bound_port,
                    "speed": self.speed,
                    "frames": len(tape.frames),
                    "coins": self.coins,
                }
            },
        )

    async def close(self) -> None:
        for client in list(self._clients):
            self.kick(client, "shutdown")
        try:
            async with asyncio.timeout(2 * _CLOSE_TIMEOUT_S):
                await self._no_clients.wait()
        except TimeoutError:
            log.warning("simulator_close_timeout", extra={"fields": {"clients": len(self._clients)}})
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if self._sock is not None:
            self._sock.close()
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(None)

    async def wait(self) -> None:
        """Return once the simulator is closed; raise if the player crashed (that is a bug)."""
        if self._failed is None:
            raise RuntimeError("simulator not started")
        await asyncio.shield(self._failed)

    async def __aenter__(self) -> HyperliquidSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def kick(self, client: _Client, reason: str) -> None:
        if client.kicked is None and reason == "slow":
            self.slow_disconnects += 1
            log.warning("simulator_slow_client", extra={"fields": {"venue": "hyperliquid"}})
        client.kick(reason)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("simulator_market_failed", extra={"fields": {"task": task.get_name()}}, exc_info=exc)
            if self._failed is not None and not self._failed.done():
                self._failed.set_exception(exc)

    def _url_host(self) -> str:
        return f"[{self.host}]" if ":" in self.host else self.host

    # -- REST: POST /info ----------------------------------------------------------------------------

    async def _info(self, request: web.Request) -> web.Response:
        assert self.market is not None
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            body = None
        kind = body.get("type") if isinstance(body, dict) else None
        market = self.market
        if kind == "meta":
            return _json(self._meta())
        if kind == "metaAndAssetCtxs":
            ctxs = [market.state(coin).current_ctx() or _empty_ctx() for coin in market.coins]
            return _json([self._meta(), ctxs])
        if kind == "spotMeta":
            return _json({"universe": [], "tokens": []})
        if kind == "spotMetaAndAssetCtxs":
            return _json([{"universe": [], "tokens": []}, []])
        if kind == "perpDexs":
            return _json([None])  # the first entry is the main dex; no builder-deployed (HIP-3) dexes here
        if kind == "allMids":
            mids = {}
            for coin in market.coins:
                book = market.state(coin).book
                if book is not None and book["levels"][0] and book["levels"][1]:
                    mid = (Decimal(book["levels"][0][0]["px"]) + Decimal(book["levels"][1][0]["px"])) / 2
                    mids[coin] = _fmt(mid)
            return _json(mids)
        if kind == "l2Book":
            assert isinstance(body, dict)
            coin = body.get("coin")
            if body.get("nSigFigs") is not None or body.get("mantissa") is not None:
                self.bad_requests += 1
                return _text("this simulator serves full-precision books only (nSigFigs null)", 422)
            return _json(market.state(coin).book if coin in market.coins else None)
        self.bad_requests += 1
        return _text("Failed to deserialize the JSON body into the target type", 422)

    def _meta(self) -> dict[str, Any]:
        assert self.market is not None
        universe = [
            {"szDecimals": s.spec.sz_decimals, "name": s.spec.coin, "maxLeverage": s.spec.max_leverage}
            for s in self.market.coins.values()
        ]
        return {"universe": universe}

    async def _not_found(self, request: web.Request) -> web.Response:
        if request.path == INFO_PATH:
            return _text("Method Not Allowed", 405)
        return _text(f"Not Found: {request.path}", 404)

    # -- websocket -----------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        market = self.market
        assert market is not None
        ws = web.WebSocketResponse(
            autoping=True,
            heartbeat=None,
            compress=False,
            max_msg_size=_MAX_REQUEST_BYTES,
            timeout=_CLOSE_TIMEOUT_S,
        )
        await ws.prepare(request)
        client = _Client(self, ws)
        self._clients.add(client)
        self._no_clients.clear()
        self.connections_total += 1
        client.offer(GREETING, None, reply=True)
        reader = asyncio.create_task(self._read_loop(client, market), name="simulator-read:hyperliquid")
        writer = asyncio.create_task(client.run_writer(), name="simulator-write:hyperliquid")
        client.writer_task = writer
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            try:
                market.drop(client)
                reader.cancel()
                writer.cancel()
                await asyncio.wait({reader, writer})
                for task in (reader, writer):
                    if not task.cancelled() and task.exception() is not None:
                        log.error("simulator_client_failed", exc_info=task.exception())
                await self._close_ws(ws, request, client.kicked)
            finally:
                self._clients.discard(client)
                if not self._clients:
                    self._no_clients.set()
        return ws

    @staticmethod
    async def _close_ws(ws: web.WebSocketResponse, request: web.Request, kicked: str | None) -> None:
        code, message = {
            "slow": (WSCloseCode.POLICY_VIOLATION, b"slow consumer"),
            "shutdown": (WSCloseCode.GOING_AWAY, b"server shutdown"),
        }.get(kicked or "", (WSCloseCode.OK, b""))
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await ws.close(code=code, message=message)
        except (TimeoutError, ConnectionError):
            if request.transport is not None:
                request.transport.abort()

    async def _read_loop(self, client: _Client, market: _Market) -> None:
        async for msg in client.ws:
            if msg.type is WSMsgType.TEXT:
                self._on_request(client, market, msg.data)
            elif msg.type is WSMsgType.BINARY:
                self._on_request(client, market, None)
            else:
                return

    def _on_request(self, client: _Client, market: _Market, text: str | None) -> None:
        """Answer one client frame. Synchronous, so a subscribe's ack and snapshot are queued together."""
        try:
            req = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            req = None
        method = req.get("method") if isinstance(req, dict) else None
        if method == "ping":
            self._reply(client, {"channel": "pong"})
        elif method in ("subscribe", "unsubscribe"):
            assert isinstance(req, dict)
            self._on_subscription(client, market, method, req.get("subscription"))
        else:
            shown = text if text is not None else "<binary frame>"
            self._error(client, f"Error parsing JSON into valid websocket request: {shown[:200]}")

    def _on_subscription(self, client: _Client, market: _Market, method: str, sub: object) -> None:
        shown = orjson.dumps(sub).decode()[:200]
        if not isinstance(sub, dict):
            self._error(client, f"Invalid subscription {shown}")
            return
        channel, coin = sub.get("type"), sub.get("coin")
        # Any other non-null field (an l2Book `nSigFigs`/`mantissa` aggregation, a `user`) is not simulated.
        extra = [k for k, v in sub.items() if k not in ("type", "coin") and v is not None]
        if channel not in CHANNELS or not isinstance(coin, str) or coin not in market.coins or extra:
            self._error(client, f"Invalid subscription {shown}")
            return
        assert isinstance(channel, str) and isinstance(coin, str)
        key = _key(channel, coin)
        if method == "unsubscribe":
            if key not in client.keys:
                self._error(client, f"Already unsubscribed: {shown}")
                return
            market.unsubscribe(client, key)
            self._reply(client, _ack(method, sub))
            return
        if key in client.keys:
            self._error(client, f"Already subscribed: {shown}")
            return
        if len(client.keys) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            self._error(client, f"Cannot track more than {MAX_SUBSCRIPTIONS_PER_CLIENT} total subscriptions")
            return
        if self._reply(client, _ack(method, sub)):
            market.subscribe(client, channel, coin)

    def _error(self, client: _Client, text: str) -> None:
        self.bad_requests += 1
        self._reply(client, {"channel": "error", "data": text})

    def _reply(self, client: _Client, body: dict[str, Any]) -> bool:
        if client.offer(orjson.dumps(body).decode(), None, reply=True):
            return True
        self.kick(client, "slow")
        return False


def _ack(method: str, subscription: dict[str, Any]) -> dict[str, Any]:
    return {"channel": "subscriptionResponse", "data": {"method": method, "subscription": subscription}}


def _empty_ctx() -> dict[str, Any]:
    """Context of a coin that has no book yet (the venue answers every asset, with nulls where unknown)."""
    return {
        "funding": "0.0",
        "openInterest": "0.0",
        "prevDayPx": "0.0",
        "dayNtlVlm": "0.0",
        "premium": None,
        "oraclePx": "0.0",
        "markPx": "0.0",
        "midPx": None,
        "impactPxs": None,
        "dayBaseVlm": "0.0",
    }


def _listen(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _text(body: str, status: int) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain")


async def run_simulator(
    recording_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    speed: float = 1.0,
    loop: bool = True,
    garbage_every: int | None = None,
    gap_every: int | None = None,
    *,
    on_ready: Callable[[HyperliquidSimulator], None] | None = None,
    **options: Any,
) -> None:
    """Serve until cancelled (the CLI's `flowgauge simulate`). `on_ready` gets the started simulator."""
    async with HyperliquidSimulator(
        recording_path, host, port, speed, loop, garbage_every, gap_every, **options
    ) as sim:
        if on_ready is not None:
            on_ready(sim)
        await sim.wait()
