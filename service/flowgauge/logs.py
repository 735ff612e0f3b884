"""Logging setup and burst-limited warnings.

Logs are for state changes, never per message: a repeated warning (bad frames from a noisy feed)
is logged once per burst with the count of what was suppressed since, while counters carry the
exact totals.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import orjson


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
        return orjson.dumps(entry, default=str).decode()


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    if sys.stdout.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s %(fields)s"))
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
