"""Bus and subscriber faults, measured (issue 10 item 4): `python -m flowgauge.bench.bus_faults`.

Sits under `flowgauge.bench`; not part of the daemon. Runs, on free loopback ports, a real stack: the Bybit
simulator (`flowgauge simulate`, packaged recording, `--speed`), a nats-server and a redis-server, and the
daemon (`flowgauge run`) publishing to the embedded bus, NATS and Redis at once. A *healthy* subscriber, the SDK
(`flowgauge.subscribe(ws://..., "flowgauge.v1.>")`) in a child process of its own, records every live message it
is handed: its arrival time (monotonic) and its latency (wall clock at arrival minus the payload's `ts_publish`).

Each round runs these phases back to back, `--phase-s` seconds each, and scrapes the daemon's /metrics before
and after each:

    baseline       no fault
    never_read     `--stalled` websocket clients (4 KiB receive buffers) subscribe to everything, never read again
    reconnect      4 clients connect, subscribe to everything, read a few frames and disconnect, in a loop
    flood          4 clients send ~64 KiB subscribe requests (240 wildcard patterns of 125 tokens, each unique,
                   the shape that held the loop ~200 ms per request before the limits came first), as fast
                   as they are answered
    oversized      4 clients connect and send a 1 MiB text frame, in a loop (each closed 1009)
    nats_restart   the nats-server is stopped, kept down `--outage-s`, started again on the same port
    redis_restart  the same for the redis-server

Reported per phase (median over the rounds, with min-max): the engine's venue messages per second
(`flowgauge_ws_messages_total`) and payloads per second (`flowgauge_published_messages_total{backend=embedded}`),
the healthy subscriber's delivered rate, p99 gap between consecutive messages and p50/p99 latency, and the
counters the fault should move (drops by backend, disconnects and refusals by reason). For the broker
restarts, also how long after the broker came back a probe subscriber on that broker saw a payload again.
The fault clients run in this process, on the same two cores as the daemon: what a misbehaving client on
the same host costs is part of the figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from flowgauge.bench.brokers import BrokerMissing, find_binaries

__all__ = ["FAULTS", "main", "summarize_phase"]

FAULTS = ("baseline", "never_read", "reconnect", "flood", "oversized", "nats_restart", "redis_restart")
PATTERN = "flowgauge.v1.>"
_WORKERS = 4
_START_TIMEOUT_S = 30.0


# ------------------------------------------------------------------------------------------------ processes


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    import socket

    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # polling interval of a bounded readiness wait
    raise RuntimeError(f"{what} not accepting on 127.0.0.1:{port} after {_START_TIMEOUT_S:.0f} s")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()  # our own child, by its handle
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class _Broker:
    """A broker process that can be stopped and started again on the same port."""

    args: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _wait_port(self.port, self.proc, Path(self.args[0]).name)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


@dataclass
class _Stack:
    work: Path
    bus_port: int
    http_port: int
    nats: _Broker
    redis: _Broker
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.bus_port}/"


@contextlib.contextmanager
def _stack(speed: float, work: Path) -> Iterator[_Stack]:
    binaries = find_binaries()
    nats_port, redis_port = _free_port(), _free_port()
    redis_dir = work / "redis"
    redis_dir.mkdir(exist_ok=True)
    stack = _Stack(
        work,
        _free_port(),
        _free_port(),
        _Broker([binaries["nats-server"], "-a", "127.0.0.1", "-p", str(nats_port)], nats_port, work / "nats.log"),
        _Broker(
            [
                binaries["redis-server"],
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(redis_dir),
            ],
            redis_port,
            work / "redis.log",
        ),
    )
    sim_port = _free_port()
    config = {
        "venues": {
            "bybit": {
                "symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
                "ws_url": f"ws://127.0.0.1:{sim_port}/v5/public/linear",
                "rest_url": f"http://127.0.0.1:{sim_port}",
            }
        },
        "bus": {
            "embedded": {"host": "127.0.0.1", "port": stack.bus_port},
            "nats": {"url": f"nats://127.0.0.1:{nats_port}", "reconnect_wait_s": 0.25},
            "redis": {"url": f"redis://127.0.0.1:{redis_port}/0", "reconnect_max_s": 0.5},
        },
        "http": {"host": "127.0.0.1", "port": stack.http_port},
        "log_level": "INFO",
    }
    (work / "daemon.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        stack.nats.start()
        stack.redis.start()
        for name, args in (
            ("simulator", ["simulate", "--venue", "bybit", "--port", str(sim_port), "--speed", f"{speed:g}"]),
            ("daemon", ["run", "-c", str(work / "daemon.yaml")]),
        ):
            with (work / f"{name}.log").open("ab") as out:
                stack.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "flowgauge", *args],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        env=env,
                    )
                )
            _wait_port(sim_port if name == "simulator" else stack.bus_port, stack.procs[-1], name)
        yield stack
    finally:
        for proc in reversed(stack.procs):
            _stop(proc)
        stack.nats.stop()
        stack.redis.stop()


# -------------------------------------------------------------------------------------- healthy subscriber


async def _healthy(url: str, out: Path) -> None:
    """The child: subscribe through the SDK until SIGTERM, then write (arrival ns, latency ns) pairs."""
    import flowgauge

    arrivals, latencies = array("q"), array("q")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    interruptions = 0

    async def read() -> None:
        nonlocal interruptions
        async with flowgauge.subscribe(url, PATTERN, stale_after_s=3600.0) as sub:
            (out.with_suffix(".ready")).touch()
            async for message in sub:
                now_wall, now = time.time_ns(), time.monotonic_ns()
                if isinstance(message, flowgauge.Interrupted):
                    interruptions += 1
                    continue
                if message.snapshot:
                    continue
                ts = message.ts_publish
                arrivals.append(now)
                latencies.append(now_wall - ts if ts is not None else -1)

    task = loop.create_task(read())
    await stop.wait()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    result = {"arrivals": arrivals.tolist(), "latencies": latencies.tolist(), "interruptions": interruptions}
    await asyncio.to_thread(out.write_bytes, orjson.dumps(result))


@contextlib.asynccontextmanager
async def _healthy_child(url: str, work: Path) -> AsyncIterator[Callable[[], Awaitable[dict[str, Any]]]]:
    out = work / "healthy.json"
    out.unlink(missing_ok=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flowgauge.bench.bus_faults",
        "--healthy-subscriber",
        url,
        "--out",
        str(out),
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not out.with_suffix(".ready").exists():
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("the healthy subscriber did not subscribe")
            await asyncio.sleep(0.05)  # polling interval of a bounded readiness wait

        async def finish() -> dict[str, Any]:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):
                await proc.wait()
            return dict(orjson.loads(await asyncio.to_thread(out.read_bytes)))

        yield finish
    finally:
        if proc.returncode is None:
            proc.kill()  # our own child, by its handle
            await proc.wait()


# ------------------------------------------------------------------------------------------------- metrics


async def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as resp,
    ):
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return sum(
        v
        for (n, lab), v in samples.items()
        if n == name and all(dict(lab).get(k) == want for k, want in labels.items())
    )


_COUNTERS: dict[str, tuple[str, dict[str, str]]] = {
    "venue_msgs": ("flowgauge_ws_messages_total", {}),
    "payloads": ("flowgauge_published_messages_total", {"backend": "embedded"}),
    "nats_published": ("flowgauge_published_messages_total", {"backend": "nats"}),
    "redis_published": ("flowgauge_published_messages_total", {"backend": "redis"}),
    "nats_dropped": ("flowgauge_publish_dropped_total", {"backend": "nats"}),
    "redis_dropped": ("flowgauge_publish_dropped_total", {"backend": "redis"}),
    "fanout_dropped": ("flowgauge_fanout_dropped_messages_total", {}),
    "disc_slow": ("flowgauge_fanout_disconnects_total", {"reason": "slow"}),
    "disc_slow_bytes": ("flowgauge_fanout_disconnects_total", {"reason": "slow_bytes"}),
    "disc_slow_lag": ("flowgauge_fanout_disconnects_total", {"reason": "slow_lag"}),
    "disc_client": ("flowgauge_fanout_disconnects_total", {"reason": "client"}),
    "rejected_rate_limited": ("flowgauge_fanout_control_rejected_total", {"reason": "rate_limited"}),
    "rejected_limit": ("flowgauge_fanout_control_rejected_total", {"reason": "limit"}),
}


def _counters(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {key: _total(samples, name, **labels) for key, (name, labels) in _COUNTERS.items()}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize_phase(arrivals_ns: list[int], latencies_ns: list[int], start_ns: int, end_ns: int) -> dict[str, float]:
    """The healthy subscriber's figures over one phase window (monotonic ns): delivered rate, p99 and max gap
    between consecutive messages (ms), p50/p99/max latency (ms)."""
    inside = [(a, lat) for a, lat in zip(arrivals_ns, latencies_ns, strict=True) if start_ns <= a < end_ns]
    seconds = (end_ns - start_ns) / 1e9
    times = [a for a, _ in inside]
    gaps = [(b - a) / 1e6 for a, b in itertools.pairwise(times)]
    lats = [lat / 1e6 for _, lat in inside if lat >= 0]
    return {
        "delivered_per_s": len(inside) / seconds if seconds > 0 else 0.0,
        "gap_p99_ms": _pct(gaps, 0.99),
        "gap_max_ms": max(gaps) if gaps else float("nan"),
        "latency_p50_ms": _pct(lats, 0.50),
        "latency_p99_ms": _pct(lats, 0.99),
        "latency_max_ms": max(lats) if lats else float("nan"),
    }


# -------------------------------------------------------------------------------------------------- faults


def _small_rcvbuf_socket(port: int) -> Any:
    """A connected socket with a 4 KiB receive buffer, so a client that stops reading backs the daemon up after
    kilobytes on its side (the daemon's send buffer still grows to megabytes)."""
    import socket

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def _never_read(stack: _Stack, stop: asyncio.Event, stalled: int) -> dict[str, float]:
    """`stalled` clients subscribe to everything and stop reading; returns how long until the daemon had cut
    them all off (`slow`, `slow_bytes` or `slow_lag`), NaN if not within the phase."""
    from websockets.asyncio.client import connect

    def cut(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        return sum(
            _total(samples, "flowgauge_fanout_disconnects_total", reason=r) for r in ("slow", "slow_bytes", "slow_lag")
        )

    before = cut(await _scrape(stack.http_port))
    started = time.monotonic()
    clients = []
    for _ in range(stalled):
        # max_queue=1: the client library stops reading its socket after one frame, as a stuck strategy would.
        ws = await connect(stack.ws_url, sock=_small_rcvbuf_socket(stack.bus_port), max_queue=1, close_timeout=0.5)
        await ws.send(orjson.dumps({"op": "subscribe", "patterns": [PATTERN]}).decode())
        clients.append(ws)
    cut_after = float("nan")
    while not stop.is_set():
        if cut(await _scrape(stack.http_port)) - before >= stalled:
            cut_after = time.monotonic() - started
            break
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):  # polling interval (the /metrics rendering is cached for 1 s)
                await stop.wait()
    await stop.wait()
    for ws in clients:
        ws.transport.abort()
    return {"clients": float(stalled), "cut_after_s": cut_after}


async def _reconnect(stack: _Stack, stop: asyncio.Event) -> dict[str, float]:
    from websockets.asyncio.client import connect

    cycles = 0

    async def worker() -> None:
        nonlocal cycles
        while not stop.is_set():
            # max_queue=None: the client library never pauses reading, so its close() is not stuck behind
            # live frames it stopped consuming (websockets would then wait close_timeout, 10 s, for the reply).
            async with connect(stack.ws_url, max_size=2**22, max_queue=None) as ws:
                await ws.send(orjson.dumps({"op": "subscribe", "patterns": [PATTERN]}).decode())
                async with asyncio.timeout(5):
                    for _ in range(5):  # the reply, the current values (one frame each), then live frames
                        await ws.recv()
            cycles += 1

    await asyncio.gather(*(worker() for _ in range(_WORKERS)))
    return {"cycles": float(cycles)}


async def _flood(stack: _Stack, stop: asyncio.Event) -> dict[str, float]:
    from websockets.asyncio.client import connect

    sent = 0

    async def worker(n: int) -> None:
        nonlocal sent
        async with connect(stack.ws_url, max_size=2**22) as ws:
            k = 0
            while not stop.is_set():
                patterns = [".".join(["*"] * 124 + [f"x{i}c{n}r{k}"]) for i in range(240)]
                await ws.send(orjson.dumps({"op": "subscribe", "patterns": patterns}).decode())
                await ws.recv()
                sent += 1
                k += 1

    await asyncio.gather(*(worker(n) for n in range(_WORKERS)))
    return {"requests": float(sent)}


async def _oversized(stack: _Stack, stop: asyncio.Event) -> dict[str, float]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    closed_1009 = 0
    frame = "x" * (1 << 20)

    async def worker() -> None:
        nonlocal closed_1009
        while not stop.is_set():
            async with connect(stack.ws_url) as ws:
                try:
                    await ws.send(frame)
                    async with asyncio.timeout(5):
                        await ws.recv()
                except ConnectionClosed as exc:
                    if exc.rcvd is not None and exc.rcvd.code == 1009:
                        closed_1009 += 1

    await asyncio.gather(*(worker() for _ in range(_WORKERS)))
    return {"closed_1009": float(closed_1009)}


async def _broker_restart(stack: _Stack, stop: asyncio.Event, which: str, outage_s: float) -> dict[str, float]:
    """Stop the broker, keep it down `outage_s`, start it again; then time until a probe sees a payload."""
    broker = stack.nats if which == "nats" else stack.redis
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(outage_s)  # the outage's length, part of the fault
    await asyncio.to_thread(broker.start)
    up = time.monotonic()
    resumed = float("nan")
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            if which == "nats":
                import nats

                got = asyncio.Event()

                async def on_msg(_: Any) -> None:
                    got.set()

                nc = await nats.connect(f"nats://127.0.0.1:{broker.port}", allow_reconnect=False)
                try:
                    await nc.subscribe(PATTERN, cb=on_msg)
                    await got.wait()
                finally:
                    await nc.close()
            else:
                import redis.asyncio

                client = redis.asyncio.Redis(port=broker.port)
                try:
                    async with client.pubsub() as pubsub:
                        await pubsub.psubscribe("flowgauge.v1.*")
                        while (await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)) is None:
                            pass
                finally:
                    await client.aclose()
            resumed = time.monotonic() - up
    await stop.wait()
    return {"outage_s": outage_s, "resumed_after_s": resumed}


# ---------------------------------------------------------------------------------------------------- run


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    faults = [f for f in args.faults.split(",") if f]
    with tempfile.TemporaryDirectory(prefix="flowgauge-bus-faults-") as tmp, _stack(args.speed, Path(tmp)) as stack:
        # Warm-up: books VALID and payloads flowing on every backend.
        deadline = time.monotonic() + 60
        while True:
            counters = _counters(await _scrape(stack.http_port))
            if counters["payloads"] > 0 and counters["nats_published"] > 0 and counters["redis_published"] > 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"no payloads within 60 s; logs in {tmp}")
            await asyncio.sleep(0.2)  # polling interval of a bounded readiness wait
        await asyncio.sleep(args.warmup_s)  # warm-up length
        phases: list[dict[str, Any]] = []
        async with _healthy_child(stack.ws_url, stack.work) as finish:
            for round_no in range(args.rounds):
                for fault in faults:
                    stop = asyncio.Event()
                    before = _counters(await _scrape(stack.http_port))
                    scraped_before = time.monotonic()
                    start_ns = time.monotonic_ns()
                    actor: asyncio.Task[dict[str, float]] | None = None
                    if fault == "never_read":
                        actor = asyncio.ensure_future(_never_read(stack, stop, args.stalled))
                    elif fault == "reconnect":
                        actor = asyncio.ensure_future(_reconnect(stack, stop))
                    elif fault == "flood":
                        actor = asyncio.ensure_future(_flood(stack, stop))
                    elif fault == "oversized":
                        actor = asyncio.ensure_future(_oversized(stack, stop))
                    elif fault in ("nats_restart", "redis_restart"):
                        actor = asyncio.ensure_future(_broker_restart(stack, stop, fault.split("_")[0], args.outage_s))
                    await asyncio.sleep(args.phase_s)  # the phase's length
                    stop.set()
                    end_ns = time.monotonic_ns()
                    extra = await actor if actor is not None else {}
                    after = _counters(await _scrape(stack.http_port))
                    # Counter rates over the two scrapes (each a fresh rendering: /metrics is cached for 1 s, and
                    # scrapes here are more than 1 s apart); the healthy subscriber's over the phase window.
                    seconds = time.monotonic() - scraped_before
                    delta = {k: after[k] - before[k] for k in after}
                    phases.append(
                        {
                            "round": round_no,
                            "fault": fault,
                            "start_ns": start_ns,
                            "end_ns": end_ns,
                            "venue_msgs_per_s": delta.pop("venue_msgs") / seconds,
                            "payloads_per_s": delta.pop("payloads") / seconds,
                            "counters": delta,
                            "fault_stats": extra,
                        }
                    )
                    print(f"round {round_no + 1}/{args.rounds} {fault}: done", file=sys.stderr)
                    await asyncio.sleep(1.5)  # settle between phases; also outlives the daemon's 1 s /metrics cache
            healthy = await finish()
    for phase in phases:
        phase["healthy"] = summarize_phase(
            healthy["arrivals"], healthy["latencies"], phase["start_ns"], phase["end_ns"]
        )
    return {
        "schema": "flowgauge.bench_bus_faults.v1",
        "rounds": args.rounds,
        "phase_s": args.phase_s,
        "speed": args.speed,
        "stalled": args.stalled,
        "outage_s": args.outage_s,
        "interruptions": healthy["interruptions"],
        "phases": phases,
    }


def _fmt(values: list[float], spec: str = ".0f") -> str:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return format(med, spec)
    return f"{med:{spec}} ({min(values):{spec}}-{max(values):{spec}})"


def report(result: dict[str, Any]) -> str:
    """The table: one row per fault, median (min-max) over the rounds."""
    faults = list(dict.fromkeys(p["fault"] for p in result["phases"]))
    lines = [
        f"bus faults: {result['rounds']} rounds, {result['phase_s']:g} s per phase, simulator speed "
        f"{result['speed']:g}; median (min-max)",
        f"{'fault':14} {'venue msg/s':>18} {'payloads/s':>18} {'healthy msg/s':>18} {'gap p99 ms':>16} "
        f"{'lat p99 ms':>16}  counters moved (median)",
    ]
    for fault in faults:
        rows = [p for p in result["phases"] if p["fault"] == fault]
        counters = {k: statistics.median(p["counters"][k] for p in rows) for k in rows[0]["counters"]}
        moved = {k: v for k, v in counters.items() if v and not k.endswith("_published")}
        extra = {k: _fmt([p["fault_stats"][k] for p in rows], ".2f") for k in rows[0]["fault_stats"]}
        lines.append(
            f"{fault:14} {_fmt([p['venue_msgs_per_s'] for p in rows]):>18} "
            f"{_fmt([p['payloads_per_s'] for p in rows]):>18} "
            f"{_fmt([p['healthy']['delivered_per_s'] for p in rows]):>18} "
            f"{_fmt([p['healthy']['gap_p99_ms'] for p in rows]):>16} "
            f"{_fmt([p['healthy']['latency_p99_ms'] for p in rows]):>16}  "
            + " ".join(f"{k}={v:g}" for k, v in moved.items())
            + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")
        )
    lines.append(f"healthy subscriber interruptions: {result['interruptions']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowgauge.bench.bus_faults", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--phase-s",
        type=float,
        default=20.0,
        help="length of each phase (default 20: never-reading clients are cut after the kernel's "
        "buffers fill and then client_max_lag_s, 10 s, passes)",
    )
    parser.add_argument("--speed", type=float, default=20.0, help="simulator --speed (default 20)")
    parser.add_argument("--stalled", type=int, default=20, help="never-reading clients (default 20)")
    parser.add_argument("--outage-s", type=float, default=3.0, help="how long a broker stays down (default 3)")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--json", type=Path, help="also write the raw result here")
    parser.add_argument("--healthy-subscriber", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.healthy_subscriber:
        asyncio.run(_healthy(args.healthy_subscriber, args.out))
        return 0
    unknown = set(args.faults.split(",")) - set(FAULTS)
    if unknown:
        print(f"bus_faults: unknown fault(s) {', '.join(sorted(unknown))}; known: {', '.join(FAULTS)}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(_run(args))
    except BrokerMissing as exc:
        print(f"bus_faults: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
