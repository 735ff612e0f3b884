"""Conformance: the recorded Hyperliquid session through the parser and the engine, checked against an
independent book built from the raw frames.

The reference below reads the raw JSON with plain dicts and Decimal, sharing no code with `flowgauge`.
Frames are tied to connections by `conn` and the `connect` URL (only the venue's `/ws` connection is
parsed). Every `l2Book` push is a full 20-level snapshot, so at every one of them the engine's published
top of book, depth imbalances and (at the end) the whole book must equal the push itself, and the
snapshot-only rule must never report a gap. The recording has no REST lines: instrument metadata comes
from the connector's documented fallback.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from flowgauge.connectors.hyperliquid import HyperliquidAdapter, HyperliquidParser, instruments_from_recording
from flowgauge.engine import Engine
from flowgauge.recording import Connect, Http, Recv, iter_records
from flowgauge.types import BookSnapshot, Trade

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDING = FIXTURES / "hyperliquid" / "hyperliquid-btc-2025-01.jsonl.zst"
SYMBOL = "BTC/USDC:USDC"
BOOK_MESSAGES = 46  # l2Book pushes in the recording
TRADES = 64  # prints in its trades messages (the first message is the 30-trade subscription batch)


# ---------------------------------------------------------------------------------------- reference


def raw_lines(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
    return [json.loads(line) for line in io.StringIO(text) if line.strip()]


def reference() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(books, trades) straight from the recording: one book per l2Book push, best level first."""
    lines = raw_lines(RECORDING)
    conn_url = {r["conn"]: r["addr"] for r in lines if r["t"] == "connect"}
    books: list[dict[str, Any]] = []
    trades: list[dict[str, Any]] = []
    for record in lines:
        if record["t"] != "recv" or not conn_url[record["conn"]].endswith("/ws"):
            continue
        msg = json.loads(record["data"])
        if msg.get("channel") == "l2Book":
            bids_raw, asks_raw = msg["data"]["levels"]
            bids = sorted(((Decimal(x["px"]), Decimal(x["sz"])) for x in bids_raw), reverse=True)
            asks = sorted((Decimal(x["px"]), Decimal(x["sz"])) for x in asks_raw)
            books.append({"time": msg["data"]["time"], "bids": bids, "asks": asks})
        elif msg.get("channel") == "trades":
            trades.extend(msg["data"])
    return books, trades


def imbalance(book: dict[str, Any], n: int) -> float | None:
    bid = sum((sz for _, sz in book["bids"][:n]), Decimal(0))
    ask = sum((sz for _, sz in book["asks"][:n]), Decimal(0))
    if bid + ask == 0:
        return None
    return float((bid - ask) / (bid + ask))


# ---------------------------------------------------------------------------------------- the replay


class Replayed:
    def __init__(self) -> None:
        self.payloads: list[tuple[str, dict[str, Any]]] = []
        self.events: list[object] = []
        self.engine = Engine(lambda topic, payload: self.payloads.append((topic, orjson.loads(payload))))
        self.adapter = HyperliquidAdapter()
        self.parsers: dict[str, HyperliquidParser] = {}


@pytest.fixture(scope="module")
def replayed() -> Replayed:
    out = Replayed()
    records = list(iter_records(RECORDING))
    http = [(r.url, r.data) for r in records if isinstance(r, Http)]
    assert http == []  # why the fallback metadata exists
    instruments = instruments_from_recording(http, [SYMBOL])
    for instrument in instruments:
        out.engine.add_instrument(instrument, out.adapter.sequence_rule)
    for record in records:
        if isinstance(record, Connect) and record.addr.endswith("/ws"):
            ((_, parser),) = out.adapter.connections(instruments, record.addr, 20)
            parser.on_connected()
            out.parsers[record.conn] = parser
        elif isinstance(record, Recv) and record.conn in out.parsers:
            ts_recv = round(record.ts * 1e9)
            for event in out.parsers[record.conn].feed(record.data, ts_recv):
                assert not isinstance(event, str)
                out.events.append(event)
                assert out.engine.handle(event) is None  # no resync ever asked for
    return out


def test_one_book_payload_per_push_matching_the_independent_book(replayed: Replayed) -> None:
    books, _ = reference()
    assert len(books) == BOOK_MESSAGES
    payloads = [p for _, p in replayed.payloads if p.get("trigger") == "book"]
    assert len(payloads) == len(books)
    for payload, ref in zip(payloads, books, strict=True):
        assert (payload["venue"], payload["symbol"], payload["instrument"]) == ("hyperliquid", SYMBOL, "BTC")
        assert payload["book_seq"] == ref["time"]
        assert payload["bid_px"] == float(ref["bids"][0][0])
        assert payload["ask_px"] == float(ref["asks"][0][0])
        assert payload["bid_sz"] == pytest.approx(float(ref["bids"][0][1]), rel=1e-12)
        assert payload["ask_sz"] == pytest.approx(float(ref["asks"][0][1]), rel=1e-12)
        for n in (1, 5, 10, 20):
            assert payload[f"depth_imb_{n}"] == pytest.approx(imbalance(ref, n), abs=1e-9)


def test_every_snapshot_is_the_whole_twenty_level_book(replayed: Replayed) -> None:
    books, _ = reference()
    snapshots = [e for e in replayed.events if isinstance(e, BookSnapshot)]
    assert len(snapshots) == BOOK_MESSAGES
    for snap, ref in zip(snapshots, books, strict=True):
        assert len(snap.bids) == len(snap.asks) == 20
        ref_bids = [(float(p), pytest.approx(float(s))) for p, s in ref["bids"]]
        ref_asks = [(float(p), pytest.approx(float(s))) for p, s in ref["asks"]]
        assert sorted(snap.bids, reverse=True) == ref_bids and sorted(snap.asks) == ref_asks
    # The push time used as the snapshot id never goes backwards (the first two pushes share one).
    seqs = [s.seq for s in snapshots]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) - 1


def test_full_book_matches_at_the_end(replayed: Replayed) -> None:
    books, _ = reference()
    state = replayed.engine.state("hyperliquid", SYMBOL)
    assert state is not None
    book = state.sync.book
    assert book.seq == books[-1]["time"]
    assert book.bids.levels() == [(float(p), pytest.approx(float(s))) for p, s in books[-1]["bids"]]
    assert book.asks.levels() == [(float(p), pytest.approx(float(s))) for p, s in books[-1]["asks"]]


def test_no_false_gaps(replayed: Replayed) -> None:
    for state in replayed.engine.states():
        assert state.sync.gaps == 0
        assert state.sync.state.value == "VALID"
    statuses = [p for topic, p in replayed.payloads if ".status." in topic]
    assert statuses and all(p["state"] == "VALID" for p in statuses)


def test_trades_sides_and_sizes(replayed: Replayed) -> None:
    _, raw = reference()
    trades = [e for e in replayed.events if isinstance(e, Trade)]
    assert len(raw) == len(trades) == TRADES
    assert len({t.trade_id for t in trades}) == TRADES
    for trade, ref in zip(trades, raw, strict=True):
        assert trade.trade_id == str(ref["tid"])
        assert trade.side == {"B": 1, "A": -1}[ref["side"]]  # taker side
        assert trade.price == float(ref["px"]) and trade.size == float(ref["sz"])
        assert trade.ts_exchange == ref["time"] * 1_000_000 and not trade.forced
    volume = {"B": Decimal(0), "A": Decimal(0)}
    for ref in raw:
        volume[ref["side"]] += Decimal(ref["sz"])
    assert sum(t.size for t in trades if t.side == 1) == pytest.approx(float(volume["B"]))
    assert sum(t.size for t in trades if t.side == -1) == pytest.approx(float(volume["A"]))
    # Taker side agrees with the book: sells print at or below the best bid of the moment, buys at or above
    # the best ask (checked against the last book before each print that is newer than the print).
    books, _ = reference()
    for trade, ref in zip(trades, raw, strict=True):
        before = [b for b in books if b["time"] <= ref["time"]]
        if not before:
            continue  # prints of the subscription batch that predate the first book
        book = before[-1]
        if trade.side == 1:
            assert Decimal(ref["px"]) >= book["bids"][0][0]
        else:
            assert Decimal(ref["px"]) <= book["asks"][0][0]
