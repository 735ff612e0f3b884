"""Which subscriptions a set of NATS-style patterns needs on each transport, and which topics they deliver.

Brokers deliver one copy of a message per matching subscription, so two overlapping patterns
(`flowgauge.v1.bybit.*` and `flowgauge.v1.*.BTC-USDT-USDT`) would deliver the Bybit BTC book twice. The SDK
subscribes to a set of pairwise disjoint patterns that covers what the caller asked for (merging overlapping
ones into the narrowest pattern covering both) and filters client-side with the caller's own patterns.

Redis globs let `*` cross dots, so each NATS pattern becomes a glob that matches a superset of its topics
(`*` and `>` both become `*`); the client-side filter restores NATS semantics, and `RedisGlobs.owner` tells
which of several overlapping globs delivers a channel so that only one copy is kept.

Every pattern is first narrowed to the flowgauge topics it matches (`flowgauge_only`): brokers are shared, and
`>` on a NATS server or `*` on a Redis server would otherwise bring in other applications' traffic and, on
NATS, the SDK's own JetStream API requests and their replies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from flowgauge.publish.topics import PREFIX, RESERVED_VENUES, TopicPattern

__all__ = ["RedisGlobs", "disjoint_cover", "flowgauge_only", "heartbeat_patterns", "instrument_key", "validate"]

_STATUS = "status"


def validate(patterns: Sequence[str]) -> list[TopicPattern]:
    """Compile the caller's patterns. Raises ValueError naming the first bad one, or when there are none."""
    if not patterns:
        raise ValueError("subscribe needs at least one pattern, e.g. 'flowgauge.v1.bybit.>'")
    return [TopicPattern(p) for p in patterns]


def flowgauge_only(patterns: Iterable[str]) -> list[str]:
    """Each pattern narrowed to the flowgauge topics (`flowgauge.v1.` and at least one more token) it matches.

    A narrowed pattern matches exactly the topics under `flowgauge.v1.` that the original matches, so filtering
    with it keeps NATS semantics: `>`, `*.>` and `flowgauge.>` become `flowgauge.v1.>`, `*.*.bybit.*` becomes
    `flowgauge.v1.bybit.*`. Valid patterns only (see `validate`).

    Raises:
        ValueError: naming the first pattern that matches no flowgauge topic (`*`, `other.>`, `flowgauge.v2.>`).
    """
    root = PREFIX.split(".")
    narrowed: list[str] = []
    for pattern in patterns:
        tokens = pattern.split(".")
        for i, want in enumerate(root):
            if i < len(tokens) and tokens[i] == ">":
                tokens = [*root, ">"]  # `>` here takes the rest of the prefix and every topic under it
                break
            if i >= len(tokens) or tokens[i] not in (want, "*"):
                tokens = []
                break
        else:
            tokens = [*root, *tokens[len(root):]] if len(tokens) > len(root) else []
        if not tokens:
            raise ValueError(f"pattern {pattern!r} matches no flowgauge topic (they all start with '{PREFIX}.')")
        narrowed.append(".".join(tokens))
    return list(dict.fromkeys(narrowed))


def heartbeat_patterns(patterns: Iterable[str]) -> list[str]:
    """The status topics whose heartbeats vouch for the book topics `patterns` match.

    `flowgauge.v1.<venue>.<slug>` is kept alive by `flowgauge.v1.status.<venue>.<slug>`; a pattern over book
    topics (four tokens, third not a reserved family) gets its status counterpart. Patterns that already
    cover status topics (`flowgauge.v1.>`) need none.
    """
    extra: list[str] = []
    root = PREFIX.split(".")
    for pattern in patterns:
        tokens = pattern.split(".")
        # `flowgauge.*.bybit.*` names Bybit's v1 books as much as `flowgauge.v1.bybit.*` does.
        prefix_ok = all(token in (want, "*") for token, want in zip(tokens[:2], root, strict=False))
        if len(tokens) == 4 and prefix_ok and tokens[2] not in RESERVED_VENUES and tokens[2] != ">":
            extra.append(f"{PREFIX}.{_STATUS}.{tokens[2]}.{tokens[3]}")
    return extra


def instrument_key(topic: str) -> tuple[str, str] | None:
    """(venue, slug) of a per-instrument topic (book, status, trades or bars), None for any other topic."""
    tokens = topic.split(".")
    if ".".join(tokens[:2]) != PREFIX:
        return None
    if len(tokens) == 4 and tokens[2] not in RESERVED_VENUES:
        return tokens[2], tokens[3]
    if len(tokens) == 5 and tokens[2] in ("status", "trades", "bars"):
        return tokens[3], tokens[4]
    return None


def _covers(wide: list[str], narrow: list[str]) -> bool:
    """True if every subject `narrow` matches is matched by `wide` (token lists of valid patterns)."""
    for i, token in enumerate(wide):
        if token == ">":
            return i < len(narrow)
        if i >= len(narrow):
            return False
        if token == "*":
            if narrow[i] == ">":
                return False
            continue
        if narrow[i] != token:
            return False
    return len(narrow) == len(wide)


def _overlap(a: list[str], b: list[str]) -> bool:
    """True if some subject matches both patterns."""
    for i in range(max(len(a), len(b)) + 1):
        if i == len(a) or i == len(b):
            return len(a) == len(b)  # one pattern ended: only a subject of that exact length could match it
        if a[i] == ">" or b[i] == ">":
            return True  # both still have a token here, and `>` takes whatever the other leaves
        if a[i] != b[i] and a[i] != "*" and b[i] != "*":
            return False
    return True


def _join(a: list[str], b: list[str]) -> list[str]:
    """The narrowest pattern that covers both."""
    out: list[str] = []
    for i in range(max(len(a), len(b)) + 1):
        if i == len(a) and i == len(b):
            break
        if i == len(a) or i == len(b):
            out[-1] = ">"  # different lengths: the last shared position onward becomes one `>`
            break
        if a[i] == ">" or b[i] == ">":
            out.append(">")
            break
        out.append(a[i] if a[i] == b[i] else "*")
    return out


def disjoint_cover(patterns: Iterable[str]) -> list[str]:
    """Pairwise disjoint patterns whose union covers every pattern given (order of first appearance)."""
    current = [pattern.split(".") for pattern in dict.fromkeys(patterns)]
    while True:
        # Drop what another (different) pattern already covers.
        current = [tokens for tokens in current
                   if not any(other != tokens and _covers(other, tokens) for other in current)]
        pair = next(((i, j) for i in range(len(current)) for j in range(i + 1, len(current))
                     if _overlap(current[i], current[j])), None)
        if pair is None:
            return [".".join(tokens) for tokens in current]
        i, j = pair
        merged = _join(current[i], current[j])
        current = [merged if k == i else tokens for k, tokens in enumerate(current) if k != j]


_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def _redis_glob(pattern: str) -> str:
    """A Redis glob matching (at least) every topic the NATS pattern matches."""
    return ".".join("*" if token in ("*", ">") else _GLOB_SPECIAL.sub(r"\\\1", token)
                    for token in pattern.split("."))


class RedisGlobs:
    """The PSUBSCRIBE globs for a set of NATS patterns, and which glob's copy of a channel to keep."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.globs: list[str] = list(dict.fromkeys(_redis_glob(p) for p in disjoint_cover(patterns)))
        self._regexes = [(glob, _glob_regex_from_glob(glob)) for glob in self.globs]

    def owner(self, channel: str) -> str | None:
        """The first glob (in subscription order) that matches `channel`: only its copy is kept."""
        for glob, regex in self._regexes:
            if regex.fullmatch(channel):
                return glob
        return None


def _glob_regex_from_glob(glob: str) -> re.Pattern[str]:
    """Regex of a glob made by `_redis_glob` (`*` any run of characters, `\\x` a literal x)."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        ch = glob[i]
        if ch == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "*" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)
