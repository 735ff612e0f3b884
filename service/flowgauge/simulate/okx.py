"""OKX v5 venue simulator: replays a recording over OKX's current REST and public websocket protocol.

Sits in `service/replay`, beside the recorder, the replayer and the Bybit simulator; `flowgauge simulate`
runs it, and the daemon reaches it only through configured base URLs (ws://host:port/ws/v5/public,
http://host:port). It must not import the daemon's parsers, books or metrics: it is the independent
ground truth the daemon is tested against. It binds loopback by default and never opens an outbound
connection.

Protocol served (the current one, not the recording's 2022 one):
* websocket `/ws/v5/public`: `{"op":"subscribe"|"unsubscribe","args":[{"channel":..,"instId"|"instType":..}]}`
  answered per arg with `{"event":"subscribe","arg":{..},"connId":..}` or `{"event":"error","code":..}`;
  the text `ping` is answered with the text `pong`; a connection that carries nothing for `idle_timeout`
  (OKX: 30 s) is closed. At most 480 subscribe/unsubscribe requests per connection per hour, as OKX.
  Channels: `books` (snapshot on subscribe, then updates with `seqId`/`prevSeqId`, snapshot
  `prevSeqId=-1`, `checksum` 0 as OKX sends since 2026-06 or the real CRC32 with `checksum=True`),
  `trades`, `tickers`, `mark-price`, `index-tickers`, `open-interest`, `funding-rate`,
  `liquidation-orders` (subscribed by instType) and `bbo-tbt` (below). `ws_snapshot=False` emulates OKX's announced
  removal of the initial `books` snapshot; `seq_ids=False` emulates the 2022 stream (no ids, checksum only).
* REST: `/api/v5/public/instruments` (the recorded bodies: what ccxt's load_markets asks),
  `/api/v5/market/books` (the current book with its `seqId`, the REST bootstrap), the three rubik
  long/short series, `/api/v5/public/time`.

Data. The 2022 recording holds UNI-USD-SWAP (inverse) and BTC-USDT spot. Both are served as recorded, and
the perpetuals the daemon's default configuration wants are driven from them, relabelled (ids rewritten):
* BTC-USDT-SWAP from the BTC-USDT spot stream: prices as recorded (same tick 0.1), sizes converted from
  BTC to contracts (/ ctVal 0.01), so contract sizes may be fractional (as OKX allows today).
* ETH-USDT-SWAP from the UNI-USD-SWAP stream: every price moved to the ETH tick grid by an integer factor
  (UNI ticks x 39 x 0.01: 5.14 -> 2004.6, a plausible May-2022 level; strictly increasing, so the book's
  shape is kept), contract counts copied.
The recording has no mark, index, open-interest, funding, liquidation or long/short data; those are
SYNTHETIC, derived from the served books and trades: mark = mid on the tick grid every second, index =
mid x (1 - 4e-4 cos(0.3 k)), open interest every 3 s moved by half the net taker flow (so |dOI| <= volume),
funding every 5 s from the premium, a liquidation-orders push for every 5th swap trade (the taker side
is the forced order), and rubik ratios as a smooth deterministic function of (instId, 5-minute bucket).

Model. One market (the public path) with one player task walks the recorded frames in receive-time order,
paced by the recorded gaps divided by `speed` (0 = as fast as the subscribed clients read). Every client
sees the same frames with the same ids, and only the channels it subscribed. The market keeps every
book (primed from the first recorded snapshots before serving), so a client that subscribes late (or
resubscribes, or asks REST) gets the current state and then the updates that follow it. A market pauses
while nobody is subscribed to anything. Each book's seqId grows by uneven steps (OKX ids jump); when the
recording loops, its first snapshot is turned into an update (the difference from the book at the end),
so the stream stays continuous; trade ids are shifted per loop so they keep increasing. Exchange times
(`ts` of books, trades, tickers and the synthetic pushes; `fundingTime` follows the funding push's `ts`)
follow the wall clock through `base.TapeClock`, at every speed and across loops (shifted by `clock_skew_s`).

Best quotes. The recording holds no `bbo-tbt` (OKX's tick-by-tick level 1), so the market derives it from each
book it keeps: after every book message that changed the best bid or ask (price or size), one push
`{"arg":{"channel":"bbo-tbt","instId"},"data":[{"asks":[top],"bids":[top],"ts","seqId"}]}` with the book's
levels as served, its `ts`, and the book's seqId (none with `seq_ids=False`). It follows the market's book, not
what a book fault let through; a subscriber gets the last push at once (UNCONFIRMED whether OKX sends one on
subscribe or waits for the next change).

Faults. Every kind of `faults.py` that applies to OKX (`SUPPORTED_FAULTS`: all but Bybit's `u1_restart`), on a
subscribed instrument's `books` updates: a withheld, duplicated (twice in a row, and once more after the next one:
a stale replay), reordered (sent after the next one), malformed, truncated or oversized update; `seq_gap` moves the
book's seqId forward by `by` (the update where it starts names a prevSeqId nobody sent; nothing is lost);
`bad_checksum` sends an update whose `checksum` is wrong (and not 0, which means "none"), whatever `checksum` says;
`slow_snapshot` answers a REST `/api/v5/market/books` request `delay_s` late (the book taken when the answer
leaves); `sub_error` answers the `books` arg of a subscribe with OKX's error event and subscribes nothing of it
(the other args of the request are taken, as OKX answers per arg). The connection, clock and REST rate-limit faults
are `base`'s. The market's book applies every update whatever the fault and is the truth: after every seqId its top
10 levels (sizes in contracts) go to `sim.truth` keyed by seqId (the daemon's `book_seq`), and every book is
recorded once as it starts (its WS and REST snapshot before any update).

`gap_every=N` withholds every N-th update of each book from all clients (the market's book still
applies it and its seqId is used up, so the next update's prevSeqId does not link and a REST snapshot is
correct). `garbage_every=N` sends each client a malformed frame after every N data frames it received,
cycling through a non-JSON binary frame, a well-formed books update with wrongly typed fields, and a
truncated copy of the last frame.

Bounds. Each client has one bounded outbound queue drained by one writer task. At speed > 0 a client whose
queue is full is disconnected (close 1008, counted in `slow_disconnects`); at speed 0 the market waits up
to `slow_client_timeout` for room and then disconnects it. Replies to the client's own requests may use a
small extra headroom.
The server plumbing (runner, client queues and writers, slow-client policy, pacing) is `sim_base.py`'s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import heapq
import math
import os
import secrets
import string
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import WSCloseCode, web

from flowgauge.recording import Connect, Http, Recv, iter_records
from flowgauge.simulate.base import SimClient, SimMarket, SimulatorServer, TapeClock, simulator_runner
from flowgauge.simulate.faults import CONNECTION_FAULTS
from flowgauge.simulate.truth import TRUTH_DEPTH

__all__ = ["DEFAULT_PORT", "WS_PATH", "OkxSimulator", "run_simulator"]

DEFAULT_PORT = 9782
WS_PATH = "/ws/v5/public"
BOOK_DEPTH = 400  # `books` levels per side in a snapshot, and the REST maximum
CHECKSUM_LEVELS = 25
IDLE_TIMEOUT_S = 30.0  # OKX closes a connection that carried nothing for 30 s
MAX_REQUESTS_PER_HOUR = 480  # OKX: subscribe/unsubscribe/login requests per connection per hour
MAX_SUBSCRIPTIONS_PER_CLIENT = 2000  # our bound (args are client-chosen)
AUX_PERIOD_S = 1.0  # synthetic mark / index cadence in recorded time
OI_EVERY = 3  # aux ticks between open-interest pushes
FUNDING_EVERY = 5  # aux ticks between funding-rate pushes
LIQUIDATION_EVERY = 5  # every N-th swap trade fill is mirrored as a liquidation
RUBIK_PERIODS_MS = {
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1H": 3_600_000,
    "4H": 14_400_000,
    "1D": 86_400_000,
}
RUBIK_SERIES = {
    "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract": 0.0,
    "/api/v5/rubik/stat/contracts/long-short-account-ratio-contract-top-trader": 1.7,
    "/api/v5/rubik/stat/contracts/long-short-position-ratio-contract-top-trader": 3.1,
}
# Perpetuals the daemon's default configuration asks for, driven from recorded streams when not recorded.
TARGET_LEVELS = {"BTC-USDT-SWAP": Decimal(30000), "ETH-USDT-SWAP": Decimal(2000)}
BEST_QUOTE_CHANNEL = "bbo-tbt"  # derived from the market's books (module doc, Best quotes)
SERVED_CHANNELS = frozenset(
    {"books", "trades", "tickers", "mark-price", "index-tickers", "open-interest", "funding-rate", "liquidation-orders",
     BEST_QUOTE_CHANNEL}
)  # fmt: skip
_REPLAYED_CHANNELS = ("books", "trades", "tickers")
_EIGHT_HOURS_MS = 8 * 3_600_000

Key = tuple[str, str]  # (channel, instId) or ("liquidation-orders", instType)


# --------------------------------------------------------------------------------------------------
# Decimal helpers (prices and sizes stay exact strings: the checksum hashes them)


def _fmt(value: Decimal) -> str:
    """OKX's number strings: plain notation, no trailing zeros ("2004.6", "30000", "0")."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _round(value: float | Decimal, step: Decimal) -> str:
    quantum = Decimal(value if isinstance(value, Decimal) else repr(value))
    return _fmt((quantum / step).quantize(Decimal(1), ROUND_HALF_EVEN) * step)


# --------------------------------------------------------------------------------------------------
# The recording, prepared for serving


@dataclass(slots=True)
class _Frame:
    ts: float  # recorded local receive time, unix seconds (drives pacing)
    key: Key  # ("aux", "") marks a synthetic tick
    raw: str  # the push as served (relabelled), parsed again when played


@dataclass(slots=True)
class _Relabel:
    """How a served instrument is driven from a recorded one."""

    source: str
    price_factor: int | None  # target price = source ticks x factor x target tick; None = price as recorded
    source_tick: Decimal
    target_tick: Decimal
    size_divisor: Decimal | None  # target size = source size / divisor (base -> contracts); None = as recorded

    def price(self, text: str) -> str:
        if self.price_factor is None:
            return text
        ticks = (Decimal(text) / self.source_tick).to_integral_value()
        return _fmt(ticks * self.price_factor * self.target_tick)

    def size(self, text: str) -> str:
        if self.size_divisor is None:
            return text
        return _fmt(Decimal(text) / self.size_divisor)


@dataclass(slots=True)
class _Served:
    instruments: dict[str, list[dict[str, Any]]]  # instType -> recorded instrument items (pages merged)
    meta: dict[str, dict[str, Any]]  # instId -> instrument item, for every served derivative/spot
    frames: list[_Frame] = field(default_factory=list)
    first_snapshots: dict[str, str] = field(default_factory=dict)  # instId -> first snapshot push (served form)
    ts_span_ms: int = 1
    trade_id_span: int = 1
    latency_ms: int = 0


def _load(path: Path) -> _Served:
    """Read a recording into the served frames and instruments (blocking; run in a thread)."""
    addr_of: dict[str, str] = {}
    recvs: list[tuple[str, Recv]] = []
    instruments: dict[str, list[dict[str, Any]]] = {}
    for rec in iter_records(path):
        if isinstance(rec, Connect):
            addr_of[rec.conn] = rec.addr
        elif isinstance(rec, Recv):
            recvs.append((rec.conn, rec))
        elif isinstance(rec, Http):
            _add_instruments(instruments, rec)
    meta = {item["instId"]: item for items in instruments.values() for item in items if "instId" in item}
    pushes: list[tuple[float, dict[str, Any]]] = []
    for conn, rec in recvs:
        if not urlsplit(addr_of.get(conn, "")).path.rstrip("/").endswith(WS_PATH):
            continue
        try:
            msg = orjson.loads(rec.data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(msg, dict) or not isinstance(msg.get("arg"), dict) or "data" not in msg:
            continue  # acks and pongs are answered live, not replayed
        if msg["arg"].get("channel") in _REPLAYED_CHANNELS and isinstance(msg["arg"].get("instId"), str):
            pushes.append((rec.ts, msg))
    pushes.sort(key=lambda p: p[0])  # stable: frames of one connection keep their order on equal times
    recorded = {msg["arg"]["instId"] for _, msg in pushes}
    relabels = _relabels(recorded, meta, pushes)
    served = _Served(instruments, {i: meta[i] for i in recorded | set(relabels) if i in meta})
    times: list[int] = []
    trade_ids: list[int] = []
    latency: int | None = None
    for ts, msg in pushes:
        source = msg["arg"]["instId"]
        variants = [(source, None)] + [(target, r) for target, r in relabels.items() if r.source == source]
        for target, relabel in variants:
            out = msg if relabel is None else _relabelled(msg, target, relabel)
            channel = out["arg"]["channel"]
            raw = orjson.dumps(out).decode()
            served.frames.append(_Frame(ts, (channel, target), raw))
            if channel == "books" and out.get("action") == "snapshot":
                served.first_snapshots.setdefault(target, raw)
        for item in msg["data"]:
            if not isinstance(item, dict):
                continue
            stamp = _int_or_none(item.get("ts"))
            if stamp is not None:
                times.append(stamp)
                lat = round(ts * 1000) - stamp
                if msg["arg"]["channel"] == "books":  # trades may be old news re-sent on subscribe
                    latency = lat if latency is None else min(latency, lat)
            trade_id = _int_or_none(item.get("tradeId"))
            if trade_id is not None:
                trade_ids.append(trade_id)
    if served.frames:
        first, last = served.frames[0].ts, served.frames[-1].ts
        count = int((last - first) / AUX_PERIOD_S) + 1
        ticks = [_Frame(first + k * AUX_PERIOD_S, ("aux", ""), "") for k in range(count)]
        served.frames = sorted(served.frames + ticks, key=lambda f: f.ts)
    served.ts_span_ms = (max(times) - min(times) + 1) if times else 1
    served.trade_id_span = (max(trade_ids) - min(trade_ids) + 1) if trade_ids else 1
    served.latency_ms = latency or 0
    return served


def _add_instruments(into: dict[str, list[dict[str, Any]]], rec: Http) -> None:
    url = urlsplit(rec.url)
    if not url.path.endswith("/api/v5/public/instruments"):
        return
    inst_type = dict(parse_qsl(url.query)).get("instType", "")
    try:
        body = orjson.loads(rec.data)
        items = body["data"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return  # an error answer recorded from the venue is not an instruments list
    if not isinstance(items, list) or str(body.get("code")) != "0":
        return
    merged = into.setdefault(inst_type, [])
    known = {item.get("instId") for item in merged}
    merged.extend(item for item in items if isinstance(item, dict) and item.get("instId") not in known)


def _relabels(
    recorded: set[str], meta: dict[str, dict[str, Any]], pushes: list[tuple[float, dict[str, Any]]]
) -> dict[str, _Relabel]:
    """Pick a recorded stream for each wanted perpetual the recording lacks (module docstring)."""
    first_price: dict[str, Decimal] = {}
    for _, msg in pushes:
        inst = msg["arg"]["instId"]
        if inst in first_price or msg["arg"]["channel"] != "books" or msg.get("action") != "snapshot":
            continue
        with contextlib.suppress(InvalidOperation, KeyError, IndexError, TypeError):
            first_price[inst] = Decimal(msg["data"][0]["bids"][0][0])
    out: dict[str, _Relabel] = {}
    for target, level in TARGET_LEVELS.items():
        if target in recorded or target not in meta:
            continue
        t_meta = meta[target]
        base = target.split("-")[0]
        spot = next((i for i in sorted(recorded) if i == f"{base}-{t_meta.get('settleCcy', '')}"), None)
        target_tick = Decimal(t_meta["tickSz"])
        same_grid = spot is not None and spot in meta and Decimal(meta[spot]["tickSz"]) == target_tick
        if spot is not None and same_grid and t_meta.get("ctType") == "linear":
            # Same asset on spot: prices are real; spot sizes are base units, our contracts are ctVal of them.
            ct = Decimal(t_meta["ctVal"]) * Decimal(t_meta.get("ctMult") or "1")
            out[target] = _Relabel(spot, None, Decimal(meta[spot]["tickSz"]), target_tick, ct)
            continue
        swaps = sorted(i for i in recorded if i.endswith("-SWAP") and i in first_price and i in meta)
        if not swaps:
            continue
        source = swaps[0]
        source_tick = Decimal(meta[source]["tickSz"])
        factor = max(1, round(level / (first_price[source] / source_tick * target_tick)))
        out[target] = _Relabel(source, int(factor), source_tick, target_tick, None)
    return out


def _relabelled(msg: dict[str, Any], target: str, relabel: _Relabel) -> dict[str, Any]:
    """A recorded push rewritten for `target` (ids, prices, sizes)."""
    channel = msg["arg"]["channel"]
    out: dict[str, Any] = {"arg": {**msg["arg"], "instId": target}}
    if "action" in msg:
        out["action"] = msg["action"]
    data = []
    for item in msg["data"]:
        item = dict(item)
        if channel == "books":
            for side in ("asks", "bids"):
                item[side] = [[relabel.price(lv[0]), relabel.size(lv[1]), *lv[2:]] for lv in item[side]]
            item["checksum"] = 0  # recomputed when played
        elif channel == "trades":
            item.update(instId=target, px=relabel.price(item["px"]), sz=relabel.size(item["sz"]))
        elif channel == "tickers":
            item.update(instId=target, instType="SWAP")
            for key in ("last", "askPx", "bidPx", "open24h", "high24h", "low24h", "sodUtc0", "sodUtc8"):
                if item.get(key):
                    item[key] = relabel.price(item[key])
            for key in ("lastSz", "askSz", "bidSz", "vol24h"):
                if item.get(key):
                    item[key] = relabel.size(item[key])
        data.append(item)
    out["data"] = data
    return out


def _int_or_none(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


# --------------------------------------------------------------------------------------------------
# Market state


class _Book:
    """One instrument's current book: levels by price value, keeping the strings [px, sz, "0", orders]."""

    __slots__ = ("asks", "bids", "seq", "steps", "ts")

    def __init__(self, seq: int) -> None:
        self.bids: dict[float, list[str]] = {}
        self.asks: dict[float, list[str]] = {}
        self.seq = seq
        self.steps = 0
        self.ts = "0"

    def load(self, item: dict[str, Any]) -> None:
        self.bids.clear()
        self.asks.clear()
        self.apply(item)

    def apply(self, item: dict[str, Any]) -> None:
        _apply_side(self.bids, item.get("bids"))
        _apply_side(self.asks, item.get("asks"))
        self.ts = item.get("ts", self.ts)

    def diff_to(self, item: dict[str, Any]) -> dict[str, list[list[str]]]:
        """Levels that turn this book into the full book `item` (deletions as size "0")."""
        out: dict[str, list[list[str]]] = {}
        for side, mine in (("bids", self.bids), ("asks", self.asks)):
            theirs: dict[float, list[str]] = {}
            _apply_side(theirs, item.get(side))
            changes = [[lv[0], "0", "0", "0"] for p, lv in mine.items() if p not in theirs]
            changes += [lv for p, lv in theirs.items() if mine.get(p) != lv]
            out[side] = changes
        return out

    def next_seq(self) -> tuple[int, int]:
        """(prevSeqId, seqId) for the next update: ids jump by uneven steps, as OKX's do."""
        prev = self.seq
        self.steps += 1
        self.seq += 1 + (self.steps * 7919) % 97
        return prev, self.seq

    def top(self, depth: int) -> tuple[list[list[str]], list[list[str]]]:
        bids = [self.bids[p] for p in sorted(self.bids, reverse=True)[:depth]]
        asks = [self.asks[p] for p in sorted(self.asks)[:depth]]
        return bids, asks

    def truth_top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best `n` (price, size in contracts) levels of each side, best first (the truth)."""
        bids = [(p, float(self.bids[p][1])) for p in heapq.nlargest(n, self.bids)]
        asks = [(p, float(self.asks[p][1])) for p in heapq.nsmallest(n, self.asks)]
        return bids, asks

    def checksum(self) -> int:
        bids, asks = self.top(CHECKSUM_LEVELS)
        parts: list[str] = []
        for i in range(CHECKSUM_LEVELS):
            if i < len(bids):
                parts += bids[i][:2]
            if i < len(asks):
                parts += asks[i][:2]
        crc = zlib.crc32(":".join(parts).encode())
        return crc - (1 << 32) if crc >= 1 << 31 else crc

    def mid(self) -> float | None:
        if not self.bids or not self.asks:
            return None
        return (max(self.bids) + min(self.asks)) / 2.0


def _apply_side(side: dict[float, list[str]], levels: object) -> None:
    if not isinstance(levels, list):
        return
    for level in levels:
        try:
            price, size = float(level[0]), float(level[1])
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if size == 0.0:
            side.pop(price, None)
        else:
            side[price] = [str(x) for x in level[:4]]


@dataclass(slots=True)
class _Flow:
    """Synthetic open interest of one instrument, moved by the taker flow between pushes."""

    oi: Decimal
    buys: Decimal = Decimal(0)
    sells: Decimal = Decimal(0)
    trades: int = 0


# --------------------------------------------------------------------------------------------------
# Clients


class _Client(SimClient["OkxSimulator", Key]):
    """One websocket client: its subscriptions, request budget, idle watchdog and bounded queue (`SimClient`)."""

    TRUNCATED_FALLBACK = '{"arg":{"channel":"books","instId":"BTC-USDT-SWAP"},"action":"upd'

    def __init__(self, sim: OkxSimulator, ws: web.WebSocketResponse) -> None:
        super().__init__(sim, ws)
        self.conn_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        self.activity = asyncio.Event()  # set on every frame in or out; the idle watchdog clears it
        self.requests: collections.deque[float] = collections.deque(maxlen=MAX_REQUESTS_PER_HOUR)

    @property
    def tag(self) -> str:
        return self.conn_id

    def log_fields(self) -> dict[str, Any]:
        return {"conn_id": self.conn_id}

    def _after_send(self) -> None:
        self.activity.set()

    async def watch_idle(self, idle_s: float) -> None:
        """OKX drops a connection that carried nothing (no push, no pong) for 30 s."""
        while True:
            try:
                async with asyncio.timeout(idle_s):
                    await self.activity.wait()
            except TimeoutError:
                self.sim.idle_disconnects += 1
                self.kick("idle")
                return
            self.activity.clear()

    def bad_payload(self) -> dict[str, Any]:
        inst = self.last_key[1] if self.last_key and self.last_key[0] == "books" else ""
        if not inst:
            inst = next((k[1] for k in sorted(self.keys) if k[0] == "books"), "BTC-USDT-SWAP")
        data = {
            "asks": "not-a-list",
            "bids": [[None, {"size": True}]],
            "ts": "NaN",
            "checksum": "x",
            "seqId": [1.5],
            "prevSeqId": None,
        }
        return {"arg": {"channel": "books", "instId": inst}, "action": "update", "data": [data]}


# --------------------------------------------------------------------------------------------------
# The market


class _Market(SimMarket["OkxSimulator", Key, _Client, _Frame]):
    """The public path's shared replay: subscribers, live state per instrument, the player (`SimMarket`)."""

    def __init__(self, sim: OkxSimulator, served: _Served) -> None:
        super().__init__(sim, served)
        self.served = served
        self.books: dict[str, _Book] = {}
        self.flows: dict[str, _Flow] = {}
        self.marks: dict[str, str] = {}
        self.clock_ms = 0  # latest exchange time played (shifted): stamps the synthetic pushes
        self._updates_seen: collections.Counter[str] = collections.Counter()
        self._held: dict[str, str] = {}  # reorder_diff: an update sent after the book's next one
        self._replayed: dict[str, str] = {}  # duplicate_diff: its stale copy, sent after the book's next update
        self._aux_ticks = 0
        self._l1_last: dict[str, tuple[Any, Any]] = {}  # instId -> the top last pushed on bbo-tbt
        self._l1_text: dict[str, str] = {}  # instId -> that push (a late subscriber's first)
        for n, (inst, raw) in enumerate(sorted(served.first_snapshots.items())):
            # Books exist before anyone subscribes, so REST and late subscribers always have a state.
            book = self.books[inst] = _Book(seq=1_000_000_000 * (n + 1) + zlib.crc32(inst.encode()) % 1_000_000)
            book.load(orjson.loads(raw)["data"][0])
            book.ts = str(sim.clock.now_ms())  # a REST answer before the first frame looks live
            self._record_truth(inst, book, snapshot=True)
            self._derive_best_quote(inst, book)
            if self.is_derivative(inst):
                bids, asks = book.top(20)
                depth = sum((Decimal(lv[1]) for lv in bids + asks), Decimal(0))
                self.flows[inst] = _Flow(oi=depth * 50)

    def is_derivative(self, inst: str) -> bool:
        return self.served.meta.get(inst, {}).get("instType") in ("SWAP", "FUTURES")

    def index_of(self, inst: str) -> str:
        meta = self.served.meta.get(inst, {})
        return str(meta.get("uly") or meta.get("instFamily") or "-".join(inst.split("-")[:2]))

    def indexes(self) -> dict[str, str]:
        """index id -> the instrument whose book drives it (first by name)."""
        out: dict[str, str] = {}
        for inst in sorted(self.books):
            if self.is_derivative(inst):
                out.setdefault(self.index_of(inst), inst)
        return out

    # -- subscriptions -------------------------------------------------------------------------------

    def subscribe(self, client: _Client, key: Key) -> None:
        self.subs.add(client, key)
        if key[0] == "books" and self.sim.ws_snapshot:
            book = self.books.get(key[1])
            if book is not None:
                self.sim.offer_or_kick(client, self._snapshot_text(key[1], book), key, reply=True)
        elif key[0] == BEST_QUOTE_CHANNEL and key[1] in self._l1_text:
            self.sim.offer_or_kick(client, self._l1_text[key[1]], key, reply=True)

    def _snapshot_text(self, inst: str, book: _Book) -> str:
        bids, asks = book.top(BOOK_DEPTH)
        item: dict[str, Any] = {
            "asks": asks,
            "bids": bids,
            "ts": book.ts,
            "checksum": book.checksum() if self.sim.checksum else 0,
        }
        if self.sim.seq_ids:
            item.update(prevSeqId=-1, seqId=book.seq)
        return orjson.dumps(
            {"arg": {"channel": "books", "instId": inst}, "action": "snapshot", "data": [item]}
        ).decode()

    def rest_book(self, inst: str, depth: int) -> dict[str, Any] | None:
        book = self.books.get(inst)
        if book is None:
            return None
        bids, asks = book.top(depth)
        return {"asks": asks, "bids": bids, "ts": book.ts, "seqId": book.seq}

    # -- the player ----------------------------------------------------------------------------------

    def _keys_of(self, frame: _Frame) -> list[Key]:
        """A recorded frame goes to its key's subscribers; a synthetic tick may go to anyone."""
        if frame.key[0] == "books":
            return [frame.key, (BEST_QUOTE_CHANNEL, frame.key[1])]  # it may carry a derived best quote too
        return [frame.key] if frame.key[0] != "aux" else list(self.subs)

    def _play_at(self, frame: _Frame, loop: int, clock: TapeClock) -> None:
        self._play(frame, loop, clock)

    def _play(self, frame: _Frame, loop: int, clock: TapeClock) -> None:
        if frame.key[0] == "aux":
            # A tick's time is its place on the tape, so the synthetic pushes follow the clock between frames too.
            self.clock_ms = max(self.clock_ms, clock.ms(round(frame.ts * 1000) - self.served.latency_ms))
            self._aux()
            return
        msg = orjson.loads(frame.raw)
        channel, inst = frame.key
        for item in msg["data"]:
            stamp = _int_or_none(item.get("ts"))
            if stamp is not None:
                served = clock.ms(stamp)
                item["ts"] = str(served)
                self.clock_ms = max(self.clock_ms, served)
            trade_id = item.get("tradeId")
            if loop and isinstance(trade_id, str):
                # Looped trades must not repeat an id a consumer may de-duplicate on.
                item["tradeId"] = (
                    str(int(trade_id) + loop * self.served.trade_id_span)
                    if trade_id.isdigit()
                    else (f"{trade_id}-{loop}")
                )
        if channel == "books":
            self._play_book(inst, msg)
            return
        if channel == "trades":
            self._on_trades(inst, msg)
        self._deliver(frame.key, msg)

    def _play_book(self, inst: str, msg: dict[str, Any]) -> None:
        sim = self.sim
        faults = sim.faults
        subs = self.subs.get(("books", inst))
        if faults and subs:  # a fault on a book nobody subscribes would hit nobody
            faults.frame(inst)
            sim.connection_faults(inst, subs)
        item = msg["data"][0]
        book = self.books.get(inst)
        if book is None:  # a recording whose first book message is not a snapshot: nothing to build on
            if msg.get("action") != "snapshot":
                return
            book = self.books[inst] = _Book(seq=1_000_000_000)
        if msg.get("action") == "snapshot":
            # OKX sends no snapshot mid-stream: the recording's (looped) snapshot becomes the update that
            # turns the current book into it.
            changes = book.diff_to(item)
            book.load(item)
            if not changes["bids"] and not changes["asks"]:
                return
            item = {"asks": changes["asks"], "bids": changes["bids"], "ts": item.get("ts", book.ts)}
            msg = {"arg": msg["arg"], "action": "update", "data": [item]}
        else:
            book.apply(item)
        if faults and subs and (spec := faults.take("seq_gap", inst)) is not None:
            book.seq += int(spec.param("by"))  # this update's prevSeqId names an id nobody sent; nothing is lost
        prev, seq = book.next_seq()
        item["checksum"] = book.checksum() if sim.checksum else 0
        if sim.seq_ids:
            item["prevSeqId"], item["seqId"] = prev, seq
        else:
            item.pop("prevSeqId", None)
            item.pop("seqId", None)
        self._record_truth(inst, book)
        self._derive_best_quote(inst, book)
        held = self._held.pop(inst, None)
        replayed = self._replayed.pop(inst, None)
        texts: list[str] = []
        withheld = False
        if sim.gap_every:
            self._updates_seen[inst] += 1
            withheld = self._updates_seen[inst] % sim.gap_every == 0
        if withheld:
            sim.gaps_injected += 1  # the market's book applied it and used its id; no client will see it
        elif faults and subs:
            texts = self._book_faults(inst, book, msg)
        else:
            texts = [orjson.dumps(msg).decode()]
        if held is not None:
            texts.append(held)
        if replayed is not None:
            texts.append(replayed)
        if subs:
            for text in texts:
                sim.deliver(subs, text, ("books", inst))

    def _record_truth(self, inst: str, book: _Book, snapshot: bool = False) -> None:
        bids, asks = book.truth_top(TRUTH_DEPTH)
        self.sim.truth.record(inst, book.seq, _int_or_none(book.ts), bids, asks, snapshot=snapshot)

    def _derive_best_quote(self, inst: str, book: _Book) -> None:
        """A `bbo-tbt` push from the market's book when its top changed (module doc, Best quotes)."""
        bid = book.bids[max(book.bids)] if book.bids else None
        ask = book.asks[min(book.asks)] if book.asks else None
        top = (tuple(bid) if bid else None, tuple(ask) if ask else None)
        if self._l1_last.get(inst) == top:
            return
        self._l1_last[inst] = top
        item: dict[str, Any] = {"asks": [ask] if ask else [], "bids": [bid] if bid else [], "ts": book.ts}
        if self.sim.seq_ids:
            item["seqId"] = book.seq
        text = orjson.dumps({"arg": {"channel": BEST_QUOTE_CHANNEL, "instId": inst}, "data": [item]}).decode()
        self._l1_text[inst] = text
        subs = self.subs.get((BEST_QUOTE_CHANNEL, inst))
        if subs:
            self.sim.deliver(subs, text, (BEST_QUOTE_CHANNEL, inst))

    def _book_faults(self, inst: str, book: _Book, msg: dict[str, Any]) -> list[str]:
        """What the clients get instead of update `msg` when a book-stream fault fires on it."""
        faults = self.sim.faults
        if faults.take("bad_checksum", inst):
            item = msg["data"][0]
            item["checksum"] = (book.checksum() ^ 0x5A5A5A) or 1  # wrong, and not 0 ("no checksum")
        text = orjson.dumps(msg).decode()
        if faults.take("drop_diff", inst):
            return []
        if faults.take("duplicate_diff", inst):
            self._replayed[inst] = text
            return [text, text]
        if faults.take("reorder_diff", inst):
            self._held[inst] = text
            return []
        if faults.take("malformed_json", inst):
            cut = text.index('"data"')
            return [text[:cut] + '"data":[{,' + text[cut + 8 :]]  # a stray comma: not JSON any more
        if faults.take("truncated_frame", inst):
            return [text[: len(text) // 2]]
        spec = faults.take("oversized_frame", inst)
        if spec is not None:
            pad = max(0, int(spec.param("bytes")) - len(text) - 16)
            return [orjson.dumps({**msg, "pad": " " * pad}).decode()]
        return [text]

    def _on_trades(self, inst: str, msg: dict[str, Any]) -> None:
        flow = self.flows.get(inst)
        if flow is None:
            return
        meta = self.served.meta.get(inst, {})
        for fill in msg["data"]:
            try:
                size = Decimal(fill["sz"])
            except (KeyError, InvalidOperation, TypeError):
                continue
            if fill.get("side") == "buy":
                flow.buys += size
            else:
                flow.sells += size
            flow.trades += 1
            if flow.trades % LIQUIDATION_EVERY:
                continue
            # The taker of a forced trade is the liquidated position's closing order.
            side = fill.get("side", "sell")
            detail = {
                "bkLoss": "0",
                "bkPx": fill.get("px"),
                "ccy": meta.get("settleCcy", ""),
                "posSide": "long" if side == "sell" else "short",
                "side": side,
                "sz": fill.get("sz"),
                "ts": fill.get("ts"),
            }
            uly = self.index_of(inst)
            inst_type = meta.get("instType", "SWAP")
            push = {
                "arg": {"channel": "liquidation-orders", "instType": inst_type},
                "data": [{"details": [detail], "instFamily": uly, "instId": inst, "instType": inst_type, "uly": uly}],
            }
            self._deliver(("liquidation-orders", inst_type), push)

    def _aux(self) -> None:
        """The synthetic pushes (module docstring): mark and index each tick, OI and funding less often."""
        self._aux_ticks += 1
        k = self._aux_ticks
        ts = str(self.clock_ms)
        for inst, book in sorted(self.books.items()):
            if not self.is_derivative(inst):
                continue
            mid = book.mid()
            if mid is None:
                continue
            meta = self.served.meta[inst]
            tick = Decimal(meta["tickSz"])
            mark = self.marks[inst] = _round(mid, tick)
            inst_type = meta["instType"]
            self._deliver(
                ("mark-price", inst),
                {
                    "arg": {"channel": "mark-price", "instId": inst},
                    "data": [{"instId": inst, "instType": inst_type, "markPx": mark, "ts": ts}],
                },
            )
            if k % OI_EVERY == 0:
                self._push_open_interest(inst, meta, Decimal(mark), ts)
            if k % FUNDING_EVERY == 0 and inst_type == "SWAP":
                self._push_funding(inst, mid, ts)
        for index, inst in self.indexes().items():
            mid = self.books[inst].mid()
            if mid is None:
                continue
            tick = Decimal(self.served.meta[inst]["tickSz"])
            px = _round(self._index_price(mid, k), tick)
            self._deliver(
                ("index-tickers", index),
                {
                    "arg": {"channel": "index-tickers", "instId": index},
                    "data": [{"instId": index, "idxPx": px, "ts": ts}],
                },
            )

    @staticmethod
    def _index_price(mid: float, k: int) -> float:
        return mid * (1.0 - 4e-4 * math.cos(0.3 * k))

    def _push_open_interest(self, inst: str, meta: dict[str, Any], mark: Decimal, ts: str) -> None:
        flow = self.flows[inst]
        # Half the net taker flow: |dOI| <= traded volume, as the identity of metrics.md 6.2 requires.
        flow.oi = max(Decimal(0), flow.oi + (flow.buys - flow.sells) / 2)
        flow.buys = flow.sells = Decimal(0)
        ct = Decimal(meta["ctVal"]) * Decimal(meta.get("ctMult") or "1")
        coin = flow.oi * ct if meta.get("ctType") == "linear" else flow.oi * ct / mark
        step = Decimal("0.00000001")
        self._deliver(
            ("open-interest", inst),
            {
                "arg": {"channel": "open-interest", "instId": inst},
                "data": [
                    {
                        "instId": inst,
                        "instType": meta["instType"],
                        "oi": _round(flow.oi, step),
                        "oiCcy": _round(coin, step),
                        "oiUsd": _round(coin * mark, Decimal("0.01")),
                        "ts": ts,
                    }
                ],
            },
        )

    def _push_funding(self, inst: str, mid: float, ts: str) -> None:
        index = self._index_price(mid, self._aux_ticks)
        premium = (mid - index) / index
        rate = min(0.0075, max(-0.0075, 0.0001 + premium / 4))
        now = int(ts)
        funding_time = (now // _EIGHT_HOURS_MS + 1) * _EIGHT_HOURS_MS
        self._deliver(
            ("funding-rate", inst),
            {
                "arg": {"channel": "funding-rate", "instId": inst},
                "data": [
                    {
                        "fundingRate": f"{rate:.8f}",
                        "fundingTime": str(funding_time),
                        "instId": inst,
                        "instType": "SWAP",
                        "maxFundingRate": "0.0075",
                        "method": "current_period",
                        "minFundingRate": "-0.0075",
                        "nextFundingRate": "",
                        "nextFundingTime": str(funding_time + _EIGHT_HOURS_MS),
                        "premium": f"{premium:.8f}",
                        "settFundingRate": "0.0001",
                        "settState": "settled",
                        "ts": ts,
                    }
                ],
            },
        )

    def _deliver(self, key: Key, msg: dict[str, Any]) -> None:
        subs = self.subs.get(key)
        if not subs:
            return
        self.sim.deliver(subs, orjson.dumps(msg).decode(), key)


# --------------------------------------------------------------------------------------------------
# The server


class OkxSimulator(SimulatorServer[_Client]):
    """Serve a recording as OKX v5 on one loopback port (REST and the public websocket).

    Use as `async with OkxSimulator(path, port=0) as sim:` and connect to `sim.ws_url()` and `sim.http_url`.
    Counters (`frames_sent`, `gaps_injected`, `garbage_sent`, `garbage_by_kind`, `slow_disconnects`,
    `idle_disconnects`, `bad_requests`, `loops_completed`, `rest_books_served`) let tests assert what was
    served and injected.

    Protocol options: `ws_snapshot` (send the `books` snapshot on subscribe; False = OKX after the
    announced removal), `checksum` (real CRC32 instead of OKX's current 0), `seq_ids` (False = the 2022
    stream without seqId/prevSeqId), `idle_timeout` (OKX: 30 s).
    """

    CLOSE_REASONS: ClassVar[Mapping[str, tuple[WSCloseCode, bytes]]] = {
        **SimulatorServer.CLOSE_REASONS,
        "idle": (WSCloseCode.POLICY_VIOLATION, b"no data for 30 s"),
    }
    TASK_PREFIX = "okx-sim"
    # Everything of the catalogue but Bybit's u=1 restart (bad_checksum: OKX's CRC32, sent wrong on purpose).
    SUPPORTED_FAULTS = CONNECTION_FAULTS | {
        "drop_diff", "duplicate_diff", "reorder_diff", "seq_gap", "bad_checksum", "malformed_json",
        "truncated_frame", "oversized_frame", "slow_snapshot", "rate_limit", "sub_error",
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
        ws_snapshot: bool = True,
        checksum: bool = False,
        seq_ids: bool = True,
        idle_timeout: float = IDLE_TIMEOUT_S,
        client_queue: int = 4096,
        reply_headroom: int = 256,
        slow_client_timeout: float = 10.0,
        clock_skew_s: float = 0.0,
    ) -> None:
        if client_queue < 1 or reply_headroom < 1 or idle_timeout <= 0:
            raise ValueError("client_queue, reply_headroom and idle_timeout must be positive")
        super().__init__(
            recording_path, host, port, speed, loop, garbage_every, gap_every,
            client_queue=client_queue, reply_headroom=reply_headroom, slow_client_timeout=slow_client_timeout,
            clock_skew_s=clock_skew_s,
        )  # fmt: skip
        self.ws_snapshot = ws_snapshot
        self.checksum = checksum
        self.seq_ids = seq_ids
        self.idle_timeout = idle_timeout
        # counters beyond the common ones
        self.idle_disconnects = 0
        self.rest_books_served = 0
        self.market: _Market | None = None
        self._served: _Served | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def ws_url(self, kind: str = "public") -> str:
        """The websocket URL (`/ws/v5/public`; the only path served, `kind` mirrors the Bybit simulator's API)."""
        return f"{self.ws_base}/ws/v5/{kind}"

    @property
    def loops_completed(self) -> int:
        return 0 if self.market is None else self.market.loops_completed

    @property
    def served_instruments(self) -> list[str]:
        """instIds with a served book (recorded or relabelled)."""
        return [] if self.market is None else sorted(self.market.books)

    async def _prepare(self) -> None:
        self._served = await asyncio.to_thread(_load, self.recording_path)

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v5/public/instruments", self._instruments)
        app.router.add_get("/api/v5/public/time", self._time)
        app.router.add_get("/api/v5/market/books", self._books)
        for path in RUBIK_SERIES:
            app.router.add_get(path, self._rubik)
        app.router.add_get(WS_PATH, self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _start_players(self) -> None:
        assert self._served is not None
        self.market = _Market(self, self._served)
        self.spawn(self.market.run(), "okx-simulator-market")

    def _started_fields(self) -> dict[str, Any]:
        frames = len(self._served.frames) if self._served is not None else 0
        return {"venue": "okx", **super()._started_fields(), "frames": frames, "books": self.served_instruments}

    # -- REST ----------------------------------------------------------------------------------------

    async def _instruments(self, request: web.Request) -> web.Response:
        q = request.query
        inst_type = q.get("instType", "")
        if not inst_type:
            return _okx_json("50014", "Parameter instType can not be empty.")
        if inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            return _okx_json("51000", "Parameter instType error")
        assert self._served is not None
        items = self._served.instruments.get(inst_type, [])
        for param in ("uly", "instFamily", "instId"):
            wanted = q.get(param)
            if wanted:
                items = [item for item in items if item.get(param) == wanted]
        return _okx_json("0", "", items)

    async def _time(self, request: web.Request) -> web.Response:
        return _okx_json("0", "", [{"ts": str(self.clock.now_ms())}])

    async def _books(self, request: web.Request) -> web.Response:
        q = request.query
        inst = q.get("instId", "")
        if not inst:
            return _okx_json("50014", "Parameter instId can not be empty.")
        try:
            depth = int(q.get("sz", "1"))  # OKX's default depth is 1
        except ValueError:
            return _okx_json("51000", "Parameter sz error")
        if not 1 <= depth <= BOOK_DEPTH:
            return _okx_json("51000", "Parameter sz error")
        assert self.market is not None
        slow = self.faults.take("slow_snapshot", inst) if self.faults.wants("slow_snapshot") else None
        if slow is not None:
            await asyncio.sleep(float(slow.param("delay_s")))  # the fault itself: the book is taken when it leaves
        book = self.market.rest_book(inst, depth)
        if book is None:
            return _okx_json("51001", "Instrument ID does not exist.")
        self.rest_books_served += 1
        return _okx_json("0", "", [book])

    async def _rubik(self, request: web.Request) -> web.Response:
        q = request.query
        inst = q.get("instId", "")
        assert self.market is not None
        if not inst:
            return _okx_json("50014", "Parameter instId can not be empty.")
        if not self.market.is_derivative(inst):
            return _okx_json("51001", "Instrument ID does not exist.")
        period_ms = RUBIK_PERIODS_MS.get(q.get("period", "5m"))
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            limit = 0
        if period_ms is None or not 1 <= limit <= 100:
            return _okx_json("51000", "Parameter period or limit error")
        phase = RUBIK_SERIES[request.path] + (zlib.crc32(inst.encode()) % 100) / 10.0
        newest = self.clock.now_ms() // period_ms * period_ms - period_ms  # last closed bucket
        rows = []
        for i in range(limit):
            ts = newest - i * period_ms
            ratio = 1.0 + 0.4 * math.sin(ts / period_ms / 7.0 + phase)
            rows.append([str(ts), f"{ratio:.4f}"])
        return _okx_json("0", "", rows)

    async def _not_found(self, request: web.Request) -> web.Response:
        return _okx_json("404", f"Not Found: {request.path}", status=404)

    # -- websocket -----------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        market = self.market
        assert market is not None
        client = _Client(self, await self._open_ws(request))
        read = self._read_requests(client.ws, functools.partial(self._on_request, client, market))
        return await self._run_client(
            request,
            client,
            read,
            leave=functools.partial(market.drop, client),
            extra={"idle": client.watch_idle(self.idle_timeout)},
        )

    def _on_request(self, client: _Client, market: _Market, text: str | None) -> None:
        """Answer one client frame. Synchronous, so a subscribe's ack and snapshot are queued together."""
        if text == "ping":
            self._reply_text(client, "pong")
            return
        try:
            req = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            req = None
        op = req.get("op") if isinstance(req, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(req, dict):
            self.bad_requests += 1
            self._error(client, None, "60012", f"Invalid request: {(text or '<binary>')[:200]}")
            return
        req_id = req.get("id")
        now = time.monotonic()
        if len(client.requests) == MAX_REQUESTS_PER_HOUR and now - client.requests[0] < 3600.0:
            self.bad_requests += 1
            self._error(client, req_id, "60014", "Requests too frequent.")
            return
        client.requests.append(now)
        args = req.get("args")
        if not isinstance(args, list) or not args:
            self.bad_requests += 1
            self._error(client, req_id, "60012", f"Invalid request: {text[:200] if text else ''}")
            return
        for arg in args:
            key = self._key_of(arg)
            if isinstance(key, str):
                self.bad_requests += 1
                self._error(client, req_id, "60018", key)
                continue
            if op == "subscribe" and key not in client.keys and len(client.keys) >= MAX_SUBSCRIPTIONS_PER_CLIENT:
                self.bad_requests += 1
                self._error(client, req_id, "60012", "Invalid request: too many subscriptions on one connection")
                continue
            if op == "subscribe" and key[0] == "books" and self._sub_error(key[1]):
                # sub_error: OKX answers per arg; this one is refused (code UNCONFIRMED for a transient refusal).
                self.bad_requests += 1
                self._error(client, req_id, "50001", "Service temporarily unavailable, please try again later.")
                continue
            ack: dict[str, Any] = {"event": op, "arg": arg, "connId": client.conn_id}
            if req_id is not None:
                ack = {"id": req_id, **ack}
            if not self._reply_text(client, orjson.dumps(ack).decode()):
                return
            if op == "subscribe":
                if key in client.keys:
                    market.unsubscribe(client, key)  # a repeated books subscribe gets a fresh snapshot
                market.subscribe(client, key)
            else:
                market.unsubscribe(client, key)

    def _sub_error(self, inst: str) -> bool:
        return self.faults.wants("sub_error") and self.faults.take("sub_error", inst) is not None

    def _key_of(self, arg: object) -> Key | str:
        """The subscription key of one arg, or the error message OKX would send."""
        assert self.market is not None
        if not isinstance(arg, dict) or not isinstance(arg.get("channel"), str):
            return f"Invalid request: {orjson.dumps(arg).decode()[:200]}"
        channel = arg["channel"]
        if channel not in SERVED_CHANNELS:
            return f"Wrong URL or channel:{channel} doesn't exist."
        if channel == "liquidation-orders":
            inst_type = arg.get("instType")
            if inst_type not in ("SWAP", "FUTURES", "MARGIN", "OPTION"):
                return f"Wrong URL or channel:{channel},instType:{inst_type} doesn't exist."
            return (channel, inst_type)
        inst = arg.get("instId")
        market = self.market
        if channel == "index-tickers":
            known = inst in market.indexes()
        elif channel in ("books", "trades", "tickers", BEST_QUOTE_CHANNEL):
            known = inst in market.books
        elif channel == "funding-rate":
            known = (
                isinstance(inst, str)
                and market.is_derivative(inst)
                and inst.endswith("-SWAP")
                and (inst in market.books)
            )
        else:
            known = isinstance(inst, str) and market.is_derivative(inst) and inst in market.books
        if not known or not isinstance(inst, str):
            return f"Wrong URL or channel:{channel},instId:{inst} doesn't exist."
        return (channel, inst)

    def _error(self, client: _Client, req_id: object, code: str, msg: str) -> None:
        body: dict[str, Any] = {"event": "error", "code": code, "msg": msg, "connId": client.conn_id}
        if req_id is not None:
            body = {"id": req_id, **body}
        self._reply_text(client, orjson.dumps(body).decode())

    def _reply_text(self, client: _Client, text: str) -> bool:
        client.activity.set()
        return self.offer_or_kick(client, text, None, reply=True)


def _okx_json(code: str, msg: str, data: list[Any] | None = None, status: int = 200) -> web.Response:
    body = {"code": code, "msg": msg, "data": [] if data is None else data}
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


run_simulator = simulator_runner(OkxSimulator, DEFAULT_PORT, "flowgauge simulate --venue okx")
