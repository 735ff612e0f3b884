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

Timestamps and ids. Exchange times (`ts`, `cts`, trade `T`; kline bars keep theirs) follow the wall clock
through `base.TapeClock`: at every speed and across loops a frame is stamped within a fraction of a second of
when it is sent (gaps divided by `speed`, like the pacing), shifted by `clock_skew_s` if given; a ticker's
`nextFundingTime` moves with its frame's `ts`. When the recording ends the market loops: `u`, `seq` and `cs`
(and trade ids) are shifted by a per-loop offset larger than the recording's span, so ids keep increasing,
and every orderbook topic restarts with its recorded snapshot (a new snapshot is a reset on Bybit).

Faults. Every kind of `faults.py` that applies to Bybit (`SUPPORTED_FAULTS`: all but `bad_checksum`, as
Bybit's linear books carry none), on `orderbook.*` topics of the instrument: a withheld, duplicated, reordered,
malformed, truncated or oversized delta (a duplicated one is sent twice in a row and once more after the topic's
next delta, a stale replay: harmless only if the client drops a `u` at or below its book's); `seq_gap` shifts the
topic's `u` from then on; `u1_restart` sends the current book as a snapshot with `u=1` and `u` counts on from
there; `slow_snapshot` holds a (re)subscribe's snapshot (and the deltas after it) back by `delay_s`; `sub_error`
answers a subscribe of the instrument's book with a failure ack and does not subscribe that topic. The
connection, clock and REST faults are `base`'s. The market's own book applies every message whatever the fault
and is the truth: after every `u` its top 10 levels go to `sim.truth` (keyed by `u`, the daemon's `book_seq`).

Best quotes. Bybit's best-quote stream is `orderbook.1.<symbol>` (snapshots only). For an instrument whose
recording holds no `orderbook.1`, the market derives it from its own book: after every message of the instrument's
deepest recorded book topic that changed the best bid or ask (price or size), a `snapshot` with that top, the
book's `u`, `seq`, `ts` and `cts` (so a `u1_restart` reaches it as `u = 1`). It follows the market's book, not what
a book fault let through (the venue's level-1 stream does not lose what its deeper stream dropped); Bybit's
unchanged re-send every 3 s is not simulated. A subscriber gets the last one at once, as on the venue. The book
faults (`sub_error`, `slow_snapshot`) never fire on an `orderbook.1` topic.

`gap_every=N` silently withholds every N-th delta of each orderbook topic from all clients (the
market's own book still applies it, so a resync snapshot is correct). `garbage_every=N` sends each client
a malformed frame after every N data frames it received, cycling through a non-JSON binary frame, a
well-formed JSON orderbook delta with wrongly typed fields, and a truncated copy of the last frame.

Bounds. Each client has one bounded outbound queue drained by one writer task. At speed > 0 a client whose
queue is full is disconnected (close 1008, counted in `slow_disconnects`); at speed 0 the market waits up
to `slow_client_timeout` for room and then disconnects it. Replies to the client's own requests may use a
small extra headroom; a client that floods requests without reading is disconnected the same way.
The server plumbing (runner, client queues and writers, slow-client policy, pacing) is `sim_base.py`'s.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import os
import secrets
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from flowgauge.recording import Connect, Http, Recv, iter_records
from flowgauge.simulate.base import (
    SimClient,
    SimMarket,
    SimulatorServer,
    TapeClock,
    is_int,
    json_response,
    simulator_runner,
)
from flowgauge.simulate.faults import CONNECTION_FAULTS
from flowgauge.simulate.lifecycle import Lifecycle
from flowgauge.simulate.truth import TRUTH_DEPTH

__all__ = ["CATEGORIES", "DEFAULT_PORT", "BybitSimulator", "run_simulator"]

DEFAULT_PORT = 9780
CATEGORIES = ("linear", "spot", "inverse", "option")  # Bybit v5 public websocket paths / REST categories
WS_PATH_PREFIX = "/v5/public/"
SPOT_MAX_ARGS = 10  # Bybit: spot allows at most 10 args per subscribe request
BEST_QUOTE_PREFIX = "orderbook.1."  # + symbol: the level-1 (best-quote) stream
MAX_TOPICS_PER_CLIENT = 2000  # our bound on one connection's subscriptions (topics are client-chosen strings)


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
        if is_int(ts):
            times.append(ts)
            lat = round(rec.ts * 1000) - ts
            latency = lat if latency is None else min(latency, lat)
        if is_int(msg.get("cts")):
            times.append(msg["cts"])
        if is_int(msg.get("cs")):
            seqs.append(msg["cs"])
        data = msg.get("data")
        if isinstance(data, dict):
            if is_int(data.get("u")):
                r = u_range.setdefault(topic, [data["u"], data["u"]])
                r[0], r[1] = min(r[0], data["u"]), max(r[1], data["u"])
            if is_int(data.get("seq")):
                seqs.append(data["seq"])
        elif isinstance(data, list):
            for item in data:
                if not isinstance(item, dict):
                    continue
                if is_int(item.get("T")):
                    times.append(item["T"])
                if is_int(item.get("seq")):
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


# --------------------------------------------------------------------------------------------------
# Per-loop rewriting of one frame (pure)


@dataclass(slots=True, frozen=True)
class _Shift:
    loop: int
    clock: TapeClock  # maps exchange times
    u: int  # added to orderbook `u`
    seq: int  # added to `seq` / `cs`
    trade_id: int  # added to numeric trade ids


def _rewrite(msg: dict[str, Any], shift: _Shift) -> None:
    """Shift exchange times and ids of one decoded Bybit frame in place."""
    recorded_ts = msg.get("ts")
    for key in ("ts", "cts"):
        if is_int(msg.get(key)):
            msg[key] = shift.clock.ms(msg[key])
    if is_int(msg.get("cs")):
        msg["cs"] += shift.seq
    data = msg.get("data")
    if isinstance(data, dict):
        funding = data.get("nextFundingTime")
        if is_int(recorded_ts) and isinstance(funding, str) and funding.isdigit() and int(funding):
            data["nextFundingTime"] = str(int(funding) + msg["ts"] - recorded_ts)  # a schedule: moved, not scaled
        if is_int(data.get("u")):
            data["u"] += shift.u
        if is_int(data.get("seq")):
            data["seq"] += shift.seq
    elif isinstance(data, list):
        for item in data:
            if not isinstance(item, dict):
                continue
            if is_int(item.get("T")):
                item["T"] = shift.clock.ms(item["T"])
            if is_int(item.get("seq")):
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

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best `n` (price, size) levels of each side, best first (the truth)."""
        bids = [(p, float(self.bids[p][1])) for p in heapq.nlargest(n, self.bids)]
        asks = [(p, float(self.asks[p][1])) for p in heapq.nsmallest(n, self.asks)]
        return bids, asks

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


def _l1_sources(tape: _Tape) -> dict[str, str]:
    """instrument -> the book topic its derived best quote follows: the deepest recorded one, for every instrument
    whose recording holds no `orderbook.1` of its own (then served as recorded)."""
    depths: dict[str, dict[int, str]] = {}
    for frame in tape.frames:
        if frame.topic.startswith("orderbook."):
            depths.setdefault(_instrument(frame.topic), {})[_book_depth(frame.topic)] = frame.topic
    return {instrument: topics[max(topics)] for instrument, topics in depths.items() if 1 not in topics}


def _is_l1_topic(topic: str) -> bool:
    return topic.startswith(BEST_QUOTE_PREFIX)


def _book_depth(topic: str) -> int:
    try:
        return int(topic.split(".")[1])
    except (IndexError, ValueError):
        return 200


# --------------------------------------------------------------------------------------------------
# Clients


class _Client(SimClient["BybitSimulator", str]):
    """One websocket client of one category path: its topics and bounded outbound queue (see `SimClient`)."""

    TRUNCATED_FALLBACK = '{"topic":"orderbook.200.BTCUSDT","type":"delta","data":{"s":"BTC'

    def __init__(self, sim: BybitSimulator, ws: web.WebSocketResponse, category: str) -> None:
        super().__init__(sim, ws)
        self.category = category
        self.conn_id = _conn_id()
        self.pending: set[str] = set()  # topics whose (slow_snapshot) subscription is not in force yet

    @property
    def tag(self) -> str:
        return self.conn_id

    def log_fields(self) -> dict[str, Any]:
        return {"conn_id": self.conn_id}

    def bad_payload(self) -> dict[str, Any]:
        last = self.last_key or ""
        topic = last if last.startswith("orderbook.") else ""
        if not topic:
            topic = next((t for t in sorted(self.keys) if t.startswith("orderbook.")), "orderbook.200.BTCUSDT")
        now = self.sim.clock.now_ms()
        data = {"s": 12345, "b": "not-a-list", "a": [[None, {"size": True}]], "u": "NaN", "seq": [1.5]}
        return {"topic": topic, "type": "delta", "ts": now, "data": data, "cts": str(now)}


def _instrument(topic: str) -> str:
    return topic.rpartition(".")[2]


def _conn_id() -> str:
    # Shaped like the venue's ids, e.g. "d8bu1olkndm7crnfs1e0-j6akw".
    alphabet = string.ascii_lowercase + string.digits
    return (
        "".join(secrets.choice(alphabet) for _ in range(20)) + "-" + "".join(secrets.choice(alphabet) for _ in range(5))
    )


# --------------------------------------------------------------------------------------------------
# Markets


class _Market(SimMarket["BybitSimulator", str, _Client, _Frame]):
    """One websocket path's shared replay: subscribers, live state per topic, and the player (`SimMarket`)."""

    tape: _Tape

    def __init__(self, sim: BybitSimulator, category: str, tape: _Tape) -> None:
        super().__init__(sim, tape)
        self.category = category
        self.books: dict[str, _Book] = {}
        self.tickers: dict[str, _Ticker] = {}
        self._deltas_seen: collections.Counter[str] = collections.Counter()
        self._u_offset: collections.Counter[str] = collections.Counter()  # seq_gap / u1_restart shifts per topic
        self._held: dict[str, str] = {}  # reorder_diff: a delta sent after the topic's next one
        self._replayed: dict[str, str] = {}  # duplicate_diff: its stale copy, sent after the topic's next delta
        # Derived best quotes (see the module doc): instrument -> book topic followed, and per orderbook.1 topic the
        # top last served and its frame (for a late subscriber).
        self._l1_source = _l1_sources(tape)
        self._l1_last: dict[str, tuple[Any, Any]] = {}
        self._l1_text: dict[str, str] = {}

    # -- subscriptions (synchronous: a snapshot and the deltas after it are queued without a gap) ----

    def subscribe(self, client: _Client, topic: str) -> None:
        client.pending.discard(topic)
        if client.kicked is not None:
            return
        self.subs.add(client, topic)
        state = self.books.get(topic) or self.tickers.get(topic)
        if state is not None:
            self.sim.offer_or_kick(client, orjson.dumps(state.snapshot(topic)).decode(), topic, reply=True)
        elif topic in self._l1_text:
            self.sim.offer_or_kick(client, self._l1_text[topic], topic, reply=True)

    # -- the player ----------------------------------------------------------------------------------

    def _keys_of(self, frame: _Frame) -> tuple[str, ...]:
        instrument = _instrument(frame.topic)
        if self._l1_source.get(instrument) == frame.topic:
            return (frame.topic, BEST_QUOTE_PREFIX + instrument)  # it may carry a derived best quote too
        return (frame.topic,)

    def _play_at(self, frame: _Frame, loop: int, clock: TapeClock) -> None:
        tape = self.tape
        self._play(frame, _Shift(loop, clock, loop * tape.u_span, loop * tape.seq_span, loop * tape.trade_id_span))

    def _play(self, frame: _Frame, shift: _Shift) -> None:
        try:
            msg = orjson.loads(frame.raw)
        except orjson.JSONDecodeError:
            return
        _rewrite(msg, shift)
        topic = frame.topic
        if topic.startswith("orderbook."):
            self._play_book(topic, msg)
            return
        if topic.startswith("tickers."):
            self.tickers.setdefault(topic, _Ticker()).apply(msg)
        subs = self.subs.get(topic)
        if not subs:
            return
        self.sim.deliver(subs, orjson.dumps(msg).decode(), topic)

    def _play_book(self, topic: str, msg: dict[str, Any]) -> None:
        """One orderbook message: faults, the market's book (the truth), then what the clients get."""
        sim = self.sim
        faults = sim.faults
        data = msg.get("data")
        if not isinstance(data, dict):
            return
        instrument = topic.rpartition(".")[2]
        is_delta = msg.get("type") == "delta"
        if faults:
            faults.frame(instrument)
            sim.connection_faults(instrument, self.subs.get(topic) or ())
            spec = faults.take("seq_gap", instrument) if is_delta else None
            if spec is not None:
                self._u_offset[topic] += int(spec.param("by"))
        if is_int(data.get("u")):
            data["u"] += self._u_offset[topic]
        book = self.books.get(topic)
        if book is None and not is_delta:  # a delta before any snapshot has no book
            book = self.books[topic] = _Book(_book_depth(topic))
        if book is None:  # no state to keep or record: served as recorded
            subs = self.subs.get(topic)
            if subs:
                sim.deliver(subs, orjson.dumps(msg).decode(), topic)
            return
        book.apply(msg)
        restart = is_delta and bool(faults) and faults.take("u1_restart", instrument) is not None
        if restart:
            # Bybit's service restart: the book is re-sent whole with u=1 and u counts on from there.
            self._u_offset[topic] += 1 - book.u
            book.u = 1
            msg = book.snapshot(topic)
        if is_int(book.u):
            bids, asks = book.top(TRUTH_DEPTH)
            ts = book.ts if is_int(book.ts) else None
            sim.truth.record(instrument, book.u, ts, bids, asks, snapshot=restart or not is_delta)
        if self._l1_source.get(instrument) == topic:
            self._derive_best_quote(instrument, book)
        text = orjson.dumps(msg).decode()
        texts = [text]
        held = self._held.pop(topic, None) if is_delta else None
        replayed = self._replayed.pop(topic, None) if is_delta else None
        if is_delta and not restart:
            if sim.gap_every:
                self._deltas_seen[topic] += 1
                if self._deltas_seen[topic] % sim.gap_every == 0:
                    texts = []  # the market's book applied it; no client will see it
                    sim.gaps_injected += 1
            if faults and texts:
                texts = self._book_faults(topic, instrument, text, msg)
        if held is not None:
            texts.append(held)
        if replayed is not None:
            texts.append(replayed)
        subs = self.subs.get(topic)
        if not subs:
            return
        for out in texts:
            sim.deliver(subs, out, topic)

    def _derive_best_quote(self, instrument: str, book: _Book) -> None:
        """`orderbook.1.<instrument>` from the market's book, when its top changed (module doc, Best quotes)."""
        topic = BEST_QUOTE_PREFIX + instrument
        bid = book.bids[max(book.bids)] if book.bids else None
        ask = book.asks[min(book.asks)] if book.asks else None
        if self._l1_last.get(topic) == (bid, ask):
            return
        self._l1_last[topic] = (bid, ask)
        data = {"s": book.symbol, "b": [list(bid)] if bid else [], "a": [list(ask)] if ask else [], "u": book.u,
                "seq": book.seq}  # fmt: skip
        text = orjson.dumps({"topic": topic, "type": "snapshot", "ts": book.ts, "data": data, "cts": book.cts}).decode()
        self._l1_text[topic] = text
        subs = self.subs.get(topic)
        if subs:
            self.sim.deliver(subs, text, topic)

    def _book_faults(self, topic: str, instrument: str, text: str, msg: dict[str, Any]) -> list[str]:
        """What the clients get instead of delta `text` when a book-stream fault fires on it."""
        faults = self.sim.faults
        if faults.take("drop_diff", instrument):
            return []
        if faults.take("duplicate_diff", instrument):
            self._replayed[topic] = text
            return [text, text]
        if faults.take("reorder_diff", instrument):
            self._held[topic] = text
            return []
        if faults.take("malformed_json", instrument):
            cut = text.index('"data"')
            return [text[:cut] + '"data":{,' + text[cut + 7 :]]  # a stray comma: not JSON any more
        if faults.take("truncated_frame", instrument):
            return [text[: len(text) // 2]]
        spec = faults.take("oversized_frame", instrument)
        if spec is not None:
            pad = max(0, int(spec.param("bytes")) - len(text) - 16)
            return [orjson.dumps({**msg, "pad": " " * pad}).decode()]
        return [text]


# --------------------------------------------------------------------------------------------------
# The server


class BybitSimulator(SimulatorServer[_Client]):
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
        clock_skew_s: float = 0.0,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        super().__init__(
            recording_path, host, port, speed, loop, garbage_every, gap_every,
            client_queue=client_queue, reply_headroom=reply_headroom, slow_client_timeout=slow_client_timeout,
            clock_skew_s=clock_skew_s,
        )  # fmt: skip
        self.markets: dict[str, _Market] = {}
        # Delisted / expiring instruments (--delist, --expire, simulate.lifecycle): instruments-info says so.
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle()
        self._served: _Served | None = None

    # Bybit's linear books carry no checksum: everything else of the catalogue applies.
    SUPPORTED_FAULTS = CONNECTION_FAULTS | {
        "drop_diff", "duplicate_diff", "reorder_diff", "seq_gap", "malformed_json", "truncated_frame",
        "oversized_frame", "u1_restart", "slow_snapshot", "rate_limit", "sub_error",
    }  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------------------------

    def ws_url(self, category: str = "linear") -> str:
        return f"{self.ws_base}{WS_PATH_PREFIX}{category}"

    @property
    def loops_completed(self) -> int:
        return sum(m.loops_completed for m in self.markets.values())

    async def _prepare(self) -> None:
        self._served = await asyncio.to_thread(_load, self.recording_path)

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v5/market/instruments-info", self._instruments_info)
        app.router.add_get("/v5/market/time", self._server_time)
        app.router.add_get("/v5/market/account-ratio", self._account_ratio)
        app.router.add_get(WS_PATH_PREFIX + "{category}", self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _start_players(self) -> None:
        assert self._served is not None
        for category in CATEGORIES:
            market = _Market(self, category, self._served.tapes.get(category, _Tape()))
            self.markets[category] = market
            self.spawn(market.run(), f"simulator-market:{category}")

    def _started_fields(self) -> dict[str, Any]:
        assert self._served is not None
        tapes = {c: len(t.frames) for c, t in self._served.tapes.items()}
        return {**super()._started_fields(), "frames": tapes}

    # -- REST ----------------------------------------------------------------------------------------

    async def _instruments_info(self, request: web.Request) -> web.Response:
        q = request.query
        category = q.get("category", "")
        if category not in CATEGORIES:
            return json_response(
                {
                    "retCode": 10001,
                    "retMsg": "Illegal category",
                    "result": {},
                    "retExtInfo": {},
                    "time": self.clock.now_ms(),
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
                "time": self.clock.now_ms(),
            }
            if category != "spot":  # spot answers carry no cursor
                body["result"]["nextPageCursor"] = ""
            return json_response(body)
        items = recorded["result"]["list"]
        if self.lifecycle:
            items = [dict(item) for item in items]
            for item in items:
                self.lifecycle.bybit_row(item)
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
        body["time"] = self.clock.now_ms()
        return json_response(body)

    async def _server_time(self, request: web.Request) -> web.Response:
        ns = time.time_ns() + self.clock.skew_ms * 1_000_000
        return json_response(
            {
                "retCode": 0,
                "retMsg": "OK",
                "result": {"timeSecond": str(ns // 1_000_000_000), "timeNano": str(ns)},
                "retExtInfo": {},
                "time": ns // 1_000_000,
            }
        )

    async def _account_ratio(self, request: web.Request) -> web.Response:
        """Long/short account ratio (5-minute data). Not in the recording: synthesised, a slow
        deterministic drift around 55% long, stamped at the last whole 5 minutes."""
        symbol = request.query.get("symbol", "")
        if not symbol:
            return json_response(
                {
                    "retCode": 10001,
                    "retMsg": "params error: symbol",
                    "result": {},
                    "retExtInfo": {},
                    "time": self.clock.now_ms(),
                }
            )
        bucket = self.clock.now_ms() // 300_000 * 300_000
        buy = 0.55 + 0.05 * ((bucket // 300_000 + sum(map(ord, symbol))) % 5 - 2) / 2
        row = {"symbol": symbol, "buyRatio": f"{buy:.4f}", "sellRatio": f"{1 - buy:.4f}", "timestamp": str(bucket)}
        return json_response(
            {"retCode": 0, "retMsg": "OK", "result": {"list": [row]}, "retExtInfo": {}, "time": self.clock.now_ms()}
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "retCode": 404,
                "retMsg": f"Not Found: {request.path}",
                "result": {},
                "retExtInfo": {},
                "time": self.clock.now_ms(),
            },
            status=404,
        )

    # -- websockets ----------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        category = request.match_info["category"]
        market = self.markets.get(category)
        if market is None:
            return await self._not_found(request)
        client = _Client(self, await self._open_ws(request), category)
        read = self._read_requests(client.ws, functools.partial(self._on_request, client, market))
        return await self._run_client(request, client, read, leave=functools.partial(market.drop, client))

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
        if op == "subscribe" and len(client.keys | set(args)) > MAX_TOPICS_PER_CLIENT:
            self.bad_requests += 1
            msg = f"error:too many topics on one connection (max {MAX_TOPICS_PER_CLIENT})"
            self._reply(client, self._ack(client, op, req_id, False, msg))
            return
        if op == "unsubscribe":
            self._reply(client, self._ack(client, op, req_id, True, ""))
            for topic in args:
                client.pending.discard(topic)
                market.unsubscribe(client, topic)
            return
        args = [t for t in args if t not in client.pending]  # a slow snapshot already on its way
        rejected = self._rejected_books(args)
        if rejected:
            self.bad_requests += 1
            ack = self._ack(client, op, req_id, False, f"error:subscription failed, please retry,topic:{rejected[0]}")
            if not self._reply(client, ack):
                return
            for topic in dict.fromkeys(args):
                if topic not in client.keys and topic not in rejected:
                    market.subscribe(client, topic)
            return
        # Like the venue: topics already held make the answer a failure; new ones are still taken.
        repeated = [t for t in args if t in client.keys]
        if repeated:
            self.bad_requests += 1
            ack = self._ack(client, op, req_id, False, f"error:already subscribed,topic:{repeated[0]}")
        else:
            ack = self._ack(client, op, req_id, True, "")
        if not self._reply(client, ack):
            return
        for topic in dict.fromkeys(args):
            if topic not in client.keys:
                book = topic.startswith("orderbook.") and not _is_l1_topic(topic)  # the faults are the book's
                spec = self.faults.take("slow_snapshot", _instrument(topic)) if book else None
                if spec is None:
                    market.subscribe(client, topic)
                else:
                    client.pending.add(topic)  # the snapshot, and the deltas after it, come `delay_s` late
                    self.later(float(spec.param("delay_s")), self._late_subscribe, client, market, topic)

    def _late_subscribe(self, client: _Client, market: _Market, topic: str) -> None:
        if topic in client.pending:
            market.subscribe(client, topic)

    def _rejected_books(self, topics: list[str]) -> list[str]:
        """The orderbook topics of a subscribe that `sub_error` rejects now."""
        if not self.faults.wants("sub_error"):
            return []
        return [
            t
            for t in topics
            if t.startswith("orderbook.") and not _is_l1_topic(t) and self.faults.take("sub_error", _instrument(t))
        ]

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


run_simulator = simulator_runner(BybitSimulator, DEFAULT_PORT, "flowgauge simulate")
