"""Conformance: the recorded OKX v5 session (2022: checksum, no seqId) through OkxParser and the Engine.

The reference is built straight from the raw frames with plain dicts, Decimal and zlib, sharing no code
with `flowgauge`. Checked at every recorded book message: the venue's CRC32 checksum equals the one
recomputed here (all of them, spot included) and the parser verified it too; the engine's published top
of book and depth imbalances equal the reference's, with inverse sizes in base units (contracts x 10 USD /
price); no false gap. A corrupted frame must surface as a CHECKSUM invalidation.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from flowgauge.connectors.markets import markets_from_recording
from flowgauge.connectors.okx import OkxAdapter, OkxParser, okx_instrument
from flowgauge.engine import Engine
from flowgauge.recording import Connect, Http, Recv, iter_records
from flowgauge.types import BookSnapshot, ContractKind, Instrument, InvalidReason

RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "okx" / "okx-v5-2022-05.jsonl.zst"
PUBLIC = "/ws/v5/public"
UNI_CONTRACT_USD = Decimal(10)  # UNI-USD-SWAP ctVal, as recorded in public/instruments


def public_frames() -> Iterator[tuple[str, float]]:
    """(frame text, receive time) of every frame received on a public-path connection, in order."""
    url: dict[str, str] = {}
    for record in iter_records(RECORDING):
        if isinstance(record, Connect):
            url[record.conn] = record.addr
        elif isinstance(record, Recv) and url.get(record.conn, "").endswith(PUBLIC):
            yield record.data, record.ts


def instruments() -> dict[str, Instrument]:
    http = [(r.url, r.data) for r in iter_records(RECORDING) if isinstance(r, Http)]
    return {m["id"]: okx_instrument(m) for m in markets_from_recording("okx", http) if m.get("swap") or m.get("future")}


def signed_crc(text: str) -> int:
    value = zlib.crc32(text.encode())
    return value - 2**32 if value >= 2**31 else value


def reference() -> dict[str, list[dict]]:
    """instId -> the book after each recorded books message: Decimal levels best first, checksums."""
    books: dict[str, dict[str, dict[Decimal, tuple[str, str]]]] = {}
    states: dict[str, list[dict]] = {}
    for text, _ in public_frames():
        if '"action"' not in text:
            continue
        msg = orjson.loads(text)
        inst = msg["arg"]["instId"]
        data = msg["data"][0]
        if msg["action"] == "snapshot":
            books[inst] = {"bids": {}, "asks": {}}
        for side in ("bids", "asks"):
            for px, sz, _deprecated, _orders in data[side]:
                if Decimal(sz) == 0:
                    books[inst][side].pop(Decimal(px), None)
                else:
                    books[inst][side][Decimal(px)] = (px, sz)
        bids = sorted(books[inst]["bids"].items(), reverse=True)
        asks = sorted(books[inst]["asks"].items())
        parts: list[str] = []
        for i in range(25):
            if i < len(bids):
                parts += bids[i][1]
            if i < len(asks):
                parts += asks[i][1]
        states.setdefault(inst, []).append(
            {
                "bids": [(p, Decimal(s)) for p, (_, s) in bids],
                "asks": [(p, Decimal(s)) for p, (_, s) in asks],
                "venue_checksum": data["checksum"],
                "our_checksum": signed_crc(":".join(parts)),
            }
        )
    return states


def base_levels(levels: list[tuple[Decimal, Decimal]]) -> list[tuple[Decimal, Decimal]]:
    """Inverse UNI-USD-SWAP contracts -> UNI: contracts x 10 USD / that level's price."""
    return [(p, s * UNI_CONTRACT_USD / p) for p, s in levels]


def imbalance(state: dict, n: int) -> float | None:
    bid = sum(s for _, s in base_levels(state["bids"][:n]))
    ask = sum(s for _, s in base_levels(state["asks"][:n]))
    return None if bid + ask == 0 else float((bid - ask) / (bid + ask))


@pytest.fixture(scope="module")
def replayed() -> tuple[list[dict], Engine, OkxParser, list[str]]:
    out: list[dict] = []
    engine = Engine(lambda topic, payload: out.append(orjson.loads(payload)))
    by_id = instruments()
    uni = by_id["UNI-USD-SWAP"]
    engine.add_instrument(uni, rule=OkxAdapter.sequence_rule)
    parser = OkxParser([uni])
    resyncs: list[str] = []
    for text, ts in public_frames():
        for item in parser.feed(text, int(ts * 1e9)):
            assert not isinstance(item, str)
            symbol = engine.handle(item)
            if symbol is not None:
                resyncs.append(symbol)
    return out, engine, parser, resyncs


def test_instruments_from_the_recording() -> None:
    by_id = instruments()
    uni = by_id["UNI-USD-SWAP"]
    assert (uni.symbol, uni.kind, uni.contract_size, uni.tick_size) == (
        "UNI/USD:UNI",
        ContractKind.INVERSE,
        10.0,
        0.001,
    )
    btc = by_id["BTC-USDT-SWAP"]
    assert (btc.symbol, btc.kind, btc.contract_size) == ("BTC/USDT:USDT", ContractKind.LINEAR, 0.01)
    assert by_id["ETH-USDT-SWAP"].contract_size == pytest.approx(0.1)
    assert "BTC-USDT" not in by_id  # spot is not a derivative


def test_every_recorded_checksum_is_recomputed_here_and_by_the_parser() -> None:
    states = reference()
    counts = {inst: len(s) for inst, s in states.items()}
    assert counts == {"UNI-USD-SWAP": 93, "BTC-USDT": 98}
    for inst_states in states.values():
        for state in inst_states:
            assert state["venue_checksum"] != 0
            assert state["our_checksum"] == state["venue_checksum"]
    # The parser verifies every one of them too, spot included when asked to track it.
    spot = Instrument(
        venue="okx",
        symbol="BTC/USDT",
        venue_id="BTC-USDT",
        category="spot",
        kind=ContractKind.LINEAR,
        contract_size=1.0,
        tick_size=0.1,
        base="BTC",
        quote="USDT",
        settle=None,
        derivative=False,
    )
    parser = OkxParser([instruments()["UNI-USD-SWAP"], spot])
    kinds = [type(e).__name__ for text, ts in public_frames() for e in parser.feed(text, int(ts * 1e9))]
    assert "BadFrame" not in kinds
    assert parser.checksums_verified == sum(counts.values()) == 191
    assert parser.checksum_mismatches == 0


def test_one_payload_per_book_message_matching_the_reference(replayed) -> None:
    out, _, _, _ = replayed
    states = reference()["UNI-USD-SWAP"]
    payloads = [p for p in out if p.get("trigger") == "book"]
    assert len(payloads) == len(states) == 93
    for payload, ref in zip(payloads, states, strict=True):
        assert payload["venue"] == "okx" and payload["symbol"] == "UNI/USD:UNI"
        assert payload["instrument"] == "UNI-USD-SWAP" and payload["book_state"] == "VALID"
        (bid_px, bid_contracts), (ask_px, ask_contracts) = ref["bids"][0], ref["asks"][0]
        assert payload["bid_px"] == float(bid_px) and payload["ask_px"] == float(ask_px)
        # Sizes are UNI, not contracts: 10 USD per contract at that level's own price.
        assert payload["bid_sz"] == pytest.approx(float(bid_contracts * UNI_CONTRACT_USD / bid_px), rel=1e-12)
        assert payload["ask_sz"] == pytest.approx(float(ask_contracts * UNI_CONTRACT_USD / ask_px), rel=1e-12)
        for n in (1, 5, 10, 20):
            assert payload[f"depth_imb_{n}"] == pytest.approx(imbalance(ref, n), abs=1e-9)


def test_full_book_in_base_units_at_the_end(replayed) -> None:
    _, engine, _, _ = replayed
    final = reference()["UNI-USD-SWAP"][-1]
    book = engine.state("okx", "UNI/USD:UNI").sync.book
    assert book.bids.levels() == [(float(p), pytest.approx(float(s))) for p, s in base_levels(final["bids"])]
    assert book.asks.levels() == [(float(p), pytest.approx(float(s))) for p, s in base_levels(final["asks"])]


def test_no_false_gaps_and_every_checksum_verified(replayed) -> None:
    out, engine, parser, resyncs = replayed
    assert resyncs == []
    state = engine.state("okx", "UNI/USD:UNI")
    assert state.sync.gaps == 0 and state.sync.stale_dropped == 0 and state.sync.state.value == "VALID"
    assert parser.checksums_verified == 93 and parser.checksum_mismatches == 0
    assert engine.bad_frames == 0
    assert all(p["state"] == "VALID" for p in out if "state" in p and "trigger" not in p)


def test_a_corrupted_update_is_a_checksum_invalidation() -> None:
    uni = instruments()["UNI-USD-SWAP"]
    engine = Engine(lambda topic, payload: None)
    engine.add_instrument(uni, rule=OkxAdapter.sequence_rule)
    parser = OkxParser([uni])
    updates = 0
    resyncs: list[str] = []
    for text, ts in public_frames():
        if '"UNI-USD-SWAP"},"action":"update"' in text:
            updates += 1
            if updates == 40:
                # Same JSON shape, one size changed: only the checksum can tell.
                msg = orjson.loads(text)
                level = (msg["data"][0]["bids"] or msg["data"][0]["asks"])[0]
                level[1] = str(int(level[1]) + 1) if level[1] != "0" else "1"
                text = orjson.dumps(msg).decode()
        for item in parser.feed(text, int(ts * 1e9)):
            symbol = engine.handle(item)
            if symbol is not None:
                resyncs.append(symbol)
        if resyncs:
            break
    assert resyncs == ["UNI/USD:UNI"] and updates == 40
    state = engine.state("okx", "UNI/USD:UNI").sync
    assert state.state.value == "INVALID" and state.reason is InvalidReason.CHECKSUM
    assert parser.checksum_mismatches == 1
    # The 2022 stream has no seqIds: the resync is a fresh WS snapshot (unsubscribe + subscribe).
    unsub, sub = parser.resync("UNI/USD:UNI")
    assert '"unsubscribe"' in unsub and '"subscribe"' in sub


def test_snapshot_sizes_are_base_units_for_the_inverse_perp() -> None:
    uni = instruments()["UNI-USD-SWAP"]
    parser = OkxParser([uni])
    for text, ts in public_frames():
        events = parser.feed(text, int(ts * 1e9))
        snaps = [e for e in events if isinstance(e, BookSnapshot)]
        if snaps:
            first = reference()["UNI-USD-SWAP"][0]
            assert snaps[0].bids[0] == (
                float(first["bids"][0][0]),
                pytest.approx(float(first["bids"][0][1] * UNI_CONTRACT_USD / first["bids"][0][0])),
            )
            return
    pytest.fail("no snapshot in the recording")
