"""What a subscription yields: `Message` (a payload on a topic) and `Interrupted` (the connection was lost).

A `Message` keeps whichever form its transport delivered (the raw JSON bytes from NATS and Redis, the decoded
object from the embedded websocket) and makes the other on first use, so a strategy that only forwards bytes
never decodes and one that reads fields never re-encodes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Interrupted", "Message"]

_NS_PER_S = 1e9


class Message:
    """One payload from the bus.

    Attributes:
        topic: the topic it was published on, e.g. `flowgauge.v1.bybit.BTC-USDT-USDT`.
        snapshot: True for a topic's current value replayed on subscribe (or after a reconnect), False for a
            message published live.
    """

    __slots__ = ("_data", "_payload", "snapshot", "topic")

    def __init__(self, topic: str, *, data: bytes | None = None, payload: dict[str, Any] | None = None,
                 snapshot: bool = False) -> None:
        if data is None and payload is None:
            raise ValueError("a Message needs its data or its payload")
        self.topic = topic
        self.snapshot = snapshot
        self._data = data
        self._payload = payload

    @property
    def payload(self) -> dict[str, Any]:
        """The payload as a dict (decoded on first use). Unknown fields are kept: v1 grows only by adding.

        Raises `orjson.JSONDecodeError` (a ValueError) when the data is not JSON: the SDK passes on whatever
        was published on a matching topic, including what another publisher put there.
        """
        if self._payload is None:
            assert self._data is not None
            self._payload = orjson.loads(self._data)
        return self._payload

    @property
    def data(self) -> bytes:
        """The payload as JSON bytes (encoded on first use where the transport delivered an object)."""
        if self._data is None:
            assert self._payload is not None
            self._data = orjson.dumps(self._payload)
        return self._data

    @property
    def ts_publish(self) -> int | None:
        """When the daemon published it: integer nanoseconds since the epoch (None if the payload lacks it).

        None too for data that is not a JSON object, so that such a message never stops a subscription.
        """
        try:
            payload = self.payload
        except orjson.JSONDecodeError:
            return None
        value = payload.get("ts_publish") if isinstance(payload, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def age_s(self) -> float | None:
        """Seconds since the daemon published it, by this machine's clock (None without `ts_publish`).

        For a live message it is the daemon -> here latency plus any clock offset between the two hosts; for
        a current value replayed on subscribe it says how old that value is.
        """
        ts = self.ts_publish
        return None if ts is None else time.time() - ts / _NS_PER_S

    def typed(self) -> Any:
        """The payload as a typed msgspec Struct (`flowgauge.sdk.payloads`), chosen by the topic's family."""
        from flowgauge.sdk.payloads import decode

        return decode(self.topic, self.data)

    def __repr__(self) -> str:
        kind = "snapshot" if self.snapshot else "live"
        return f"Message({self.topic!r}, {kind})"


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Marker yielded once when the connection to the bus is lost (then the subscription reconnects).

    After it, the next messages are the current values again (`snapshot` True), fetched on the new
    connection, then the live stream. Anything published during the outage was missed; current values
    cover state, not trades.

    Attributes:
        reason: one line saying what happened, e.g. "the bus at ws://... closed the connection: code 1001".
        at: wall-clock time (seconds since the epoch) the loss was noticed.
    """

    reason: str
    at: float
