"""A strategy over NATS: a once-a-second board of every Bybit book's depth imbalance, from `latest()`.

    python examples/nats_depth_board.py [nats://127.0.0.1:4222] [--max-boards N]

Needs a daemon publishing to NATS (`bus.nats.url`; with `bus.nats.jetstream: true` the board is complete
from the first second, because current values are read from the JetStream state stream). Books whose
heartbeat stopped are marked stale instead of being trusted.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import flowgauge


async def main(url: str, max_boards: int) -> None:
    boards = 0
    async with flowgauge.subscribe(url, "flowgauge.v1.bybit.>") as sub:
        counter = [0]  # live payloads since the last board
        reader = asyncio.create_task(_consume(sub, counter))  # keeps latest() current
        try:
            while not max_boards or boards < max_boards:
                await asyncio.sleep(1.0)  # the board's refresh period
                print(f"{time.strftime('%H:%M:%S')} board: {counter[0]} live payloads in the last second")
                counter[0] = 0
                stale = sub.stale_topics()
                for topic, payload in sorted(sub.latest().items()):
                    mark = " (stale)" if topic in stale else ""
                    print(f"{time.strftime('%H:%M:%S')} {payload['symbol']:<16} "
                          f"depth_imb_5={_fmt(payload.get('depth_imb_5'))}{mark}")
                boards += 1
        finally:
            reader.cancel()


async def _consume(sub: flowgauge.Subscription, counter: list[int]) -> None:
    async for msg in sub:
        if isinstance(msg, flowgauge.Interrupted):
            print(f"interrupted: {msg.reason}; reconnecting")
            counter[0] = 0  # the next board counts only what arrived after the loss
        elif not msg.snapshot:
            counter[0] += 1


def _fmt(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:+.3f}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="nats://127.0.0.1:4222")
    parser.add_argument("--max-boards", type=int, default=0, help="stop after N boards (0 = never)")
    options = parser.parse_args()
    asyncio.run(main(options.url, options.max_boards))
