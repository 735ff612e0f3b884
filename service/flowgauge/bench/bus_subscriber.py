"""The bus benchmark's subscriber: a spawned child process running `flowgauge.subscribe(url, "flowgauge.v1.>")`.

Sits under `flowgauge.bench`, started by `bench.bus` once per transport for the whole run. It runs in its own
process (own interpreter, own event loop, uvloop when installed) so the subscriber's work never shares the
publisher's loop or CPU budget: on the 2-core machine the publisher and the subscriber each get a core, as a
daemon and a strategy on one host would.

Protocol on the pipe (the parent sends, the child answers):

    ("begin", latency)   reset the counts and start counting live messages (and their latency when asked)
                         -> ("begun",)
    ("end",)             -> ("result", {...}) with what the phase saw
    ("stop",)            close the subscription and exit

and, once after start, the child sends ("ready",) when subscribed, or ("error", line) if it could not be.
`counters` (shared memory, no lock: one writer) holds [delivered, dropped by the SDK's queue] of the current
phase so the parent can follow progress without a round trip.

Latency is `time.time_ns()` taken the moment the SDK yields the message, minus the payload's `ts_publish`
(stamped by the parent when it handed the payload to the publisher); both clocks are this machine's.
With a `tcp://host:port` URL (the loopback floor) the child reads payload lines off a plain TCP connection
instead of subscribing through the SDK. Current values replayed on subscribe (`snapshot`) are not counted:
they are not published during a phase.
The result also carries the CPU time this process used during the phase (`cpu_s`).
"""

from __future__ import annotations

import asyncio
import multiprocessing.connection
import signal
import time
from array import array
from collections.abc import Callable
from typing import Any

__all__ = ["loop_factory", "subscriber_main"]

PATTERN = "flowgauge.v1.>"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when installed (the daemon runs on it), else None for asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def subscriber_main(pipe: multiprocessing.connection.Connection, url: str, counters: Any, queue_size: int) -> None:
    """Entry point of the child process."""
    # A Ctrl-C reaches the whole process group: the parent stops this child itself (with its report), so the
    # child must not die of it first with a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_Subscriber(pipe, url, counters, queue_size).run())


class _Subscriber:
    def __init__(self, pipe: multiprocessing.connection.Connection, url: str, counters: Any,
                 queue_size: int) -> None:
        self._pipe = pipe
        self._url = url
        self._counters = counters
        self._queue_size = queue_size
        self._stopped: asyncio.Event | None = None
        self._sub: Any = None
        self._counting = False
        self._latency = False
        self._reset()

    def _reset(self) -> None:
        self.delivered = 0
        self.interruptions = 0
        self.first_ns = 0
        self.last_ns = 0
        self.samples = array("q")
        self.cpu_started = time.process_time()
        self.dropped_before = self._sub.dropped if self._sub is not None else 0
        self._counters[0] = 0
        self._counters[1] = 0

    async def run(self) -> None:
        from flowgauge import sdk
        from flowgauge.client import SubscriberError

        self._stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        sub: Any = (_RawLines(self._url) if self._url.startswith("tcp://")
                    else sdk.subscribe(self._url, PATTERN, queue_size=self._queue_size, stale_after_s=3600.0))
        try:
            await sub.__aenter__()
        except (SubscriberError, OSError) as exc:
            self._pipe.send(("error", f"cannot subscribe to {self._url}: {exc}"))
            return
        self._sub = sub
        loop.add_reader(self._pipe.fileno(), self._on_command)
        reader = loop.create_task(self._read(sub, sdk.Interrupted))
        self._pipe.send(("ready",))
        try:
            await self._stopped.wait()
        finally:
            loop.remove_reader(self._pipe.fileno())
            await sub.close()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, sub: Any, interrupted: type) -> None:
        counters = self._counters
        monotonic_ns, time_ns = time.monotonic_ns, time.time_ns
        async for message in sub:
            now = time_ns()  # first: the moment the SDK yielded it
            if isinstance(message, interrupted):
                self.interruptions += 1
                continue
            if message.snapshot or not self._counting:
                continue
            self.delivered += 1
            if self._latency:
                ts = message.ts_publish
                if ts is not None:
                    self.samples.append(now - ts)
            mono = monotonic_ns()
            if not self.first_ns:
                self.first_ns = mono
            self.last_ns = mono
            counters[0] = self.delivered
            counters[1] = sub.dropped - self.dropped_before

    def _on_command(self) -> None:
        try:
            command = self._pipe.recv()
        except (EOFError, OSError):  # the parent went away
            command = ("stop",)
        assert self._stopped is not None
        if command[0] == "begin":
            self._reset()
            self._latency = bool(command[1])
            self._counting = True
            self._pipe.send(("begun",))
        elif command[0] == "end":
            self._counting = False
            dropped = self._sub.dropped - self.dropped_before if self._sub is not None else 0
            self._pipe.send(("result", {
                "delivered": self.delivered,
                "sdk_dropped": dropped,
                "interruptions": self.interruptions,
                "first_ns": self.first_ns,
                "last_ns": self.last_ns,
                "latency_ns": self.samples.tobytes(),
                "cpu_s": time.process_time() - self.cpu_started,
            }))
        else:
            self._stopped.set()


class _RawLines:
    """The floor's "subscription": payload lines read off a plain loopback TCP connection, no broker and no
    client library, yielded as SDK `Message`s (whose `ts_publish` decodes the payload, as for NATS and Redis)."""

    dropped = 0

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("tcp://").rpartition(":")
        self._address = (host, int(port))
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None

    async def __aenter__(self) -> _RawLines:
        self._reader, self._writer = await asyncio.open_connection(*self._address)
        return self

    async def __aiter__(self) -> Any:
        from flowgauge.sdk import Message

        assert self._reader is not None
        readline = self._reader.readline
        while line := await readline():
            yield Message("loopback", data=line)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
