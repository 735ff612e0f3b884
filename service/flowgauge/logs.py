"""Logging setup and burst-limited warnings.

Logs are for state changes, never per message: a repeated warning (bad frames from a noisy feed)
is logged once per burst with the count of what was suppressed since, while counters carry the
exact totals.

Secrets never reach a log line: `register_secrets` (the daemon calls it with every token and password its
settings hold) makes both formatters replace each occurrence of a secret by `***`, in the message, in every
field and in tracebacks, whoever logged it (our code, nats-py, redis-py, aiohttp), so an error that echoes a URL
with a password in it prints `nats://app:***@host`. `redact` does the same for documents served over HTTP.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson

REDACTED = "***"

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secrets(values: Iterable[str]) -> None:
    """Add secrets to hide from every log line and every `redact`ed document for the rest of the process."""
    global _pattern
    _secrets.update(value for value in values if value)
    if _secrets:
        # Longest first: a secret that contains another is hidden whole.
        _pattern = re.compile("|".join(re.escape(value) for value in sorted(_secrets, key=len, reverse=True)))


def redact(value: Any) -> Any:
    """`value` with every registered secret inside its strings replaced by "***" (dicts, lists and tuples are
    copied; other values returned as they are)."""
    pattern = _pattern
    if pattern is None:
        return value
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {redact(key): redact(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log shippers expect from a container's stdout."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if _pattern is not None:  # field by field, so that the line stays valid JSON whatever the secret holds
            entry = {key: _redact_field(value) for key, value in entry.items()}
        return orjson.dumps(entry, default=str).decode()


def _redact_field(value: object) -> object:
    if value is None or isinstance(value, int | float):  # bool is an int
        return value
    return redact(value if isinstance(value, str | dict | list | tuple) else str(value))


class ConsoleFormatter(logging.Formatter):
    """The human format of a terminal, with registered secrets hidden."""

    def format(self, record: logging.LogRecord) -> str:
        return str(redact(super().format(record)))


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    if sys.stdout.isatty():
        handler.setFormatter(ConsoleFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s %(fields)s"))
        handler.addFilter(_ensure_fields)
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # ccxt and aiohttp are chatty at INFO about things that are ours to report.
    logging.getLogger("ccxt").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)


def _ensure_fields(record: logging.LogRecord) -> bool:
    if not hasattr(record, "fields"):
        record.fields = ""
    return True


def event(logger: logging.Logger, level: int, name: str, **fields: object) -> None:
    """Log a snake_case event name with keyword context."""
    logger.log(level, name, extra={"fields": fields})


class BurstLimiter:
    """Let one warning per `key` through per `interval_s`; report how many were held back."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None if this occurrence should stay silent, else the number suppressed since the last log."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._suppressed.pop(key, 0)
