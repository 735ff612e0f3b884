"""A strategy on the daemon's embedded bus: trade the order-flow signal of one instrument.

    python examples/embedded_ofi_signal.py [ws://127.0.0.1:8765] [--max-messages N]

Prints a line per live book payload: mid, the 10 s order-flow sum and what the toy rule would do. Current
values replayed on subscribe are used to warm up, not traded; a lost connection is reported and the SDK
reconnects by itself.
"""

from __future__ import annotations

import argparse
import asyncio

import flowgauge

PATTERN = "flowgauge.v1.*.BTC-USDT-USDT"


async def main(url: str, max_messages: int) -> None:
    traded = 0
    async with flowgauge.subscribe(url, PATTERN) as sub:
        async for msg in sub:
            if isinstance(msg, flowgauge.Interrupted):
                print(f"interrupted: {msg.reason}; reconnecting")
                continue
            payload = msg.payload
            if msg.snapshot or payload["trigger"] != "book" or payload["book_state"] != "VALID":
                continue  # warm-up state, or not a tradeable book update
            ofi = payload["ofi_raw_10s"] or 0.0
            action = "buy" if ofi > 0 else "sell" if ofi < 0 else "wait"
            print(f"{payload['venue']:<12} mid={payload['mid']:.2f} ofi_raw_10s={ofi:+.3f} -> {action}")
            traded += 1
            if max_messages and traded >= max_messages:
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8765")
    parser.add_argument("--max-messages", type=int, default=0, help="stop after N book payloads (0 = never)")
    options = parser.parse_args()
    asyncio.run(main(options.url, options.max_messages))
