"""Bybit v5 venue simulator: replays a recording over Bybit's real REST and public websocket protocol.

Sits in `service/replay`, beside the recorder and the replayer; `flowgauge simulate` and the offline demo
run it, and the daemon reaches it only through configured base URLs (ws://host:port/v5/public/linear,
http://host:port). It must not import the daemon's parsers, books or metrics: it is the independent
ground truth the daemon is tested against. It binds loopback by default and never opens an outbound
connection.

Model. Each websocket path (`/v5/public/linear`, `/v5/public/spot`, ...) is one *market*: one player
task walks the frames recorded on connections to that path, in receive-time order, paced by the recorded
gaps divided by `speed` (0 = as fast as the subscribed clients read). Like the venue, a market is shared:
every client sees the same frames with the same ids, and a client only receives the topics it subscribed.
The market keeps the current book of every `orderbook.*` topic and the merged state of every `tickers.*`
topic, so a client that subscribes late (or unsubscribes and subscribes again to resync) first gets a
snapshot of the current state and then the deltas that follow it (`u` = snapshot `u` + 1). A market
pauses while nobody is subscribed to anything on it.

Timestamps and ids. Exchange times (`ts`, `cts`, trade `T`; kline bars keep theirs) are shifted by one
constant per loop so the replay looks live: the frame with the smallest recorded receive latency is
stamped "now" when sent at speed 1 (at other speeds the times keep the recorded spacing and drift from the
wall clock). When the recording ends the market loops: `u`, `seq` and `cs` (and trade ids) are shifted by
a per-loop offset larger than the recording's span, so ids keep increasing, and every orderbook topic
restarts with its recorded snapshot (a new snapshot is a reset on Bybit).

Faults. `gap_every=N` silently withholds every N-th delta of each orderbook topic from all clients (the
market's own book still applies it, so a resync snapshot is correct). `garbage_every=N` sends each client
a malformed frame after every N data frames it received, cycling through a non-JSON binary frame, a
well-formed JSON orderbook delta with wrongly typed fields, and a truncated copy of the last frame.

Bounds. Each client has one bounded outbound queue drained by one writer task. At speed > 0 a client whose
queue is full is disconnected (close 1008, counted in `slow_disconnects`); at speed 0 the market waits up
to `slow_client_timeout` for room and then disconnects it. Replies to the client's own requests may use a
small extra headroom; a client that floods requests without reading is disconnected the same way.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import socket
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from service.replay.recording import Connect, Http, Recv, iter_records

__all__ = ["CATEGORIES", "DEFAULT_PORT", "BybitSimulator", "run_simulator"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9780
CATEGORIES = ("linear", "spot", "inverse", "option")  # Bybit v5 public websocket paths / REST categories
WS_PATH_PREFIX = "/v5/public/"
SPOT_MAX_ARGS = 10  # Bybit: spot allows at most 10 args per subscribe request
MAX_TOPICS_PER_CLIENT = 2000  # our bound on one connection's subscriptions (topics are client-chosen strings)
_YIELD_EVERY = 256  # frames processed between forced yields when the player is not sleeping
_CLOSE_TIMEOUT_S = 1.0
_GARBAGE_KINDS = ("non_json", "bad_types", "truncated")


# --------------------------------------------------------------------------------------------------
# The recording, prepared for serving


@dataclass(slots=True)
class _Frame:
    ts: float  # recorded local receive time, unix seconds (drives pacing)
    topic: str
    raw: str  # the frame text as recorded; parsed again when played (keeps memory to one copy)


@dataclass(slots=True)
class _Tape:
    """Everything one market replays, plus the spans used to keep times and ids increasing across loops."""

    frames: list[_Frame] = field(default_factory=list)
    u_span: int = 1  # > max over orderbook topics of (last u - first u)
    seq_span: int = 1  # > max - min over all cross-sequence ids (orderbook seq, trade seq, ticker cs)
    ts_span_ms: int = 1  # > max - min over all exchange times
    trade_id_span: int = 1  # > max - min over numeric trade ids
    latency_ms: int = 0  # smallest recorded (receive time - exchange ts)


@dataclass(slots=True)
class _Served:
    instruments: dict[str, dict[str, Any]]  # category -> recorded instruments-info body (lists merged)
    tapes: dict[str, _Tape]  # category -> tape


def _load(path: Path) -> _Served:
    """Read a recording into per-category tapes and instruments-info bodies (blocking; run in a thread)."""
    addr_of: dict[str, str] = {}
    recvs: dict[str, list[Recv]] = collections.defaultdict(list)
    instruments: dict[str, dict[str, Any]] = {}
    for rec in iter_records(path):
        if isinstance(rec, Connect):
            addr_of[rec.conn] = rec.addr
        elif isinstance(rec, Recv):
            recvs[rec.conn].append(rec)
        elif isinstance(rec, Http):
            _add_instruments(instruments, rec)
    by_category: dict[str, list[Recv]] = collections.defaultdict(list)
    for conn, frames in recvs.items():
        category = _category_of(addr_of.get(conn, ""))
        if category is not None:
            by_category[category].extend(frames)
    tapes = {category: _make_tape(frames) for category, frames in by_category.items()}
    return _Served(instruments, tapes)


def _category_of(addr: str) -> str | None:
    path = urlsplit(addr).path
    if not path.startswith(WS_PATH_PREFIX):
        return None
    category = path[len(WS_PATH_PREFIX) :].strip("/")
    return category if category in CATEGORIES else None


def _add_instruments(into: dict[str, dict[str, Any]], rec: Http) -> None:
    url = urlsplit(rec.url)
    if not url.path.endswith("/v5/market/instruments-info"):
        return
    try:
        body = orjson.loads(rec.data)
        category = body["result"]["category"]
        items = body["result"]["list"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return  # an error answer recorded from the venue is not an instruments list
    if category not in into:
        into[category] = body
        return
    # Several pages of one category: one list, later pages appended, duplicates dropped.
    merged = into[category]["result"]["list"]
    known = {item.get("symbol") for item in merged}
    merged.extend(item for item in items if item.get("symbol") not in known)


def _make_tape(recvs: list[Recv]) -> _Tape:
    recvs.sort(key=lambda r: r.ts)  # stable: frames of one connection keep their order on equal times
    tape = _Tape()
    u_range: dict[str, list[int]] = {}
    seqs: list[int] = []
    times: list[int] = []
    trade_ids: list[int] = []
    latency: int | None = None
    for rec in recvs:
        try:
            msg = orjson.loads(rec.data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(msg, dict) or not isinstance(msg.get("topic"), str):
            continue  # acks and pongs are answered live, not replayed
        topic = msg["topic"]
        tape.frames.append(_Frame(rec.ts, topic, rec.data))
        ts = msg.get("ts")
        if _is_int(ts):
            times.append(ts)
            lat = round(rec.ts * 1000) - ts
            latency = lat if latency is None else min(latency, lat)
        if _is_int(msg.get("cts")):
            times.append(msg["cts"])
        if _is_int(msg.get("cs")):
            seqs.append(msg["cs"])
        data = msg.get("data")
        if isinstance(data, dict):
            if _is_int(data.get("u")):
                r = u_range.setdefault(topic, [data["u"], data["u"]])
                r[0], r[1] = min(r[0], data["u"]), max(r[1], data["u"])
            if _is_int(data.get("seq")):
                seqs.append(data["seq"])
        elif isinstance(data, list):
            for item in data:
                if not isinstance(item, dict):
                    continue
                if _is_int(item.get("T")):
                    times.append(item["T"])
                if _is_int(item.get("seq")):
                    seqs.append(item["seq"])
                trade_id = item.get("i")
                if isinstance(trade_id, str) and trade_id.isdigit():
                    trade_ids.append(int(trade_id))
    tape.u_span = max((hi - lo for lo, hi in u_range.values()), default=0) + 1
    tape.seq_span = (max(seqs) - min(seqs) + 1) if seqs else 1
    tape.ts_span_ms = (max(times) - min(times) + 1) if times else 1
    tape.trade_id_span = (max(trade_ids) - min(trade_ids) + 1) if trade_ids else 1
    tape.latency_ms = latency or 0
    return tape


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------------------------------
# Per-loop rewriting of one frame (pure)


@dataclass(slots=True, frozen=True)
class _Shift:
    loop: int
    ts_ms: int  # added to exchange times
    u: int  # added to orderbook `u`
    seq: int  # added to `seq` / `cs`
    trade_id: int  # added to numeric trade ids


def _rewrite(msg: dict[str, Any], shift: _Shift) -> None:
    """Shift exchange times and ids of one decoded Bybit frame in place."""
    for key in ("ts", "cts"):
        if _is_int(msg.get(key)):
            msg[key] += shift.ts_ms
    if _is_int(msg.get("cs")):
        msg["cs"] += shift.seq
    data = msg.get("data")
    if isinstance(data, dict):
        if _is_int(data.get("u")):
            data["u"] += shift.u
        if _is_int(data.get("seq")):
            data["seq"] += shift.seq
    elif isinstance(data, list):
        for item in data:
            if not isinstance(item, dict):
                continue
            if _is_int(item.get("T")):
                item["T"] += shift.ts_ms
            if _is_int(item.get("seq")):
                item["seq"] += shift.seq
            trade_id = item.get("i")
            if shift.loop and isinstance(trade_id, str):
                # Looped trades must not repeat an id a consumer may de-duplicate on.
                item["i"] = str(int(trade_id) + shift.trade_id) if trade_id.isdigit() else f"{trade_id}-{shift.loop}"


# --------------------------------------------------------------------------------------------------
# Market state kept for late subscribers


class _Book:
    """Current book of one orderbook topic, keyed by price value, keeping the venue's price/size strings."""

    __slots__ = ("asks", "bids", "cts", "depth", "seq", "symbol", "ts", "u")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}
        self.symbol = ""
        self.u: Any = None
        self.seq: Any = None
        self.ts: Any = None
        self.cts: Any = None

    def apply(self, msg: dict[str, Any]) -> None:
        data = msg.get("data")
        if not isinstance(data, dict):
            return
        if msg.get("type") == "snapshot":
            self.bids.clear()
            self.asks.clear()
        _apply_side(self.bids, data.get("b"))
        _apply_side(self.asks, data.get("a"))
        self.symbol = data.get("s", self.symbol)
        self.u = data.get("u", self.u)
        self.seq = data.get("seq", self.seq)
        self.ts = msg.get("ts", self.ts)
        self.cts = msg.get("cts", self.cts)

    def snapshot(self, topic: str) -> dict[str, Any]:
        bids = [self.bids[p] for p in sorted(self.bids, reverse=True)[: self.depth]]
        asks = [self.asks[p] for p in sorted(self.asks)[: self.depth]]
        data = {
            "s": self.symbol,
            "b": [list(x) for x in bids],
            "a": [list(x) for x in asks],
            "u": self.u,
            "seq": self.seq,
        }
        return {"topic": topic, "type": "snapshot", "ts": self.ts, "data": data, "cts": self.cts}


def _apply_side(side: dict[float, tuple[str, str]], levels: object) -> None:
    if not isinstance(levels, list):
        return
    for level in levels:
        try:
            price_s, size_s = level[0], level[1]
            price, size = float(price_s), float(size_s)
        except (TypeError, ValueError, IndexError, KeyError):
            continue
        if size == 0.0:
            side.pop(price, None)
        else:
            side[price] = (price_s, size_s)


class _Ticker:
    """Merged `tickers.*` state: deltas omit unchanged fields, so a late subscriber needs the merge."""

    __slots__ = ("cs", "data", "ts")

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.cs: Any = None
        self.ts: Any = None

    def apply(self, msg: dict[str, Any]) -> None:
        data = msg.get("data")
        if not isinstance(data, dict):
            return
        if msg.get("type") == "snapshot":
            self.data = dict(data)
        else:
            self.data.update(data)
        self.cs = msg.get("cs", self.cs)
        self.ts = msg.get("ts", self.ts)

    def snapshot(self, topic: str) -> dict[str, Any]:
        out: dict[str, Any] = {"topic": topic, "type": "snapshot", "data": dict(self.data)}
        if self.cs is not None:
            out["cs"] = self.cs
        if self.ts is not None:
            out["ts"] = self.ts
        return out


def _book_depth(topic: str) -> int:
    try:
        return int(topic.split(".")[1])
    except (IndexError, ValueError):
        return 200


# --------------------------------------------------------------------------------------------------
# Clients


class _Client:
    """One websocket client: its subscriptions and its bounded outbound queue, drained by `run_writer`."""

    def __init__(self, sim: BybitSimulator, ws: web.WebSocketResponse, category: str) -> None:
        self.sim = sim
        self.ws = ws
        self.category = category
        self.conn_id = _conn_id()
        self.topics: set[str] = set()
        self.kicked: str | None = None  # why the server is closing this client
        self.data_sent = 0
        self.writer_task: asyncio.Task[None] | None = None
        # (text, topic or None for replies to requests)
        self._queue: collections.deque[tuple[str, str | None]] = collections.deque()
        self._items = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._last_text = ""
        self._last_topic = ""
        self._garbage_turn = 0

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.sim.client_queue

    def offer(self, text: str, topic: str | None, *, reply: bool = False) -> bool:
        """Queue one frame without waiting; False if there is no room (the caller then disconnects us)."""
        limit = self.sim.client_queue + (self.sim.reply_headroom if reply else 0)
        if self.kicked is not None or len(self._queue) >= limit:
            return False
        self._queue.append((text, topic))
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
        """Disconnect: stop the writer; the connection handler closes the socket."""
        if self.kicked is not None:
            return
        self.kicked = reason
        self._queue.clear()
        self._room.set()  # wake a market waiting for room; it sees `kicked` and moves on
        if self.writer_task is not None:
            self.writer_task.cancel()

    async def run_writer(self) -> None:
        queue = self._queue
        try:
            while True:
                while not queue:
                    self._items.clear()
                    await self._items.wait()
                text, topic = queue.popleft()
                if not self.full:
                    self._room.set()
                await self.ws.send_str(text)
                if topic is None:
                    continue
                self.data_sent += 1
                self.sim.frames_sent += 1
                self._last_text, self._last_topic = text, topic
                every = self.sim.garbage_every
                if every and self.data_sent % every == 0:
                    await self._send_garbage()
        except ConnectionError:
            return  # the peer went away; the handler's reader sees the close

    async def _send_garbage(self) -> None:
        kind = _GARBAGE_KINDS[self._garbage_turn % len(_GARBAGE_KINDS)]
        self._garbage_turn += 1
        if kind == "non_json":
            # Bybit only sends text frames: a binary frame of invalid UTF-8 is as wrong as it gets.
            await self.ws.send_bytes(b"\x00\xff\xfe<garbage \x80\x81 not json>")
        elif kind == "bad_types":
            await self.ws.send_str(orjson.dumps(self._bad_delta()).decode())
        else:
            last = self._last_text or '{"topic":"orderbook.200.BTCUSDT","type":"delta","data":{"s":"BTC'
            await self.ws.send_str(last[: max(1, len(last) // 2)])
        self.sim.garbage_sent += 1
        self.sim.garbage_by_kind[kind] += 1

    def _bad_delta(self) -> dict[str, Any]:
        topic = self._last_topic if self._last_topic.startswith("orderbook.") else ""
        if not topic:
            topic = next((t for t in sorted(self.topics) if t.startswith("orderbook.")), "orderbook.200.BTCUSDT")
        now_ms = time.time_ns() // 1_000_000
        data = {"s": 12345, "b": "not-a-list", "a": [[None, {"size": True}]], "u": "NaN", "seq": [1.5]}
        return {"topic": topic, "type": "delta", "ts": now_ms, "data": data, "cts": str(now_ms)}


def _conn_id() -> str:
    # Shaped like the venue's ids, e.g. "d8bu1olkndm7crnfs1e0-j6akw".
    alphabet = string.ascii_lowercase + string.digits
    return (
        "".join(secrets.choice(alphabet) for _ in range(20)) + "-" + "".join(secrets.choice(alphabet) for _ in range(5))
    )


# --------------------------------------------------------------------------------------------------
# Markets


class _Market:
    """One websocket path's shared replay: subscribers, live state per topic, and the player."""

    def __init__(self, sim: BybitSimulator, category: str, tape: _Tape) -> None:
        self.sim = sim
        self.category = category
        self.tape = tape
        self.subscribers: dict[str, set[_Client]] = collections.defaultdict(set)
        self.books: dict[str, _Book] = {}
        self.tickers: dict[str, _Ticker] = {}
        self.loops_completed = 0
        self._deltas_seen: collections.Counter[str] = collections.Counter()
        self._active = asyncio.Event()  # set while at least one client subscribes to something here

    # -- subscriptions (synchronous: a snapshot and the deltas after it are queued without a gap) ----

    def subscribe(self, client: _Client, topic: str) -> None:
        client.topics.add(topic)
        self.subscribers[topic].add(client)
        self._active.set()
        state = self.books.get(topic) or self.tickers.get(topic)
        if state is not None and not client.offer(orjson.dumps(state.snapshot(topic)).decode(), topic, reply=True):
            self.sim.kick(client, "slow")

    def unsubscribe(self, client: _Client, topic: str) -> None:
        client.topics.discard(topic)
        subs = self.subscribers.get(topic)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self.subscribers[topic]
        if not self.subscribers:
            self._active.clear()

    def drop(self, client: _Client) -> None:
        for topic in list(client.topics):
            self.unsubscribe(client, topic)

    # -- the player ----------------------------------------------------------------------------------

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
            # One constant per loop maps recorded times to now; never backwards, so times keep increasing.
            live = time.time_ns() // 1_000_000 - round(first_ts * 1000) + self.tape.latency_ms
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
                    await self._wait_for_room(frame.topic)
                shift = _Shift(
                    loop,
                    ts_shift,
                    loop * self.tape.u_span,
                    loop * self.tape.seq_span,
                    loop * self.tape.trade_id_span,
                )
                self._play(frame, shift)
            loop += 1
            self.loops_completed += 1
            if not sim.loop:
                return

    async def _wait_for_room(self, topic: str) -> None:
        """Speed 0: let every subscriber of `topic` drain before the frame is played (bounded wait)."""
        while True:
            full = [c for c in self.subscribers.get(topic, ()) if c.full]
            if not full:
                return
            for client in full:
                if not await client.wait_room(self.sim.slow_client_timeout):
                    self.sim.kick(client, "slow")

    def _play(self, frame: _Frame, shift: _Shift) -> None:
        try:
            msg = orjson.loads(frame.raw)
        except orjson.JSONDecodeError:
            return
        _rewrite(msg, shift)
        topic = frame.topic
        deliver = True
        if topic.startswith("orderbook."):
            book = self.books.get(topic)
            if book is None and msg.get("type") == "snapshot":  # a delta before any snapshot has no book
                book = self.books[topic] = _Book(_book_depth(topic))
            if book is not None:
                book.apply(msg)
            if msg.get("type") == "delta" and self.sim.gap_every:
                self._deltas_seen[topic] += 1
                if self._deltas_seen[topic] % self.sim.gap_every == 0:
                    deliver = False  # the market's book applied it; no client will see it
                    self.sim.gaps_injected += 1
        elif topic.startswith("tickers."):
            self.tickers.setdefault(topic, _Ticker()).apply(msg)
        subs = self.subscribers.get(topic)
        if not deliver or not subs:
            return
        text = orjson.dumps(msg).decode()
        for client in list(subs):
            if not client.offer(text, topic):
                self.sim.kick(client, "slow")


# --------------------------------------------------------------------------------------------------
# The server


class BybitSimulator:
    """Serve a recording as Bybit v5 on one loopback port (REST and public websockets).

    Use as `async with BybitSimulator(path, port=0) as sim:` and connect to `sim.ws_url("linear")` and
    `sim.http_url`. Counters (`frames_sent`, `gaps_injected`, `garbage_sent`, `garbage_by_kind`,
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
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        for name, value in (("garbage_every", garbage_every), ("gap_every", gap_every)):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None")
        if client_queue < 1 or reply_headroom < 1:
            raise ValueError("client_queue and reply_headroom must be >= 1")
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
        # counters
        self.frames_sent = 0  # data frames written to clients (snapshots included, garbage not)
        self.gaps_injected = 0
        self.garbage_sent = 0
        self.garbage_by_kind: collections.Counter[str] = collections.Counter()
        self.slow_disconnects = 0
        self.bad_requests = 0  # client frames we answered with an error
        self.connections_total = 0
        self.markets: dict[str, _Market] = {}
        self._served: _Served | None = None
        self._clients: set[_Client] = set()
        self._no_clients = asyncio.Event()  # lets close() wait for handlers to finish their close handshakes
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

    def ws_url(self, category: str = "linear") -> str:
        return f"ws://{self._url_host()}:{self.bound_port}{WS_PATH_PREFIX}{category}"

    @property
    def loops_completed(self) -> int:
        return sum(m.loops_completed for m in self.markets.values())

    @property
    def clients(self) -> int:
        return len(self._clients)

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        self._served = await asyncio.to_thread(_load, self.recording_path)
        self._failed = asyncio.get_running_loop().create_future()
        app = web.Application()
        app.router.add_get("/v5/market/instruments-info", self._instruments_info)
        app.router.add_get("/v5/market/time", self._server_time)
        app.router.add_get(WS_PATH_PREFIX + "{category}", self._ws_handler)
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
        for category in CATEGORIES:
            market = _Market(self, category, self._served.tapes.get(category, _Tape()))
            self.markets[category] = market
            task = asyncio.create_task(market.run(), name=f"simulator-market:{category}")
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        tapes = {c: len(t.frames) for c, t in self._served.tapes.items()}
        log.info(
            "simulator_started",
            extra={"fields": {"host": self.host, "port": self.bound_port, "speed": self.speed, "frames": tapes}},
        )

    async def close(self) -> None:
        for client in list(self._clients):
            self.kick(client, "shutdown")
        # Let each handler finish its close handshake while the server still reads the peers' replies;
        # the server shutdown below would otherwise leave them to time out.
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
        """Return once the simulator is closed; raise if a market player crashed (that is a bug)."""
        if self._failed is None:
            raise RuntimeError("simulator not started")
        await asyncio.shield(self._failed)

    async def __aenter__(self) -> BybitSimulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def kick(self, client: _Client, reason: str) -> None:
        if client.kicked is None and reason == "slow":
            self.slow_disconnects += 1
            log.warning("simulator_slow_client", extra={"fields": {"conn_id": client.conn_id}})
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

    # -- REST ----------------------------------------------------------------------------------------

    async def _instruments_info(self, request: web.Request) -> web.Response:
        q = request.query
        category = q.get("category", "")
        if category not in CATEGORIES:
            return _json(
                {
                    "retCode": 10001,
                    "retMsg": "Illegal category",
                    "result": {},
                    "retExtInfo": {},
                    "time": _now_ms(),
                }
            )
        assert self._served is not None
        recorded = self._served.instruments.get(category)
        if recorded is None:
            body: dict[str, Any] = {
                "retCode": 0,
                "retMsg": "OK",
                "result": {"category": category, "list": []},
                "retExtInfo": {},
                "time": _now_ms(),
            }
            if category != "spot":  # spot answers carry no cursor
                body["result"]["nextPageCursor"] = ""
            return _json(body)
        items = recorded["result"]["list"]
        for param, key in (("symbol", "symbol"), ("baseCoin", "baseCoin"), ("status", "status")):
            wanted = q.get(param)
            if wanted:
                items = [item for item in items if item.get(key) == wanted]
        result = dict(recorded["result"])
        result["list"] = items
        if "nextPageCursor" in result:
            result["nextPageCursor"] = ""  # everything fits one page
        body = dict(recorded)
        body["result"] = result
        body["time"] = _now_ms()
        return _json(body)

    async def _server_time(self, request: web.Request) -> web.Response:
        ns = time.time_ns()
        return _json(
            {
                "retCode": 0,
                "retMsg": "OK",
                "result": {"timeSecond": str(ns // 1_000_000_000), "timeNano": str(ns)},
                "retExtInfo": {},
                "time": ns // 1_000_000,
            }
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        return _json(
            {
                "retCode": 404,
                "retMsg": f"Not Found: {request.path}",
                "result": {},
                "retExtInfo": {},
                "time": _now_ms(),
            },
            status=404,
        )

    # -- websockets ----------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        category = request.match_info["category"]
        market = self.markets.get(category)
        if market is None:
            return await self._not_found(request)
        ws = web.WebSocketResponse(
            autoping=True, heartbeat=None, compress=False, max_msg_size=1 << 16, timeout=_CLOSE_TIMEOUT_S
        )
        await ws.prepare(request)
        client = _Client(self, ws, category)
        self._clients.add(client)
        self._no_clients.clear()
        self.connections_total += 1
        reader = asyncio.create_task(self._read_loop(client, market), name=f"simulator-read:{client.conn_id}")
        writer = asyncio.create_task(client.run_writer(), name=f"simulator-write:{client.conn_id}")
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
                        log.error(
                            "simulator_client_failed",
                            extra={"fields": {"conn_id": client.conn_id}},
                            exc_info=task.exception(),
                        )
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
                request.transport.abort()  # a peer that reads nothing never answers the close

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
        if not isinstance(req, dict):
            self.bad_requests += 1
            self._reply(
                client,
                {
                    "success": False,
                    "ret_msg": "error:request not json",
                    "conn_id": client.conn_id,
                    "req_id": "",
                    "op": "",
                },
            )
            return
        op = req.get("op")
        req_id = req.get("req_id")
        if op == "ping":
            self._reply(client, self._ack(client, "ping", req_id, True, "pong"))
        elif op in ("subscribe", "unsubscribe"):
            self._on_subscription(client, market, op, req.get("args"), req_id)
        else:
            self.bad_requests += 1
            self._reply(
                client,
                self._ack(
                    client,
                    op if isinstance(op, str) else "",
                    req_id,
                    False,
                    f"error:handler not found,op:{op}",
                ),
            )

    def _on_subscription(self, client: _Client, market: _Market, op: str, args: object, req_id: object) -> None:
        if not isinstance(args, list) or not args or not all(isinstance(a, str) and a for a in args):
            self.bad_requests += 1
            self._reply(client, self._ack(client, op, req_id, False, "error:args must be a list of topics"))
            return
        if client.category == "spot" and len(args) > SPOT_MAX_ARGS:
            self.bad_requests += 1
            self._reply(client, self._ack(client, op, req_id, False, f"error:args size >{SPOT_MAX_ARGS}"))
            return
        if op == "subscribe" and len(client.topics | set(args)) > MAX_TOPICS_PER_CLIENT:
            self.bad_requests += 1
            msg = f"error:too many topics on one connection (max {MAX_TOPICS_PER_CLIENT})"
            self._reply(client, self._ack(client, op, req_id, False, msg))
            return
        if op == "unsubscribe":
            self._reply(client, self._ack(client, op, req_id, True, ""))
            for topic in args:
                market.unsubscribe(client, topic)
            return
        # Like the venue: topics already held make the answer a failure; new ones are still taken.
        repeated = [t for t in args if t in client.topics]
        if repeated:
            self.bad_requests += 1
            ack = self._ack(client, op, req_id, False, f"error:already subscribed,topic:{repeated[0]}")
        else:
            ack = self._ack(client, op, req_id, True, "")
        if not self._reply(client, ack):
            return
        for topic in dict.fromkeys(args):
            if topic not in client.topics:
                market.subscribe(client, topic)

    def _ack(self, client: _Client, op: str, req_id: object, success: bool, ret_msg: str) -> dict[str, Any]:
        # Linear acks always carry req_id ("" when none was sent); spot's carry it only when sent and
        # echo the op as ret_msg on success (both as recorded from the venue).
        if client.category == "spot" and success and not ret_msg:
            ret_msg = op
        out: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": client.conn_id}
        if req_id is not None or client.category != "spot":
            out["req_id"] = req_id if req_id is not None else ""
        out["op"] = op
        return out

    def _reply(self, client: _Client, body: dict[str, Any]) -> bool:
        if client.offer(orjson.dumps(body).decode(), None, reply=True):
            return True
        self.kick(client, "slow")
        return False


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


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def run_simulator(
    recording_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    speed: float = 1.0,
    loop: bool = True,
    garbage_every: int | None = None,
    gap_every: int | None = None,
    *,
    on_ready: Callable[[BybitSimulator], None] | None = None,
    **options: Any,
) -> None:
    """Serve until cancelled (the CLI's `flowgauge simulate`). `on_ready` gets the started simulator."""
    async with BybitSimulator(recording_path, host, port, speed, loop, garbage_every, gap_every, **options) as sim:
        if on_ready is not None:
            on_ready(sim)
        await sim.wait()
