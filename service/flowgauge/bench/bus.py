"""`flowgauge bench-bus`: publish rate and end-to-end latency of every bus backend, measured on this machine.

Sits under `flowgauge.bench` (the CLI calls `execute`). Backends: the embedded bus (`EmbeddedBus`, websocket
fan-out), NATS core (`NatsPublisher`), NATS with the JetStream state stream (`NatsPublisher(jetstream=True)`)
and Redis (`RedisPublisher`): the daemon's own publisher classes, in one process and one event loop (uvloop
when installed), each with its default bounds, publishing to brokers the bench starts (`bench.brokers`).
Each backend has one subscriber, `flowgauge.subscribe(url, "flowgauge.v1.>")` in a child process of its own
(`bench.bus_subscriber`), which counts what the SDK yields. A fifth path, the floor, writes the same payloads
to a plain loopback TCP connection read by a child process (no broker, no library): what one hop between two
processes costs here, under every backend's figures.

Payloads: the packaged Bybit sample replayed through the engine (`bench.bus_payloads`), today's payloads
(~1.2 KB of JSON), each message a distinct update.

Two measurements per backend and round:

* rate: `rate_messages` payloads handed to `publisher.publish()` as fast as the loop allows, yielding to the
  loop every 64 (as the engine does between frames), with at most `window` of them in flight (offered and
  neither delivered nor counted as dropped): the window, below every queue's bound on the path (the outbox,
  the websocket client buffer, the SDK's queue) and well below the brokers' per-client output limits, makes
  the figure the throughput the chain *sustains*, not how fast a burst fills buffers. Reported: offered
  (publish() calls per second), delivered (messages the SDK yielded per second, from the first publish to the
  last delivery), and the drops, counted where they happen: by the publisher (`dropped`: its outbox, nats-py's
  buffer, failed sends; the embedded bus's per-client buffer) and by the SDK's own queue. `unaccounted` is
  offered - delivered - dropped, which is 0 unless a message vanished uncounted.
* latency: payloads paced at `latency_rate` msgs/s for `latency_seconds`, each stamped with `ts_publish`
  (wall clock, ns) as it is rendered and handed to the publisher (the engine likewise stamps, encodes,
  publishes); the subscriber takes the wall clock the moment the SDK yields the message. p50, p99 and max
  per round.

Rounds (5 by default) interleave the backends (their order rotating each round, the two measurements
alternating) so slow phases of a shared machine hit every backend alike; each figure is the median over
the rounds with its min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import multiprocessing.connection
import os
import platform
import statistics
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

from flowgauge.bench.brokers import (
    DEFAULT_SBIN,
    BrokerMissing,
    Brokers,
    cpu_seconds,
    find_binaries,
    running_brokers,
)
from flowgauge.bench.bus_payloads import PayloadSet, load_payloads
from flowgauge.bench.bus_subscriber import loop_factory, subscriber_main
from flowgauge.bench.child import SPAWN

__all__ = ["BACKENDS", "BusBenchConfig", "execute", "run", "table"]

SCHEMA = "flowgauge.bench_bus.v1"

# name -> (label, transport of the subscriber)
BACKENDS: dict[str, tuple[str, str]] = {
    "embedded": ("embedded bus", "ws"),
    "nats": ("NATS core", "nats"),
    "nats_jetstream": ("NATS + JetStream state stream", "nats"),
    "redis": ("Redis", "redis"),
    "loopback": ("floor: loopback TCP, no broker", "tcp"),
}

_YIELD_EVERY = 64  # publish() calls between yields to the loop while offering as fast as possible
_IDLE_TIMEOUT_S = 15.0  # a phase ends when nothing more was delivered or dropped for this long
_CHILD_TIMEOUT_S = 60.0  # a subscriber process must answer within this (spawn + imports on a loaded machine)


@dataclass(frozen=True, slots=True)
class BusBenchConfig:
    """Sizes of one run: `normal()` by default, `quick()` for a short run (and the test)."""

    mode: str
    rounds: int
    rate_messages: int  # payloads per backend per round in the rate measurement
    window: int  # payloads in flight at most in the rate measurement
    latency_rate: float  # msgs/s in the latency measurement
    latency_seconds: float
    warmup_messages: int
    subscriber_queue: int = 10_000  # the SDK's queue_size (its default)

    @classmethod
    def normal(cls) -> BusBenchConfig:
        return cls("normal", 5, 20_000, 1_000, 2_000.0, 3.0, 2_000)

    @classmethod
    def quick(cls) -> BusBenchConfig:
        return cls("quick", 3, 2_000, 500, 2_000.0, 0.3, 300)


# ---------------------------------------------------------------------------------------------- subscribers


class _Child:
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

    async def reply(self, timeout_s: float = _CHILD_TIMEOUT_S) -> tuple[Any, ...]:
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
class _Backend:
    name: str
    publisher: Any
    url: str
    dropped: Callable[[], int]  # the publisher's drop count, every reason together
    broker_pid: int | None = None  # the broker's process (None: the embedded bus is in this process)
    child: _Child | None = None


class _LoopbackFloor:
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


class _Feed:
    """Renders the run's messages in order, so every message of every phase is a distinct update."""

    def __init__(self, payloads: PayloadSet) -> None:
        self.payloads = payloads
        self.index = 0

    def take(self, ts_publish: int) -> tuple[str, bytes]:
        message = self.payloads.render(self.index, ts_publish)
        self.index += 1
        return message


async def _settle(backend: _Backend, offered: int, base_drops: int) -> None:
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


def _accounting(backend: _Backend, offered: int, base_drops: int, seen: dict[str, Any]) -> dict[str, Any]:
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


async def _rate(backend: _Backend, feed: _Feed, count: int, window: int) -> dict[str, Any]:
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
        if offered % _YIELD_EVERY == 0:
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


async def _latency(backend: _Backend, feed: _Feed, rate: float, seconds: float) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------- the run


async def _open_backends(brokers: Brokers) -> list[_Backend]:
    from flowgauge.publish.embedded import EmbeddedBus
    from flowgauge.publish.nats import NatsPublisher
    from flowgauge.publish.redis import RedisPublisher

    bus = EmbeddedBus(host="127.0.0.1", port=0)
    publishers: list[tuple[str, Any, str]] = [
        ("nats", NatsPublisher(brokers.nats_core_url, name="flowgauge-bench-bus"), brokers.nats_core_url),
        ("nats_jetstream", NatsPublisher(brokers.nats_jetstream_url, jetstream=True, name="flowgauge-bench-bus"),
         brokers.nats_jetstream_url),
        ("redis", RedisPublisher(brokers.redis_url), brokers.redis_url),
    ]
    await bus.start()
    backends = [_Backend("embedded", bus, f"ws://127.0.0.1:{bus.bound_port}", lambda: bus.dropped)]
    for name, publisher, url in publishers:
        await publisher.start()
        backends.append(_Backend(name, publisher, url, _drop_count(publisher), brokers.pids.get(name)))
    floor = _LoopbackFloor()
    await floor.start()
    backends.append(_Backend("loopback", floor, f"tcp://127.0.0.1:{floor.port}", lambda: 0))
    return backends


def _drop_count(publisher: Any) -> Callable[[], int]:
    return lambda: int(publisher.dropped)


async def _measure(config: BusBenchConfig, payloads: PayloadSet, brokers: Brokers,
                   say: Callable[[str], None]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    backends = await _open_backends(brokers)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {b.name: {"rate": [], "latency": []} for b in backends}
    try:
        for backend in backends:  # all start together: spawning and importing overlap
            backend.child = _Child(backend.name, backend.url, config.subscriber_queue)
        for backend in backends:
            assert backend.child is not None
            await backend.child.reply()  # ("ready",)
            if isinstance(backend.publisher, _LoopbackFloor):  # its connection is accepted by this loop
                async with asyncio.timeout(_CHILD_TIMEOUT_S):
                    await backend.publisher.connected.wait()
        feed = _Feed(payloads)
        say(f"subscribers ready; warm-up ({config.warmup_messages} messages per backend) ...")
        for backend in backends:  # connections, JetStream stream creation, caches: before anything is timed
            await _rate(backend, feed, config.warmup_messages, config.window)
        for r in range(config.rounds):
            started = time.perf_counter()
            order = backends[r % len(backends):] + backends[:r % len(backends)]
            for backend in order:
                steps = [("rate", lambda b=backend: _rate(b, feed, config.rate_messages, config.window)),
                         ("latency", lambda b=backend: _latency(b, feed, config.latency_rate,
                                                                config.latency_seconds))]
                for kind, step in (reversed(steps) if r % 2 else steps):
                    results[backend.name][kind].append(await step())
            say(f"round {r + 1}/{config.rounds} done in {time.perf_counter() - started:.1f}s")
    finally:
        children = [backend.child for backend in backends if backend.child is not None]
        await asyncio.gather(*(child.stop() for child in children))
        # Closing drains each NATS connection, which the publisher logs as a disconnection: not news here.
        logging.getLogger("flowgauge.publish.nats").setLevel(logging.ERROR)
        for backend in backends:
            with contextlib.suppress(Exception):  # a failed close must not hide the measurement's own error
                async with asyncio.timeout(10):
                    await backend.publisher.close()
    return results


def run(config: BusBenchConfig, sbin: str = DEFAULT_SBIN, progress: TextIO | None = sys.stderr) -> dict[str, Any]:
    """Run every measurement of `config`; returns the summary (what `--json` prints).

    Raises:
        BrokerMissing: nats-server or redis-server is not installed.
        RuntimeError: a broker or a subscriber could not be started.
    """

    def say(text: str) -> None:
        if progress is not None:
            print(text, file=progress, flush=True)

    binaries = find_binaries(sbin)
    payloads = load_payloads()
    say(f"payloads: {payloads.count} from the Bybit sample, mean {payloads.mean_bytes:,.0f} bytes; "
        f"starting nats-server (core and JetStream) and redis-server ...")
    with running_brokers(binaries) as brokers, asyncio.Runner(loop_factory=loop_factory()) as runner:
        results = runner.run(_measure(config, payloads, brokers, say))
    return _summary(config, payloads, brokers, results)


# ---------------------------------------------------------------------------------------------- summary


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    return {
        "median": statistics.median(present) if present else None,
        "min": min(present) if present else None,
        "max": max(present) if present else None,
        "samples": [round(v, 1) for v in present],
    }


_COUNTS = ("offered", "delivered", "publisher_dropped", "sdk_dropped", "unaccounted", "interruptions")


def _totals(rounds: list[dict[str, Any]]) -> dict[str, int]:
    return {key: sum(r[key] for r in rounds) for key in _COUNTS}


def _summary(config: BusBenchConfig, payloads: PayloadSet, brokers: Brokers,
             results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    gaps: list[str] = []
    for name, kinds in results.items():
        rate, latency = kinds["rate"], kinds["latency"]
        label, transport = BACKENDS[name]
        backends[name] = {
            "label": label,
            "subscriber_transport": transport,
            "rate": {
                "offered_msgs_per_s": _spread([r["offered_msgs_per_s"] for r in rate]),
                "delivered_msgs_per_s": _spread([r["delivered_msgs_per_s"] for r in rate]),
                "publisher_cpu_us_per_msg": _spread([r["publisher_cpu_us_per_msg"] for r in rate]),
                "subscriber_cpu_us_per_msg": _spread([r["subscriber_cpu_us_per_msg"] for r in rate]),
                "broker_cpu_us_per_msg": _spread([r["broker_cpu_us_per_msg"] for r in rate]),
                **_totals(rate),
                "rounds": rate,
            },
            "latency": {
                "p50_us": _spread([r["p50_us"] for r in latency]),
                "p99_us": _spread([r["p99_us"] for r in latency]),
                "max_us": _spread([r["max_us"] for r in latency]),
                "achieved_rate": _spread([r["achieved_rate"] for r in latency]),
                **_totals(latency),
                "rounds": latency,
            },
        }
        for kind, rounds in (("rate", rate), ("latency", latency)):
            totals = _totals(rounds)
            if totals["unaccounted"]:
                gaps.append(f"{name} {kind}: {totals['unaccounted']} message(s) neither delivered nor counted as "
                            f"dropped")
            if totals["interruptions"]:
                gaps.append(f"{name} {kind}: the subscriber's connection was interrupted "
                            f"{totals['interruptions']} time(s)")
    return {
        "schema": SCHEMA,
        "mode": config.mode,
        "rounds": config.rounds,
        "payloads": {
            "source": "the packaged Bybit sample (bybit-linear-2026-08) replayed through the engine",
            "distinct": payloads.count,
            "mean_bytes": round(payloads.mean_bytes, 1),
            "min_bytes": payloads.min_bytes,
            "max_bytes": payloads.max_bytes,
            "topics": payloads.topics,
        },
        "rate_method": {
            "messages_per_round": config.rate_messages,
            "window": config.window,
            "yield_every": _YIELD_EVERY,
        },
        "latency_method": {
            "rate": config.latency_rate,
            "seconds": config.latency_seconds,
            "messages_per_round": max(1, round(config.latency_rate * config.latency_seconds)),
        },
        "subscriber": "flowgauge.subscribe(url, 'flowgauge.v1.>') in one spawned child process per backend, "
                      f"its own event loop; SDK queue_size {config.subscriber_queue}",
        "backends": backends,
        "brokers": brokers.versions,
        "environment": _environment(),
        "gaps": gaps,
    }


def _environment() -> dict[str, Any]:
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    versions: dict[str, str | None] = {}
    for name in ("flowgauge", "nats-py", "redis", "websockets", "orjson", "uvloop"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": cpus,
        "load_average": load,
        "event_loop": "uvloop" if loop_factory() is not None else "asyncio",
        "versions": versions,
    }


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _cell(spread: dict[str, Any], digits: int = 0) -> str:
    if spread["median"] is None:
        return "n/a"
    return f"{_fmt(spread['median'], digits)} ({_fmt(spread['min'], digits)}-{_fmt(spread['max'], digits)})"


def table(summary: dict[str, Any]) -> str:
    """The human-readable table of a summary (what the README's "Bus benchmark" shows)."""
    env, payloads = summary["environment"], summary["payloads"]
    lines = [
        f"flowgauge bench-bus: {summary['mode']}, {summary['rounds']} interleaved round(s), median (min-max); "
        f"{payloads['distinct']} real payloads, mean {payloads['mean_bytes']:,.0f} bytes; "
        f"Python {env['python']}, {env['event_loop']}, {env['cpus']} CPU(s), load {env['load_average']}",
        f"brokers: {summary['brokers'].get('nats-server')}; {summary['brokers'].get('redis-server')}",
        f"rate: {summary['rate_method']['messages_per_round']:,} messages per round, at most "
        f"{summary['rate_method']['window']:,} in flight; latency: {summary['latency_method']['rate']:,.0f} msgs/s "
        f"for {summary['latency_method']['seconds']:g} s per round; one SDK subscriber per backend in its own "
        f"process",
        "",
        f"{'rate':<32}{'offered msgs/s':>26}{'delivered msgs/s':>26}{'dropped':>9}"
        f"{'publisher CPU us/msg':>24}{'broker CPU us/msg':>24}{'subscriber CPU us/msg':>24}",
    ]
    for backend in summary["backends"].values():
        rate = backend["rate"]
        dropped = rate["publisher_dropped"] + rate["sdk_dropped"]
        lines.append(
            f"{backend['label']:<32}{_cell(rate['offered_msgs_per_s']):>26}{_cell(rate['delivered_msgs_per_s']):>26}"
            f"{dropped:>9}{_cell(rate['publisher_cpu_us_per_msg'], 1):>24}"
            f"{_cell(rate['broker_cpu_us_per_msg'], 1):>24}{_cell(rate['subscriber_cpu_us_per_msg'], 1):>24}"
        )
    lines += ["", f"{'latency publish -> SDK':<32}{'p50 us':>26}{'p99 us':>26}{'dropped':>9}{'max us':>24}"]
    for backend in summary["backends"].values():
        latency = backend["latency"]
        dropped = latency["publisher_dropped"] + latency["sdk_dropped"]
        lines.append(
            f"{backend['label']:<32}{_cell(latency['p50_us']):>26}{_cell(latency['p99_us']):>26}{dropped:>9}"
            f"{_cell(latency['max_us']):>24}"
        )
    for gap in summary["gaps"]:
        lines.append(f"gap: {gap}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- entry


def execute(args: argparse.Namespace, sbin: str = DEFAULT_SBIN, out: TextIO = sys.stdout,
            progress: TextIO | None = sys.stderr) -> int:
    """Run what `args` asks for; returns the exit code (2: a broker binary is missing; 1: a failure)."""
    config = BusBenchConfig.quick() if args.quick else BusBenchConfig.normal()
    if args.rounds is not None:
        config = replace(config, rounds=args.rounds)
    try:
        summary = run(config, sbin, progress)
    except BrokerMissing as exc:
        print(f"bench-bus: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"bench-bus: {exc}", file=sys.stderr)
        return 1
    print(table(summary), file=out)
    if args.json:
        print(json.dumps(summary, separators=(",", ":")), file=out)
    return 0
