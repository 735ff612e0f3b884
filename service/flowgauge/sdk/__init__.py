"""The strategy-facing SDK: `subscribe()` over the embedded bus, NATS or Redis, one API for all three.

See `flowgauge.sdk.subscription` for the behaviour (current values, staleness, reconnection) and
`flowgauge.sdk.payloads` for typed payloads.
"""

from __future__ import annotations

from flowgauge.sdk.message import Interrupted, Message
from flowgauge.sdk.subscription import Subscription, subscribe

__all__ = ["Interrupted", "Message", "Subscription", "subscribe"]
