"""Trades and liquidations on the bus (issue 9 item 8), over a real recording through the real parser and engine.

No recording in the repo holds a liquidation, so the Bybit recording gets `allLiquidation` frames spliced in
(the venue's v5 shape, on the connection that subscribed them, between its recorded frames). Replayed with
`publish_trades`: every liquidation payload says which liquidation it is (side, price, size, notional =
price x size) and every payload of another trigger has those fields null; every recorded trade and every
liquidation is a trade record on `flowgauge.v1.trades.<venue>.<slug>`, valid against trade.v1.json; without
`publish_trades` nothing goes to a trades topic and every other message is byte for byte the same. Runs under
both cores (the conformance suite's fixture).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import zstandard
from tests.conftest import BYBIT_RECORDING

from flowgauge.engine import LIQUIDATION_KEYS
from flowgauge.publish import topics
from flowgauge.replay.replay import replay

CONN = "BYBIT.ws.2"  # the connection that subscribed publicTrade and allLiquidation
# (symbol in the frame, position side S as Bybit sends it, size v, price p): Bybit's S is the position's side.
LIQUIDATIONS = [
    [("BTCUSDT", "Buy", "0.5", "65000.5")],
    [("ETHUSDT", "Sell", "2.25", "1921.75")],
    [("BTCUSDT", "Sell", "0.012", "65110.1"), ("BTCUSDT", "Buy", "1.5", "65090")],  # two fills in one frame
]
EXPECTED = [  # (unified symbol, liq_side, price, size) in publication order
    ("BTC/USDT:USDT", "long", 65000.5, 0.5),
    ("ETH/USDT:USDT", "short", 1921.75, 2.25),
    ("BTC/USDT:USDT", "short", 65110.1, 0.012),
    ("BTC/USDT:USDT", "long", 65090.0, 1.5),
]


def _schema(name: str) -> dict[str, Any]:
    return json.loads((resources.files("flowgauge") / "schema" / name).read_text())


PAYLOAD_SCHEMA = _schema("payload.v1.json")
TRADE_SCHEMA = _schema("trade.v1.json")


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Bybit recording with one liquidation frame spliced in after every 300th frame of CONN."""
    raw = zstandard.ZstdDecompressor().stream_reader(BYBIT_RECORDING.open("rb")).read()
    out: list[bytes] = []
    frames = 0
    pending = list(LIQUIDATIONS)
    for line in raw.splitlines():
        out.append(line)
        record = orjson.loads(line)
        if record.get("t") != "recv" or record.get("conn") != CONN:
            continue
        frames += 1
        if pending and frames % 300 == 0:
            fills = pending.pop(0)
            ts = record["ts"]
            data = [{"T": int(ts * 1000), "s": s, "S": side, "v": v, "p": p} for s, side, v, p in fills]
            frame = {"topic": f"allLiquidation.{fills[0][0]}", "type": "snapshot", "ts": int(ts * 1000), "data": data}
            out.append(orjson.dumps({"t": "recv", "conn": CONN, "ts": ts, "data": orjson.dumps(frame).decode()}))
    assert not pending, "the recording is too short for the spliced frames"
    path = tmp_path_factory.mktemp("liq") / "bybit-with-liquidations.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b"\n".join(out) + b"\n"))
    return path


def replayed(path: Path, publish_trades: bool) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    replay([path], lambda topic, payload: out.append((topic, payload)), clock=lambda: 0,
           publish_trades=publish_trades)
    return out


def test_liquidation_payloads_say_which_liquidation(recording: Path) -> None:
    messages = [(t, orjson.loads(p)) for t, p in replayed(recording, publish_trades=False)]
    metrics = [(t, p) for t, p in messages if "trigger" in p]
    liquidations = [p for _, p in metrics if p["trigger"] == "liquidation"]
    got = [(p["symbol"], p["liq_side"], p["liq_price"], p["liq_size"]) for p in liquidations]
    assert got == EXPECTED
    for payload in liquidations:
        assert payload["liq_notional"] == payload["liq_price"] * payload["liq_size"]
        jsonschema.validate(payload, PAYLOAD_SCHEMA)
    others = [p for _, p in metrics if p["trigger"] != "liquidation"]
    assert {p["trigger"] for p in others} >= {"book", "open_interest", "funding"}
    for payload in others:
        assert all(payload[key] is None for key in LIQUIDATION_KEYS), payload["trigger"]
    jsonschema.validate(others[-1], PAYLOAD_SCHEMA)
    assert not any(topics.is_trades_topic(t) for t, _ in messages)  # publish_trades off: no trade record


def test_trade_records_carry_every_trade_and_liquidation(recording: Path) -> None:
    raw = zstandard.ZstdDecompressor().stream_reader(recording.open("rb")).read()
    recorded_ids: dict[str, set[str]] = {}
    for line in raw.splitlines():
        record = orjson.loads(line)
        if record.get("t") == "recv" and record["conn"] == CONN and '"publicTrade.' in record["data"]:
            frame = orjson.loads(record["data"])
            for fill in frame["data"]:
                recorded_ids.setdefault(fill["s"], set()).add(fill["i"])
    records = [(t, orjson.loads(p)) for t, p in replayed(recording, publish_trades=True) if topics.is_trades_topic(t)]
    trades = [(t, r) for t, r in records if r["kind"] == "trade"]
    liquidations = [r for _, r in records if r["kind"] == "liquidation"]
    assert trades and len({r["symbol"] for _, r in trades}) >= 2
    for topic, record in records:
        jsonschema.validate(record, TRADE_SCHEMA)
        assert topic == topics.trades_topic("bybit", record["symbol"])
        assert record["size"] > 0 and record["price"] > 0
        assert record["notional"] == record["price"] * record["size"]
    by_instrument: dict[str, list[str]] = {}
    for _, record in trades:
        assert record["side"] in ("buy", "sell") and record["liq_side"] is None
        by_instrument.setdefault(record["instrument"], []).append(record["trade_id"])
    for instrument, ids in by_instrument.items():
        assert len(ids) == len(set(ids)), f"{instrument}: a trade published twice"
        assert set(ids) == recorded_ids[instrument], f"{instrument}: not every recorded trade was published"
    got = [(r["symbol"], r["liq_side"], r["price"], r["size"]) for r in liquidations]
    assert got == EXPECTED
    for record in liquidations:
        assert record["forced"] is True and record["trade_id"] is None
        assert record["side"] == ("sell" if record["liq_side"] == "long" else "buy")  # the closing order


def test_publishing_trades_changes_nothing_else(recording: Path) -> None:
    without = replayed(recording, publish_trades=False)
    with_trades = replayed(recording, publish_trades=True)
    assert [m for m in with_trades if not topics.is_trades_topic(m[0])] == without
    assert len(with_trades) > len(without)
