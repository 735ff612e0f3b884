"""Topic naming and NATS-style topic patterns: the only module that builds topic strings.

Sits at the bottom of `flowgauge.publish`: the engine asks it for the topic of an instrument, every publisher
(embedded bus, NATS, Redis) and the subscriber client use the same strings, and subscribers match them with
`TopicPattern`. Pure string code: must not import asyncio, sockets or prometheus_client, and no other module
may format a `flowgauge.v1...` string by hand.

Grammar (DESIGN.md "Topics and payloads"):

    flowgauge.v1.<venue>.<slug>            per-instrument metric payloads
    flowgauge.v1.status.<venue>.<slug>     per-instrument book status changes
    flowgauge.v1.trades.<venue>.<slug>     per-instrument trades and liquidations (publish.trades)
    flowgauge.v1.bars.<venue>.<slug>       per-instrument closed clock bars (publish.bars)
    flowgauge.v1.agg.<base>                cross-venue aggregates

A topic is a sequence of non-empty tokens separated by `.`. A pattern is a topic in which a token may be `*`
(exactly one token) or, as the last token only, `>` (one or more remaining tokens), as in NATS subjects.
"""

from __future__ import annotations

import functools
import re

__all__ = [
    "PREFIX",
    "RESERVED_VENUES",
    "TRADES_ROOT",
    "TopicPattern",
    "agg_topic",
    "bars_topic",
    "book_topic",
    "is_trades_topic",
    "matches",
    "slug",
    "status_topic",
    "trades_topic",
    "venue_pattern",
]

PREFIX = "flowgauge.v1"
"""Root of every topic; the version token changes only with an incompatible payload schema."""

# Third tokens with a meaning of their own: a venue with one of these ids would make its book topics
# indistinguishable from the status / aggregate / trade / bar families under wildcard patterns, and the SDK
# tells a topic's family by this token.
RESERVED_VENUES = frozenset({"status", "agg", "trades", "bars"})

# Characters that cannot appear inside a token: the separator, the wildcards, and whitespace (NATS forbids
# whitespace in subjects, and Redis patterns would treat `*` specially).
_BAD_TOKEN_CHARS = re.compile(r"[.*>\s]")

# Bounded memo for topic builders: the engine calls them per published event, the argument set is the
# configured instruments (tens to hundreds), so a small LRU turns the string work into one dict hit.
_TOPIC_CACHE_SIZE = 4096


def _check_token(value: str, what: str) -> str:
    if not value:
        raise ValueError(f"{what} must not be empty")
    bad = _BAD_TOKEN_CHARS.search(value)
    if bad is not None:
        raise ValueError(f"{what} {value!r} contains {bad.group()!r}, which is not allowed in a topic token")
    return value


def slug(symbol: str) -> str:
    """Topic-safe form of a ccxt unified symbol.

    Args:
        symbol: unified symbol, e.g. `BTC/USDT:USDT` or `BTC/USD:BTC-250328`.

    Returns:
        The symbol with `/` and `:` replaced by `-`, e.g. `BTC-USDT-USDT` (same rule as `Instrument.slug`).

    Raises:
        ValueError: if the symbol is empty or contains `.`, `*`, `>` or whitespace.
    """
    return _check_token(symbol.replace("/", "-").replace(":", "-"), "symbol")


def _check_venue(venue: str) -> str:
    _check_token(venue, "venue")
    if venue in RESERVED_VENUES:
        raise ValueError(f"venue id {venue!r} is reserved in the topic grammar")
    return venue


@functools.lru_cache(maxsize=_TOPIC_CACHE_SIZE)
def book_topic(venue: str, symbol: str) -> str:
    """Topic of one instrument's metric payloads: `flowgauge.v1.<venue>.<slug>`.

    Raises:
        ValueError: on a venue or symbol that cannot form a token, or a reserved venue id.
    """
    return f"{PREFIX}.{_check_venue(venue)}.{slug(symbol)}"


@functools.lru_cache(maxsize=_TOPIC_CACHE_SIZE)
def status_topic(venue: str, symbol: str) -> str:
    """Topic of one instrument's book status changes: `flowgauge.v1.status.<venue>.<slug>`.

    Raises:
        ValueError: on a venue or symbol that cannot form a token, or a reserved venue id.
    """
    return f"{PREFIX}.status.{_check_venue(venue)}.{slug(symbol)}"


TRADES_ROOT = f"{PREFIX}.trades."
"""Start of every trades topic: publishers that keep current values (the embedded bus's latest-value cache, the
Redis last-value keys) skip topics starting with it, since a last trade is an event, not a state."""


@functools.lru_cache(maxsize=_TOPIC_CACHE_SIZE)
def trades_topic(venue: str, symbol: str) -> str:
    """Topic of one instrument's trades and liquidations: `flowgauge.v1.trades.<venue>.<slug>`.

    Five tokens, so book patterns such as `flowgauge.v1.*.*` never match it (NATS `*` is one token).

    Raises:
        ValueError: on a venue or symbol that cannot form a token, or a reserved venue id.
    """
    return f"{TRADES_ROOT}{_check_venue(venue)}.{slug(symbol)}"


def is_trades_topic(topic: str) -> bool:
    """True for a `flowgauge.v1.trades.<venue>.<slug>` topic (events, never a current value)."""
    return topic.startswith(TRADES_ROOT)


@functools.lru_cache(maxsize=_TOPIC_CACHE_SIZE)
def bars_topic(venue: str, symbol: str) -> str:
    """Topic of one instrument's closed clock bars: `flowgauge.v1.bars.<venue>.<slug>`.

    Five tokens, like the trades topics, so book patterns such as `flowgauge.v1.*.*` never match it. A bar is a
    closed summary (its latest one is a fair current value), so last-value caches keep it.

    Raises:
        ValueError: on a venue or symbol that cannot form a token, or a reserved venue id.
    """
    return f"{PREFIX}.bars.{_check_venue(venue)}.{slug(symbol)}"


@functools.lru_cache(maxsize=_TOPIC_CACHE_SIZE)
def agg_topic(base: str) -> str:
    """Topic of cross-venue aggregates for one base asset: `flowgauge.v1.agg.<base>`.

    Raises:
        ValueError: if `base` cannot form a token.
    """
    return f"{PREFIX}.agg.{_check_token(base, 'base asset')}"


def venue_pattern(venue: str) -> str:
    """Pattern matching every instrument topic of one venue: `flowgauge.v1.<venue>.*`."""
    return f"{PREFIX}.{_check_venue(venue)}.*"


class TopicPattern:
    """A validated, precompiled NATS-style pattern over `.`-separated tokens.

    `*` matches exactly one token; `>` may only be the last token and matches one or more tokens. Any other
    token matches itself literally. A pattern without wildcards is compared by string equality.

    Args:
        pattern: the pattern text, e.g. `flowgauge.v1.bybit.>` or `flowgauge.v1.*.BTC-USDT-USDT`.

    Raises:
        ValueError: on an empty pattern, an empty token (`a..b`, leading or trailing `.`), `>` anywhere but
            last, a wildcard mixed with other characters in one token (`ab*`), or whitespace.
    """

    __slots__ = ("_literal", "_regex", "pattern")

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a str, not {type(pattern).__name__}")
        if not pattern:
            raise ValueError("pattern must not be empty")
        tokens = pattern.split(".")
        parts: list[str] = []
        for i, token in enumerate(tokens):
            if not token:
                raise ValueError(f"pattern {pattern!r} has an empty token at position {i}")
            if token == ">":
                if i != len(tokens) - 1:
                    raise ValueError(f"pattern {pattern!r}: '>' is only allowed as the last token")
                # One or more further tokens, each non-empty.
                parts.append(r"[^.]+(?:\.[^.]+)*")
            elif token == "*":
                parts.append(r"[^.]+")
            else:
                bad = _BAD_TOKEN_CHARS.search(token)
                if bad is not None:
                    raise ValueError(
                        f"pattern {pattern!r}: token {token!r} contains {bad.group()!r}; "
                        "wildcards must be a whole token and whitespace is not allowed"
                    )
                parts.append(re.escape(token))
        self.pattern = pattern
        wild = "*" in tokens or ">" in tokens
        self._literal: str | None = None if wild else pattern
        self._regex: re.Pattern[str] | None = re.compile(r"\.".join(parts)) if wild else None

    @property
    def is_literal(self) -> bool:
        """True if the pattern has no wildcard and matches exactly one topic."""
        return self._literal is not None

    def matches(self, topic: str) -> bool:
        """Return True if `topic` is matched by this pattern."""
        if self._literal is not None:
            return topic == self._literal
        assert self._regex is not None
        return self._regex.fullmatch(topic) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TopicPattern) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"TopicPattern({self.pattern!r})"

    def __str__(self) -> str:
        return self.pattern


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> TopicPattern:
    return TopicPattern(pattern)


def matches(pattern: str | TopicPattern, topic: str) -> bool:
    """Return True if `topic` is matched by `pattern` (NATS semantics, see `TopicPattern`).

    Raises:
        ValueError: if `pattern` is a string that is not a valid pattern.
    """
    compiled = pattern if isinstance(pattern, TopicPattern) else _compiled(pattern)
    return compiled.matches(topic)
