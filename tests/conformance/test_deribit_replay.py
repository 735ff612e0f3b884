"""Conformance: the recorded Deribit session (2021-07, ten option books) through our parser and the engine.

Frames are tied to their connection by `conn` and to the venue by the connection's `connect` URL, as a
replay does. The reference below is built straight from the raw frames with plain dicts and Decimal,
sharing no code with `flowgauge`. At every recorded book message the published payload (matched by
`book_seq` = Deribit `change_id`) must show the reference's top of book and depth imbalances, the
`prev_change_id` chain must hold with no false gap, and sizes must be base units: coin for options, and
USD / level price when the same frames are read as an inverse perpetual's.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import zstandard

from flowgauge.connectors import deribit
from flowgauge.connectors.deribit import DeribitAdapter, DeribitParser
from flowgauge.connectors.markets import markets_from_recording
from flowgauge.engine import Engine
from flowgauge.recording import Connect, Http, Recv, iter_records
from flowgauge.types import BookSnapshot, ContractKind, Instrument, OpenInterest

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "deribit" / "deribit-2021-07.jsonl.zst"
WS_URL = "wss://www.deribit.com/ws/api/v2"


def raw_lines(path: Path) -> list[dict]:
    with path.open("rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
    return [json.loads(line) for line in io.StringIO(text) if line.strip()]


def reference(path: Path) -> tuple[dict[tuple[str, int], dict], Counter, dict[str, list[Decimal]]]:
    """(instrument, change_id) -> book after that message, messages per instrument, OI per instrument."""
    lines = raw_lines(path)
    conn_url = {r["conn"]: r["addr"] for r in lines if r["t"] == "connect"}
    books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
    last_id: dict[str, int] = {}
    states: dict[tuple[str, int], dict] = {}
    messages: Counter = Counter()
    open_interest: dict[str, list[Decimal]] = {}
    for record in lines:
        if record["t"] != "recv" or conn_url[record["conn"]] != WS_URL:
            continue
        msg = json.loads(record["data"], parse_float=Decimal)
        if msg.get("method") != "subscription":
            continue
        channel, data = msg["params"]["channel"], msg["params"]["data"]
        kind, name = channel.split(".")[:2]
        if kind == "ticker":
            open_interest.setdefault(name, []).append(data["open_interest"])
        if kind != "book":
            continue
        if data["type"] == "snapshot":
            books[name] = {"bids": {}, "asks": {}}
        else:
            assert data["prev_change_id"] == last_id[name]  # the recorded chain itself has no hole
        last_id[name] = data["change_id"]
        for side in ("bids", "asks"):
            for action, price, amount in data[side]:
                if action == "delete":
                    assert amount == 0
                    books[name][side].pop(price, None)
                else:
                    books[name][side][price] = amount
        messages[name] += 1
        states[(name, data["change_id"])] = {
            "bids": sorted(books[name]["bids"].items(), reverse=True),
            "asks": sorted(books[name]["asks"].items()),
        }
    return states, messages, open_interest


def imbalance(state: dict, n: int) -> float | None:
    bid = sum(sz for _, sz in state["bids"][:n])
    ask = sum(sz for _, sz in state["asks"][:n])
    if bid + ask == 0:
        return None
    return float((bid - ask) / (bid + ask))


@pytest.fixture(scope="module")
def instruments() -> dict[str, Instrument]:
    http = [(r.url, r.data) for r in iter_records(FIXTURE) if isinstance(r, Http)]
    markets = markets_from_recording("deribit", deribit.recorded_market_responses(http))
    out = {}
    for market in markets:
        instrument = deribit.instrument_from_deribit_market(market)
        if instrument is not None and instrument.derivative:
            out[instrument.venue_id] = instrument
    return out


def run(instruments: dict[str, Instrument]) -> tuple[list[dict], Engine, list[object], list[str]]:
    """Replay the fixture: one parser per recorded connection (chosen by its URL), every event into an engine."""
    out: list[dict] = []
    engine = Engine(lambda topic, payload: out.append(orjson.loads(payload)), clock=lambda: 0)
    for instrument in instruments.values():
        engine.add_instrument(instrument, rule=DeribitAdapter.sequence_rule, buffer_deltas=DeribitAdapter.buffer_deltas)
    parsers: dict[str, DeribitParser] = {}
    events: list[object] = []
    resyncs: list[str] = []
    for record in iter_records(FIXTURE):
        if isinstance(record, Connect):
            assert record.addr == WS_URL
            parsers[record.conn] = DeribitParser(instruments.values())
        elif isinstance(record, Recv):
            for item in parsers[record.conn].feed(record.data, int(record.ts * 1e9)):
                assert not isinstance(item, str)  # the 2021 session never set up a heartbeat
                events.append(item)
                resync = engine.handle(item)
                if resync is not None:
                    resyncs.append(resync)
    return out, engine, events, resyncs


@pytest.fixture(scope="module")
def replayed(instruments: dict[str, Instrument]) -> tuple[list[dict], Engine, list[object], list[str]]:
    return run(instruments)


def test_every_recorded_option_book_yields_payloads(replayed, instruments) -> None:
    out, _, _, _ = replayed
    _, messages, _ = reference(FIXTURE)
    book_payloads = Counter(p["instrument"] for p in out if p.get("trigger") == "book")
    assert book_payloads == messages
    assert len(messages) == 10 and sum(messages.values()) == 46  # 10 snapshots + 36 changes
    for venue_id in messages:
        assert instruments[venue_id].category == "option" and instruments[venue_id].derivative
    assert {p["symbol"] for p in out} >= {"BTC/USD:BTC-210924-8000-P", "ETH/USD:ETH-210730-2800-C"}


def test_books_match_independent_recomputation_at_every_message(replayed) -> None:
    out, _, _, _ = replayed
    states, messages, _ = reference(FIXTURE)
    checked = 0
    for payload in out:
        if payload.get("trigger") != "book":
            continue
        ref = states[(payload["instrument"], payload["book_seq"])]
        for side, px, sz in (("bids", "bid_px", "bid_sz"), ("asks", "ask_px", "ask_sz")):
            if ref[side]:
                assert payload[px] == float(ref[side][0][0])
                assert payload[sz] == pytest.approx(float(ref[side][0][1]), rel=1e-12)
            else:
                assert payload[px] is None
        for n in (1, 5, 10, 20):
            assert payload[f"depth_imb_{n}"] == pytest.approx(imbalance(ref, n), abs=1e-9)
        checked += 1
    assert checked == sum(messages.values())


def test_full_books_match_at_the_end(replayed) -> None:
    _, engine, _, _ = replayed
    states, messages, _ = reference(FIXTURE)
    for state in engine.states():
        venue_id = state.instrument.venue_id
        if venue_id not in messages:
            continue
        book = state.sync.book
        ref = states[(venue_id, book.seq)]
        assert book.bids.levels() == [(float(p), pytest.approx(float(s))) for p, s in ref["bids"]]
        assert book.asks.levels() == [(float(p), pytest.approx(float(s))) for p, s in ref["asks"]]


def test_no_false_gaps(replayed) -> None:
    _, engine, _, resyncs = replayed
    _, messages, _ = reference(FIXTURE)
    assert resyncs == []
    for state in engine.states():
        if state.instrument.venue_id in messages:
            assert state.sync.gaps == 0 and state.sync.stale_dropped == 0
            assert state.sync.state.value == "VALID"
    assert engine.bad_frames == 0


def test_open_interest_is_the_recorded_coin_figure(replayed) -> None:
    out, _, events, _ = replayed
    _, _, open_interest = reference(FIXTURE)
    oi_events = [e for e in events if isinstance(e, OpenInterest)]
    assert len(oi_events) == sum(len(v) for v in open_interest.values()) == 89
    payloads = [p for p in out if p.get("trigger") == "open_interest"]
    assert len(payloads) == 89
    for payload in payloads:
        # Options: coin, published as sent (one side; not halved).
        assert Decimal(str(payload["oi"])) in open_interest[payload["instrument"]]


def test_same_frames_read_as_an_inverse_perpetual_are_usd_over_price(instruments) -> None:
    """The recording has no inverse book; its option frames relabelled to BTC-PERPETUAL (prices kept) check
    the inverse conversion at every level against Decimal(amount) / Decimal(price)."""
    perp = instruments["BTC-PERPETUAL"]
    assert perp.kind is ContractKind.INVERSE and perp.contract_size == 10.0
    parser = DeribitParser([perp])
    checked = 0
    for record in raw_lines(FIXTURE):
        if record["t"] != "recv" or '"channel":"book.BTC-24SEP21-8000-P.raw"' not in record["data"]:
            continue
        frame = record["data"].replace("BTC-24SEP21-8000-P", "BTC-PERPETUAL")
        data = json.loads(frame, parse_float=Decimal)["params"]["data"]
        (event,) = parser.feed(frame, 1)
        for side in ("bids", "asks"):
            for (price, size), (action, ref_price, amount) in zip(getattr(event, side), data[side], strict=True):
                assert price == float(ref_price)
                expected = Decimal(0) if action == "delete" else amount / ref_price
                assert size == pytest.approx(float(expected), rel=1e-12)
                checked += 1
        if isinstance(event, BookSnapshot):
            assert event.bids[0][1] == pytest.approx(153.1 / 0.0005)  # 153.1 USD at 0.0005
    assert checked == 15 + 30  # the snapshot's 15 levels and one level in each of 30 changes
