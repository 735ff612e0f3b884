"""Deribit venue simulator: replays a recording over Deribit's current JSON-RPC websocket and REST API.

Sits in `service/replay` beside the Bybit simulator (`simulator.py`), whose API it mirrors and whose pacing,
bounds and fault injection it shares (`sim_base.py`); `flowgauge simulate` and the tests run it, and the
daemon reaches it only through configured base URLs (ws://host:port/ws/api/v2, http://host:port). It must
not import the daemon's parsers, books or metrics: it is the independent ground truth the daemon is tested
against. It binds loopback by default and never opens an outbound connection.

Protocol served (what a client without credentials gets from Deribit today):
* websocket `/ws/api/v2`, JSON-RPC 2.0: `public/subscribe` / `public/unsubscribe` / `public/unsubscribe_all`
  with `channels`, `public/set_heartbeat` (interval >= 10 s; then a `heartbeat` `test_request` every
  interval, and a client that has not called `public/test` by the next one is disconnected, close 1008),
  `public/disable_heartbeat`, `public/test`, `public/get_time`, `public/hello`. Channels
  `book|ticker|trades.{instrument}.{100ms|agg2}`; `.raw` is refused with error 13778
  `raw_subscriptions_not_available_for_unauthorized`, as Deribit does since January 2022 (the 2021
  recordings used `.raw`; their frames are served on the current channel names). `instrument.state.{kind}.
  {currency}` (`any` allowed for both) carries the lifecycle below. `quote.{instrument}` (best bid/ask, no
  interval) is derived from the served book: see Best quotes. Channels of other shapes are left out of the
  subscribe result (Deribit's handling of those is UNCONFIRMED).
* Lifecycle (`lifecycle`, see `simulate.lifecycle`): at a retirement's time the state channel says `settled`
  (expiring) or `closed` (delisted), get_instruments shows `is_active` false (an expiring instrument carries its
  `expiration_timestamp` from the start), no more frames of it are played, and a subscribe to its channels is
  left out of the answer and counted in `lifecycle.requests_after`.
* REST `/api/v2/public/get_instruments` (`currency` per recorded currency, `any` or absent = all; `kind`;
  `expired=true` answers an empty list), `get_currencies`, `get_time`, `test`: what ccxt's `load_markets`
  asks. Instrument rows recorded before 2022 lack `counter_currency` / `settlement_currency`, which
  current ccxt needs; they are served with those fields filled as Deribit sends them today (quote USD,
  settled in the base coin, futures `reversed`).

Model. One market: a player task walks every recorded `book` / `ticker` / `trades` notification in
receive-time order, paced by the recorded gaps divided by `speed` (0 = as fast as the subscribed clients
read), and pauses while nobody subscribes. Every client sees the same frames with the same ids. The market
keeps each instrument's book and last ticker, so a client that subscribes late (or unsubscribes and
subscribes again to resync) first gets a `type: snapshot` of the current book, whose `change_id` the next
`change`'s `prev_change_id` names.

Relabelled perpetuals. The daemon's default configuration wants BTC-PERPETUAL and ETH-PERPETUAL. When the
recording has no book for one of them (the 2021 session only recorded options), its stream is driven by the
most active recorded book of the same base coin, relabelled: instrument names rewritten, each price moved
tick for tick around an anchor (the source's first recorded index price, rounded to the perpetual's tick),
so one option tick becomes one perpetual tick and the book keeps its shape; coin amounts become USD
(amount x price, in whole contracts of the perpetual's contract size), as Deribit sends inverse amounts.
Its ticker carries the relabelled best bid/ask and mark, the source's index price, open interest in USD,
and a synthetic `funding_8h` = `current_funding` = the mark's premium over the index clamped to +-0.5%
(options have no funding to relabel). The source instrument is served under its own name as well.

Timestamps and ids. Exchange times (`timestamp` of books, tickers, trades) follow the wall clock through
`base.TapeClock` at every speed and across loops (shifted by `clock_skew_s`); `usIn`/`usOut` and
`public/get_time` are the clock now. When the recording ends the market loops: `change_id`/`prev_change_id` and
`trade_seq` are shifted by a per-loop offset larger than the recording's span, and each book's recorded
first snapshot is played as a `change` from the current book to that snapshot's content, chained to the
last `change_id`, so a subscriber's chain never breaks at the seam (Deribit never re-sends a snapshot
mid-stream). Looped trade ids get a `-<loop>` suffix.

Best quotes. The recordings hold no `quote` channel, so the market derives it from each book it keeps: after every
book message that changed the best bid or ask (price or amount), one notification on `quote.{instrument}` with
`best_bid_price` / `best_bid_amount` / `best_ask_price` / `best_ask_amount` (a price null and its amount 0 for an
empty side; amounts in the book's units) and the book's `timestamp`. It follows the market's book, not what a book
fault let through; a subscriber gets the current quote at once.

Faults. Every kind of `faults.py` that applies to Deribit (`SUPPORTED_FAULTS`: all but `bad_checksum`, which
Deribit's books do not carry, and Bybit's `u1_restart`), on the `book` channels of the instrument: a withheld,
duplicated, reordered (sent after the instrument's next change), malformed, truncated or oversized `change`;
`seq_gap` shifts the instrument's `change_id` and `prev_change_id` from then on, so the first shifted change
names a `prev_change_id` nobody sent; `slow_snapshot` answers a subscribe of the instrument's book at once but
holds the snapshot (and the changes after it) back by `delay_s`; `sub_error` answers a subscribe request that
names the instrument's book with a JSON-RPC error (code 10040 `retry`, one of Deribit's documented temporary
errors) and subscribes nothing of that request. The connection faults (disconnect, half-open: `test_request`s
stop too, forced disconnect, connection limit, clock skew and jumps) are `base`'s. The market's own book
applies every message whatever the fault and is the truth: after every `change_id` its top 10 levels go to
`sim.truth` keyed by `change_id` (the daemon's `book_seq`), sizes in the payloads' units: coin, i.e. USD
amounts of inverse futures and perpetuals divided by each level's price, other amounts as sent.

`gap_every=N` silently withholds every N-th `change` of each book from all clients (the market's
own book still applies it, so a resync snapshot is correct): the next change's `prev_change_id` names the
missing one. `garbage_every=N` sends each client a malformed frame after every N data frames it received,
cycling through a non-JSON binary frame, a JSON book change with wrongly typed fields, and a truncated copy
of the last frame.

Bounds. Each client has one bounded outbound queue drained by one writer task. At speed > 0 a client whose
queue is full is disconnected (close 1008, counted in `slow_disconnects`); at speed 0 the market waits up to
`slow_client_timeout` for room and then disconnects it. A client holds at most `MAX_CHANNELS_PER_CLIENT`
channels.
The server plumbing (runner, client queues and writers, slow-client policy, pacing) is `sim_base.py`'s.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeGuard
from urllib.parse import parse_qsl, urlsplit

import orjson
from aiohttp import WSCloseCode, web

from flowgauge.recording import Connect, Http, Recv, iter_records
from flowgauge.simulate.base import SimClient, SimMarket, SimulatorServer, TapeClock, is_int, simulator_runner
from flowgauge.simulate.faults import CONNECTION_FAULTS
from flowgauge.simulate.lifecycle import Lifecycle
from flowgauge.simulate.truth import TRUTH_DEPTH

__all__ = ["DEFAULT_PORT", "PERPETUALS", "WS_PATH", "DeribitSimulator", "run_simulator"]

DEFAULT_PORT = 9783
WS_PATH = "/ws/api/v2"
API_PREFIX = "/api/v2/public/"
SERVED_INTERVALS = ("100ms", "agg2")
MIN_HEARTBEAT_S = 10.0
MAX_CHANNELS_PER_CLIENT = 3000  # our bound on one connection's subscriptions (channels are client strings)
# Perpetuals always served (base coin -> instrument), and a price level for them if no recorded index helps.
PERPETUALS = {"BTC": "BTC-PERPETUAL", "ETH": "ETH-PERPETUAL"}
_FALLBACK_PRICE = {"BTC": 30_000.0, "ETH": 2_000.0}
_FUNDING_CLAMP = 0.005
_KINDS = ("book", "ticker", "trades")
QUOTE_KIND = "quote"  # `quote.{instrument}`: derived from the market's book (module doc, Best quotes)
_VERSION = "1.2.26"  # what `public/test` and `public/hello` report
# `sub_error`'s reply: a documented temporary error ("Request can't be processed right now and should be retried").
SUB_ERROR = (10040, "retry")


# --------------------------------------------------------------------------------------------------
# The recording, prepared for serving


@dataclass(slots=True, frozen=True)
class _Relabel:
    """Maps a recorded instrument's frames onto a perpetual it stands in for (see the module docstring)."""

    source: str
    target: str
    src_tick: float
    dst_tick: float
    ref: float  # source price that maps onto the anchor
    anchor_ticks: int  # anchor price in target ticks
    index_scale: float  # target index = source index x this (1 when both share a base coin)
    contract_size: float  # target contract size, USD
    decimals: int  # of the target tick

    def price(self, p: float) -> float:
        ticks = self.anchor_ticks + round((p - self.ref) / self.src_tick)
        return round(max(1, ticks) * self.dst_tick, self.decimals)

    def level(self, p: float) -> float:
        """A price that need not sit on the tick (mark): moved the same way, kept to cents."""
        return round(self.anchor_ticks * self.dst_tick + (p - self.ref) / self.src_tick * self.dst_tick, 2)

    def usd(self, amount: float, price: float) -> float:
        if amount <= 0.0:
            return 0.0
        contracts = max(1, round(amount * price / self.contract_size))
        return float(contracts * self.contract_size)


@dataclass(slots=True)
class _Frame:
    ts: float  # recorded local receive time, unix seconds (drives pacing)
    kind: str  # book | ticker | trades
    instrument: str  # the instrument served (the relabel target for relabelled copies)
    raw: str  # the recorded notification text; decoded again when played (one copy in memory)
    relabel: _Relabel | None = None


@dataclass(slots=True)
class _Tape:
    frames: list[_Frame] = field(default_factory=list)
    id_span: int = 1  # > max - min over every change_id / prev_change_id
    seq_span: int = 1  # > max - min over trade_seq
    ts_span_ms: int = 1  # > max - min over exchange times
    latency_ms: int = 0  # smallest recorded (receive time - exchange timestamp)


@dataclass(slots=True)
class _Served:
    instruments: list[dict[str, Any]]  # get_instruments rows as served today
    currency_of: dict[str, str]  # instrument name -> the `currency` it is listed under
    tape: _Tape
    relabels: list[_Relabel]


def _load(path: Path) -> _Served:
    """Read a recording into the served instruments and the tape (blocking; run in a thread)."""
    addr_of: dict[str, str] = {}
    recvs: list[Recv] = []
    rows: dict[str, dict[str, Any]] = {}
    currency_of: dict[str, str] = {}
    for rec in iter_records(path):
        if isinstance(rec, Connect):
            addr_of[rec.conn] = rec.addr
        elif isinstance(rec, Recv):
            recvs.append(rec)
        elif isinstance(rec, Http):
            _add_instruments(rows, currency_of, rec)
    ws = [r for r in recvs if urlsplit(addr_of.get(r.conn, "")).path.rstrip("/") == WS_PATH]
    ws.sort(key=lambda r: r.ts)  # stable: frames of one connection keep their order on equal times
    notes: list[tuple[Recv, str, str, Any]] = []
    for rec in ws:
        try:
            msg = orjson.loads(rec.data)
        except orjson.JSONDecodeError:
            continue
        params = msg.get("params") if isinstance(msg, dict) and msg.get("method") == "subscription" else None
        channel = params.get("channel") if isinstance(params, dict) else None
        parts = channel.split(".") if isinstance(channel, str) else []
        if len(parts) == 3 and parts[0] in _KINDS and isinstance(params, dict):
            notes.append((rec, parts[0], parts[1], params.get("data")))
    relabels = _relabels(rows, currency_of, notes)
    return _Served(list(rows.values()), currency_of, _make_tape(notes, relabels), relabels)


def _add_instruments(rows: dict[str, dict[str, Any]], currency_of: dict[str, str], rec: Http) -> None:
    url = urlsplit(rec.url)
    if url.path != API_PREFIX.rstrip("/") + "/get_instruments":
        return
    try:
        result = orjson.loads(rec.data)["result"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return  # an error answer recorded from the venue is not an instruments list
    if not isinstance(result, list):
        return
    listed = dict(parse_qsl(url.query)).get("currency")
    for row in result:
        if not isinstance(row, dict) or not isinstance(row.get("instrument_name"), str):
            continue
        name = row["instrument_name"]
        if name in rows:
            continue
        rows[name] = _as_served_today(row)
        currency_of[name] = listed if listed and listed != "any" else _listing_currency(rows[name])


def _as_served_today(row: dict[str, Any]) -> dict[str, Any]:
    # Deribit added counter/settlement currency in 2022; before, every future and option was quoted in USD
    # and settled in its base coin, and every future was inverse ("reversed").
    if "counter_currency" in row and "settlement_currency" in row:
        return row
    out = dict(row)
    out.setdefault("counter_currency", "USD")
    out.setdefault("settlement_currency", out.get("base_currency"))
    if out.get("kind") == "future":
        out.setdefault("future_type", "reversed")
    return out


def _listing_currency(row: dict[str, Any]) -> str:
    settle = row.get("settlement_currency")
    return str(settle) if settle in ("USDC", "USDT") else str(row.get("base_currency"))


def _relabels(
    rows: dict[str, dict[str, Any]], currency_of: dict[str, str], notes: list[tuple[Recv, str, str, Any]]
) -> list[_Relabel]:
    books = collections.Counter(name for _, kind, name, _ in notes if kind == "book")
    first_index: dict[str, float] = {}
    first_mid: dict[str, float] = {}
    for _, kind, name, data in notes:
        if not isinstance(data, dict):
            continue
        if kind == "ticker" and name not in first_index and _is_number(data.get("index_price")):
            first_index[name] = float(data["index_price"])
        if kind == "book" and name not in first_mid and data.get("type") == "snapshot":
            mid = _mid(data)
            if mid is not None:
                first_mid[name] = mid
    out = []
    for base, target in PERPETUALS.items():
        if target not in rows:  # a recording without the instrument list still serves the perpetual
            rows[target] = _perpetual_row(base, target)
            currency_of[target] = base
        if books[target] or not books:
            continue
        same_base = [n for n in books if n.split("-")[0].split("_")[0] == base and n in first_mid]
        candidates = same_base or [n for n in books if n in first_mid]
        if not candidates:
            continue
        source = max(candidates, key=lambda n: (books[n], n))
        index = first_index.get(source)
        anchor = index if index is not None and source in same_base else _FALLBACK_PRICE.get(base, 100.0)
        dst_tick = float(rows[target].get("tick_size") or 0.5)
        src_tick = float(rows.get(source, {}).get("tick_size") or 0.0005)
        out.append(
            _Relabel(
                source=source,
                target=target,
                src_tick=src_tick,
                dst_tick=dst_tick,
                ref=first_mid[source],
                anchor_ticks=round(anchor / dst_tick),
                index_scale=1.0 if index is None else anchor / index,
                contract_size=float(rows[target].get("contract_size") or 1.0),
                decimals=max(0, -math.floor(math.log10(dst_tick))) if dst_tick < 1 else 0,
            )
        )
    return out


def _perpetual_row(base: str, target: str) -> dict[str, Any]:
    btc = base == "BTC"
    return {
        "tick_size": 0.5 if btc else 0.05, "settlement_period": "perpetual", "quote_currency": "USD",
        "min_trade_amount": 10.0 if btc else 1.0, "kind": "future", "is_active": True, "instrument_name": target,
        "expiration_timestamp": 32503708800000, "contract_size": 10.0 if btc else 1.0, "base_currency": base,
        "counter_currency": "USD", "settlement_currency": base, "future_type": "reversed",
    }


def _mid(data: dict[str, Any]) -> float | None:
    bids = [r[1] for r in data.get("bids") or [] if _is_row(r)]
    asks = [r[1] for r in data.get("asks") or [] if _is_row(r)]
    if bids and asks:
        return (max(bids) + min(asks)) / 2.0
    if bids or asks:
        return max(bids) if bids else min(asks)
    return None


def _make_tape(notes: list[tuple[Recv, str, str, Any]], relabels: list[_Relabel]) -> _Tape:
    tape = _Tape()
    by_source: dict[str, list[_Relabel]] = collections.defaultdict(list)
    for relabel in relabels:
        by_source[relabel.source].append(relabel)
    ids: list[int] = []
    seqs: list[int] = []
    times: list[int] = []
    latency: int | None = None
    for rec, kind, name, data in notes:
        tape.frames.append(_Frame(rec.ts, kind, name, rec.data))
        for relabel in by_source.get(name, ()):
            tape.frames.append(_Frame(rec.ts, kind, relabel.target, rec.data, relabel))
        items = data if isinstance(data, list) else [data]
        for item in items:
            if not isinstance(item, dict):
                continue
            ids += [item[k] for k in ("change_id", "prev_change_id") if is_int(item.get(k))]
            if is_int(item.get("trade_seq")):
                seqs.append(item["trade_seq"])
            if is_int(item.get("timestamp")):
                times.append(item["timestamp"])
                lat = round(rec.ts * 1000) - item["timestamp"]
                latency = lat if latency is None else min(latency, lat)
    tape.id_span = (max(ids) - min(ids) + 1) if ids else 1
    tape.seq_span = (max(seqs) - min(seqs) + 1) if seqs else 1
    tape.ts_span_ms = (max(times) - min(times) + 1) if times else 1
    tape.latency_ms = latency or 0
    return tape


def _is_number(v: object) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_row(row: object) -> bool:
    return isinstance(row, list) and len(row) == 3 and _is_number(row[1]) and _is_number(row[2])


# --------------------------------------------------------------------------------------------------
# Per-loop rewriting of one notification (pure)


@dataclass(slots=True, frozen=True)
class _Shift:
    loop: int
    clock: TapeClock  # maps exchange timestamps
    ids: int  # added to change_id / prev_change_id
    seq: int  # added to trade_seq


def _relabel_rows(rows: object, relabel: _Relabel) -> list[list[Any]]:
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not _is_row(row):
            continue
        price = relabel.price(row[1])
        amount = 0.0 if row[0] == "delete" else relabel.usd(row[2], price)
        out.append([row[0], price, amount])
    return out


def _relabel_data(kind: str, data: Any, relabel: _Relabel, book: _Book | None) -> Any:
    """A recorded source notification's data as its relabelled perpetual's (new objects, source untouched)."""
    target = relabel.target
    if kind == "book" and isinstance(data, dict):
        out = dict(data, instrument_name=target)
        out["bids"] = _relabel_rows(data.get("bids"), relabel)
        out["asks"] = _relabel_rows(data.get("asks"), relabel)
        return out
    if kind == "trades" and isinstance(data, list):
        trades = []
        for item in data:
            if isinstance(item, dict) and _is_number(item.get("price")) and _is_number(item.get("amount")):
                price = relabel.price(item["price"])
                amount = relabel.usd(item["amount"], price)
                trades.append(dict(item, instrument_name=target, price=price, amount=amount))
        return trades
    if kind == "ticker" and isinstance(data, dict):
        index = float(data["index_price"]) * relabel.index_scale if _is_number(data.get("index_price")) else None
        mark = relabel.level(data["mark_price"]) if _is_number(data.get("mark_price")) else None
        out = {"timestamp": data.get("timestamp"), "state": data.get("state", "open"), "instrument_name": target}
        if index is not None:
            out["index_price"] = out["estimated_delivery_price"] = round(index, 2)
        if mark is not None:
            out["mark_price"] = mark
        if _is_number(data.get("last_price")):
            out["last_price"] = relabel.price(data["last_price"])
        if _is_number(data.get("open_interest")):
            out["open_interest"] = relabel.usd(data["open_interest"], relabel.anchor_ticks * relabel.dst_tick)
        if mark is not None and index:
            funding = max(-_FUNDING_CLAMP, min(_FUNDING_CLAMP, (mark - index) / index))
            out["current_funding"] = out["funding_8h"] = round(funding, 8)
        best_bid = book.best(bids=True) if book is not None else None
        best_ask = book.best(bids=False) if book is not None else None
        out["best_bid_price"], out["best_bid_amount"] = best_bid or (0.0, 0.0)
        out["best_ask_price"], out["best_ask_amount"] = best_ask or (0.0, 0.0)
        return out
    return data


def _shift(kind: str, data: Any, shift: _Shift) -> None:
    """Shift exchange times and ids of one notification's data in place."""
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict):
            continue
        if is_int(item.get("timestamp")):
            item["timestamp"] = shift.clock.ms(item["timestamp"])
        for key in ("change_id", "prev_change_id"):
            if is_int(item.get(key)):
                item[key] += shift.ids
        if kind == "trades":
            if is_int(item.get("trade_seq")):
                item["trade_seq"] += shift.seq
            if shift.loop and item.get("trade_id") is not None:
                item["trade_id"] = f"{item['trade_id']}-{shift.loop}"  # never repeat an id consumers de-duplicate on


# --------------------------------------------------------------------------------------------------
# Market state kept for late subscribers


class _Book:
    """Current book of one instrument (price -> amount, both as the venue's JSON numbers)."""

    __slots__ = ("asks", "bids", "change_id", "instrument", "timestamp")

    def __init__(self, instrument: str) -> None:
        self.instrument = instrument
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.change_id: Any = None
        self.timestamp: Any = None

    def apply(self, data: dict[str, Any]) -> None:
        if data.get("type") == "snapshot":
            self.bids.clear()
            self.asks.clear()
        for side, levels in ((self.bids, data.get("bids")), (self.asks, data.get("asks"))):
            for row in levels if isinstance(levels, list) else []:
                if not _is_row(row):
                    continue
                if row[0] == "delete" or row[2] <= 0:
                    side.pop(row[1], None)
                else:
                    side[row[1]] = row[2]
        self.change_id = data.get("change_id", self.change_id)
        self.timestamp = data.get("timestamp", self.timestamp)

    def top(self, n: int, usd: bool) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """The best `n` (price, size) levels of each side, best first, sizes in coin (`usd`: amounts are USD,
        divided by the level's price as the payloads' sizes are)."""
        out = []
        for side, prices in ((self.bids, heapq.nlargest(n, self.bids)), (self.asks, heapq.nsmallest(n, self.asks))):
            out.append([(float(p), side[p] / p if usd else float(side[p])) for p in prices])
        return out[0], out[1]

    def best(self, bids: bool) -> tuple[float, float] | None:
        side = self.bids if bids else self.asks
        if not side:
            return None
        price = max(side) if bids else min(side)
        return price, side[price]

    def snapshot(self) -> dict[str, Any]:
        return {
            "type": "snapshot",
            "timestamp": self.timestamp,
            "instrument_name": self.instrument,
            "change_id": self.change_id,
            "bids": [["new", p, self.bids[p]] for p in sorted(self.bids, reverse=True)],
            "asks": [["new", p, self.asks[p]] for p in sorted(self.asks)],
        }

    def change_to(self, target: dict[str, Any]) -> dict[str, Any]:
        """A `change` turning this book into the snapshot `target` (the loop seam), chained to this book."""
        out: dict[str, Any] = {
            "type": "change",
            "timestamp": target.get("timestamp"),
            "prev_change_id": self.change_id,
            "instrument_name": self.instrument,
            "change_id": target.get("change_id"),
        }
        for key, side in (("bids", self.bids), ("asks", self.asks)):
            wanted = {row[1]: row[2] for row in target.get(key) or [] if _is_row(row) and row[2] > 0}
            rows = [["delete", p, 0.0] for p in side if p not in wanted]
            rows += [["new" if p not in side else "change", p, a] for p, a in wanted.items() if side.get(p) != a]
            out[key] = rows
        return out


# --------------------------------------------------------------------------------------------------
# Clients


class _Client(SimClient["DeribitSimulator", str]):
    """One websocket client: its channels, heartbeat and bounded outbound queue (see `SimClient`)."""

    TRUNCATED_FALLBACK = '{"jsonrpc":"2.0","method":"subscription","params":{"channel":"book.BTC'
    _ids = 0

    def __init__(self, sim: DeribitSimulator, ws: web.WebSocketResponse) -> None:
        super().__init__(sim, ws)
        _Client._ids += 1
        self.conn_id = _Client._ids
        self.heartbeat_task: asyncio.Task[None] | None = None
        self.awaiting_test = False  # a test_request is out and no public/test came back yet
        self.pending: set[str] = set()  # book channels whose (slow_snapshot) subscription is not in force yet

    @property
    def tag(self) -> str:
        return str(self.conn_id)

    def log_fields(self) -> dict[str, Any]:
        return {"conn_id": self.conn_id}

    def kick(self, reason: str) -> None:
        """Disconnect: stop the writer and the heartbeat; the connection handler closes the socket."""
        if self.kicked is not None:
            return
        super().kick(reason)
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()

    def start_heartbeat(self, interval_s: float) -> None:
        self.stop_heartbeat()
        self.awaiting_test = False
        self.heartbeat_task = asyncio.create_task(self._heartbeat(interval_s), name=f"sim-heartbeat:{self.conn_id}")

    def stop_heartbeat(self) -> None:
        if self.heartbeat_task is not None:
            self.heartbeat_task.cancel()
            self.heartbeat_task = None

    async def _heartbeat(self, interval_s: float) -> None:
        period = interval_s * self.sim.heartbeat_time_scale
        while True:
            await asyncio.sleep(period)
            if self.awaiting_test:
                self.sim.heartbeat_disconnects += 1
                self.sim.kick(self, "heartbeat")
                return
            self.awaiting_test = True
            self.sim.test_requests_sent += 1
            note = {"jsonrpc": "2.0", "method": "heartbeat", "params": {"type": "test_request"}}
            if not self.sim.offer_or_kick(self, orjson.dumps(note).decode(), None, reply=True):
                return

    def bad_payload(self) -> dict[str, Any]:
        last = self.last_key or ""
        channel = last if last.startswith("book.") else ""
        if not channel:
            channel = next((c for c in sorted(self.keys) if c.startswith("book.")), "book.BTC-PERPETUAL.100ms")
        data = {
            "type": "change", "timestamp": str(self.sim.clock.now_ms()), "instrument_name": 12345,
            "change_id": "NaN", "prev_change_id": [1.5], "bids": "not-a-list", "asks": [[None, {"amount": True}]],
        }
        return {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}


# --------------------------------------------------------------------------------------------------
# The market


class _Market(SimMarket["DeribitSimulator", str, _Client, _Frame]):
    """The shared replay: subscribers per channel, current state per instrument, the player (`SimMarket`)."""

    tape: _Tape

    def __init__(self, sim: DeribitSimulator, tape: _Tape) -> None:
        super().__init__(sim, tape)
        self.books: dict[str, _Book] = {}
        self.tickers: dict[str, dict[str, Any]] = {}  # instrument -> last ticker data
        self._changes_seen: collections.Counter[str] = collections.Counter()
        self._shift = _Shift(-1, self.clock, 0, 0)
        self._id_offset: collections.Counter[str] = collections.Counter()  # seq_gap shifts per instrument
        self._held: dict[str, list[tuple[str, str]]] = {}  # reorder_diff: (channel, text) sent after the next change
        self._usd: dict[str, bool] = {}  # instrument -> its amounts are USD (the truth's sizes are coin)
        self._quotes: dict[str, dict[str, Any]] = {}  # instrument -> the last derived quote
        self._quote_tops: dict[str, tuple[Any, Any]] = {}  # instrument -> its (best bid, best ask)

    # -- subscriptions (synchronous: a snapshot and the changes after it are queued without a gap) ----

    def subscribe(self, client: _Client, channel: str) -> None:
        if channel.startswith(_STATE_PREFIX):
            self.subs.add(client, channel)  # state changes only: nothing current to send
            return
        self.subs.add(client, channel)
        if channel.startswith(QUOTE_KIND + "."):
            quote = self._quotes.get(channel.split(".", 1)[1])
            if quote is not None:
                self.sim.offer_or_kick(client, _note(channel, quote), channel, reply=True)
            return
        kind, instrument, _ = channel.split(".")
        if kind == "book" and instrument in self.books:
            data: dict[str, Any] | None = self.books[instrument].snapshot()
        elif kind == "ticker":
            data = self.tickers.get(instrument)
        else:
            data = None
        if data is not None:
            self.sim.offer_or_kick(client, _note(channel, data), channel, reply=True)

    # -- the player ----------------------------------------------------------------------------------

    def _keys_of(self, frame: _Frame) -> list[str]:
        return [f"{frame.kind}.{frame.instrument}.{i}" for i in SERVED_INTERVALS]

    def _wait_keys(self, frame: _Frame) -> list[str]:
        keys = self._keys_of(frame)
        return [*keys, f"{QUOTE_KIND}.{frame.instrument}"] if frame.kind == "book" else keys

    async def _wait_for_room(self, frame: _Frame) -> None:
        """Speed 0: as `SimMarket`'s, counting a book frame's derived quote's subscribers too."""
        keys = self._wait_keys(frame)
        await self.sim.wait_for_room(lambda: self.subs.clients_of(keys))

    def _play_at(self, frame: _Frame, loop: int, clock: TapeClock) -> None:
        shift = self._shift
        if shift.loop != loop:  # a new loop
            tape = self.tape
            self._shift = shift = _Shift(loop, clock, loop * tape.id_span, loop * tape.seq_span)
        self._play(frame, shift)

    def _play(self, frame: _Frame, shift: _Shift) -> None:
        try:
            data = orjson.loads(frame.raw)["params"]["data"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        book = self.books.get(frame.instrument)
        if frame.relabel is not None:
            data = _relabel_data(frame.kind, data, frame.relabel, book)
        _shift(frame.kind, data, shift)
        deliver = True
        if frame.kind == "book":
            if not isinstance(data, dict):
                return
            self._book_opportunity(frame.instrument, data)
            whole = data.get("type") == "snapshot" and book is None
            if data.get("type") == "snapshot" and book is not None:
                data = book.change_to(data)  # the loop seam: chain on instead of resetting subscribers
            if book is None and data.get("type") == "snapshot":
                book = self.books[frame.instrument] = _Book(frame.instrument)
            if book is None:
                return  # a change before any snapshot has nothing to apply to
            book.apply(data)
            if data.get("type") == "change" and self.sim.gap_every:
                self._changes_seen[frame.instrument] += 1
                if self._changes_seen[frame.instrument] % self.sim.gap_every == 0:
                    deliver = False  # the market's book applied it; no client will see it
                    self.sim.gaps_injected += 1
            self._record_truth(frame.instrument, book, whole)
            self._derive_quote(frame.instrument, book)
            if deliver and data.get("type") == "change" and (self.sim.faults or self._held):
                deliver = self._book_faults(frame, data)
        elif frame.kind == "ticker" and isinstance(data, dict):
            self.tickers[frame.instrument] = data
        if not deliver or (self.sim.lifecycle and self.sim.lifecycle.retired(frame.instrument)):
            return  # withheld, or the instrument stopped trading: the venue sends nothing more of it
        for channel in self._keys_of(frame):
            subs = self.subs.get(channel)
            if subs:
                self.sim.deliver(subs, _note(channel, data), channel)

    def _derive_quote(self, instrument: str, book: _Book) -> None:
        """A `quote.{instrument}` notification from the market's book when its top changed (module doc)."""
        bid, ask = book.best(True), book.best(False)
        if self._quote_tops.get(instrument) == (bid, ask):
            return
        self._quote_tops[instrument] = (bid, ask)
        quote = {
            "timestamp": book.timestamp,
            "instrument_name": instrument,
            "best_bid_price": bid[0] if bid else None,
            "best_bid_amount": bid[1] if bid else 0.0,
            "best_ask_price": ask[0] if ask else None,
            "best_ask_amount": ask[1] if ask else 0.0,
        }
        self._quotes[instrument] = quote
        if self.sim.lifecycle and self.sim.lifecycle.retired(instrument):
            return  # the instrument stopped trading: the venue sends nothing more of it
        channel = f"{QUOTE_KIND}.{instrument}"
        subs = self.subs.get(channel)
        if subs:
            self.sim.deliver(subs, _note(channel, quote), channel)

    # -- faults and truth ----------------------------------------------------------------------------

    def _book_opportunity(self, instrument: str, data: dict[str, Any]) -> None:
        """One book message of `instrument` (its ids already shifted for the loop): count it, inject the
        connection faults due, and shift its ids by the instrument's `seq_gap` offset (a change only)."""
        sim = self.sim
        faults = sim.faults
        if faults:
            faults.frame(instrument)
            clients = self.subs.clients_of(self._book_channels(instrument))
            if clients:  # a connection fault hits the connections that carry this book (none: not this time)
                sim.connection_faults(instrument, clients)
            if data.get("type") == "change" or instrument in self.books:  # a seam snapshot becomes a change
                spec = faults.take("seq_gap", instrument)
                if spec is not None:
                    self._id_offset[instrument] += int(spec.param("by"))
        offset = self._id_offset[instrument]
        if offset:
            for key in ("change_id", "prev_change_id"):
                if is_int(data.get(key)):
                    data[key] += offset

    def _record_truth(self, instrument: str, book: _Book, whole: bool) -> None:
        if not self.sim.truth.enabled or not is_int(book.change_id):
            return
        usd = self._usd.get(instrument)
        if usd is None:
            usd = self._usd[instrument] = self.sim.amounts_in_usd(instrument)
        bids, asks = book.top(TRUTH_DEPTH, usd)
        ts = book.timestamp if is_int(book.timestamp) else None
        self.sim.truth.record(instrument, book.change_id, ts, bids, asks, snapshot=whole)

    @staticmethod
    def _book_channels(instrument: str) -> list[str]:
        return [f"book.{instrument}.{i}" for i in SERVED_INTERVALS]

    def _book_faults(self, frame: _Frame, data: dict[str, Any]) -> bool:
        """The book-stream faults on one `change`: True when none applies (the caller delivers it as is),
        False when it was delivered (or withheld) here, with a change held back by `reorder_diff` after it."""
        faults = self.sim.faults
        instrument = frame.instrument
        held = self._held.pop(instrument, None)
        kind: str | None = None
        pad = 0
        for name in ("drop_diff", "duplicate_diff", "reorder_diff", "malformed_json", "truncated_frame"):
            if faults.take(name, instrument) is not None:
                kind = name
                break
        else:
            spec = faults.take("oversized_frame", instrument)
            if spec is not None:
                kind, pad = "oversized_frame", int(spec.param("bytes"))
        if kind is None and held is None:
            return True
        hold: list[tuple[str, str]] = []
        for channel in self._book_channels(instrument):
            subs = self.subs.get(channel)
            text = _note(channel, data)
            if kind == "reorder_diff":
                hold.append((channel, text))
            if not subs:
                continue
            for out in _faulted(kind, text, pad):
                self.sim.deliver(subs, out, channel)
            for held_channel, held_text in held or ():
                if held_channel == channel:
                    self.sim.deliver(subs, held_text, channel)
        if hold:
            self._held[instrument] = hold
        return False


def _faulted(kind: str | None, text: str, pad: int) -> list[str]:
    """What the clients get instead of the notification `text` under the book-stream fault `kind`."""
    if kind in ("drop_diff", "reorder_diff"):
        return []
    if kind == "duplicate_diff":
        return [text, text]
    if kind == "malformed_json":
        cut = text.index('"data":{') + len('"data":{')
        return [text[:cut] + "," + text[cut:]]  # a stray comma: not JSON any more
    if kind == "truncated_frame":
        return [text[: len(text) // 2]]
    if kind == "oversized_frame":
        return [text[:-1] + ',"pad":"' + " " * max(0, pad - len(text) - 10) + '"}']
    return [text]


def _note(channel: str, data: Any) -> str:
    note = {"jsonrpc": "2.0", "method": "subscription", "params": {"channel": channel, "data": data}}
    return orjson.dumps(note).decode()


# --------------------------------------------------------------------------------------------------
# The server


class DeribitSimulator(SimulatorServer[_Client]):
    """Serve a recording as Deribit on one loopback port (REST and the JSON-RPC websocket).

    Use as `async with DeribitSimulator(path, port=0) as sim:` and connect to `sim.ws_url()` and
    `sim.http_url`. Counters (`frames_sent`, `gaps_injected`, `garbage_sent`, `garbage_by_kind`,
    `slow_disconnects`, `heartbeat_disconnects`, `test_requests_sent`, `tests_answered`, `bad_requests`,
    `loops_completed`) let tests assert what was served and injected. `heartbeat_time_scale` shrinks the
    heartbeat period for tests (a requested 10 s runs as 10 x scale seconds) while the venue's 10 s minimum
    on the requested interval stays enforced.
    """

    CLOSE_REASONS: ClassVar[Mapping[str, tuple[WSCloseCode, bytes]]] = {
        **SimulatorServer.CLOSE_REASONS,
        "heartbeat": (WSCloseCode.POLICY_VIOLATION, b"test_request not answered"),
    }
    # Deribit's books carry no checksum, and `u1_restart` is Bybit's: everything else of the catalogue applies.
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
        heartbeat_time_scale: float = 1.0,
        clock_skew_s: float = 0.0,
        lifecycle: Lifecycle | None = None,
    ) -> None:
        super().__init__(
            recording_path, host, port, speed, loop, garbage_every, gap_every,
            client_queue=client_queue, reply_headroom=reply_headroom, slow_client_timeout=slow_client_timeout,
            clock_skew_s=clock_skew_s,
        )  # fmt: skip
        if heartbeat_time_scale <= 0:
            raise ValueError("heartbeat_time_scale must be > 0")
        self.heartbeat_time_scale = heartbeat_time_scale
        # counters beyond the common ones
        self.heartbeat_disconnects = 0
        self.test_requests_sent = 0
        self.tests_answered = 0
        self.market: _Market | None = None
        self._served: _Served | None = None
        # Delisted / expiring instruments (simulate.lifecycle): get_instruments rows, streams, the state channel.
        self.lifecycle = lifecycle if lifecycle is not None else Lifecycle()
        self._plays_lifecycle = lifecycle is not None  # (retirements may be scheduled while it runs)

    # -- lifecycle -----------------------------------------------------------------------------------

    def ws_url(self, category: str = "") -> str:
        """The websocket URL. Deribit has one for every kind; `category` exists for parity with Bybit's."""
        return f"{self.ws_base}{WS_PATH}"

    @property
    def loops_completed(self) -> int:
        return self.market.loops_completed if self.market is not None else 0

    @property
    def relabelled(self) -> dict[str, str]:
        """Served perpetual -> the recorded instrument whose stream drives it."""
        return {r.target: r.source for r in self._served.relabels} if self._served is not None else {}

    async def _prepare(self) -> None:
        self._served = await asyncio.to_thread(_load, self.recording_path)

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(API_PREFIX + "get_instruments", self._get_instruments)
        app.router.add_get(API_PREFIX + "get_currencies", self._get_currencies)
        app.router.add_get(API_PREFIX + "get_time", self._get_time)
        app.router.add_get(API_PREFIX + "test", self._test)
        app.router.add_get(WS_PATH, self._ws_handler)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    def _start_players(self) -> None:
        assert self._served is not None
        self.market = _Market(self, self._served.tape)
        self.spawn(self.market.run(), "simulator-market:deribit")
        if self._plays_lifecycle:
            self.spawn(self._announce_states(), "simulator-lifecycle:deribit")

    def _started_fields(self) -> dict[str, Any]:
        frames = len(self._served.tape.frames) if self._served is not None else 0
        return {**super()._started_fields(), "frames": frames, "relabelled": self.relabelled}

    # -- REST ----------------------------------------------------------------------------------------

    async def _get_instruments(self, request: web.Request) -> web.Response:
        assert self._served is not None
        q = request.query
        currency = q.get("currency", "any")
        known = set(self._served.currency_of.values())
        if currency != "any" and currency not in known:
            return _rpc_http_error(-32602, "Invalid params", {"param": "currency", "reason": "wrong format"})
        if q.get("expired", "false") == "true":
            return _rpc_http_result([])  # no expired instrument was recorded
        rows = [
            row for row in self._served.instruments
            if (currency == "any" or self._served.currency_of.get(row["instrument_name"]) == currency)
            and (not q.get("kind") or row.get("kind") == q["kind"])
        ]
        if self.lifecycle:
            rows = [dict(row) for row in rows]
            for row in rows:
                self.lifecycle.deribit_row(row)
        return _rpc_http_result(rows)

    def _retired_channel(self, channel: str) -> bool:
        """A subscribe to a channel of a retired instrument: left out of the answer, counted by the lifecycle."""
        parts = channel.split(".")
        named = len(parts) == 3 or (len(parts) == 2 and parts[0] == QUOTE_KIND)
        return named and bool(self.lifecycle) and self.lifecycle.refuse(parts[1])

    async def _announce_states(self) -> None:
        """`instrument.state` notifications: at each retirement's time, `settled` (expired) or `closed` (delisted)
        to every subscriber of a state channel that covers the instrument."""
        announced: set[str] = set()
        while True:
            for r in self.lifecycle.retirements():
                if r.instrument in announced or not self.lifecycle.retired(r.instrument):
                    continue
                announced.add(r.instrument)
                data = {"instrument_name": r.instrument, "state": "settled" if r.announced else "closed",
                        "timestamp": self.clock.now_ms()}  # fmt: skip
                assert self.market is not None
                for channel, clients in list(self.market.subs.by_key.items()):
                    if channel.startswith(_STATE_PREFIX) and _state_covers(channel, r.instrument):
                        self.deliver(clients, _note(channel, data), channel)
            await asyncio.sleep(0.05)  # a timer, not synchronisation: checks due retirements

    async def _get_currencies(self, request: web.Request) -> web.Response:
        assert self._served is not None
        codes = sorted(set(self._served.currency_of.values()))
        return _rpc_http_result([{"currency": c, "currency_long": c, "coin_type": c} for c in codes])

    async def _get_time(self, request: web.Request) -> web.Response:
        return _rpc_http_result(self.clock.now_ms())

    async def _test(self, request: web.Request) -> web.Response:
        return _rpc_http_result({"version": _VERSION})

    async def _not_found(self, request: web.Request) -> web.Response:
        if request.path.startswith("/api/v2/"):
            return _rpc_http_error(-32601, "Method not found", None)
        return web.Response(status=404, body=orjson.dumps({"error": f"Not Found: {request.path}"}),
                            content_type="application/json")

    # -- websockets ----------------------------------------------------------------------------------

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        market = self.market
        if market is None:
            return await self._not_found(request)
        client = _Client(self, await self._open_ws(request, max_msg_size=1 << 20))
        read = self._read_requests(client.ws, functools.partial(self._on_request, client, market))
        return await self._run_client(request, client, read, leave=functools.partial(self._leave, client, market))

    @staticmethod
    def _leave(client: _Client, market: _Market) -> None:
        market.drop(client)
        client.stop_heartbeat()

    def _on_request(self, client: _Client, market: _Market, text: str | None) -> None:
        """Answer one JSON-RPC request. Synchronous, so a subscribe's result and snapshots queue together."""
        try:
            req = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            req = None
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            self.bad_requests += 1
            error = (-32700, "Parse error") if not isinstance(req, dict) else (-32600, "Invalid Request")
            self._rpc_reply(client, req.get("id") if isinstance(req, dict) else None, error=error)
            return
        req_id = req.get("id")
        method = req["method"]
        params = req.get("params")
        if not isinstance(params, dict):
            params = {}
        if method in ("public/subscribe", "public/unsubscribe"):
            self._on_subscription(client, market, method, params.get("channels"), req_id)
        elif method == "public/unsubscribe_all":
            market.drop(client)
            self._rpc_reply(client, req_id, "ok")
        elif method == "public/set_heartbeat":
            interval = params.get("interval")
            if not _is_number(interval) or interval < MIN_HEARTBEAT_S:
                self.bad_requests += 1
                data = {"param": "interval", "reason": f"must be >= {MIN_HEARTBEAT_S:g}"}
                self._rpc_reply(client, req_id, error=(-32602, "Invalid params"), data=data)
                return
            if self._rpc_reply(client, req_id, "ok"):
                client.start_heartbeat(float(interval))
        elif method == "public/disable_heartbeat":
            client.stop_heartbeat()
            self._rpc_reply(client, req_id, "ok")
        elif method == "public/test":
            if client.awaiting_test:
                client.awaiting_test = False
                self.tests_answered += 1
            self._rpc_reply(client, req_id, {"version": _VERSION})
        elif method == "public/hello":
            self._rpc_reply(client, req_id, {"version": _VERSION})
        elif method == "public/get_time":
            self._rpc_reply(client, req_id, self.clock.now_ms())
        else:
            self.bad_requests += 1
            self._rpc_reply(client, req_id, error=(-32601, "Method not found"))

    def _on_subscription(self, client: _Client, market: _Market, method: str, channels: object, req_id: object) -> None:
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) and c for c in channels):
            self.bad_requests += 1
            self._rpc_reply(client, req_id, error=(-32602, "Invalid params"), data={"param": "channels"})
            return
        if method == "public/unsubscribe":
            client.pending.difference_update(channels)  # a slow snapshot on its way is not wanted any more
            removed = [c for c in dict.fromkeys(channels) if c in client.keys]
            if self._rpc_reply(client, req_id, removed):
                for channel in removed:
                    market.unsubscribe(client, channel)
            return
        if self._rejected(channels):
            self.bad_requests += 1
            self._rpc_reply(client, req_id, error=SUB_ERROR)
            return
        if any(c.endswith(".raw") for c in channels):
            self.bad_requests += 1
            self._rpc_reply(client, req_id, error=(13778, "raw_subscriptions_not_available_for_unauthorized"))
            return
        accepted = [c for c in dict.fromkeys(channels) if _servable(c) and not self._retired_channel(c)]
        if len(client.keys | set(accepted)) > MAX_CHANNELS_PER_CLIENT:
            self.bad_requests += 1
            data = {"param": "channels", "reason": f"more than {MAX_CHANNELS_PER_CLIENT} per connection"}
            self._rpc_reply(client, req_id, error=(-32602, "Invalid params"), data=data)
            return
        if not self._rpc_reply(client, req_id, accepted):
            return
        for channel in accepted:
            if channel not in client.keys and channel not in client.pending:
                self._subscribe(client, market, channel)

    def _subscribe(self, client: _Client, market: _Market, channel: str) -> None:
        """Subscribe one accepted channel now, or `delay_s` later when `slow_snapshot` fires on its book."""
        spec = self.faults.take("slow_snapshot", channel.split(".")[1]) if channel.startswith("book.") else None
        if spec is None:
            market.subscribe(client, channel)
            return
        client.pending.add(channel)  # the snapshot, and the changes after it, come `delay_s` late
        self.later(float(spec.param("delay_s")), self._late_subscribe, client, market, channel)

    def _late_subscribe(self, client: _Client, market: _Market, channel: str) -> None:
        if channel in client.pending:
            client.pending.discard(channel)
            if client.kicked is None:
                market.subscribe(client, channel)

    def _rejected(self, channels: list[str]) -> bool:
        """Whether `sub_error` rejects this subscribe request now (it names a book channel of a faulted instrument)."""
        if not self.faults.wants("sub_error"):
            return False
        books = {c.split(".")[1] for c in channels if c.startswith("book.") and c.count(".") == 2}
        return any(self.faults.take("sub_error", instrument) is not None for instrument in sorted(books))

    def amounts_in_usd(self, instrument: str) -> bool:
        """Whether `instrument`'s amounts are USD: an inverse future or perpetual (settled in its base coin)."""
        assert self._served is not None
        row = next((r for r in self._served.instruments if r.get("instrument_name") == instrument), None)
        return (
            row is not None
            and row.get("kind") == "future"
            and row.get("settlement_currency") == row.get("base_currency")
        )

    def _rpc_reply(
        self, client: _Client, req_id: object, result: object = None, *,
        error: tuple[int, str] | None = None, data: object = None,
    ) -> bool:
        skew_us = self.clock.skew_ms * 1000  # the venue's clock stamps its answers
        us_in = time.time_ns() // 1000 + skew_us
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id}
        if error is None:
            body["result"] = result
        else:
            body["error"] = {"message": error[1], "code": error[0]}
            if data is not None:
                body["error"]["data"] = data
        us_out = time.time_ns() // 1000 + skew_us
        body.update({"usIn": us_in, "usOut": us_out, "usDiff": us_out - us_in, "testnet": False})
        return self._reply(client, body)


_STATE_PREFIX = "instrument.state."


def _state_covers(channel: str, instrument: str) -> bool:
    """`instrument.state.{kind}.{currency}` (either may be `any`) covers `instrument` (kind future for perpetuals
    and dated futures, option otherwise; currency its first token)."""
    _, _, kind, currency = channel.split(".")
    inst_kind = "option" if instrument.count("-") >= 3 else "future"
    return kind in ("any", inst_kind) and currency in ("any", instrument.split("-")[0].split("_")[0])


def _servable(channel: str) -> bool:
    if channel.startswith(_STATE_PREFIX):
        return len(channel.split(".")) == 4 and all(channel.split("."))
    parts = channel.split(".")
    if len(parts) == 2 and parts[0] == QUOTE_KIND:
        return bool(parts[1])
    return len(parts) == 3 and parts[0] in _KINDS and bool(parts[1]) and parts[2] in SERVED_INTERVALS


def _rpc_http_result(result: object) -> web.Response:
    us = time.time_ns() // 1000
    body = {"jsonrpc": "2.0", "result": result, "usIn": us, "usOut": us, "usDiff": 0, "testnet": False}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _rpc_http_error(code: int, message: str, data: object) -> web.Response:
    us = time.time_ns() // 1000
    error: dict[str, Any] = {"message": message, "code": code}
    if data is not None:
        error["data"] = data
    body = {"jsonrpc": "2.0", "error": error, "usIn": us, "usOut": us, "usDiff": 0, "testnet": False}
    return web.Response(body=orjson.dumps(body), status=400, content_type="application/json")


run_simulator = simulator_runner(DeribitSimulator, DEFAULT_PORT, "flowgauge simulate --venue deribit")
