"""The packaged JSON Schemas accept everything the engine can publish.

The reasons and quality flags are derived from the code, not listed here: the status `reason` is
`BookSync.reason` (an `InvalidReason`) or null; a payload's `quality` holds the accumulator's flags (found
by reading the source of every `.add(...)` on a flag set), the invalid book's reason, and the engine's
extras. Each one is then emitted by a real `Engine` and the payload validated with jsonschema.
"""

from __future__ import annotations

import ast
import inspect
import json
from importlib import resources
from typing import Any

import jsonschema
import orjson
import pytest
from tests.conftest import linear_instrument

from flowgauge import engine as engine_module
from flowgauge.engine import Engine
from flowgauge.metrics import accumulator
from flowgauge.metrics.accumulator import QUALITY_FLAGS
from flowgauge.types import BadFrame, BookSnapshot, InvalidReason, OpenInterest, RetireReason

SYM = "BTC/USDT:USDT"
S = 1_000_000_000


def _schema(name: str) -> dict[str, Any]:
    return json.loads((resources.files("flowgauge") / "schema" / name).read_text())


STATUS_SCHEMA = _schema("status.v1.json")
PAYLOAD_SCHEMA = _schema("payload.v1.json")


def _flag_literals(module: object) -> set[str]:
    """String constants passed to `.add(...)` on a flag set (`flags`, `_open_flags`, `extra`) in `module`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):  # type: ignore[arg-type]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add"):
            continue
        receiver = ast.unparse(node.func.value)
        if "flag" not in receiver and receiver != "extra":
            continue
        for arg in node.args:
            found |= {c.value for c in ast.walk(arg) if isinstance(c, ast.Constant) and isinstance(c.value, str)}
    return found


def emittable_quality_flags() -> set[str]:
    """Every quality flag the code can put in a payload."""
    flags = set(QUALITY_FLAGS) | _flag_literals(accumulator) | _flag_literals(engine_module)
    # An invalid book's payload carries its InvalidReason as a flag (Engine._publish).
    return flags | {reason.value for reason in InvalidReason}


class Sink:
    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, orjson.loads(payload)))

    def last(self, status: bool) -> dict[str, Any]:
        return next(p for t, p in reversed(self.messages) if (".status." in t) == status)


def _valid_engine() -> tuple[Engine, Sink]:
    sink = Sink()
    engine = Engine(sink, clock=lambda: 7 * S)
    engine.add_instrument(linear_instrument())
    engine.handle(BookSnapshot("bybit", SYM, ((100.0, 5.0),), ((100.1, 3.0),), 10, 1 * S, 1 * S))
    return engine, sink


def test_the_flag_scan_finds_the_flags_it_should() -> None:
    # Guards the AST scan itself: if it silently found nothing, the tests below would prove little.
    assert {"WARMUP", "EMPTY_SIDE", "PARTIAL_WINDOW", "GAP", "RESET"} <= _flag_literals(accumulator)
    assert "SAMPLED_INPUT" in _flag_literals(engine_module)


def test_status_schema_reason_enum_is_exactly_the_code_vocabulary() -> None:
    # A new InvalidReason without a schema update (how CHECKSUM and OVERFLOW slipped) fails here; a retired book's
    # reason is a RetireReason.
    reasons = {None} | {r.value for r in InvalidReason} | {r.value for r in RetireReason}
    assert set(STATUS_SCHEMA["properties"]["reason"]["enum"]) == reasons


@pytest.mark.parametrize("reason", list(RetireReason), ids=str)
def test_the_final_status_of_a_retired_book_validates(reason: RetireReason) -> None:
    engine, sink = _valid_engine()
    engine.retire("bybit", SYM, reason, f"test: {reason}")
    status = sink.last(status=True)
    assert (status["state"], status["reason"]) == ("RETIRED", reason.value)
    jsonschema.validate(status, STATUS_SCHEMA)


@pytest.mark.parametrize("reason", list(InvalidReason), ids=str)
def test_status_payload_for_every_reason_validates(reason: InvalidReason) -> None:
    engine, sink = _valid_engine()
    jsonschema.validate(sink.last(status=True), STATUS_SCHEMA)  # the VALID status, reason null
    engine.invalidate("bybit", [SYM], reason, f"test: {reason}")
    status = sink.last(status=True)
    assert (status["state"], status["reason"]) == ("INVALID", reason.value)
    jsonschema.validate(status, STATUS_SCHEMA)


def test_checksum_status_from_a_bad_frame_validates() -> None:
    # The path the OKX parser takes: a frame whose checksum disagrees invalidates the book with CHECKSUM.
    engine, sink = _valid_engine()
    bad = BadFrame("bybit", "checksum mismatch", SYM, True, 2 * S, InvalidReason.CHECKSUM)
    assert engine.handle(bad) == SYM
    status = sink.last(status=True)
    assert status["reason"] == "CHECKSUM"
    jsonschema.validate(status, STATUS_SCHEMA)


@pytest.mark.parametrize("reason", list(InvalidReason), ids=str)
def test_payload_of_an_invalid_book_validates(reason: InvalidReason) -> None:
    engine, sink = _valid_engine()
    engine.invalidate("bybit", [SYM], reason, "test")
    engine.handle(OpenInterest("bybit", SYM, 5.0, 3 * S, 3 * S))
    payload = sink.last(status=False)
    assert reason.value in payload["quality"]
    jsonschema.validate(payload, PAYLOAD_SCHEMA)


@pytest.mark.parametrize("flag", sorted(emittable_quality_flags()))
def test_payload_schema_accepts_every_quality_flag(flag: str) -> None:
    _, sink = _valid_engine()
    payload = sink.last(status=False)
    jsonschema.validate(payload, PAYLOAD_SCHEMA)
    payload["quality"] = [flag]
    jsonschema.validate(payload, PAYLOAD_SCHEMA)
