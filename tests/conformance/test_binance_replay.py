"""Conformance: replay the recorded Binance USD-M sessions and check our books against an independent one.

Two recordings: 2021-07-22 (SUSHIUSDT, AKROUSDT on one legacy unrouted connection, REST snapshots recorded
after the stream started) and the first 20 s of 2024-08-08 ETHUSDT (`depth@0ms`, per-fill `trade`).

`Reference` below implements Binance's documented local-book procedure straight from the raw lines with plain
dicts and Decimal, sharing no code with `flowgauge`: buffer diffs until the REST snapshot, drop `u < L`, the first
applied diff must have `U <= L <= u`, then every `pu` must equal the previous `u`. Records are taken in receive
time order (the 2021 file lists its REST answers before the websocket frames they follow).
"""

from __future__ import annotations

import functools
import io
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
import zstandard

from flowgauge.book.sync import BookSync
from flowgauge.connectors.binance import BinanceUsdmAdapter, BinanceUsdmParser
from flowgauge.connectors.markets import markets_from_recording, select
from flowgauge.engine import Engine
from flowgauge.recording import Connect, Header, Http, Recv, iter_records
from flowgauge.replay.replay import replay
from flowgauge.types import SELL, BookDelta, BookSnapshot, BookState, ContractKind, Instrument, Trade

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "binanceusdm"
REC_2021 = FIXTURES / "binance-usdm-2021-07.jsonl.zst"
REC_2024 = FIXTURES / "binance-usdm-ethusdt-2024-08.jsonl.zst"
SYMBOLS = {REC_2021: ["SUSHI/USDT:USDT", "AKRO/USDT:USDT"], REC_2024: ["ETH/USDT:USDT"]}
TOP = 20


# -- the independent reference ------------------------------------------------------------------------------


def raw_records(path: Path) -> list[dict[str, Any]]:
    """Every line but the header, in receive-time order (stable: equal times keep the file's order)."""
    with path.open("rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read().decode()
    lines = [json.loads(line) for line in io.StringIO(text) if line.strip()]
    return sorted((r for r in lines if r["t"] != "header"), key=lambda r: r["ts"])


class Reference:
    """Binance's futures local-book procedure, per symbol, on raw JSON."""

    def __init__(self) -> None:
        self.books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
        self.last: dict[str, int] = {}  # symbol -> id of the book (snapshot L, then the last applied u)
        self.snapshot_id: dict[str, int] = {}
        self.first_applied: dict[str, tuple[int, int, int]] = {}  # symbol -> (U, u, L)
        self.buffered: dict[str, list[dict[str, Any]]] = {}
        self.applied: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.tops: dict[tuple[str, int], tuple[list, list]] = {}  # (symbol, book id) -> top levels
        # Book states seen. More than `tops`: AKROUSDT's snapshot and the diff that bridges it (u == L) are two
        # states with one id (re-applying absolute sizes leaves the book as it was).
        self.states = 0

    def feed(self, record: dict[str, Any]) -> str | None:
        """Apply one record; returns the symbol whose synced book it changed."""
        if record["t"] == "http" and "/fapi/v1/depth" in record["url"]:
            symbol = dict(parse_qsl(urlsplit(record["url"]).query))["symbol"]
            body = json.loads(record["data"])
            self.snapshot_id[symbol] = self.last[symbol] = body["lastUpdateId"]
            self.books[symbol] = {
                "b": {Decimal(p): Decimal(q) for p, q in body["bids"]},
                "a": {Decimal(p): Decimal(q) for p, q in body["asks"]},
            }
            for data in self.buffered.pop(symbol, []):
                self._process(symbol, data)
            self._keep_top(symbol)
            return symbol
        if record["t"] != "recv":
            return None
        data = json.loads(record["data"])["data"]
        if data.get("e") != "depthUpdate":
            return None
        symbol = data["s"]
        if symbol not in self.snapshot_id:
            self.buffered.setdefault(symbol, []).append(data)
            return None
        if not self._process(symbol, data):
            return None
        self._keep_top(symbol)
        return symbol

    def _process(self, symbol: str, data: dict[str, Any]) -> bool:
        snapshot_id = self.snapshot_id[symbol]
        if symbol not in self.first_applied:
            if data["u"] < snapshot_id:
                self.dropped[symbol] += 1
                return False
            assert data["U"] <= snapshot_id <= data["u"], f"{symbol}: nothing bridges snapshot {snapshot_id}"
            self.first_applied[symbol] = (data["U"], data["u"], snapshot_id)
        else:
            assert data["pu"] == self.last[symbol], f"{symbol}: recorded gap before {data['u']}"
        book = self.books[symbol]
        for side in ("b", "a"):
            for price, qty in data[side]:
                if Decimal(qty) == 0:
                    book[side].pop(Decimal(price), None)
                else:
                    book[side][Decimal(price)] = Decimal(qty)
        self.last[symbol] = data["u"]
        self.applied[symbol] += 1
        return True

    def sorted_book(self, symbol: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        book = self.books[symbol]
        return sorted(book["b"].items(), reverse=True), sorted(book["a"].items())

    def _keep_top(self, symbol: str) -> None:
        bids, asks = self.sorted_book(symbol)
        key = (symbol, self.last[symbol])
        assert self.tops.get(key, (bids[:TOP], asks[:TOP])) == (bids[:TOP], asks[:TOP])
        self.tops[key] = (bids[:TOP], asks[:TOP])
        self.states += 1


def reference_run(path: Path) -> Reference:
    ref = Reference()
    for record in raw_records(path):
        ref.feed(record)
    return ref


# -- the service side ---------------------------------------------------------------------------------------


def typed_records(path: Path) -> list[Http | Connect | Recv]:
    records = [r for r in iter_records(path) if not isinstance(r, Header)]
    return sorted(records, key=lambda r: r.ts)  # type: ignore[union-attr]


@functools.cache
def instruments(path: Path) -> list[Instrument]:
    """Through ccxt, from the recording's own exchangeInfo answer."""
    http = [(r.url, r.data) for r in iter_records(path) if isinstance(r, Http) and "exchangeInfo" in r.url]
    return select("binanceusdm", markets_from_recording("binanceusdm", http), SYMBOLS[path])


def events_in_order(path: Path):
    """(record, events) for every record, through the adapter's parsers as a live daemon would build them."""
    adapter = BinanceUsdmAdapter()
    insts = instruments(path)
    parsers: dict[str, BinanceUsdmParser] = {}
    for record in typed_records(path):
        if isinstance(record, Connect):
            parsers[record.conn] = adapter.replay_parser(record.addr, insts)
            yield record, []
        elif isinstance(record, Recv):
            yield record, parsers[record.conn].feed(record.data, int(record.ts * 1e9))
        elif "/fapi/v1/depth" in record.url:
            venue_id = dict(parse_qsl(urlsplit(record.url).query))["symbol"]
            parser = next(p for p in parsers.values() if venue_id in p.instruments and p.carries_books)
            symbol = parser.instruments[venue_id].symbol
            yield record, parser.on_snapshot(symbol, record.data, int(record.ts * 1e9))
        else:
            yield record, []


def floats(levels: list[tuple[Decimal, Decimal]]) -> list[tuple[float, float]]:
    return [(float(p), float(q)) for p, q in levels]


# -- tests --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [REC_2021, REC_2024], ids=["2021", "2024"])
def test_books_match_the_reference_after_every_book_message(path: Path) -> None:
    adapter = BinanceUsdmAdapter()
    syncs = {i.symbol: BookSync(adapter.sequence_rule, buffer_deltas=True) for i in instruments(path)}
    venue_ids = {i.venue_id: i.symbol for i in instruments(path)}
    ref = Reference()
    checked = 0
    for (record, events), raw in zip(events_in_order(path), raw_records(path), strict=True):
        assert record.ts == raw["ts"]
        touched = ref.feed(raw)
        for event in events:
            if isinstance(event, BookSnapshot):
                assert syncs[event.symbol].on_snapshot(event).applied
            elif isinstance(event, BookDelta):
                result = syncs[event.symbol].on_delta(event)
                assert not result.needs_resync, syncs[event.symbol].detail  # zero false gaps
                assert result.applied == (touched is not None)
        if touched is None:
            continue
        sync = syncs[venue_ids[touched]]
        bids, asks = ref.sorted_book(touched)
        assert sync.state is BookState.VALID
        assert sync.book.seq == ref.last[touched]
        assert sync.book.bids.levels() == floats(bids)
        assert sync.book.asks.levels() == floats(asks)
        checked += 1
    # Every book state was a check point: each applied diff, and each snapshot (with the buffered diffs
    # it bridged).
    assert checked == ref.states > 300
    assert all(s.gaps == 0 and s.state is BookState.VALID for s in syncs.values())


def test_the_recorded_first_event_cases() -> None:
    """exchanges.md §1.2: AKROUSDT's bridging diff ends exactly on lastUpdateId (u == L: the spot rule would
    drop it), SUSHIUSDT's starts exactly on it (U == L), and so does the 2024 ETHUSDT one (u == L)."""
    old = reference_run(REC_2021)
    first_id, last_id, snapshot_id = old.first_applied["AKROUSDT"]
    assert last_id == snapshot_id == 600859605486 and first_id < snapshot_id
    assert old.dropped["AKROUSDT"] == 1
    first_id, last_id, snapshot_id = old.first_applied["SUSHIUSDT"]
    assert first_id == snapshot_id == 600859605926 < last_id
    first_id, last_id, snapshot_id = reference_run(REC_2024).first_applied["ETHUSDT"]
    assert last_id == snapshot_id == 5123107856276
    # Our rule takes both as the first event (the books test above applies them).
    assert old.applied["AKROUSDT"] > 100 and old.applied["SUSHIUSDT"] > 100


@pytest.mark.parametrize("path", [REC_2021, REC_2024], ids=["2021", "2024"])
def test_engine_payloads_match_the_reference(path: Path) -> None:
    ref = reference_run(path)
    adapter = BinanceUsdmAdapter()
    out: list[tuple[str, dict[str, Any]]] = []
    engine = Engine(lambda topic, payload: out.append((topic, orjson.loads(payload))), clock=lambda: 0)
    for instrument in instruments(path):
        engine.add_instrument(instrument, adapter.sequence_rule, adapter.buffer_deltas)
    trades: list[Trade] = []
    for _, events in events_in_order(path):
        for event in events:
            assert engine.handle(event) is None  # no resync ever asked
            if isinstance(event, Trade):
                trades.append(event)
    books = [p for topic, p in out if p.get("trigger") == "book"]
    assert len(books) == ref.states  # one payload per book state
    for payload in books:
        bids, asks = ref.tops[(payload["instrument"], payload["book_seq"])]
        assert (payload["bid_px"], payload["bid_sz"]) == (float(bids[0][0]), float(bids[0][1]))
        assert (payload["ask_px"], payload["ask_sz"]) == (float(asks[0][0]), float(asks[0][1]))
        for n in (1, 5, 10, 20):
            bid, ask = sum(q for _, q in bids[:n]), sum(q for _, q in asks[:n])
            assert payload[f"depth_imb_{n}"] == pytest.approx(float((bid - ask) / (bid + ask)), abs=1e-9)
    statuses = [p for topic, p in out if ".status." in topic]
    assert statuses and all(p["state"] == "VALID" for p in statuses)
    # Trades: linear contracts, so sizes are the recorded base quantities; m=true means the taker sold.
    ours = {i.venue_id for i in instruments(path)}
    payloads = [json.loads(r["data"])["data"] for r in raw_records(path) if r["t"] == "recv"]
    recorded = [d for d in payloads if d.get("e") in ("aggTrade", "trade") and d["s"] in ours]
    assert [(t.size, t.side == SELL) for t in trades] == [(float(d["q"]), d["m"]) for d in recorded]
    assert all(i.kind is ContractKind.LINEAR and i.contract_size == 1.0 for i in instruments(path))


def test_daemon_replay_of_the_2024_session() -> None:
    """The `flowgauge replay` path (registry -> this adapter, recorded REST snapshot routed to the parser)."""
    ref = reference_run(REC_2024)
    out: list[dict[str, Any]] = []
    engine, stats = replay([REC_2024], lambda topic, payload: out.append(orjson.loads(payload)))
    assert stats.resyncs_needed == 0
    books = [p for p in out if p.get("trigger") == "book"]
    assert len(books) == ref.states == 379
    assert all((p["instrument"], p["book_seq"]) in ref.tops for p in books)
    state = engine.state("binanceusdm", "ETH/USDT:USDT")
    assert state is not None and state.sync.gaps == 0
    bids, asks = ref.sorted_book("ETHUSDT")
    assert state.sync.book.bids.levels() == floats(bids)
    assert state.sync.book.asks.levels() == floats(asks)
