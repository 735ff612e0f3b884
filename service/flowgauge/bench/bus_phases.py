"""The bus benchmark's two measurements on one path (a publisher, its broker, one subscriber process): the
sustained rate and the paced latency, with every message accounted for.

Sits under `flowgauge.bench`, driven by `bench.bus`, which builds the paths and runs the rounds. The subscriber
side is `bench.bus_subscriber` in a spawned child process; `SubscriberProcess` is its handle here.
`LoopbackFloor` is the reference path (no broker, no library). How each measurement works is in `bench.bus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing.connection
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flowgauge.bench.brokers import cpu_seconds
from flowgauge.bench.bus_payloads import PayloadSet
from flowgauge.bench.bus_subscriber import subscriber_main
from flowgauge.bench.child import SPAWN

__all__ = ["CHILD_TIMEOUT_S", "YIELD_EVERY", "BusPath", "Feed", "LoopbackFloor", "SubscriberProcess",
           "measure_latency", "measure_rate"]

YIELD_EVERY = 64  # publish() calls between yields to the loop while offering as fast as possible
_IDLE_TIMEOUT_S = 15.0  # a phase ends when nothing more was delivered or dropped for this long
CHILD_TIMEOUT_S = 60.0  # a subscriber process must answer within this (spawn + imports on a loaded machine)


class SubscriberProcess:
    """One subscriber process (`bus_subscriber`) and the shared counters of its current phase."""

    def __init__(self, name: str, url: str, queue_size: int) -> None:
        self.name = name
        self.counters: Any = SPAWN.Array("q", 2, lock=False)  # [delivered, dropped by the SDK's queue]
        parent, child = SPAWN.Pipe()
        self.pipe: multiprocessing.connection.Connection = parent
        self.process = SPAWN.Process(target=subscriber_main, args=(child, url, self.counters, queue_size),
                                     name=f"bench-bus-subscriber:{name}", daemon=True)
        self.process.start()
        child.close()

    async def reply(self, timeout_s: float = CHILD_TIMEOUT_S) -> tuple[Any, ...]:
        """The child's next message, awaited without blocking the loop (the publishers keep running)."""
        deadline = time.monotonic() + timeout_s
        while not self.pipe.poll():
            if not self.process.is_alive():
                raise RuntimeError(f"the {self.name} subscriber process exited ({self.process.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} subscriber did not answer within {timeout_s:.0f} s")
            await asyncio.sleep(0.002)  # polling interval of a bounded wait for the child's answer
        answer: tuple[Any, ...] = self.pipe.recv()
        if answer[0] == "error":
            raise RuntimeError(answer[1])
        return answer

    async def begin(self, latency: bool) -> None:
        self.pipe.send(("begin", latency))
        await self.reply()

    async def end(self) -> dict[str, Any]:
        self.pipe.send(("end",))
        answer = await self.reply()
        result: dict[str, Any] = answer[1]
        return result

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the child to close its subscription and exit; waited for with the loop running, since closing a
        websocket subscription needs the embedded bus (in this loop) to answer the closing handshake."""
        with contextlib.suppress(OSError):
            self.pipe.send(("stop",))
        deadline = time.monotonic() + timeout_s
        while self.process.is_alive() and time.monotonic() < deadline:  # noqa: ASYNC110 (no event to await)
            await asyncio.sleep(0.01)  # polling interval of a bounded wait for the child's exit
        if self.process.is_alive():
            self.process.terminate()  # our own child, by its handle
        self.process.join(5)
        self.pipe.close()


@dataclass
class BusPath:
    name: str
    publisher: Any
    url: str
    dropped: Callable[[], int]  # the publisher's drop count, every reason together
    broker_pid: int | None = None  # the broker's process (None: the embedded bus is in this process)
    child: SubscriberProcess | None = None


class LoopbackFloor:
    """The reference path, not a backend: each payload written as one line to a plain loopback TCP connection
    (asyncio streams, no broker, no client library) that the subscriber process reads. It measures what one
    process-to-process hop costs on this machine, the floor under every backend's figures."""

    dropped = 0

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.connected.set()
        await reader.read()  # until the subscriber closes

    def publish(self, topic: str, payload: bytes) -> None:
        assert self._writer is not None
        self._writer.write(payload + b"\n")  # one write (one send) per message; the window bounds the buffer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._server is not None:
            self._server.close()


# ---------------------------------------------------------------------------------------------- phases


class Feed:
    """Renders the run's messages in order, so every message of every phase is a distinct update."""

    def __init__(self, payloads: PayloadSet) -> None:
        self.payloads = payloads
        self.index = 0

    def take(self, ts_publish: int) -> tuple[str, bytes]:
        message = self.payloads.render(self.index, ts_publish)
        self.index += 1
        return message


async def _settle(backend: BusPath, offered: int, base_drops: int) -> None:
    """Wait until every offered message was delivered or counted as dropped, or nothing moved for a while."""
    assert backend.child is not None
    counters = backend.child.counters
    last, idle_since = -1, time.monotonic()
    while True:
        done = counters[0] + counters[1] + backend.dropped() - base_drops
        if done >= offered:
            return
        now = time.monotonic()
        if done != last:
            last, idle_since = done, now
        elif now - idle_since > _IDLE_TIMEOUT_S:
            return  # reported as unaccounted
        await asyncio.sleep(0.001)  # polling interval of a bounded wait for the subscriber's count


def _accounting(backend: BusPath, offered: int, base_drops: int, seen: dict[str, Any]) -> dict[str, Any]:
    publisher_dropped = backend.dropped() - base_drops
    delivered = seen["delivered"]
    return {
        "offered": offered,
        "delivered": delivered,
        "publisher_dropped": publisher_dropped,
        "sdk_dropped": seen["sdk_dropped"],
        "unaccounted": offered - delivered - publisher_dropped - seen["sdk_dropped"],
        "interruptions": seen["interruptions"],
    }


async def measure_rate(backend: BusPath, feed: Feed, count: int, window: int) -> dict[str, Any]:
    child = backend.child
    assert child is not None
    messages = [feed.take(time.time_ns()) for _ in range(count)]  # rendered before the clock starts
    publish = backend.publisher.publish
    counters, dropped = child.counters, backend.dropped
    await child.begin(latency=False)
    base_drops = dropped()
    cpu_started = time.process_time()
    broker_started = cpu_seconds(backend.broker_pid) if backend.broker_pid is not None else None
    started = time.monotonic_ns()
    for offered, (topic, payload) in enumerate(messages):
        if offered % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # the loop runs the publisher's tasks, as between the engine's frames
            # The counts live in another process (shared memory): polled, there is no event to await.
            while offered - counters[0] - counters[1] - (dropped() - base_drops) >= window:  # noqa: ASYNC110
                await asyncio.sleep(0.0005)  # polling interval: the window is full, wait for deliveries
        publish(topic, payload)
    offered_ns = time.monotonic_ns() - started
    await _settle(backend, count, base_drops)
    cpu_s = time.process_time() - cpu_started
    broker_ended = cpu_seconds(backend.broker_pid) if backend.broker_pid is not None else None
    seen = await child.end()
    figures = _accounting(backend, count, base_drops, seen)
    # CPU per message on each side says which one limits the rate (a side near 1e6 / rate us is saturated).
    figures["publisher_cpu_us_per_msg"] = cpu_s / count * 1e6
    figures["subscriber_cpu_us_per_msg"] = seen["cpu_s"] / seen["delivered"] * 1e6 if seen["delivered"] else None
    figures["broker_cpu_us_per_msg"] = (
        (broker_ended - broker_started) / count * 1e6
        if broker_started is not None and broker_ended is not None else None
    )
    delivered_ns = seen["last_ns"] - started if seen["delivered"] else 0
    figures["offered_msgs_per_s"] = count / (offered_ns / 1e9) if offered_ns > 0 else None
    figures["delivered_msgs_per_s"] = seen["delivered"] / (delivered_ns / 1e9) if delivered_ns > 0 else None
    return figures


async def measure_latency(backend: BusPath, feed: Feed, rate: float, seconds: float) -> dict[str, Any]:
    child = backend.child
    assert child is not None
    count = max(1, round(rate * seconds))
    publish = backend.publisher.publish
    take, time_ns, clock = feed.take, time.time_ns, time.perf_counter
    await child.begin(latency=True)
    base_drops = backend.dropped()
    interval = 1.0 / rate
    started = clock()
    for i in range(count):
        delay = started + i * interval - clock()
        if delay > 0:
            await asyncio.sleep(delay)  # pacing: a message is due every 1/rate s
        topic, payload = take(time_ns())
        publish(topic, payload)
    elapsed = clock() - started
    await _settle(backend, count, base_drops)
    seen = await child.end()
    figures = _accounting(backend, count, base_drops, seen)
    samples = sorted(array("q", seen["latency_ns"]))
    figures["achieved_rate"] = count / elapsed if elapsed > 0 else None
    figures["samples"] = len(samples)
    figures["p50_us"] = _percentile(samples, 0.50)
    figures["p99_us"] = _percentile(samples, 0.99)
    figures["max_us"] = samples[-1] / 1e3 if samples else None
    return figures


def _percentile(ordered: Sequence[int], q: float) -> float | None:
    """Nearest-rank percentile of sorted ns samples, in µs."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] / 1e3
