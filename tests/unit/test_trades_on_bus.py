"""Trades and liquidations on the bus (issue 9 item 8): the engine's trade records and liquidation fields, the
trades topic grammar, `publish.trades` in the config, and trades kept out of the embedded bus's current values.

Both cores: the liquidation fields are filled by the engine on the payload template both cores share.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import orjson
import pytest
from tests.conftest import linear_instrument

from flowgauge import core
from flowgauge.config import ConfigError, load_settings
from flowgauge.engine import LIQUIDATION_KEYS, Engine
from flowgauge.metrics.families import CORE, FAMILIES
from flowgauge.publish import topics
from flowgauge.publish.embedded import EmbeddedBus
from flowgauge.publish.nats import STATE_STREAM_SUBJECTS
from flowgauge.types import BookSnapshot, Liquidation, OpenInterest, Trade

SYM = "BTC/USDT:USDT"
BOOK_TOPIC = "flowgauge.v1.bybit.BTC-USDT-USDT"
TRADES_TOPIC = "flowgauge.v1.trades.bybit.BTC-USDT-USDT"
S = 1_000_000_000


def _schema(name: str) -> dict[str, Any]:
    return json.loads((resources.files("flowgauge") / "schema" / name).read_text())


PAYLOAD_SCHEMA = _schema("payload.v1.json")
TRADE_SCHEMA = _schema("trade.v1.json")


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, orjson.loads(payload)))

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [p for t, p in self.messages if t == topic]


def make(core_name: str, publish_trades: bool = True) -> tuple[Engine, Sink]:
    sink = Sink()
    engine = Engine(sink, clock=lambda: 9 * S, core_name=core_name, publish_trades=publish_trades)
    engine.add_instrument(linear_instrument())
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 10, 1 * S, 1 * S))
    return engine, sink


@pytest.mark.parametrize("core_name", core.CORES)
def test_every_trade_is_a_record_on_the_trades_topic(core_name: str) -> None:
    engine, sink = make(core_name)
    engine.handle(Trade("bybit", SYM, 100.1, 0.25, 1, "t-1", False, 2 * S, 2 * S + 5))
    engine.handle(Trade("bybit", SYM, 100.0, 1.5, -1, "t-2", True, 3 * S, 3 * S + 5))
    buy, sell = sink.on(TRADES_TOPIC)
    assert buy == {
        "schema": "flowgauge.v1", "kind": "trade", "venue": "bybit", "symbol": SYM, "instrument": "BTCUSDT",
        "trade_id": "t-1", "side": "buy", "price": 100.1, "size": 0.25, "notional": 100.1 * 0.25, "forced": False,
        "liq_side": None, "ts_exchange": 2 * S, "ts_recv": 2 * S + 5, "ts_publish": 9 * S,
    }  # fmt: skip
    assert (sell["side"], sell["forced"], sell["trade_id"]) == ("sell", True, "t-2")
    for record in (buy, sell):
        jsonschema.validate(record, TRADE_SCHEMA)
    # A trade is an input of the metrics, not a metrics payload: nothing new on the book topic.
    assert len(sink.on(BOOK_TOPIC)) == 1


@pytest.mark.parametrize("core_name", core.CORES)
def test_without_publish_trades_nothing_goes_to_a_trades_topic(core_name: str) -> None:
    engine, sink = make(core_name, publish_trades=False)
    engine.handle(Trade("bybit", SYM, 100.1, 0.25, 1, "t-1", False, 2 * S, 2 * S))
    engine.handle(Liquidation("bybit", SYM, "long", 99.0, 2.0, 3 * S, 3 * S))
    assert not [t for t, _ in sink.messages if topics.is_trades_topic(t)]
    (liquidation,) = (p for p in sink.on(BOOK_TOPIC) if p["trigger"] == "liquidation")
    assert liquidation["liq_side"] == "long"  # the metrics payload says which liquidation either way


@pytest.mark.parametrize("core_name", core.CORES)
@pytest.mark.parametrize(("liquidated", "closing"), [("long", "sell"), ("short", "buy")])
def test_a_liquidation_payload_says_which_liquidation(core_name: str, liquidated: str, closing: str) -> None:
    engine, sink = make(core_name)
    engine.handle(Liquidation("bybit", SYM, liquidated, 99.5, 2.5, 3 * S, 3 * S + 7))  # type: ignore[arg-type]
    engine.handle(OpenInterest("bybit", SYM, 10.0, 4 * S, 4 * S))
    book, liquidation, oi = sink.on(BOOK_TOPIC)
    assert liquidation["trigger"] == "liquidation"
    assert (liquidation["liq_side"], liquidation["liq_price"], liquidation["liq_size"]) == (liquidated, 99.5, 2.5)
    assert liquidation["liq_notional"] == 99.5 * 2.5
    for other in (book, oi):
        assert [other[key] for key in LIQUIDATION_KEYS] == [None] * 4
    for payload in (book, liquidation, oi):
        jsonschema.validate(payload, PAYLOAD_SCHEMA)
    (record,) = sink.on(TRADES_TOPIC)
    jsonschema.validate(record, TRADE_SCHEMA)
    assert record["kind"] == "liquidation" and record["liq_side"] == liquidated
    assert record["side"] == closing and record["forced"] is True and record["trade_id"] is None
    assert (record["price"], record["size"], record["notional"]) == (99.5, 2.5, 99.5 * 2.5)
    assert (record["ts_exchange"], record["ts_recv"]) == (3 * S, 3 * S + 7)


@pytest.mark.parametrize("core_name", core.CORES)
def test_the_liquidation_keys_close_the_payload_in_both_cores(core_name: str) -> None:
    # Key order is part of the published bytes (tests/conformance): the new keys close core-v1 (the metric families
    # beyond core follow them, metrics.families), nowhere else.
    _, sink = make(core_name)
    (book,) = sink.on(BOOK_TOPIC)
    keys = tuple(book)
    end = keys.index(FAMILIES[CORE][-1]) + 1
    assert keys[end - 4 : end] == LIQUIDATION_KEYS
    assert set(PAYLOAD_SCHEMA["required"]) <= set(keys[:end]) <= set(PAYLOAD_SCHEMA["properties"])


@pytest.mark.parametrize(
    ("price", "size"), [(0.0, 1.0), (100.0, 0.0), (-1.0, 1.0), (100.0, float("nan")), (float("inf"), 1.0)]
)
def test_unusable_trade_values_are_counted_not_published(price: float, size: float) -> None:
    engine, sink = make(core.PYTHON)
    before = len(sink.messages)
    engine.handle(Trade("bybit", SYM, price, size, 1, "t-x", False, 2 * S, 2 * S))
    engine.handle(Liquidation("bybit", SYM, "short", price, size, 3 * S, 3 * S))
    assert len(sink.messages) == before
    assert engine.bad_frames == 2


def test_trades_topic_grammar() -> None:
    topic = topics.trades_topic("bybit", SYM)
    assert topic == TRADES_TOPIC and len(topic.split(".")) == 5
    assert topics.is_trades_topic(topic) and not topics.is_trades_topic(BOOK_TOPIC)
    assert topics.matches("flowgauge.v1.trades.>", topic)
    assert topics.matches("flowgauge.v1.trades.*.BTC-USDT-USDT", topic)
    # Book-style patterns are one token short: they never deliver a trade.
    assert not topics.matches("flowgauge.v1.*.*", topic)
    assert not topics.matches("flowgauge.v1.bybit.>", topic)
    # ... and neither does the JetStream state stream capture one.
    assert not any(topics.matches(subject, topic) for subject in STATE_STREAM_SUBJECTS)
    assert any(topics.matches(subject, BOOK_TOPIC) for subject in STATE_STREAM_SUBJECTS)
    with pytest.raises(ValueError, match="reserved"):
        topics.trades_topic("trades", SYM)


def test_trades_never_become_current_values_on_the_embedded_bus() -> None:
    bus = EmbeddedBus(port=None)
    bus.publish(BOOK_TOPIC, b'{"a":1}')
    bus.publish(TRADES_TOPIC, b'{"b":2}')
    assert bus.latest(BOOK_TOPIC) == b'{"a":1}'
    assert bus.latest(TRADES_TOPIC) is None
    assert bus.published == 2  # still delivered live


def test_publish_trades_config() -> None:
    assert load_settings(None, {}).publish.trades is False
    assert load_settings(None, {"FLOWGAUGE_PUBLISH__TRADES": "true"}).publish.trades is True
    with pytest.raises(ConfigError) as err:
        load_settings(None, {"FLOWGAUGE_PUBLISH__TRADES": "sometimes"})
    assert err.value.problems == ["publish.trades: expected bool, got str (set by FLOWGAUGE_PUBLISH__TRADES)"]


def test_the_engine_default_publishes_no_trades() -> None:
    engine = Engine(lambda topic, payload: None)
    assert engine.publish_trades is False
