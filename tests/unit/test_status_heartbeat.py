"""The per-book status heartbeat: the engine's heartbeat payloads, the status schema, and `publish.heartbeat_s`.

A heartbeat is the book's current status published again with `"heartbeat": true`; a status published because the
sync state changed says `"heartbeat": false`. Both carry `ts_last_update`, the `ts_recv` of the instrument's last
metrics payload (null before one). The daemon's timing and its trip through the publishers are tested against a
real daemon in tests/integration/test_heartbeat_daemon.py.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
import orjson
import pytest
from tests.conftest import BYBIT_RECORDING, linear_instrument

from flowgauge import core
from flowgauge.config import ConfigError, load_settings
from flowgauge.engine import Engine
from flowgauge.replay.replay import replay
from flowgauge.types import BookDelta, BookSnapshot, InvalidReason, OpenInterest

SYM = "BTC/USDT:USDT"
STATUS_TOPIC = "flowgauge.v1.status.bybit.BTC-USDT-USDT"
S = 1_000_000_000
STATUS_SCHEMA = json.loads((resources.files("flowgauge") / "schema" / "status.v1.json").read_text())


class Clock:
    def __init__(self) -> None:
        self.now = 50 * S

    def __call__(self) -> int:
        return self.now


def _engine(core_name: str) -> tuple[Engine, list[tuple[str, dict[str, Any]]], Clock]:
    out: list[tuple[str, dict[str, Any]]] = []
    clock = Clock()
    engine = Engine(lambda topic, payload: out.append((topic, orjson.loads(payload))), clock=clock, core_name=core_name)
    engine.add_instrument(linear_instrument())
    return engine, out, clock


def _statuses(out: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [payload for topic, payload in out if topic == STATUS_TOPIC]


@pytest.mark.parametrize("core_name", list(core.CORES))
def test_heartbeat_repeats_the_current_status_with_the_last_update(core_name: str) -> None:
    engine, out, clock = _engine(core_name)
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 10, 1 * S, 1 * S + 7))
    engine.handle(BookDelta("bybit", SYM, ((100.0, 6.0),), (), 11, None, 2 * S, 2 * S + 9))
    (change,) = _statuses(out)
    assert change["heartbeat"] is False and change["state"] == "VALID"
    assert change["ts_last_update"] is None  # the VALID status comes before the snapshot's first payload

    clock.now = 60 * S
    assert engine.publish_heartbeats() == 1
    beat = _statuses(out)[-1]
    assert beat["heartbeat"] is True
    assert {k: beat[k] for k in ("venue", "symbol", "instrument", "state", "reason", "detail", "resyncs")} == {
        "venue": "bybit", "symbol": SYM, "instrument": "BTCUSDT", "state": "VALID", "reason": None, "detail": "",
        "resyncs": change["resyncs"],
    }
    assert beat["ts_last_update"] == 2 * S + 9  # the delta's payload: the book topic's current value
    assert beat["ts_exchange"] == 2 * S  # the book's time
    assert beat["ts_recv"] == beat["ts_publish"] == 60 * S  # the heartbeat's own time
    jsonschema.validate(change, STATUS_SCHEMA)
    jsonschema.validate(beat, STATUS_SCHEMA)

    # An open-interest payload is a metrics payload too: it moves ts_last_update.
    engine.handle(OpenInterest("bybit", SYM, 5.0, 3 * S, 3 * S + 11))
    engine.publish_heartbeats()
    assert _statuses(out)[-1]["ts_last_update"] == 3 * S + 11


@pytest.mark.parametrize("core_name", list(core.CORES))
def test_heartbeat_of_an_invalid_book_carries_its_reason(core_name: str) -> None:
    engine, out, _ = _engine(core_name)
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 10, 1 * S, 1 * S))
    engine.invalidate("bybit", [SYM], InvalidReason.STALE, "connection dropped")
    change = _statuses(out)[-1]
    assert (change["state"], change["reason"], change["heartbeat"]) == ("INVALID", "STALE", False)
    engine.publish_heartbeats()
    beat = _statuses(out)[-1]
    assert (beat["state"], beat["reason"], beat["detail"], beat["heartbeat"]) == (
        "INVALID", "STALE", "connection dropped", True
    )
    jsonschema.validate(beat, STATUS_SCHEMA)


def test_heartbeat_of_a_book_without_data_yet() -> None:
    engine, out, clock = _engine(core.PYTHON)
    assert engine.publish_heartbeats() == 1  # started (metadata loaded), nothing received: SYNCING
    beat = _statuses(out)[-1]
    assert (beat["state"], beat["ts_last_update"], beat["heartbeat"]) == ("SYNCING", None, True)
    assert beat["ts_exchange"] == beat["ts_recv"] == clock.now  # no book time yet: the heartbeat's
    jsonschema.validate(beat, STATUS_SCHEMA)
    # Heartbeats publish nothing on book topics and do not count as metrics payloads.
    assert all(topic == STATUS_TOPIC for topic, _ in out)


def test_no_books_no_heartbeats() -> None:
    out: list[tuple[str, bytes]] = []
    engine = Engine(lambda topic, payload: out.append((topic, payload)))
    assert engine.publish_heartbeats() == 0
    assert out == []


def test_schema_requires_the_heartbeat_fields() -> None:
    engine, out, _ = _engine(core.PYTHON)
    engine.publish_heartbeats()
    beat = _statuses(out)[-1]
    for field in ("heartbeat", "ts_last_update"):
        without = {k: v for k, v in beat.items() if k != field}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(without, STATUS_SCHEMA)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**beat, "heartbeat": "yes"}, STATUS_SCHEMA)


def test_replay_publishes_no_heartbeat() -> None:
    """Replay runs the engine without the daemon's heartbeat task: its statuses are state changes only, and their
    ts_last_update comes from the recording (the same in every replay)."""
    runs = []
    for _ in range(2):
        out: list[tuple[str, dict[str, Any]]] = []
        replay([BYBIT_RECORDING], lambda topic, payload, out=out: out.append((topic, orjson.loads(payload))))
        runs.append([p for topic, p in out if ".status." in topic])
    statuses = runs[0]
    assert statuses and all(s["heartbeat"] is False for s in statuses)
    for status in statuses:
        jsonschema.validate(status, STATUS_SCHEMA)
    strip = [[{k: v for k, v in s.items() if k != "ts_publish"} for s in run] for run in runs]
    assert strip[0] == strip[1]


# ------------------------------------------------------------------------------------- publish.heartbeat_s


def test_heartbeat_default_and_off() -> None:
    assert load_settings(None, {}).publish.heartbeat_s == 5.0
    assert load_settings(None, {"FLOWGAUGE_PUBLISH__HEARTBEAT_S": "0"}).publish.heartbeat_s == 0
    assert load_settings(None, {"FLOWGAUGE_PUBLISH__HEARTBEAT_S": "0.2"}).publish.heartbeat_s == 0.2


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("-1", "publish.heartbeat_s: must be a finite number > 0, or 0 to turn the status heartbeat off (got -1)"),
        (".inf", "publish.heartbeat_s: must be a finite number > 0, or 0 to turn the status heartbeat off (got inf)"),
        ("soon", "publish.heartbeat_s: expected float, got str"),
    ],
)
def test_bad_heartbeat_is_one_line(value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"FLOWGAUGE_PUBLISH__HEARTBEAT_S": value})
    assert info.value.problems == [f"{problem} (set by FLOWGAUGE_PUBLISH__HEARTBEAT_S)"]
