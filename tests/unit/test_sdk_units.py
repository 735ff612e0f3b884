"""The SDK's pure parts: pattern planning per transport, typed payloads against the JSON Schemas, messages."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import typing
from typing import Any

import msgspec
import orjson
import pytest

import flowgauge
from flowgauge.publish.topics import RESERVED_VENUES, TopicPattern, book_topic
from flowgauge.sdk.message import Message
from flowgauge.sdk.patterns import RedisGlobs, disjoint_cover, flowgauge_only, heartbeat_patterns, instrument_key
from flowgauge.sdk.payloads import (
    AggregatePayload,
    BarPayload,
    MetricsPayload,
    StatusPayload,
    TradePayload,
    decode,
)

TOPICS = [
    "flowgauge.v1.bybit.BTC-USDT-USDT", "flowgauge.v1.bybit.ETH-USDT-USDT", "flowgauge.v1.okx.BTC-USDT-USDT",
    "flowgauge.v1.status.bybit.BTC-USDT-USDT", "flowgauge.v1.status.okx.ETH-USDT-USDT",
    "flowgauge.v1.trades.bybit.BTC-USDT-USDT", "flowgauge.v1.agg.BTC", "flowgauge.v2.bybit.BTC-USDT-USDT",
    "other.subject",
]
PATTERN_SETS = [
    ["flowgauge.v1.bybit.>", "flowgauge.v1.*.BTC-USDT-USDT"],
    ["flowgauge.v1.bybit.*", "flowgauge.v1.bybit.BTC-USDT-USDT"],
    ["flowgauge.v1.>", "flowgauge.v1.status.*.*", "flowgauge.>"],
    ["flowgauge.v1.*.*", "flowgauge.v1.status.*.*", "flowgauge.v1.trades.bybit.*"],
    ["flowgauge.v1.status.bybit.*", "flowgauge.v1.bybit.*"],
    ["flowgauge.v1.agg.BTC", "flowgauge.*.bybit.*"],
    [">"],
]


@pytest.mark.parametrize("patterns", PATTERN_SETS)
def test_disjoint_cover_covers_everything_once(patterns: list[str]) -> None:
    cover = [TopicPattern(p) for p in disjoint_cover(patterns)]
    for topic in TOPICS:
        wanted = any(TopicPattern(p).matches(topic) for p in patterns)
        hits = sum(c.matches(topic) for c in cover)
        assert hits <= 1, (topic, cover)  # disjoint: one broker copy at most
        if wanted:
            assert hits == 1, (topic, cover)


def test_disjoint_cover_keeps_disjoint_patterns_apart() -> None:
    assert disjoint_cover(["flowgauge.v1.bybit.*", "flowgauge.v1.okx.*"]) == ["flowgauge.v1.bybit.*",
                                                                              "flowgauge.v1.okx.*"]
    assert disjoint_cover(["flowgauge.v1.bybit.*", "flowgauge.v1.*.ETH-USDT-USDT"]) == ["flowgauge.v1.*.*"]


@pytest.mark.parametrize("patterns", PATTERN_SETS)
def test_redis_globs_deliver_one_copy_of_everything_wanted(patterns: list[str]) -> None:
    globs = RedisGlobs(patterns)
    for topic in TOPICS:
        if any(TopicPattern(p).matches(topic) for p in patterns):
            assert globs.owner(topic) in globs.globs, topic


def test_redis_glob_escapes_glob_characters_in_literal_tokens() -> None:
    globs = RedisGlobs(["flowgauge.v1.bybit.A[B]?C"])
    assert globs.globs == ["flowgauge.v1.bybit.A\\[B\\]\\?C"]
    assert globs.owner("flowgauge.v1.bybit.A[B]?C") is not None
    assert globs.owner("flowgauge.v1.bybit.AXC") is None


# Property check of the pattern planning: random pattern sets over a small token alphabet (literal tokens with
# Redis glob characters in them too), every topic of up to five tokens from that alphabet. Topics one token
# longer than the longest pattern are enough to witness any overlap or any miss of `>`.
_PROP_LITERALS = ("a", "[b]?", "c\\")
_PROP_TOPICS = [".".join(t) for n in range(1, 6) for t in itertools.product(_PROP_LITERALS, repeat=n)]


def _redis_glob_match(glob: str, text: str) -> bool:
    """Redis's own glob rules (`*` any run, `?` one character, `\\x` a literal x), written independently of
    the SDK's regex translation; an unescaped `[` never appears in a glob the SDK makes."""
    def match(g: int, t: int) -> bool:
        while g < len(glob):
            ch = glob[g]
            if ch == "*":
                return any(match(g + 1, k) for k in range(t, len(text) + 1))
            assert ch != "[", f"unescaped [ in {glob!r}"
            if ch == "?":
                if t >= len(text):
                    return False
            else:
                if ch == "\\" and g + 1 < len(glob):
                    g += 1
                    ch = glob[g]
                if t >= len(text) or text[t] != ch:
                    return False
            g += 1
            t += 1
        return t == len(text)

    return match(0, 0)


def _random_pattern(rng: random.Random) -> str:
    tokens = [rng.choice((*_PROP_LITERALS, "*", "*")) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.4:
        tokens[-1] = ">"
    return ".".join(tokens)


def test_pattern_planning_property_over_random_pattern_sets() -> None:
    rng = random.Random(20261204)
    for _ in range(150):
        patterns = [_random_pattern(rng) for _ in range(rng.randint(1, 4))]
        wanted = [TopicPattern(p) for p in patterns]
        cover = [TopicPattern(p) for p in disjoint_cover(patterns)]
        redis = RedisGlobs(patterns)
        for topic in _PROP_TOPICS:
            hits = [c.pattern for c in cover if c.matches(topic)]
            assert len(hits) <= 1, (patterns, hits, topic)  # pairwise disjoint: one broker copy at most
            if not any(w.matches(topic) for w in wanted):
                continue
            assert len(hits) == 1, (patterns, topic)  # covered
            owner = redis.owner(topic)
            # Redis delivers the channel under the glob whose copy is kept, and that glob is a superset.
            assert owner is not None and _redis_glob_match(owner, topic), (patterns, redis.globs, topic, owner)
        for pattern in cover:  # each cover pattern's glob matches (at least) every topic the pattern matches
            glob = RedisGlobs([pattern.pattern]).globs[0]
            for topic in _PROP_TOPICS:
                if pattern.matches(topic):
                    assert _redis_glob_match(glob, topic), (pattern, glob, topic)


def test_heartbeat_patterns_name_the_status_topics_of_book_patterns() -> None:
    assert heartbeat_patterns(["flowgauge.v1.bybit.>"]) == ["flowgauge.v1.status.bybit.>"]
    assert heartbeat_patterns(["flowgauge.v1.*.BTC-USDT-USDT"]) == ["flowgauge.v1.status.*.BTC-USDT-USDT"]
    assert heartbeat_patterns(["flowgauge.v1.>", "flowgauge.v1.status.*.*", "flowgauge.v1.agg.BTC"]) == []
    # Wildcards in the first two tokens still name v1 books: their heartbeats are listened to as well.
    assert heartbeat_patterns(["flowgauge.*.bybit.*", "*.v1.*.ETH-USDT-USDT", "*.*.*.*"]) == [
        "flowgauge.v1.status.bybit.*", "flowgauge.v1.status.*.ETH-USDT-USDT", "flowgauge.v1.status.*.*"]
    assert heartbeat_patterns(["other.v1.bybit.*", "flowgauge.v2.bybit.*", "flowgauge.*.>"]) == []


def test_instrument_key_of_each_family() -> None:
    assert instrument_key("flowgauge.v1.bybit.BTC-USDT-USDT") == ("bybit", "BTC-USDT-USDT")
    assert instrument_key("flowgauge.v1.status.bybit.BTC-USDT-USDT") == ("bybit", "BTC-USDT-USDT")
    assert instrument_key("flowgauge.v1.trades.bybit.BTC-USDT-USDT") == ("bybit", "BTC-USDT-USDT")
    assert instrument_key("flowgauge.v1.bars.bybit.BTC-USDT-USDT") == ("bybit", "BTC-USDT-USDT")
    assert instrument_key("flowgauge.v1.agg.BTC") is None


@pytest.mark.parametrize("venue", sorted(RESERVED_VENUES))
def test_reserved_families_can_never_be_venue_ids(venue: str) -> None:
    assert {"status", "agg", "trades", "bars"} <= RESERVED_VENUES
    with pytest.raises(ValueError, match="reserved"):
        book_topic(venue, "BTC/USDT:USDT")


# ------------------------------------------------------------------------------------------- typed payloads


def _schema_types(spec: dict[str, Any]) -> tuple[set[str], bool]:
    """(JSON types, nullable) a schema property allows."""
    if "const" in spec:
        return {type(spec["const"]).__name__}, False
    if "enum" in spec:
        values = spec["enum"]
        return {type(v).__name__ for v in values if v is not None}, None in values
    types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    return {t for t in types if t != "null"}, "null" in types


_PY_FOR_JSON = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "array": "list",
                "object": "dict"}


def _struct_types(annotation: Any) -> tuple[set[str], bool]:
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, type(int | None)) \
        else (annotation,)
    names: set[str] = set()
    nullable = False
    for arg in args:
        if arg is type(None):
            nullable = True
        elif typing.get_origin(arg) is typing.Literal:
            names |= {type(v).__name__ for v in typing.get_args(arg)}
        elif typing.get_origin(arg) in (list, dict):
            names.add(typing.get_origin(arg).__name__)
        else:
            names.add(arg.__name__)
    return names, nullable


@pytest.mark.parametrize(("name", "struct"), [("payload", MetricsPayload), ("status", StatusPayload),
                                              ("trade", TradePayload), ("agg", AggregatePayload),
                                              ("bars", BarPayload)])
def test_typed_payloads_match_the_json_schema(name: str, struct: type[msgspec.Struct]) -> None:
    schema = json.loads(flowgauge.schema_path(name).read_text())
    hints = typing.get_type_hints(struct, include_extras=False)
    assert set(hints) == set(schema["properties"]), set(hints) ^ set(schema["properties"])
    for field, spec in schema["properties"].items():
        json_types, json_null = _schema_types(spec)
        py_types, py_null = _struct_types(hints[field])
        assert {_PY_FOR_JSON.get(t, t) for t in json_types} == py_types, field
        assert json_null == py_null, field


def test_decode_picks_the_struct_by_topic_and_ignores_unknown_fields() -> None:
    status = {"schema": "flowgauge.v1", "venue": "bybit", "symbol": "BTC/USDT:USDT", "instrument": "BTCUSDT",
              "state": "VALID", "reason": None, "detail": "", "resyncs": 0, "heartbeat": True,
              "ts_last_update": 5, "ts_exchange": 1, "ts_recv": 2, "ts_publish": 3, "added_in_v1_9": {"x": 1}}
    typed = decode("flowgauge.v1.status.bybit.BTC-USDT-USDT", orjson.dumps(status))
    assert isinstance(typed, StatusPayload) and typed.heartbeat and typed.ts_last_update == 5
    with pytest.raises(ValueError, match="no typed payload"):
        decode("flowgauge.v1.status.BTC", b"{}")
    with pytest.raises(msgspec.ValidationError):
        decode("flowgauge.v1.bybit.BTC-USDT-USDT", orjson.dumps({"schema": "flowgauge.v1"}))


def test_message_converts_lazily_between_bytes_and_dict() -> None:
    from_bytes = Message("t", data=b'{"a":1,"ts_publish":1}')
    assert from_bytes.payload == {"a": 1, "ts_publish": 1} and from_bytes.age_s is not None
    from_dict = Message("t", payload={"a": 1}, snapshot=True)
    assert orjson.loads(from_dict.data) == {"a": 1} and from_dict.age_s is None and from_dict.snapshot
    with pytest.raises(ValueError, match="needs"):
        Message("t")


# Topics of up to five tokens over the prefix's own tokens, another version and a literal: enough to tell whether
# a narrowed pattern matches exactly the flowgauge topics (under `flowgauge.v1.`) its original matches.
_ROOT_LITERALS = ("flowgauge", "v1", "v2", "a")
_ROOT_TOPICS = [".".join(t) for n in range(1, 6) for t in itertools.product(_ROOT_LITERALS, repeat=n)]


def test_flowgauge_only_keeps_exactly_the_flowgauge_topics_a_pattern_matches() -> None:
    assert flowgauge_only([">", "*.>", "flowgauge.>", "flowgauge.*.>"]) == ["flowgauge.v1.>"]
    assert flowgauge_only(["*.*.bybit.*", "flowgauge.v1.status.>"]) == ["flowgauge.v1.bybit.*",
                                                                        "flowgauge.v1.status.>"]
    rng = random.Random(20260301)
    patterns = {".".join(rng.choice((*_ROOT_LITERALS, "*", "*")) for _ in range(rng.randint(1, 4)))
                for _ in range(300)}
    patterns |= {p.rsplit(".", 1)[0] + ".>" if "." in p else ">" for p in patterns}
    for pattern in sorted(patterns):
        original = TopicPattern(pattern)
        flowgauge_topics = [t for t in _ROOT_TOPICS if t.startswith("flowgauge.v1.") and original.matches(t)]
        if not flowgauge_topics:
            with pytest.raises(ValueError, match="matches no flowgauge topic"):
                flowgauge_only([pattern])
            continue
        narrowed = [TopicPattern(p) for p in flowgauge_only([pattern])]
        assert [t for t in _ROOT_TOPICS if any(n.matches(t) for n in narrowed)] == flowgauge_topics, pattern


# ------------------------------------------------------------------------------------------- arguments


def test_subscribe_refuses_bad_arguments_with_one_line() -> None:
    with pytest.raises(flowgauge.InvalidBusURL, match="unknown bus URL scheme"):
        flowgauge.subscribe("http://127.0.0.1:9464", "flowgauge.v1.>")
    with pytest.raises(ValueError, match="at least one pattern"):
        flowgauge.subscribe("nats://127.0.0.1:4222")
    with pytest.raises(ValueError, match="only allowed as the last token"):
        flowgauge.subscribe("redis://127.0.0.1:6379", "flowgauge.>.x")
    for pattern in ("*", "other.>", "flowgauge.v2.>", "flowgauge.v1"):  # can match no flowgauge topic
        with pytest.raises(ValueError, match="matches no flowgauge topic"):
            flowgauge.subscribe("nats://127.0.0.1:4222", "flowgauge.v1.bybit.>", pattern)


def test_import_flowgauge_subscribe_is_lazy() -> None:
    code = ("import sys, flowgauge; assert 'flowgauge.sdk' not in sys.modules; flowgauge.subscribe; "
            "assert 'flowgauge.sdk' in sys.modules; "
            "assert 'nats' not in sys.modules and 'redis' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
