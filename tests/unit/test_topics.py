"""Topic grammar, NATS-style pattern matching, and the payload codec (flowgauge.publish.topics / codec)."""

from __future__ import annotations

import pytest

from flowgauge.publish import codec
from flowgauge.publish.topics import (
    TopicPattern,
    agg_topic,
    book_topic,
    matches,
    slug,
    status_topic,
    venue_pattern,
)

# ------------------------------------------------------------------------------------------------ builders


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("BTC/USDT:USDT", "BTC-USDT-USDT"),
        ("BTC/USD:BTC", "BTC-USD-BTC"),
        ("BTC/USDT:USDT-250328", "BTC-USDT-USDT-250328"),
        ("1000PEPE/USDT:USDT", "1000PEPE-USDT-USDT"),
    ],
)
def test_slug_replaces_separators(symbol: str, expected: str) -> None:
    assert slug(symbol) == expected


@pytest.mark.parametrize("symbol", ["", "BTC.X/USDT", "BTC/USDT *", "A>B", "BTC /USDT"])
def test_slug_rejects_symbols_that_cannot_be_a_token(symbol: str) -> None:
    with pytest.raises(ValueError, match="symbol"):
        slug(symbol)


def test_book_and_status_topics() -> None:
    assert book_topic("bybit", "BTC/USDT:USDT") == "flowgauge.v1.bybit.BTC-USDT-USDT"
    assert status_topic("bybit", "BTC/USDT:USDT") == "flowgauge.v1.status.bybit.BTC-USDT-USDT"
    assert agg_topic("BTC") == "flowgauge.v1.agg.BTC"
    assert venue_pattern("okx") == "flowgauge.v1.okx.*"


@pytest.mark.parametrize("venue", ["status", "agg"])
def test_reserved_venue_ids_are_rejected(venue: str) -> None:
    # A venue called "agg" would make its book topics collide with the aggregate family.
    with pytest.raises(ValueError, match="reserved"):
        book_topic(venue, "BTC/USDT:USDT")
    with pytest.raises(ValueError, match="reserved"):
        status_topic(venue, "BTC/USDT:USDT")


@pytest.mark.parametrize("venue", ["", "by.bit", "by bit", "*"])
def test_bad_venue_is_rejected(venue: str) -> None:
    with pytest.raises(ValueError, match="venue"):
        book_topic(venue, "BTC/USDT:USDT")


# ---------------------------------------------------------------------------------------------- matching

BOOK = "flowgauge.v1.bybit.BTC-USDT-USDT"
STATUS = "flowgauge.v1.status.bybit.BTC-USDT-USDT"

MATCH_TABLE = [
    # pattern, topic, expected
    (BOOK, BOOK, True),
    (BOOK, "flowgauge.v1.bybit.ETH-USDT-USDT", False),
    ("flowgauge.v1.bybit.>", BOOK, True),
    ("flowgauge.v1.bybit.>", "flowgauge.v1.bybit", False),  # '>' needs at least one token
    ("flowgauge.v1.bybit.>", "flowgauge.v1.binance.BTC-USDT-USDT", False),
    ("flowgauge.v1.bybit.>", STATUS, False),
    ("flowgauge.v1.>", BOOK, True),
    ("flowgauge.v1.>", STATUS, True),
    (">", BOOK, True),
    (">", "a", True),
    ("flowgauge.v1.*.BTC-USDT-USDT", BOOK, True),
    ("flowgauge.v1.*.BTC-USDT-USDT", "flowgauge.v1.okx.BTC-USDT-USDT", True),
    ("flowgauge.v1.*.BTC-USDT-USDT", STATUS, False),  # '*' is exactly one token
    ("flowgauge.v1.*", BOOK, False),
    ("flowgauge.v1.*.*", BOOK, True),
    ("flowgauge.v1.status.*.*", STATUS, True),
    ("flowgauge.v1.status.*.*", BOOK, False),
    ("flowgauge.*.bybit.>", BOOK, True),
    ("*.*.*.*", BOOK, True),
    ("*.*.*", BOOK, False),
    ("flowgauge.v1.bybit.BTC", BOOK, False),  # literal tokens are whole tokens, not prefixes
    ("flowgauge.v1.bybit.*", "flowgauge.v1.bybit..x", False),
    ("flowgauge.v1.bybit.BTC-USDT-USDT", "flowgauge_v1_bybit_BTC-USDT-USDT", False),  # '.' is not a regex dot
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCH_TABLE)
def test_pattern_matching_table(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected
    assert TopicPattern(pattern).matches(topic) is expected
    assert matches(TopicPattern(pattern), topic) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty"),
        ("flowgauge..bybit", "empty token"),
        (".flowgauge", "empty token"),
        ("flowgauge.", "empty token"),
        ("flowgauge.>.bybit", "last token"),
        (">.x", "last token"),
        ("flowgauge.v1.by*", "wildcards must be a whole token"),
        ("flowgauge.v1.>x", "wildcards must be a whole token"),
        ("flowgauge.v1 .bybit", "whitespace"),
    ],
)
def test_invalid_patterns_raise_with_a_clear_message(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TopicPattern(pattern)
    with pytest.raises(ValueError, match=message):
        matches(pattern, BOOK)


def test_pattern_identity_and_literal_flag() -> None:
    assert TopicPattern(BOOK).is_literal
    assert not TopicPattern("flowgauge.v1.*.x").is_literal
    assert TopicPattern("a.>") == TopicPattern("a.>")
    assert len({TopicPattern("a.>"), TopicPattern("a.>"), TopicPattern("a.*")}) == 2
    assert str(TopicPattern("a.>")) == "a.>"


def test_every_built_topic_is_matched_by_its_own_literal_and_family_patterns() -> None:
    for venue in ("bybit", "binanceusdm", "okx"):
        for symbol in ("BTC/USDT:USDT", "ETH/USD:ETH"):
            book = book_topic(venue, symbol)
            status = status_topic(venue, symbol)
            assert matches(book, book)
            assert matches(venue_pattern(venue), book)
            assert not matches(venue_pattern(venue), status)
            assert matches(f"flowgauge.v1.status.{venue}.>", status)


# ------------------------------------------------------------------------------------------------- codec


def test_encode_is_compact_json_and_nan_becomes_null() -> None:
    assert codec.encode({"a": 1, "b": None, "c": float("nan"), "d": "x"}) == (
        b'{"a":1,"b":null,"c":null,"d":"x"}'
    )


def test_frame_splices_payload_bytes_and_round_trips() -> None:
    payload = codec.encode({"venue": "bybit", "mid": 65000.5, "depth_imb_5": -0.25})
    framed = codec.frame(BOOK, payload)
    # The payload bytes appear verbatim: no decode / re-encode happened.
    assert payload in framed
    assert framed == b'{"topic":"' + BOOK.encode() + b'","payload":' + payload + b"}"
    topic, decoded = codec.decode_frame(framed)
    assert topic == BOOK
    assert decoded == {"venue": "bybit", "mid": 65000.5, "depth_imb_5": -0.25}
    assert codec.decode_frame(framed.decode()) == (topic, decoded)


def test_frame_escapes_the_topic() -> None:
    topic, payload = codec.decode_frame(codec.frame('we"ird\\topic', b"{}"))
    assert topic == 'we"ird\\topic'
    assert payload == {}


@pytest.mark.parametrize(
    "data",
    [b"not json", b"[1,2]", b'{"topic":1,"payload":{}}', b'{"topic":"t","payload":[1]}', b'{"payload":{}}'],
)
def test_decode_frame_rejects_non_frames(data: bytes) -> None:
    with pytest.raises(ValueError):
        codec.decode_frame(data)
