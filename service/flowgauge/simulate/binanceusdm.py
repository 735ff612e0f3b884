"""Binance USDⓈ-M futures venue simulator: replays a recording over Binance's current REST and websocket protocol.

Sits in `service/replay` beside the Bybit simulator; `flowgauge simulate --venue binanceusdm` and the tests run
it, and the daemon reaches it only through configured base URLs (ws://host:port, http://host:port). It must not
import the daemon's parsers, books or metrics: it is the independent ground truth the daemon is tested against.
It binds loopback by default and never opens an outbound connection.

Protocol served (exchanges.md §1, as of 2026):
* Websockets on the routed paths only: `/public/stream`, `/public/ws[/<stream>]` (`@depth*`, `@bookTicker`,
  `@trade`) and `/market/stream`, `/market/ws[/<stream>]` (`@aggTrade`, `@markPrice[@1s]`, `@forceOrder`).
  `/stream` answers `{"stream","data"}` envelopes, `/ws` bare payloads; `?streams=a/b` subscribes in the URL.
  JSON `SUBSCRIBE` / `UNSUBSCRIBE` / `LIST_SUBSCRIPTIONS` with `{"result":null,"id":N}` answers. The legacy
  unrouted paths (`/stream`, `/ws`) were retired on 2026-04-23 and answer 404. A stream subscribed on the wrong
  route is acknowledged and then never delivered, silently, like the venue. At most 1024 streams per connection
  and 10 incoming messages per second, pings and pongs included as Binance counts them (more closes the
  connection; the counting of pongs is UNCONFIRMED for USD-M). The server sends ping frames (every
  `ping_interval_s`, 180 s like the venue), closes a client silent for `pong_timeout_s` after a ping, and closes
  every connection at `max_connection_age_s` (24 h).
* REST: `/fapi/v1/exchangeInfo` (the recorded answer; all ccxt's `load_markets` asks for), `/fapi/v1/depth`
  (limits 5..1000 with Binance's weights), `/fapi/v1/openInterest`, `/futures/data/globalLongShortAccountRatio`,
  `/futures/data/topLongShortAccountRatio`, `/futures/data/topLongShortPositionRatio`, `/fapi/v1/fundingInfo`,
  `/fapi/v1/time`, `/fapi/v1/ping`. Request weight is counted per minute (`X-MBX-USED-WEIGHT-1M`); past
  `rest_weight_limit` the answer is 429 with Retry-After.

Data. Recording-driven: every recorded depth diff, trade and bookTicker is replayed in receive-time order, paced
by the recorded gaps divided by `speed` (0 = as fast as subscribed clients read), pausing while nobody is
subscribed. A symbol's book starts from its recorded REST snapshot (diffs before the bridging one are dropped),
so REST depth answers are the true book after the last diff played, with `lastUpdateId` = the next diff's `U`
(that diff then bridges by Binance's rule). What the recordings lack is derived from what they have, and says so:
* BTCUSDT and ETHUSDT are always served. One missing from the recording is driven by a recorded symbol's streams
  relabelled: symbol renamed, prices multiplied by a whole factor chosen to reach a plausible level (and to keep
  prices on the target's tick), sizes unchanged, update and trade ids offset.
* `@aggTrade` is built from recorded `@trade` fills (and `@trade` from `aggTrade`) where only one was recorded.
* `@markPrice@1s` is synthetic: mark = the served book's mid each recorded second, index 0.5 bp below, funding
  rate 0.01%, next funding time on the symbol's interval (8 h unless `funding_intervals` says otherwise).
* `@forceOrder`: none recorded; with `liquidation_every=N` every N-th trade is also sent as a liquidation order
  (the taker side, so a taker sell reads as a liquidated long). Off by default.
* Open interest follows the trades: it starts at 50x one loop's traded volume and each trade of quantity q moves
  it by a deterministic share of +-q/2 (so |dOI| <= volume, as real OI must). Long/short ratios are deterministic
  5-minute series. fundingInfo lists `funding_intervals` (default: none, i.e. every symbol 8 h).
kline and other recorded streams are not served.
* A served name with a date suffix (`BTCUSDT_261225`) is a quarterly: `contractType` CURRENT_QUARTER, delivered at
  08:00 UTC that day.
* Lifecycle (`lifecycle`, `--delist` / `--expire`, see `simulate.lifecycle`): a delisted or expired symbol shows
  `status` CLOSE / DELIVERED in exchangeInfo (an expiring one carries its `deliveryDate` from the start), gets no
  more stream frames, and its REST requests (depth, open interest, ratios) answer -1121 Invalid symbol, counted in
  `lifecycle.requests_after`.

Loops. When the recording ends the tape restarts with ids shifted by more than the recording's span; exchange times
(`E`, `T`, a liquidation's `o.T`; a mark price's `T`, the next funding time, moves with its `E`) follow the wall
clock through `base.TapeClock` at every speed and across loops (shifted by `clock_skew_s`). The book does not
jump: the first diff of the new loop turns the book at the end of the last loop back into the recorded snapshot
(`pu` = last `u`), so a client that follows `pu` stays valid across loops.

Faults. Every kind of `faults.py` that applies to Binance USD-M (`SUPPORTED_FAULTS`: all but `bad_checksum`, as
Binance books carry none, and `u1_restart`, which is Bybit's), on a symbol's depth diffs: a withheld, duplicated
(twice in a row, and once more after the next one: a stale replay), reordered (sent after the next one), malformed,
truncated or oversized diff; `seq_gap` moves the symbol's update ids (`U`, `u`, `pu`, and the REST `lastUpdateId`)
forward by `by` from then on, so the diff where it starts does not link (`pu`) although nothing is lost;
`slow_snapshot` answers a REST depth request `delay_s` late (the book is taken when the answer leaves); `sub_error`
answers a SUBSCRIBE naming the symbol's depth stream with an error and subscribes none of its streams. The
connection, clock and REST rate-limit faults are `base`'s. The symbol's own book applies every diff whatever the
fault and is the truth: after every diff its top 10 levels go to `sim.truth` keyed by `u`, and every REST depth
answer's book is recorded keyed by its `lastUpdateId` (the daemon's `book_seq` is the last diff's `u`, or the
snapshot's `lastUpdateId` before any diff bridged it).

`gap_every=N` withholds every N-th depth diff of each symbol from all clients (the simulator's book still
applies it, so a resync snapshot is correct). `garbage_every=N` sends each client a malformed frame after every N
data frames it received, cycling through a non-JSON binary frame, a well-formed envelope with wrongly typed fields
(on the client's last stream) and a truncated copy of the last frame.

Bounds. Each client has one bounded outbound queue drained by one writer task. At speed > 0 a client whose queue is
full is disconnected (close 1008, counted in `slow_disconnects`); at speed 0 the player waits up to
`slow_client_timeout` for room and then disconnects it.
The server plumbing (runner, client queues and writers, slow-client policy, pacing) is `sim_base.py`'s.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import logging
import math
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from flowgauge.recording import Http, Recv, iter_records
from flowgauge.simulate.base import (
    SimClient,
    SimulatorServer,
    Subscriptions,
    TapeClock,
    is_int,
    json_response,
    play_tape,
    simulator_runner,
)
from flowgauge.simulate.faults import CONNECTION_FAULTS
from flowgauge.simulate.lifecycle import Lifecycle
from flowgauge.simulate.truth import TRUTH_DEPTH

__all__ = ["DEFAULT_PORT", "SERVED_SYMBOLS", "BinanceUsdmSimulator", "run_simulator"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 9781
SERVED_SYMBOLS = ("BTCUSDT", "ETHUSDT")
PLAUSIBLE_PRICE = {"BTCUSDT": Decimal(60000), "ETHUSDT": Decimal(3000)}
DEPTH_WEIGHTS = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
MAX_STREAMS = 1024
RATIO_PERIODS_MS = {
    "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000, "2h": 7_200_000,
    "4h": 14_400_000, "6h": 21_600_000, "12h": 43_200_000, "1d": 86_400_000,
}  # fmt: skip
ROUTE_OF_KIND = {
    "depth": "public", "bookTicker": "public", "trade": "public",
    "aggTrade": "market", "markPrice": "market", "forceOrder": "market",
}  # fmt: skip
_EVENT_KINDS = {
    "depthUpdate": "depth", "bookTicker": "bookTicker", "trade": "trade", "aggTrade": "aggTrade",
    "markPriceUpdate": "markPrice", "forceOrder": "forceOrder",
}  # fmt: skip
_DEPTH_VARIANTS = ("", "@100ms", "@500ms", "@0ms")
_STREAM_NAME = re.compile(r"^[a-z0-9_]+@[A-Za-z0-9_@]+$")
_BURST = 32  # messages one played frame can queue for one client, at most
_PRICE_8 = Decimal("0.00000001")


# --------------------------------------------------------------------------------------------------
# The recording, prepared for serving


@dataclass(slots=True)
class _Frame:
    ts: float  # recorded receive time, unix seconds (drives pacing)
    kind: str  # depth | trade | aggTrade | bookTicker | markPrice | forceOrder
    symbol: str  # recorded venue id
    raw: bytes  # the payload (the `data` of a combined-stream envelope), decoded again when played


@dataclass(slots=True)
class _Tape:
    frames: list[_Frame] = field(default_factory=list)
    exchange_info: dict[str, Any] | None = None
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)  # symbol -> recorded REST depth body
    bridge_pu: dict[str, int] = field(default_factory=dict)  # symbol -> `pu` of the first diff after the snapshot
    depth_first_ids: dict[str, list[int]] = field(default_factory=dict)  # symbol -> `U` of each kept diff
    kinds: dict[str, set[str]] = field(default_factory=dict)  # symbol -> recorded frame kinds
    volume: dict[str, Decimal] = field(default_factory=dict)  # symbol -> traded quantity over the tape
    id_span: int = 1  # > max - min over update ids
    trade_span: int = 1  # > max - min over trade / agg ids
    ts_span_ms: int = 1
    latency_ms: int = 0  # smallest recorded (receive time - event time)


def _symbol_of(data: Mapping[str, Any]) -> str | None:
    order = data.get("o")
    symbol = order.get("s") if isinstance(order, dict) else data.get("s")
    return symbol if isinstance(symbol, str) else None


def _load(path: Path) -> _Tape:
    """Read a recording into one tape (blocking; run in a thread)."""
    tape = _Tape()
    frames: list[_Frame] = []
    for rec in iter_records(path):
        if isinstance(rec, Http):
            _add_http(tape, rec)
        elif isinstance(rec, Recv):
            try:
                msg = orjson.loads(rec.data)
            except orjson.JSONDecodeError:
                continue
            data = msg.get("data") if isinstance(msg, dict) and "stream" in msg else msg
            if not isinstance(data, dict):
                continue
            kind = _EVENT_KINDS.get(str(data.get("e")))
            symbol = _symbol_of(data)
            if kind is None or symbol is None:
                continue  # acks, klines
            frames.append(_Frame(rec.ts, kind, symbol, orjson.dumps(data)))
    frames.sort(key=lambda f: f.ts)  # stable: one connection's frames keep their order on equal times
    tape.frames = _cut_depth(tape, frames)
    _measure(tape)
    return tape


def _add_http(tape: _Tape, rec: Http) -> None:
    url = urlsplit(rec.url)
    try:
        body = orjson.loads(rec.data)
    except orjson.JSONDecodeError:
        return
    if url.path.endswith("/fapi/v1/exchangeInfo") and isinstance(body, dict) and tape.exchange_info is None:
        tape.exchange_info = body
    elif url.path.endswith("/fapi/v1/depth") and isinstance(body, dict) and "lastUpdateId" in body:
        symbol = dict(parse_qsl(url.query)).get("symbol")
        if symbol and symbol not in tape.snapshots:
            tape.snapshots[symbol] = body


def _cut_depth(tape: _Tape, frames: list[_Frame]) -> list[_Frame]:
    """Keep each symbol's diffs from the one that bridges its REST snapshot up to the first `pu` break."""
    state: dict[str, str] = {}  # symbol -> "before" | "live" | "done"
    last_u: dict[str, int] = {}
    kept = []
    for frame in frames:
        tape.kinds.setdefault(frame.symbol, set()).add(frame.kind)
        if frame.kind != "depth":
            kept.append(frame)
            continue
        snapshot = tape.snapshots.get(frame.symbol)
        if snapshot is None:
            continue  # no REST snapshot: this book cannot be served truthfully
        data = orjson.loads(frame.raw)
        phase = state.setdefault(frame.symbol, "before")
        if phase == "done":
            continue
        first, last, prev = data["U"], data["u"], data["pu"]
        if phase == "before":
            snap_id = snapshot["lastUpdateId"]
            if last < snap_id:
                continue
            if not first <= snap_id <= last:
                state[frame.symbol] = "done"  # the recording never bridged its own snapshot
                continue
            state[frame.symbol] = "live"
            tape.bridge_pu[frame.symbol] = prev
        elif prev != last_u[frame.symbol]:
            state[frame.symbol] = "done"  # a recorded gap: stop this book rather than serve a wrong one
            log.warning("simulator_recorded_gap", extra={"fields": {"symbol": frame.symbol}})
            continue
        last_u[frame.symbol] = last
        tape.depth_first_ids.setdefault(frame.symbol, []).append(first)
        kept.append(frame)
    return kept


def _measure(tape: _Tape) -> None:
    ids: list[int] = []
    trade_ids: list[int] = []
    times: list[int] = []
    latency: int | None = None
    for symbol, body in tape.snapshots.items():
        if symbol in tape.bridge_pu:
            ids.append(body["lastUpdateId"])
    for frame in tape.frames:
        data = orjson.loads(frame.raw)
        for key in ("U", "u", "pu") if frame.kind == "depth" else ("u",) if frame.kind == "bookTicker" else ():
            if is_int(data.get(key)):
                ids.append(data[key])
        for key in ("a", "f", "l", "t"):
            if frame.kind in ("trade", "aggTrade") and is_int(data.get(key)):
                trade_ids.append(data[key])
        if frame.kind in ("trade", "aggTrade"):
            tape.volume[frame.symbol] = tape.volume.get(frame.symbol, Decimal(0)) + Decimal(str(data.get("q", "0")))
        if is_int(data.get("E")):
            times.append(data["E"])
            lat = round(frame.ts * 1000) - data["E"]
            latency = lat if latency is None else min(latency, lat)
    tape.id_span = (max(ids) - min(ids) + 1) if ids else 1
    tape.trade_span = (max(trade_ids) - min(trade_ids) + 1) if trade_ids else 1
    tape.ts_span_ms = (max(times) - min(times) + 1) if times else 1
    tape.latency_ms = latency or 0


# --------------------------------------------------------------------------------------------------
# Served symbols


@dataclass(slots=True, frozen=True)
class _Label:
    """How one served symbol is made from a recorded one (identity when `factor` is None)."""

    name: str
    source: str
    factor: Decimal | None = None
    quantum: Decimal | None = None  # the served symbol's tick, for scaled prices
    id_offset: int = 0
    trade_offset: int = 0

    def px(self, price: Any) -> Any:
        if self.factor is None or not isinstance(price, str):
            return price
        assert self.quantum is not None  # set together with factor
        return str((Decimal(price) * self.factor).quantize(self.quantum))


def _filters(info: Mapping[str, Any] | None, symbol: str) -> dict[str, Decimal]:
    """tickSize and stepSize of `symbol` from exchangeInfo (Binance's defaults for USDT perps if absent)."""
    out = {"tick": Decimal("0.01"), "step": Decimal("0.001")}
    for item in (info or {}).get("symbols", []):
        if item.get("symbol") != symbol:
            continue
        for filt in item.get("filters", []):
            if filt.get("filterType") == "PRICE_FILTER" and filt.get("tickSize"):
                out["tick"] = Decimal(filt["tickSize"]).normalize()
            elif filt.get("filterType") == "LOT_SIZE" and filt.get("stepSize"):
                out["step"] = Decimal(filt["stepSize"]).normalize()
    return out


def _delivery_ms(yymmdd: str) -> int:
    """08:00 UTC on the day a quarterly's name gives (`261225`); 0 when the name holds no such date."""
    import datetime

    try:
        day = datetime.datetime.strptime(yymmdd, "%y%m%d").replace(hour=8, tzinfo=datetime.UTC)
    except ValueError:
        return 0
    return int(day.timestamp() * 1000)


def _labels(tape: _Tape, served: Sequence[str]) -> list[_Label]:
    """Every recorded symbol as itself, plus each `served` symbol the recording lacks, relabelled."""
    sources = sorted(s for s in tape.kinds if s in tape.bridge_pu) or sorted(tape.kinds)
    labels = [_Label(s, s) for s in sorted(tape.kinds)]
    missing = [s for s in served if s not in tape.kinds]
    for i, name in enumerate(missing):
        if not sources:
            break
        source = sources[i % len(sources)]
        snap = tape.snapshots.get(source)
        ref = Decimal(snap["bids"][0][0]) if snap and snap.get("bids") else None
        if ref is None or ref <= 0:
            continue
        src_tick = _filters(tape.exchange_info, source)["tick"]
        dst_tick = _filters(tape.exchange_info, name)["tick"]
        step = max(1, int(dst_tick / src_tick)) if dst_tick > src_tick else 1  # keeps scaled prices on the tick
        plausible = PLAUSIBLE_PRICE.get(name.partition("_")[0], ref)  # a quarterly trades near its perpetual
        factor = max(step, round(plausible / ref / step) * step)
        labels.append(_Label(name, source, Decimal(factor), dst_tick, (i + 1) * 10**12, (i + 1) * 10**10))
    return labels


class _Symbol:
    """Live state of one served symbol: its book (venue strings kept), ids, last price, open interest."""

    def __init__(self, label: _Label, tape: _Tape, info: Mapping[str, Any] | None) -> None:
        self.label = label
        self.name = label.name
        self.lower = label.name.lower()
        self.bids: dict[float, tuple[str, str]] = {}
        self.asks: dict[float, tuple[str, str]] = {}
        self.has_book = label.source in tape.bridge_pu
        self.first_ids = tape.depth_first_ids.get(label.source, [])
        self.bridge_pu = tape.bridge_pu.get(label.source, 0)
        self.snapshot_levels: tuple[list[list[str]], list[list[str]]] = ([], [])
        snapshot = tape.snapshots.get(label.source)
        if self.has_book and snapshot is not None:
            self.snapshot_levels = (
                [[label.px(p), q] for p, q in snapshot["bids"]],
                [[label.px(p), q] for p, q in snapshot["asks"]],
            )
            _load_side(self.bids, self.snapshot_levels[0])
            _load_side(self.asks, self.snapshot_levels[1])
        self.last_u = self.bridge_pu + label.id_offset
        self.played = 0  # depth diffs played in the current loop
        self.seq_offset = 0  # seq_gap faults: added to every update id from the one where each fired
        self.held: dict[str, Any] | None = None  # reorder_diff: a diff sent after the next one
        self.replayed: dict[str, Any] | None = None  # duplicate_diff: its stale copy, sent after the next one
        self.deltas_seen = 0  # for gap injection
        self.trades_seen = 0  # for liquidation synthesis
        self.last_price: str | None = None
        filters = _filters(info, label.name)
        self.tick, self.step = filters["tick"], filters["step"]
        volume = tape.volume.get(label.source, Decimal(0))
        self.oi_floor = (volume * 50 if volume > 0 else Decimal(1000)) / 10
        self.oi = self.oi_floor * 10
        self.oi_ms = 0
        kinds = tape.kinds.get(label.source, set())
        self.recorded_kinds = kinds
        self.marks_sent = 0

    def mid(self) -> Decimal | None:
        if self.bids and self.asks:
            bid = self.bids[max(self.bids)][0]
            ask = self.asks[min(self.asks)][0]
            return (Decimal(bid) + Decimal(ask)) / 2
        return Decimal(self.last_price) if self.last_price else None

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best `n` (price, size) levels of each side, best first (the truth)."""
        bids = [(p, float(self.bids[p][1])) for p in heapq.nlargest(n, self.bids)]
        asks = [(p, float(self.asks[p][1])) for p in heapq.nsmallest(n, self.asks)]
        return bids, asks

    def on_trade(self, qty: str, trade_id: int, ts_ms: int) -> None:
        """Move open interest by a deterministic share of +-q/2 of each trade (|dOI| <= volume)."""
        share = Decimal((trade_id * 2654435761) % 1001) / 1000 - Decimal("0.5")
        change = Decimal(qty) * share
        if self.oi + change < self.oi_floor:
            change = -change
        self.oi += change
        self.oi_ms = ts_ms


def _load_side(side: dict[float, tuple[str, str]], levels: Iterable[Sequence[str]]) -> None:
    side.clear()
    _apply_side(side, levels)


def _apply_side(side: dict[float, tuple[str, str]], levels: Iterable[Sequence[str]]) -> None:
    for price_s, size_s in levels:
        price, size = float(price_s), float(size_s)
        if size == 0.0:
            side.pop(price, None)
        else:
            side[price] = (price_s, size_s)


def _diff_side(current: Mapping[float, tuple[str, str]], target: Sequence[Sequence[str]]) -> list[list[str]]:
    """Levels that turn `current` into `target` (deletes as size "0")."""
    wanted = {float(p): (p, q) for p, q in target}
    out = [[p, "0"] for price, (p, _) in current.items() if price not in wanted]
    out += [[p, q] for price, (p, q) in wanted.items() if current.get(price, ("", ""))[1] != q]
    return out


@dataclass(slots=True, frozen=True)
class _Shift:
    loop: int
    clock: TapeClock  # maps exchange times
    ids: int
    trades: int


def _rewrite(data: dict[str, Any], kind: str, label: _Label, shift: _Shift) -> None:
    """Relabel one decoded payload for a served symbol and shift its times and ids for the loop, in place."""
    recorded_e = data.get("E")
    for key in ("E", "T"):  # event and trade times
        if is_int(data.get(key)) and data[key]:
            if key == "T" and kind == "markPrice" and is_int(recorded_e) and recorded_e:
                data[key] += data["E"] - recorded_e  # the next funding time: a schedule, moved with E, not scaled
            else:
                data[key] = shift.clock.ms(data[key])
    ids = label.id_offset + shift.ids
    trades = label.trade_offset + shift.trades
    if kind == "depth":
        for key in ("U", "u", "pu"):
            data[key] += ids
        for side in ("b", "a"):
            data[side] = [[label.px(p), q] for p, q in data[side]]
    elif kind == "bookTicker":
        if is_int(data.get("u")):
            data["u"] += ids
        data["b"], data["a"] = label.px(data.get("b")), label.px(data.get("a"))
    elif kind in ("trade", "aggTrade"):
        for key in ("a", "f", "l", "t"):
            if is_int(data.get(key)):
                data[key] += trades
        data["p"] = label.px(data.get("p"))
    elif kind == "forceOrder":
        order = data.get("o", {})
        if is_int(order.get("T")):
            order["T"] = shift.clock.ms(order["T"])
        order["p"], order["ap"] = label.px(order.get("p")), label.px(order.get("ap"))
        order["s"] = label.name
        return
    data["s"] = label.name


def stream_names(lower: str, kind: str) -> list[str]:
    """Every subscribable stream name that carries `kind` of one symbol (markPrice: the 1 s one)."""
    if kind == "depth":
        return [f"{lower}@depth{variant}" for variant in _DEPTH_VARIANTS]
    if kind == "markPrice":
        return [f"{lower}@markPrice@1s"]
    return [f"{lower}@{kind}"]


def _kind_of_stream(name: str) -> str | None:
    _, _, rest = name.partition("@")
    if rest.startswith("depth") and rest[len("depth") :] in _DEPTH_VARIANTS:
        return "depth"
    if rest in ("markPrice", "markPrice@1s"):
        return "markPrice"
    return rest if rest in ROUTE_OF_KIND else None


# --------------------------------------------------------------------------------------------------
# Clients


class _Client(SimClient["BinanceUsdmSimulator", str]):
    """One websocket client: route, envelope mode, streams, keepalive state and bounded queue (see `SimClient`)."""

    # "Full" leaves room for one frame's fan-out (a trade also goes out as aggTrade, marks come per symbol), so
    # the speed-0 player that waits for room never has a delivery refused.
    ROOM_RESERVE = _BURST
    TRUNCATED_FALLBACK = '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":'

    def __init__(self, sim: BinanceUsdmSimulator, ws: web.WebSocketResponse, route: str, combined: bool) -> None:
        super().__init__(sim, ws)
        self.route = route
        self.combined = combined
        self.connected_at = time.monotonic()
        self.ping_sent_at: float | None = None  # the oldest ping not yet answered
        self.last_ping_at = self.connected_at
        self._window = (0, 0)  # (second, messages received in it)

    def count_incoming(self) -> bool:
        """Count one client message; False once the venue's per-second cap is exceeded."""
        second = int(time.monotonic())
        start, count = self._window
        count = count + 1 if start == second else 1
        self._window = (second, count)
        return self.sim.max_incoming_per_s is None or count <= self.sim.max_incoming_per_s

    def bad_payload(self) -> dict[str, Any]:
        stream = self.last_key or next(iter(sorted(self.keys)), "btcusdt@depth@100ms")
        now = self.sim.clock.now_ms()
        if _kind_of_stream(stream) == "depth":
            data: dict[str, Any] = {
                "e": "depthUpdate", "E": now, "T": str(now), "s": 12345, "U": "NaN", "u": [1.5],
                "pu": None, "b": "not-a-list", "a": [[None, {"size": True}]],
            }  # fmt: skip
        else:
            data = {"e": "aggTrade", "E": now, "s": 12345, "a": "x", "p": [1], "q": {"q": 1}, "T": "NaN",
                    "m": "maybe"}  # fmt: skip
        return {"stream": stream, "data": data} if self.combined else data


# --------------------------------------------------------------------------------------------------
# The server


class BinanceUsdmSimulator(SimulatorServer[_Client]):
    """Serve a recording as Binance USD-M futures on one loopback port (REST and routed websockets).

    Use as `async with BinanceUsdmSimulator(path, port=0) as sim:` and connect to `sim.ws_url("public")`,
    `sim.ws_url("market")` and `sim.http_url`. Counters (`frames_sent`, `gaps_injected`, `garbage_sent`,
    `garbage_by_kind`, `slow_disconnects`, `rate_disconnects`, `age_disconnects`, `pong_disconnects`,
    `pings_sent`, `pongs_received`, `bad_requests`, `rate_limited`, `loops_completed`) let tests assert what
    was served and injected.
    """

    KICK_COUNTERS: ClassVar[Mapping[str, str]] = {
        "slow": "slow_disconnects", "rate": "rate_disconnects", "max_age": "age_disconnects",
        "no_pong": "pong_disconnects",
    }  # fmt: skip
    CLOSE_REASONS: ClassVar[Mapping[str, tuple[WSCloseCode, bytes]]] = {
        **SimulatorServer.CLOSE_REASONS,
        "rate": (WSCloseCode.POLICY_VIOLATION, b"too many messages"),
        "no_pong": (WSCloseCode.POLICY_VIOLATION, b"pong timeout"),
        "max_age": (WSCloseCode.OK, b"connection lifetime exceeded"),
    }
    TASK_PREFIX = "binance-simulator"
    TASK_FAILED_EVENT = "simulator_task_failed"
    # No checksum on Binance books and no u=1 restart (Bybit's): everything else of the catalogue applies.
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
        serve: Sequence[str] = SERVED_SYMBOLS,
        liquidation_every: int | None = None,
        funding_intervals: Mapping[str, int] | None = None,
        ping_interval_s: float = 180.0,
        pong_timeout_s: float = 600.0,
        max_connection_age_s: float = 24 * 3600.0,
        max_incoming_per_s: int | None = 10,
        rest_weight_limit: int = 2400,
        client_queue: int = 4096,
        reply_headroom: int = 256,
        slow_client_timeout: float = 10.0,
        clock_skew_s: float = 0.0,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        if liquidation_every is not None and liquidation_every < 1:
            raise ValueError("liquidation_every must be >= 1 or None")
        if min(ping_interval_s, pong_timeout_s, max_connection_age_s) <= 0:
            raise ValueError("ping_interval_s, pong_timeout_s and max_connection_age_s must be positive")
        if client_queue <= _BURST or reply_headroom < 1:
            raise ValueError(f"client_queue must be > {_BURST} and reply_headroom >= 1")
        super().__init__(
            recording_path, host, port, speed, loop, garbage_every, gap_every,
            client_queue=client_queue, reply_headroom=reply_headroom, slow_client_timeout=slow_client_timeout,
            clock_skew_s=clock_skew_s,
        )  # fmt: skip
        self.serve = tuple(serve)
        # Delisted / expiring instruments (--delist, --expire): metadata, streams and REST answers follow it.
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle()
        self.liquidation_every = liquidation_every
        self.funding_intervals = dict(funding_intervals or {})
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.max_connection_age_s = max_connection_age_s
        self.max_incoming_per_s = max_incoming_per_s
        self.rest_weight_limit = rest_weight_limit
        # counters beyond the common ones
        self.rate_disconnects = 0
        self.age_disconnects = 0
        self.pong_disconnects = 0
        self.pings_sent = 0
        self.pongs_received = 0
        self.rate_limited = 0
        self.loops_completed = 0
        self.symbols: dict[str, _Symbol] = {}
        self._by_source: dict[str, list[_Symbol]] = collections.defaultdict(list)
        self._tape: _Tape | None = None
        self._subs: Subscriptions[str, _Client] = Subscriptions()
        self._shift = _Shift(0, self.clock, 0, 0)
        self._next_mark = 0.0  # recorded time (s) of the next synthetic mark price
        self._tape_ms = 0  # exchange time of the last frame played
        self._weight_minute = 0
        self._weight_used = 0

    # -- lifecycle -----------------------------------------------------------------------------------

    def ws_url(self, route: str = "public", combined: bool = True) -> str:
        return f"{self.ws_base}/{route}/{'stream' if combined else 'ws'}"

    async def _prepare(self) -> None:
        tape = self._tape = await asyncio.to_thread(_load, self.recording_path)
        for label in _labels(tape, self.serve):
            state = _Symbol(label, tape, tape.exchange_info)
            self.symbols[label.name] = state
            self._by_source[label.source].append(state)

    def _make_app(self) -> web.Application:
        app = web.Application()
        for path, handler in (
            ("/fapi/v1/exchangeInfo", self._exchange_info),
            ("/fapi/v1/depth", self._depth),
            ("/fapi/v1/openInterest", self._open_interest),
            ("/fapi/v1/fundingInfo", self._funding_info),
            ("/fapi/v1/time", self._time),
            ("/fapi/v1/ping", self._ping),
            ("/futures/data/globalLongShortAccountRatio", self._ratio),
            ("/futures/data/topLongShortAccountRatio", self._ratio),
            ("/futures/data/topLongShortPositionRatio", self._ratio),
        ):
            app.router.add_get(path, handler)
        for route in ("public", "market"):
            for mode in ("/stream", "/ws", "/ws/{name}"):
                app.router.add_get(f"/{route}{mode}", self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _start_players(self) -> None:
        self.spawn(self._play_tape(), "binance-simulator-player")
        self.spawn(self._keepalive(), "binance-simulator-keepalive")

    def _started_fields(self) -> dict[str, Any]:
        frames = len(self._tape.frames) if self._tape is not None else 0
        return {"venue": "binanceusdm", "port": self.bound_port, "frames": frames, "symbols": sorted(self.symbols)}

    def _log_disconnect(self, client: _Client, reason: str) -> None:
        log.warning("simulator_disconnect", extra={"fields": {"reason": reason}})

    # -- the player ----------------------------------------------------------------------------------

    async def _play_tape(self) -> None:
        tape = self._tape
        assert tape is not None
        await play_tape(
            self,
            tape.frames,
            self._subs.active,
            latency_ms=tape.latency_ms,
            ts_span_ms=tape.ts_span_ms,
            wait_for_room=self._wait_for_room,
            play=self._play_at,
            looped=self._looped,
            on_loop=self._start_loop,
        )

    def _start_loop(self, loop: int, clock: TapeClock) -> None:
        tape = self._tape
        assert tape is not None
        first_ts = tape.frames[0].ts
        self._shift = shift = _Shift(loop, clock, loop * tape.id_span, loop * tape.trade_span)
        if loop:
            self._restart_books(shift, clock.ms(round(first_ts * 1000) - tape.latency_ms))
        self._next_mark = math.floor(first_ts) + 1.0

    def _looped(self) -> None:
        self.loops_completed += 1

    async def _wait_for_room(self, frame: _Frame) -> None:
        """Speed 0: let every client drain before the next frame (bounded wait)."""
        await self.wait_for_room(lambda: self._clients)

    def _play_at(self, frame: _Frame, loop: int, clock: TapeClock) -> None:
        shift = self._shift
        latency = self._tape.latency_ms if self._tape is not None else 0
        while frame.ts >= self._next_mark:
            self._emit_marks(clock.ms(round(self._next_mark * 1000) - latency))
            self._next_mark += 1.0
        self._play(frame, shift)

    def _play(self, frame: _Frame, shift: _Shift) -> None:
        for state in self._by_source.get(frame.symbol, ()):
            data = orjson.loads(frame.raw)
            _rewrite(data, frame.kind, state.label, shift)
            if is_int(data.get("E")):
                self._tape_ms = data["E"]
            if frame.kind == "depth":
                self._play_depth(state, data)
            elif frame.kind in ("trade", "aggTrade"):
                self._play_trade(state, frame.kind, data)
            elif frame.kind == "markPrice" and state.label.factor is not None:
                continue  # a relabelled symbol gets synthetic marks from its own book instead
            else:
                self._deliver(state, frame.kind, data)

    def _play_depth(self, state: _Symbol, data: dict[str, Any]) -> None:
        faults = self.faults
        if faults:
            faults.frame(state.name)
            self.connection_faults(state.name, self._depth_clients(state))
            spec = faults.take("seq_gap", state.name)
            if spec is not None:
                state.seq_offset += int(spec.param("by"))  # this diff's `pu` no longer links; nothing is lost
        if state.seq_offset:
            for key in ("U", "u", "pu"):
                data[key] += state.seq_offset
        _apply_side(state.bids, data["b"])
        _apply_side(state.asks, data["a"])
        state.last_u = data["u"]
        state.played += 1
        state.deltas_seen += 1
        self._record_truth(state, data["u"], data.get("E"))
        held, state.held = state.held, None
        replayed, state.replayed = state.replayed, None
        if self.gap_every and state.deltas_seen % self.gap_every == 0:
            self.gaps_injected += 1  # the book applied it; no client sees it
        elif faults:
            self._faulted_depth(state, data)
        else:
            self._deliver(state, "depth", data)
        if held is not None:
            self._deliver(state, "depth", held)
        if replayed is not None:
            self._deliver(state, "depth", replayed)

    def _depth_clients(self, state: _Symbol) -> list[_Client]:
        """The clients subscribed to any depth stream of `state` (once each)."""
        return list(dict.fromkeys(self._subs.clients_of(stream_names(state.lower, "depth"))))

    def _record_truth(self, state: _Symbol, key: int, ts_ms: object, snapshot: bool = False) -> None:
        bids, asks = state.top(TRUTH_DEPTH)
        self.truth.record(state.name, key, ts_ms if is_int(ts_ms) else None, bids, asks, snapshot=snapshot)

    def _faulted_depth(self, state: _Symbol, data: dict[str, Any]) -> None:
        """Deliver one depth diff as the book-stream fault firing on it (if any) has it."""
        faults = self.faults
        name = state.name
        if faults.take("drop_diff", name):
            return
        if faults.take("duplicate_diff", name):
            self._deliver(state, "depth", data, lambda text: [text, text])
            state.replayed = data  # and once more, stale, after the next diff
        elif faults.take("reorder_diff", name):
            state.held = data
        elif faults.take("malformed_json", name):
            self._deliver(state, "depth", data, _malformed)
        elif faults.take("truncated_frame", name):
            self._deliver(state, "depth", data, lambda text: [text[: len(text) // 2]])
        elif (spec := faults.take("oversized_frame", name)) is not None:
            size = int(spec.param("bytes"))
            self._deliver(state, "depth", data, lambda text: [_padded(text, size)])
        else:
            self._deliver(state, "depth", data)

    def _play_trade(self, state: _Symbol, kind: str, data: dict[str, Any]) -> None:
        trade_id = data.get("t", data.get("a", 0))
        state.last_price = data["p"]
        state.on_trade(data["q"], trade_id, data.get("T", self._tape_ms))
        self._deliver(state, kind, data)
        other = "aggTrade" if kind == "trade" else "trade"
        if other not in state.recorded_kinds:
            self._deliver(state, other, _as_other_trade(data, other))
        state.trades_seen += 1
        if self.liquidation_every and state.trades_seen % self.liquidation_every == 0:
            order = {
                "s": state.name, "S": "SELL" if data["m"] else "BUY", "o": "LIMIT", "f": "IOC", "q": data["q"],
                "p": data["p"], "ap": data["p"], "X": "FILLED", "l": data["q"], "z": data["q"],
                "T": data.get("T", self._tape_ms),
            }  # fmt: skip
            self._deliver(state, "forceOrder", {"e": "forceOrder", "E": data.get("E", self._tape_ms), "o": order})

    def _emit_marks(self, ts_ms: int) -> None:
        for state in self.symbols.values():
            if "markPrice" in state.recorded_kinds and state.label.factor is None:
                continue
            mid = state.mid()
            if mid is None:
                continue
            mark = mid.quantize(_PRICE_8)
            interval_ms = int(self.funding_intervals.get(state.name, 8)) * 3_600_000
            data = {
                "e": "markPriceUpdate", "E": ts_ms, "s": state.name, "p": str(mark),
                "P": str(mark), "i": str((mark * Decimal("0.99995")).quantize(_PRICE_8)), "r": "0.00010000",
                "T": (ts_ms // interval_ms + 1) * interval_ms,
            }  # fmt: skip
            self._deliver(state, "markPrice", data)
            if state.marks_sent % 3 == 0:  # `@markPrice` (no suffix) is the 3-second stream
                self._deliver_named(state, f"{state.lower}@markPrice", "markPrice", data)
            state.marks_sent += 1

    def _restart_books(self, shift: _Shift, ts_ms: int) -> None:
        """New loop: one diff per book turns the last loop's end state back into the recorded snapshot."""
        for state in self.symbols.values():
            if not state.has_book:
                continue
            target_bids, target_asks = state.snapshot_levels
            u = state.bridge_pu + state.label.id_offset + shift.ids + state.seq_offset
            data = {
                "e": "depthUpdate", "E": ts_ms, "T": ts_ms, "s": state.name, "U": state.last_u + 1,
                "u": u, "pu": state.last_u,
                "b": _diff_side(state.bids, target_bids), "a": _diff_side(state.asks, target_asks),
            }  # fmt: skip
            _load_side(state.bids, target_bids)
            _load_side(state.asks, target_asks)
            state.last_u = u
            state.played = 0
            self._record_truth(state, u, ts_ms)
            self._deliver(state, "depth", data)  # never withheld: it carries the loop's reset

    def _deliver(
        self, state: _Symbol, kind: str, data: dict[str, Any], mangle: Callable[[str], list[str]] | None = None
    ) -> None:
        for name in stream_names(state.lower, kind):
            self._deliver_named(state, name, kind, data, mangle)

    def _deliver_named(
        self,
        state: _Symbol,
        name: str,
        kind: str,
        data: dict[str, Any],
        mangle: Callable[[str], list[str]] | None = None,
    ) -> None:
        """Send `data` on stream `name` to its subscribers on the right route; `mangle` (a fault) turns each
        envelope's text into the frames actually sent."""
        subs = self._subs.get(name)
        if not subs or (self.lifecycle and self.lifecycle.retired(state.name)):
            return  # nobody listens, or the symbol stopped trading: the venue sends nothing more of it
        route = ROUTE_OF_KIND[kind]
        texts: dict[bool, list[str]] = {}
        for client in list(subs):
            if client.route != route:
                continue  # subscribed on the wrong path: the venue never delivers it, silently
            frames = texts.get(client.combined)
            if frames is None:
                body = {"stream": name, "data": data} if client.combined else data
                text = orjson.dumps(body).decode()
                frames = texts[client.combined] = [text] if mangle is None else mangle(text)
            for text in frames:
                if not self.offer_or_kick(client, text, name):
                    break

    # -- keepalive -----------------------------------------------------------------------------------

    async def _keepalive(self) -> None:
        """Server pings, pong deadline and the forced disconnect at `max_connection_age_s`."""
        tick = max(0.01, min(self.ping_interval_s, self.pong_timeout_s, self.max_connection_age_s) / 4)
        while True:
            await asyncio.sleep(tick)  # a timer, not synchronisation: checks due deadlines
            now = time.monotonic()
            for client in list(self._clients):
                if client.kicked is not None:
                    continue
                if now - client.connected_at >= self.max_connection_age_s:
                    self.kick(client, "max_age")
                elif client.ping_sent_at is not None and now - client.ping_sent_at >= self.pong_timeout_s:
                    self.kick(client, "no_pong")
                elif now - client.last_ping_at >= self.ping_interval_s:
                    client.last_ping_at = now
                    if client.ping_sent_at is None:
                        client.ping_sent_at = now
                    if client.offer(str(int(now * 1000)), None, reply=True, ping=True):
                        self.pings_sent += 1

    # -- REST ----------------------------------------------------------------------------------------

    def _charge(self, weight: int) -> web.Response | None:
        """Count request weight per wall-clock minute; a 429 answer once the IP limit would be passed."""
        minute = int(time.time() // 60)
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        if self._weight_used + weight > self.rest_weight_limit:
            self.rate_limited += 1
            retry = str(max(1, 60 - int(time.time() % 60)))
            body = {"code": -1003, "msg": f"Too many requests; current limit of IP is {self.rest_weight_limit} "
                    "requests per minute."}  # fmt: skip
            return json_response(body, 429, {"Retry-After": retry, "X-MBX-USED-WEIGHT-1M": str(self._weight_used)})
        self._weight_used += weight
        return None

    def _answer(self, body: Any, status: int = 200) -> web.Response:
        return json_response(body, status, {"X-MBX-USED-WEIGHT-1M": str(self._weight_used)})

    def _symbol_param(self, request: web.Request) -> tuple[_Symbol | None, web.Response | None]:
        name = request.query.get("symbol", "")
        if not name:
            body = {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."}
            return None, self._answer(body, 400)
        state = self.symbols.get(name)
        if state is None or self.lifecycle.refuse(name):  # a retired symbol is unknown to the venue's REST
            return None, self._answer({"code": -1121, "msg": "Invalid symbol."}, 400)
        return state, None

    async def _exchange_info(self, request: web.Request) -> web.Response:
        refused = self._charge(1)
        if refused is not None:
            return refused
        assert self._tape is not None
        info = dict(self._tape.exchange_info or {"timezone": "UTC", "rateLimits": [], "symbols": []})
        rows = list(info.get("symbols", []))
        known = {row.get("symbol") for row in rows}
        for state in self.symbols.values():
            if state.name in known:
                continue
            source = next((r for r in rows if r.get("symbol") == state.label.source), None)
            if source is not None:  # a relabelled symbol the recorded answer lacks: the source's facts, renamed
                pair, _, dated = state.name.partition("_")
                base = pair.removesuffix(str(source.get("quoteAsset", "USDT")))
                row = {**source, "symbol": state.name, "pair": pair, "baseAsset": base}
                if dated:  # BTCUSDT_261225: a quarterly, delivered at 08:00 UTC on that day (as Binance names them)
                    row["contractType"] = "CURRENT_QUARTER"
                    row["deliveryDate"] = _delivery_ms(dated)
                rows.append(row)
        if self.lifecycle:
            rows = [dict(row) for row in rows]
            for row in rows:
                self.lifecycle.binance_row(row)
        info["symbols"] = rows
        info["serverTime"] = self.clock.now_ms()
        return self._answer(info)

    async def _depth(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            limit = -1
        if limit not in DEPTH_WEIGHTS:
            self.bad_requests += 1
            return self._answer({"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}, 400)
        refused = self._charge(DEPTH_WEIGHTS[limit])
        if refused is not None:
            return refused
        state, error = self._symbol_param(request)
        if state is None or not state.has_book:
            self.bad_requests += 1
            return error or self._answer({"code": -1121, "msg": "Invalid symbol."}, 400)
        slow = self.faults.take("slow_snapshot", state.name) if self.faults.wants("slow_snapshot") else None
        if slow is not None:
            await asyncio.sleep(float(slow.param("delay_s")))  # the fault itself: the book is taken when it leaves
        ids = state.first_ids
        if state.played < len(ids):
            next_first = ids[state.played] + state.label.id_offset + self._shift.ids + state.seq_offset
        else:
            next_first = state.last_u + 1 if self.loop else state.last_u
        body = {
            "lastUpdateId": next_first,
            "E": self._tape_ms or self.clock.now_ms(),
            "T": self._tape_ms or self.clock.now_ms(),
            "bids": [list(state.bids[p]) for p in sorted(state.bids, reverse=True)[:limit]],
            "asks": [list(state.asks[p]) for p in sorted(state.asks)[:limit]],
        }
        # The daemon's book is this answer (keyed by lastUpdateId) until a buffered diff bridges it.
        self._record_truth(state, next_first, body["E"], snapshot=True)
        return self._answer(body)

    async def _open_interest(self, request: web.Request) -> web.Response:
        refused = self._charge(1)
        if refused is not None:
            return refused
        state, error = self._symbol_param(request)
        if state is None:
            self.bad_requests += 1
            return error  # type: ignore[return-value]
        value = state.oi.quantize(state.step)
        return self._answer(
            {"openInterest": str(value), "symbol": state.name, "time": state.oi_ms or self.clock.now_ms()}
        )

    async def _ratio(self, request: web.Request) -> web.Response:
        refused = self._charge(0)
        if refused is not None:
            return refused
        state, error = self._symbol_param(request)
        period_ms = RATIO_PERIODS_MS.get(request.query.get("period", ""))
        if state is None or period_ms is None:
            self.bad_requests += 1
            return error or self._answer({"code": -1130, "msg": "Data sent for parameter 'period' is not valid."}, 400)
        try:
            limit = min(500, max(1, int(request.query.get("limit", "30"))))
        except ValueError:
            limit = 30
        positions = request.path.endswith("PositionRatio")
        phase = zlib.crc32(f"{state.name}{request.path}".encode()) / 2**32 * 2 * math.pi
        latest = (self.clock.now_ms() // period_ms - 1) * period_ms  # the last complete bucket
        rows = []
        for k in range(limit - 1, -1, -1):
            stamp = latest - k * period_ms
            swing = 0.08 if positions else 0.12
            longs = Decimal(0.5 + swing * math.sin(stamp / period_ms / 9.0 + phase)).quantize(Decimal("0.0001"))
            shorts = Decimal(1) - longs
            rows.append({
                "symbol": state.name, "longShortRatio": str((longs / shorts).quantize(Decimal("0.0001"))),
                "longAccount": str(longs), "shortAccount": str(shorts), "timestamp": stamp,
            })  # fmt: skip
        return self._answer(rows)

    async def _funding_info(self, request: web.Request) -> web.Response:
        refused = self._charge(0)
        if refused is not None:
            return refused
        rows = [
            {"symbol": name, "adjustedFundingRateCap": "0.02000000", "adjustedFundingRateFloor": "-0.02000000",
             "fundingIntervalHours": hours, "disclaimer": False}
            for name, hours in sorted(self.funding_intervals.items())
        ]  # fmt: skip
        return self._answer(rows)

    async def _time(self, request: web.Request) -> web.Response:
        refused = self._charge(1)
        return refused or self._answer({"serverTime": self.clock.now_ms()})

    async def _ping(self, request: web.Request) -> web.Response:
        refused = self._charge(1)
        return refused or self._answer({})

    async def _not_found(self, request: web.Request) -> web.Response:
        return json_response({"code": -1000, "msg": f"Not found: {request.path}"}, 404)

    # -- websockets ----------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        route = request.path.strip("/").split("/")[0]
        combined = request.path.rstrip("/").endswith("/stream")
        client = _Client(self, await self._open_ws(request, autoping=False), route, combined)
        initial = request.match_info.get("name") or request.query.get("streams", "")
        for name in (s for s in initial.split("/") if s):
            if _STREAM_NAME.match(name) and len(client.keys) < MAX_STREAMS:
                self._subs.add(client, name)
        return await self._run_client(
            request, client, self._read_loop(client), leave=functools.partial(self._leave, client)
        )

    def _leave(self, client: _Client) -> None:
        self._subs.drop(client)
        client.kick("closed")  # wakes a speed-0 player waiting for this client's room

    async def _read_loop(self, client: _Client) -> None:
        async for msg in client.ws:
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return
            if not client.count_incoming():
                self.kick(client, "rate")
                return
            if msg.type is WSMsgType.PING:
                await client.ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                client.ping_sent_at = None
                self.pongs_received += 1
            elif msg.type is WSMsgType.TEXT:
                self._on_request(client, msg.data)
            else:
                self._on_request(client, None)

    def _on_request(self, client: _Client, text: str | None) -> None:
        """Answer one client frame. Synchronous, so the ack is queued before any data of its streams."""
        try:
            req = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict):
            self._error(client, None, 3, "Invalid JSON: expected an object")
            return
        req_id = req.get("id")
        if not ((is_int(req_id) and req_id >= 0) or (isinstance(req_id, str) and 0 < len(req_id) <= 36)):
            self._error(client, None, 2, "Invalid request: request ID must be an unsigned integer")
            return
        method = req.get("method")
        params = req.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            self._reply(client, {"result": sorted(client.keys), "id": req_id})
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            self._error(client, req_id, 2, f"Invalid request: unknown variant {method!r}")
            return
        if not isinstance(params, list) or not all(isinstance(p, str) and _STREAM_NAME.match(p) for p in params):
            self._error(client, req_id, 2, "Invalid request: params must be stream names")
            return
        if method == "UNSUBSCRIBE":
            if self._reply(client, {"result": None, "id": req_id}):
                for name in params:
                    self._subs.remove(client, name)
            return
        if len(client.keys | set(params)) > MAX_STREAMS:
            self._error(client, req_id, 2, f"Invalid request: more than {MAX_STREAMS} streams")
            return
        rejected = self._rejected_depth(params)
        if rejected is not None:
            # sub_error: the whole request fails, as the venue answers per request (none of it is subscribed).
            self._error(client, req_id, 2, f"Invalid request: subscription to {rejected} failed, please retry")
            return
        if self._reply(client, {"result": None, "id": req_id}):
            for name in dict.fromkeys(params):
                self._subs.add(client, name)

    def _rejected_depth(self, params: Sequence[str]) -> str | None:
        """The first depth stream of a SUBSCRIBE that `sub_error` rejects now, if any."""
        if not self.faults.wants("sub_error"):
            return None
        for name in params:
            if _kind_of_stream(name) == "depth" and self.faults.take("sub_error", name.partition("@")[0].upper()):
                return name
        return None

    def _error(self, client: _Client, req_id: object, code: int, msg: str) -> None:
        # Shape UNCONFIRMED for USD-M (spot documents flat {"code","msg"} and newer {"error":{...}}).
        self.bad_requests += 1
        self._reply(client, {"error": {"code": code, "msg": msg}, "id": req_id})


def _malformed(text: str) -> list[str]:
    """A diff whose JSON is broken (a stray `{,` where its bids start)."""
    cut = text.find('"b":')
    return [text[:cut] + '"b":{,' + text[cut + 4 :] if cut >= 0 else text[:-1] + ",,}"]


def _padded(text: str, size: int) -> str:
    """The diff's envelope padded with a blank field to `size` bytes (valid JSON, far over any frame bound)."""
    pad = max(0, size - len(text) - 10)
    return text[:-1] + ',"pad":"' + " " * pad + '"}'


def _as_other_trade(data: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The same fill as the other trade stream: `aggTrade` from `trade` (one fill per aggregate) or back."""
    out = {key: data[key] for key in ("E", "T", "s", "p", "q", "m") if key in data}
    if kind == "aggTrade":
        trade_id = data.get("t", 0)
        return {"e": "aggTrade", "a": trade_id, "f": trade_id, "l": trade_id, **out}
    return {"e": "trade", "t": data.get("a", 0), "X": "MARKET", **out}


run_simulator = simulator_runner(BinanceUsdmSimulator, DEFAULT_PORT, "flowgauge simulate --venue binanceusdm")
