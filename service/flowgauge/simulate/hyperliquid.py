"""Hyperliquid venue simulator: replays a recording over Hyperliquid's websocket and `POST /info` protocol.

Sits in `service/replay` beside the Bybit simulator (`simulator.py`), whose model and API it mirrors and
whose fault injection it shares (`sim_base.py`); `flowgauge simulate` and the offline demo run it, and the
daemon reaches it only through configured base URLs (ws://host:port/ws, http://host:port). It must not
import the daemon's parsers, books or metrics: it is the independent ground truth the daemon is tested
against. It binds loopback by default and never opens an outbound connection.

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

Timestamps and ids. Exchange times (`l2Book.time`, trade `time`) follow the wall clock through
`base.TapeClock` at every speed and across loops (shifted by `clock_skew_s`); the recent trades sent on
subscribe keep their recorded age, as the venue's do. When the
recording ends the market loops: trade ids are shifted by a per-loop offset larger than their recorded
span and trade hashes rewritten, so nothing repeats.

Faults. Every kind of `faults.py` that means something on a stream of full books without sequence ids
(`SUPPORTED_FAULTS`), on the `l2Book` pushes of the coin: a withheld push (the next one is a full book
anyway), a duplicated one, a reordered one (sent after the coin's next push, so it arrives with an older
`time`), a malformed, truncated or oversized one; `seq_gap` moves the coin's push times forward by `by` ms
from then on (the only id this stream has jumps; nothing lost); `slow_snapshot` acks a subscribe of the
coin's book at once but holds the book sent on subscribe (and the pushes after it) back by `delay_s`;
`sub_error` answers a subscribe of the coin's book on channel `error` and does not subscribe it. The
connection and clock faults and `rate_limit` (HTTP 429/418 on `POST /info`) are `base`'s. Truth: every book
the market makes (played, or the one served before anything played) goes to `sim.truth` keyed by its `time`
(the daemon's `book_seq`), kept unique per coin: a push stamped at or up to 1 s behind the coin's previous one
is served 1 ms after it; a clock fault that moves time back further is served back in time, on the first
millisecond from there that no truth record still held has.

`gap_every=N` withholds every N-th `l2Book` push of each coin from all clients (the market's own
book still moves: the next push is a full snapshot, so a client cannot detect the loss from sequence
numbers; there are none). `garbage_every=N` sends each client a malformed frame after every N data frames
it received, cycling through a non-JSON binary frame, a well-formed `l2Book` frame with wrongly typed
fields, and a truncated copy of the last frame.

Bounds. Each client has one bounded outbound queue drained by one writer task. At speed > 0 a client whose
queue is full is disconnected (close 1008, counted in `slow_disconnects`); at speed 0 the market waits up
to `slow_client_timeout` for room and then disconnects it. Replies to the client's own requests may use a
small extra headroom; a client that floods requests without reading is disconnected the same way. A
client holds at most `MAX_SUBSCRIPTIONS_PER_CLIENT` subscriptions.
The server plumbing (runner, client queues and writers, slow-client policy, pacing) is `sim_base.py`'s.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import itertools
import math
import os
import time
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from flowgauge.recording import Connect, Recv, iter_records
from flowgauge.simulate.base import (
    SimClient,
    SimMarket,
    SimulatorServer,
    TapeClock,
    is_int,
    json_response,
    now_ms,
    simulator_runner,
)
from flowgauge.simulate.faults import CONNECTION_FAULTS
from flowgauge.simulate.truth import TRUTH_DEPTH, TruthStore

__all__ = ["DEFAULT_PORT", "HyperliquidSimulator", "run_simulator"]

DEFAULT_PORT = 9784
WS_PATH = "/ws"
INFO_PATH = "/info"
GREETING = "Websocket connection established."
CHANNELS = ("l2Book", "trades", "activeAssetCtx")
RECENT_TRADES = 30  # trades sent to a new `trades` subscriber (the recording's own batch held 30)
MAX_SUBSCRIPTIONS_PER_CLIENT = 1000  # the venue's per-IP subscription cap, applied per connection here
DEFAULT_CTX_EVERY_S = 3.0
_MAX_REQUEST_BYTES = 1 << 16
# A push stamped at or less than this behind the coin's previous one is served 1 ms after it (ties, and the lag the
# tie-breaking builds up); further back is a clock that went back (a clock fault), served as is.
_MAX_TIE_LAG_MS = 1000


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
            if is_int(data.get("time")):
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
                    if is_int(trade.get("time")):
                        times.append(trade["time"])
                    if is_int(trade.get("tid")):
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
    clock: TapeClock  # maps exchange times
    tid: int  # added to trade ids


class _CoinState:
    """One served coin: its last book, recent trades and synthesised asset context."""

    def __init__(self, spec: _Served) -> None:
        self.spec = spec
        self.book: dict[str, Any] | None = None  # last `l2Book` data (rewritten)
        self.trades: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_TRADES)
        self.book_pushes = 0
        self.time_offset = 0  # ms added to push times from a `seq_gap` on (the stream's only id jumps)
        self.last_time: int | None = None  # time of the last book made (kept unique per coin)
        # asset context
        self.ctx: dict[str, Any] | None = None
        self.ctx_count = 0
        self.last_ctx_ts: float | None = None  # recorded time of the last context
        self.open_interest = spec.open_interest
        self.volume_since_ctx = Decimal(0)
        self.day_base = Decimal(0)
        self.day_ntl = Decimal(0)
        self.prev_day_px: Decimal | None = None

    def book_frame(self, data: dict[str, Any], shift: _Shift, truth: TruthStore | None = None) -> dict[str, Any]:
        spec = self.spec
        levels = [
            [{"px": spec.px(level["px"]), "sz": spec.sz(level["sz"]), "n": level["n"]} for level in side]
            for side in data["levels"]
        ]
        time_ms = shift.clock.ms(data["time"]) + self.time_offset
        last = self.last_time
        if last is not None and last - _MAX_TIE_LAG_MS < time_ms <= last:
            # The venue's time is the truth's key (and the daemon's book_seq): unique per push, and never behind the
            # previous push but for a clock that really went back.
            time_ms = last + 1
        if truth is not None:
            # A clock that went back serves times again that earlier pushes had: the comparator finds a payload's
            # state by its time, so one still held would match the wrong book. The next free millisecond instead.
            while truth.holds(spec.coin, time_ms):
                time_ms += 1
        self.last_time = time_ms
        out = {"coin": spec.coin, "time": time_ms, "levels": levels}
        self.book = out
        if truth is not None:
            bids, asks = ([(float(lv["px"]), float(lv["sz"])) for lv in side[:TRUTH_DEPTH]] for side in levels)
            truth.record(spec.coin, time_ms, time_ms, bids, asks)
        return out

    def trade_frame(self, data: list[dict[str, Any]], shift: _Shift, *, history: bool = False) -> list[dict[str, Any]]:
        """`data` rewritten for this coin; `history`: the recent trades sent on subscribe, which keep their age."""
        spec = self.spec
        out = []
        for trade in data:
            item = dict(trade)
            item["coin"] = spec.coin
            item["px"] = spec.px(trade["px"])
            item["sz"] = spec.sz(trade["sz"])
            item["time"] = shift.clock.at(trade["time"]) if history else shift.clock.ms(trade["time"])
            if is_int(trade.get("tid")):
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


class _Client(SimClient["HyperliquidSimulator", str]):
    """One websocket client: its subscriptions and bounded outbound queue (see `SimClient`)."""

    TRUNCATED_FALLBACK = '{"channel":"l2Book","data":{"coin":"BTC","time":1,"levels":[[{"px"'

    def __init__(self, sim: HyperliquidSimulator, ws: web.WebSocketResponse) -> None:
        super().__init__(sim, ws)
        self.pending: set[str] = set()  # book keys whose (slow_snapshot) subscription is not in force yet

    @property
    def tag(self) -> str:
        return "hyperliquid"

    def log_fields(self) -> dict[str, Any]:
        return {"venue": "hyperliquid"}

    def bad_payload(self) -> dict[str, Any]:
        books = sorted(k for k in self.keys if k.startswith("l2Book:"))
        if (self.last_key or "").startswith("l2Book:"):
            books = [self.last_key or ""]
        coin = books[0].partition(":")[2] if books else "BTC"
        return {"channel": "l2Book", "data": {"coin": coin, "time": "NaN", "levels": "not-a-list"}}


# --------------------------------------------------------------------------------------------------
# The market


class _Market(SimMarket["HyperliquidSimulator", str, _Client, _Frame]):
    """The shared replay: subscribers, per-coin state, and the player (`SimMarket`)."""

    tape: _Tape

    def __init__(self, sim: HyperliquidSimulator, tape: _Tape, served: list[_Served]) -> None:
        super().__init__(sim, tape)
        self.coins: dict[str, _CoinState] = {s.coin: _CoinState(s) for s in served}
        self.by_source: dict[str, list[_CoinState]] = collections.defaultdict(list)
        for state in self.coins.values():
            self.by_source[state.spec.source].append(state)
        self._shift: _Shift | None = None  # the shift frames are being played with
        self._held: dict[str, str] = {}  # reorder_diff: coin -> a push sent after the coin's next one
        first = tape.frames[0].ts if tape.frames else time.time()
        self._anchor_ms = round(first * 1000) - tape.latency_ms

    # -- time shift -------------------------------------------------------------------------------

    def shift_now(self) -> _Shift:
        """The shift in force, or the one the player would start with now (before anything played)."""
        if self._shift is not None:
            return self._shift
        clock = TapeClock(self.sim.speed, self.clock.skew_ms)  # a look ahead: the player's own stays untouched
        clock.start_loop(0, now_ms(), self._anchor_ms)
        return _Shift(0, clock, 0)

    # -- subscriptions (synchronous: the snapshot and the pushes after it are queued without a gap) --

    def subscribe(self, client: _Client, channel: str, coin: str) -> None:
        key = _key(channel, coin)
        self.subs.add(client, key)
        state = self.state(coin)
        data: Any = None
        if channel == "l2Book":
            data = state.book
        elif channel == "trades":
            data = list(state.trades) or self._seed_trades(state)
        elif channel == "activeAssetCtx":
            ctx = state.current_ctx()
            data = None if ctx is None else {"coin": coin, "ctx": ctx}
        if data is not None:
            self.sim.offer_or_kick(client, _frame(channel, data), key, reply=True)

    def state(self, coin: str) -> _CoinState:
        """A coin's state; before anything was played its book is the recording's first (as of now), so a
        subscriber or `/info` caller gets the venue's immediate snapshot and ccxt sees a real mark price."""
        state = self.coins[coin]
        if self._shift is None:
            first = self.tape.first_books.get(state.spec.source)
            if first is not None:
                state.book_frame(first, self.shift_now(), self.sim.truth)
        return state

    def _seed_trades(self, state: _CoinState) -> list[dict[str, Any]] | None:
        seed = self.tape.seed_trades.get(state.spec.source)
        if not seed:
            return None
        shift = self.shift_now()
        # Rewritten like a played frame, without counting as traded volume or entering the state twice.
        saved = (state.volume_since_ctx, state.day_base, state.day_ntl)
        batch = state.trade_frame(seed, shift, history=True)
        state.volume_since_ctx, state.day_base, state.day_ntl = saved
        return batch

    # -- the player ---------------------------------------------------------------------------------

    def _keys_of(self, frame: _Frame) -> list[str]:
        # A book frame may also bring an asset context: its subscribers must have room too.
        channels = (frame.channel, "activeAssetCtx") if frame.channel == "l2Book" else (frame.channel,)
        return [_key(c, s.spec.coin) for s in self.by_source.get(frame.coin, ()) for c in channels]

    def _play_at(self, frame: _Frame, loop: int, clock: TapeClock) -> None:
        if self._shift is None or self._shift.loop != loop:
            self._shift = _Shift(loop, clock, loop * self.tape.tid_span)
        self._play(frame, self._shift)

    def _play(self, frame: _Frame, shift: _Shift) -> None:
        sim = self.sim
        for state in self.by_source.get(frame.coin, ()):
            coin = state.spec.coin
            if frame.channel == "l2Book":
                if sim.faults:
                    self._book_opportunity(state)
                data = state.book_frame(frame.data, shift, sim.truth)
                state.book_pushes += 1
                deliver = not (sim.gap_every and state.book_pushes % sim.gap_every == 0)
                if not deliver:
                    sim.gaps_injected += 1  # the market's book moved; no client sees this push
                elif sim.faults or self._held:
                    self._send_book(coin, data)
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

    def _book_opportunity(self, state: _CoinState) -> None:
        """One push of the coin is being played: count it, inject the connection faults due (on the connections
        that carry its book) and a `seq_gap` (the coin's push times move forward from this push on)."""
        sim = self.sim
        coin = state.spec.coin
        sim.faults.frame(coin)
        clients = self.subs.get(_key("l2Book", coin))
        if clients:
            sim.connection_faults(coin, clients)
        spec = sim.faults.take("seq_gap", coin)
        if spec is not None:
            state.time_offset += int(spec.param("by"))

    def _send_book(self, coin: str, data: dict[str, Any]) -> None:
        """Deliver one push under the book-stream faults, then a push held back by `reorder_diff` (if any)."""
        faults = self.sim.faults
        key = _key("l2Book", coin)
        text = _frame("l2Book", data)
        held = self._held.pop(coin, None)
        texts = [text]
        if faults.take("drop_diff", coin):
            texts = []
        elif faults.take("duplicate_diff", coin):
            texts = [text, text]
        elif faults.take("reorder_diff", coin):
            texts = []
            self._held[coin] = text
        elif faults.take("malformed_json", coin):
            texts = ['{"channel":"l2Book","data":{,' + text[len('{"channel":"l2Book","data":{') :]]
        elif faults.take("truncated_frame", coin):
            texts = [text[: len(text) // 2]]
        elif (spec := faults.take("oversized_frame", coin)) is not None:
            pad = max(0, int(spec.param("bytes")) - len(text) - 16)
            texts = [text[:-1] + ',"pad":"' + " " * pad + '"}']
        if held is not None:
            texts.append(held)  # older than the push just sent
        subs = self.subs.get(key)
        if subs:
            for out in texts:
                self.sim.deliver(subs, out, key)

    def _send(self, channel: str, coin: str, data: Any) -> None:
        key = _key(channel, coin)
        subs = self.subs.get(key)
        if subs:
            self.sim.deliver(subs, _frame(channel, data), key)


def _frame(channel: str, data: Any) -> str:
    return orjson.dumps({"channel": channel, "data": data}).decode()


# --------------------------------------------------------------------------------------------------
# The server


class HyperliquidSimulator(SimulatorServer[_Client]):
    """Serve a recording as Hyperliquid on one loopback port (`POST /info` and the `/ws` websocket).

    Use as `async with HyperliquidSimulator(path, port=0) as sim:` and connect to `sim.ws_url` and
    `sim.http_url`. Counters (`frames_sent`, `gaps_injected`, `garbage_sent`, `garbage_by_kind`, `ctx_sent`,
    `slow_disconnects`, `bad_requests`, `loops_completed`) let tests assert what was served and injected.
    """

    # What applies to a stream of full books without ids or checksum (no `bad_checksum`, no Bybit `u1_restart`).
    SUPPORTED_FAULTS = CONNECTION_FAULTS | {
        "drop_diff", "duplicate_diff", "reorder_diff", "seq_gap", "malformed_json", "truncated_frame",
        "oversized_frame", "slow_snapshot", "rate_limit", "sub_error",
    }  # fmt: skip

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
        clock_skew_s: float = 0.0,
    ) -> None:
        super().__init__(
            recording_path, host, port, speed, loop, garbage_every, gap_every,
            client_queue=client_queue, reply_headroom=reply_headroom, slow_client_timeout=slow_client_timeout,
            clock_skew_s=clock_skew_s,
        )  # fmt: skip
        if ctx_every_s < 0:
            raise ValueError("ctx_every_s must be >= 0")
        self.ctx_every_s = ctx_every_s
        self.ctx_sent = 0  # asset contexts synthesised by the player
        self.market: _Market | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def ws_url(self) -> str:
        return f"{self.ws_base}{WS_PATH}"

    @property
    def coins(self) -> list[str]:
        """Served coins in asset-index order."""
        return list(self.market.coins) if self.market is not None else []

    @property
    def loops_completed(self) -> int:
        return self.market.loops_completed if self.market is not None else 0

    async def _prepare(self) -> None:
        tape = await asyncio.to_thread(_load, self.recording_path)
        self.market = _Market(self, tape, _plan_coins(tape))

    def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        app.router.add_post(INFO_PATH, self._info)
        app.router.add_get(WS_PATH, self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _start_players(self) -> None:
        assert self.market is not None
        self.spawn(self.market.run(), "simulator-market:hyperliquid")

    def _started_fields(self) -> dict[str, Any]:
        frames = len(self.market.tape.frames) if self.market is not None else 0
        return {"venue": "hyperliquid", **super()._started_fields(), "frames": frames, "coins": self.coins}

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
            return json_response(self._meta())
        if kind == "metaAndAssetCtxs":
            ctxs = [market.state(coin).current_ctx() or _empty_ctx() for coin in market.coins]
            return json_response([self._meta(), ctxs])
        if kind == "spotMeta":
            return json_response({"universe": [], "tokens": []})
        if kind == "spotMetaAndAssetCtxs":
            return json_response([{"universe": [], "tokens": []}, []])
        if kind == "perpDexs":
            return json_response([None])  # the first entry is the main dex; no builder-deployed (HIP-3) dexes here
        if kind == "allMids":
            mids = {}
            for coin in market.coins:
                book = market.state(coin).book
                if book is not None and book["levels"][0] and book["levels"][1]:
                    mid = (Decimal(book["levels"][0][0]["px"]) + Decimal(book["levels"][1][0]["px"])) / 2
                    mids[coin] = _fmt(mid)
            return json_response(mids)
        if kind == "l2Book":
            assert isinstance(body, dict)
            asked = body.get("coin")
            if body.get("nSigFigs") is not None or body.get("mantissa") is not None:
                self.bad_requests += 1
                return _text("this simulator serves full-precision books only (nSigFigs null)", 422)
            return json_response(market.state(asked).book if asked in market.coins else None)
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
        client = _Client(self, await self._open_ws(request, max_msg_size=_MAX_REQUEST_BYTES))
        client.offer(GREETING, None, reply=True)
        read = self._read_requests(client.ws, functools.partial(self._on_request, client, market))
        return await self._run_client(request, client, read, leave=functools.partial(market.drop, client))

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
            if key in client.pending:  # a slow snapshot on its way: not wanted any more
                client.pending.discard(key)
                self._reply(client, _ack(method, sub))
                return
            if key not in client.keys:
                self._error(client, f"Already unsubscribed: {shown}")
                return
            market.unsubscribe(client, key)
            self._reply(client, _ack(method, sub))
            return
        if key in client.keys or key in client.pending:
            self._error(client, f"Already subscribed: {shown}")
            return
        if len(client.keys) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
            self._error(client, f"Cannot track more than {MAX_SUBSCRIPTIONS_PER_CLIENT} total subscriptions")
            return
        if channel == "l2Book" and self.faults.take("sub_error", coin) is not None:
            self._error(client, f"Subscription failed, please retry: {shown}")  # the venue's wording is UNCONFIRMED
            return
        if not self._reply(client, _ack(method, sub)):
            return
        spec = self.faults.take("slow_snapshot", coin) if channel == "l2Book" else None
        if spec is None:
            market.subscribe(client, channel, coin)
            return
        client.pending.add(key)  # the book sent on subscribe, and the pushes after it, come `delay_s` late
        self.later(float(spec.param("delay_s")), self._late_subscribe, client, market, channel, coin)

    def _late_subscribe(self, client: _Client, market: _Market, channel: str, coin: str) -> None:
        key = _key(channel, coin)
        if key in client.pending:
            client.pending.discard(key)
            if client.kicked is None:
                market.subscribe(client, channel, coin)

    def _error(self, client: _Client, text: str) -> None:
        self.bad_requests += 1
        self._reply(client, {"channel": "error", "data": text})


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


def _text(body: str, status: int) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain")


run_simulator = simulator_runner(HyperliquidSimulator, DEFAULT_PORT, "flowgauge simulate --venue hyperliquid")
