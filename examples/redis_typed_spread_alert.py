"""A strategy over Redis with typed payloads: alert when a book's spread widens or its state changes.

    python examples/redis_typed_spread_alert.py [redis://127.0.0.1:6379/0] [--max-messages N] [--wide-bps B]

Needs a daemon publishing to Redis (`bus.redis.url`). Payloads are decoded into msgspec Structs
(`msg.typed()`), so fields are attributes with types a checker understands.
"""

from __future__ import annotations

import argparse
import asyncio

import flowgauge
from flowgauge.sdk.payloads import MetricsPayload, StatusPayload


async def main(url: str, max_messages: int, wide_bps: float) -> None:
    seen = 0
    async with flowgauge.subscribe(url, "flowgauge.v1.*.*", "flowgauge.v1.status.*.*") as sub:
        async for msg in sub:
            if isinstance(msg, flowgauge.Interrupted):
                print(f"interrupted: {msg.reason}; reconnecting")
                continue
            payload = msg.typed()
            if isinstance(payload, StatusPayload) and not payload.heartbeat:
                print(f"state {payload.venue} {payload.symbol}: {payload.state} {payload.reason or ''}")
            elif isinstance(payload, MetricsPayload) and payload.spread_bps is not None:
                flag = "WIDE" if payload.spread_bps > wide_bps else "ok"
                print(f"spread {payload.venue} {payload.symbol}: {payload.spread_bps:.2f} bps {flag}")
            seen += 1
            if max_messages and seen >= max_messages:
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after N payloads (0 = never)")
    parser.add_argument("--wide-bps", type=float, default=5.0, help="spread above which to alert")
    options = parser.parse_args()
    asyncio.run(main(options.url, options.max_messages, options.wide_bps))
