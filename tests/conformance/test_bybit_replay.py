"""Conformance: replay the recorded Bybit v5 session and check the engine against an independent book.

The reference below is built straight from the raw frames with plain dicts and Decimal prices,
sharing no code with `flowgauge`. At every published book state (matched by `book_seq` = Bybit `u`)
the payload's top of book and depth imbalances must equal the reference's.
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
from tests.conftest import BYBIT_RECORDING

from flowgauge.publish import codec
from flowgauge.replay.replay import replay

LINEAR = "/v5/public/linear"


def raw_lines(path: Path) -> list[dict]:
    with path.open("rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh).read().decode()
    return [json.loads(line) for line in io.StringIO(text) if line.strip()]


def reference_states(path: Path) -> tuple[dict[tuple[str, int], dict], Counter, dict[str, list[float]]]:
    """(venue id, u) -> {"bids": [(px, sz)...best first], "asks": [...]} after each linear book message."""
    lines = raw_lines(path)
    conn_url = {r["conn"]: r["addr"] for r in lines if r["t"] == "connect"}
    books: dict[str, dict[str, dict[Decimal, Decimal]]] = {}
    states: dict[tuple[str, int], dict] = {}
    messages: Counter = Counter()
    single_oi: dict[str, list[float]] = {}
    for record in lines:
        if record["t"] != "recv" or not conn_url[record["conn"]].endswith(LINEAR):
            continue
        msg = json.loads(record["data"])
        topic = msg.get("topic", "")
        if topic.startswith("tickers.") and "singleOpenInterest" in msg["data"]:
            single_oi.setdefault(msg["data"]["symbol"], []).append(float(msg["data"]["singleOpenInterest"]))
            # Two-sided = 2 x one-sided, up to the venue's rounding of each figure to its last digit.
            two, one = Decimal(msg["data"]["openInterest"]), Decimal(msg["data"]["singleOpenInterest"])
            assert abs(two - 2 * one) <= Decimal("0.01")
        if not topic.startswith("orderbook."):
            continue
        data = msg["data"]
        sym = data["s"]
        if msg["type"] == "snapshot":
            books[sym] = {"b": {}, "a": {}}
        for side in ("b", "a"):
            for px, sz in data[side]:
                if Decimal(sz) == 0:
                    books[sym][side].pop(Decimal(px), None)
                else:
                    books[sym][side][Decimal(px)] = Decimal(sz)
        messages[sym] += 1
        bids = sorted(books[sym]["b"].items(), reverse=True)
        asks = sorted(books[sym]["a"].items())
        states[(sym, data["u"])] = {"bids": bids, "asks": asks}
    return states, messages, single_oi


def imbalance(state: dict, n: int) -> float | None:
    bid = sum(sz for _, sz in state["bids"][:n])
    ask = sum(sz for _, sz in state["asks"][:n])
    if bid + ask == 0:
        return None
    return float((bid - ask) / (bid + ask))


@pytest.fixture(scope="module")
def replayed() -> tuple[list[tuple[str, dict]], object]:
    out: list[tuple[str, dict]] = []

    def sink(topic: str, payload: bytes) -> None:
        out.append((topic, orjson.loads(payload)))

    engine, stats = replay([BYBIT_RECORDING], sink)
    return out, (engine, stats)


def test_one_book_payload_per_linear_book_message_and_none_for_spot(replayed) -> None:
    out, _ = replayed
    _, messages, _ = reference_states(BYBIT_RECORDING)
    book_payloads = Counter(p["instrument"] for _, p in out if p.get("trigger") == "book")
    assert book_payloads == messages
    assert set(messages) == {"BTCUSDT", "ETHUSDT"}
    assert all(p["venue"] == "bybit" and p["symbol"].endswith(":USDT") for _, p in out)
    # Spot frames exist in the recording (same topic names) and produced nothing.
    assert {topic for topic, _ in out} <= {
        "flowgauge.v1.bybit.BTC-USDT-USDT",
        "flowgauge.v1.bybit.ETH-USDT-USDT",
        "flowgauge.v1.status.bybit.BTC-USDT-USDT",
        "flowgauge.v1.status.bybit.ETH-USDT-USDT",
    }


def test_books_match_independent_recomputation_at_every_state(replayed) -> None:
    out, _ = replayed
    states, messages, _ = reference_states(BYBIT_RECORDING)
    checked = 0
    for _, payload in out:
        if payload.get("trigger") != "book":
            continue
        ref = states[(payload["instrument"], payload["book_seq"])]
        assert payload["bid_px"] == float(ref["bids"][0][0])
        assert payload["ask_px"] == float(ref["asks"][0][0])
        assert payload["bid_sz"] == pytest.approx(float(ref["bids"][0][1]), rel=1e-12)
        assert payload["ask_sz"] == pytest.approx(float(ref["asks"][0][1]), rel=1e-12)
        for n in (1, 5, 10, 20):
            assert payload[f"depth_imb_{n}"] == pytest.approx(imbalance(ref, n), abs=1e-9)
        checked += 1
    assert checked == sum(messages.values()) == 835  # every linear book state of the session


def test_full_books_match_at_the_end(replayed) -> None:
    _, (engine, _) = replayed
    states, _, _ = reference_states(BYBIT_RECORDING)
    for symbol, venue_id in (("BTC/USDT:USDT", "BTCUSDT"), ("ETH/USDT:USDT", "ETHUSDT")):
        book = engine.state("bybit", symbol).sync.book
        ref = states[(venue_id, book.seq)]
        assert book.bids.levels() == [(float(p), pytest.approx(float(s))) for p, s in ref["bids"]]
        assert book.asks.levels() == [(float(p), pytest.approx(float(s))) for p, s in ref["asks"]]


def test_no_false_gaps(replayed) -> None:
    out, (engine, stats) = replayed
    assert stats.resyncs_needed == 0
    for state in engine.states():
        assert state.sync.gaps == 0
        assert state.sync.state.value == "VALID"
    statuses = [p for topic, p in out if ".status." in topic]
    assert all(p["state"] == "VALID" for p in statuses)


def test_open_interest_is_one_sided(replayed) -> None:
    out, _ = replayed
    _, _, single_oi = reference_states(BYBIT_RECORDING)
    oi_payloads = [p for _, p in out if p.get("trigger") == "open_interest"]
    assert oi_payloads
    for payload in oi_payloads:
        assert payload["oi"] in single_oi[payload["instrument"]]


def test_payloads_match_the_published_schema(replayed) -> None:
    import jsonschema

    out, _ = replayed
    schema_dir = Path(codec.__file__).parent.parent / "schema"
    payload_schema = json.loads((schema_dir / "payload.v1.json").read_text())
    status_schema = json.loads((schema_dir / "status.v1.json").read_text())
    for topic, payload in out[:: max(1, len(out) // 300)]:
        jsonschema.validate(payload, status_schema if ".status." in topic else payload_schema)


def test_replay_is_deterministic(replayed) -> None:
    out, _ = replayed
    again: list[tuple[str, dict]] = []
    replay([BYBIT_RECORDING], lambda t, p: again.append((t, orjson.loads(p))))

    def strip(items):
        return [(t, {k: v for k, v in p.items() if k != "ts_publish"}) for t, p in items]

    assert strip(again) == strip(out)
