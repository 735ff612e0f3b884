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
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

from flowgauge.bench.brokers import DEFAULT_SBIN, BrokerMissing, Brokers, find_binaries, running_brokers
from flowgauge.bench.bus_payloads import PayloadSet, load_payloads
from flowgauge.bench.bus_phases import (
    CHILD_TIMEOUT_S,
    YIELD_EVERY,
    BusPath,
    Feed,
    LoopbackFloor,
    SubscriberProcess,
    measure_latency,
    measure_rate,
)
from flowgauge.bench.bus_report import table
from flowgauge.bench.bus_subscriber import loop_factory

__all__ = ["BACKENDS", "BusBenchConfig", "execute", "run"]

SCHEMA = "flowgauge.bench_bus.v1"

# name -> (label, transport of the subscriber)
BACKENDS: dict[str, tuple[str, str]] = {
    "embedded": ("embedded bus", "ws"),
    "nats": ("NATS core", "nats"),
    "nats_jetstream": ("NATS + JetStream state stream", "nats"),
    "redis": ("Redis", "redis"),
    "loopback": ("floor: loopback TCP, no broker", "tcp"),
}



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


# ---------------------------------------------------------------------------------------------- the run


async def _open_backends(brokers: Brokers) -> list[BusPath]:
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
    backends = [BusPath("embedded", bus, f"ws://127.0.0.1:{bus.bound_port}", lambda: bus.dropped)]
    for name, publisher, url in publishers:
        await publisher.start()
        backends.append(BusPath(name, publisher, url, _drop_count(publisher), brokers.pids.get(name)))
    floor = LoopbackFloor()
    await floor.start()
    backends.append(BusPath("loopback", floor, f"tcp://127.0.0.1:{floor.port}", lambda: 0))
    return backends


def _drop_count(publisher: Any) -> Callable[[], int]:
    return lambda: int(publisher.dropped)


async def _measure(config: BusBenchConfig, payloads: PayloadSet, brokers: Brokers,
                   say: Callable[[str], None]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    backends = await _open_backends(brokers)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {b.name: {"rate": [], "latency": []} for b in backends}
    try:
        for backend in backends:  # all start together: spawning and importing overlap
            backend.child = SubscriberProcess(backend.name, backend.url, config.subscriber_queue)
        for backend in backends:
            assert backend.child is not None
            await backend.child.reply()  # ("ready",)
            if isinstance(backend.publisher, LoopbackFloor):  # its connection is accepted by this loop
                async with asyncio.timeout(CHILD_TIMEOUT_S):
                    await backend.publisher.connected.wait()
        feed = Feed(payloads)
        say(f"subscribers ready; warm-up ({config.warmup_messages} messages per backend) ...")
        for backend in backends:  # connections, JetStream stream creation, caches: before anything is timed
            await measure_rate(backend, feed, config.warmup_messages, config.window)
        for r in range(config.rounds):
            started = time.perf_counter()
            order = backends[r % len(backends):] + backends[:r % len(backends)]
            for backend in order:
                steps = [("rate", lambda b=backend: measure_rate(b, feed, config.rate_messages, config.window)),
                         ("latency", lambda b=backend: measure_latency(b, feed, config.latency_rate,
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
            "yield_every": YIELD_EVERY,
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
