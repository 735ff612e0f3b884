"""The live mix: a real daemon fed by the five venue simulators, CPU per published payload.

Sits under `flowgauge.bench`; the daemon never imports it. Two subprocesses are started exactly as a user
would: `flowgauge simulate --venue all` (the packaged recordings of all five venues, served over each venue's
own protocol on loopback, at `speed` times the recorded pace, looping) and `flowgauge run -c <config>` with
the offline demo's venues and symbols on free ports. Nothing in the daemon knows it is measured.

Definition (the README says the same): `cpu_us_per_payload_demo_mix` = the DAEMON process's CPU time (user +
system, from /proc/<pid>/stat; the simulators' process is not counted) over a window, divided by the payloads
it published in that window (`flowgauge_published_messages_total{backend="embedded"}` from its /metrics).
The window starts once /readyz says every book is VALID and a short settling time has passed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DEMO_VENUES", "measure_demo_mix"]

# venue -> (symbols, websocket path): the offline demo's set (config/offline-demo.yaml), in simulate's order.
DEMO_VENUES: dict[str, tuple[list[str], str]] = {
    "bybit": (["BTC/USDT:USDT", "ETH/USDT:USDT"], "/v5/public/linear"),
    "binanceusdm": (["BTC/USDT:USDT", "ETH/USDT:USDT"], ""),
    "okx": (["BTC/USDT:USDT", "ETH/USDT:USDT"], "/ws/v5/public"),
    "deribit": (["BTC/USD:BTC", "ETH/USD:ETH"], "/ws/api/v2"),
    "hyperliquid": (["BTC/USDC:USDC", "ETH/USDC:USDC"], "/ws"),
}
_METRIC = re.compile(r'^flowgauge_published_messages_total\{backend="embedded"\}\s+([0-9.eE+]+)$', re.M)
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _five_free_ports() -> int:
    """A base port with the four after it free too (simulate --base-port takes five in a row)."""
    for _ in range(50):
        base = _free_port()
        if base + 4 > 65535:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for offset in range(5):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no five consecutive free loopback ports")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid`, from Linux's /proc (the platform the figures are quoted on)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rpartition(")")[2].split()
    except OSError as exc:
        raise RuntimeError(f"demo_mix reads the daemon's CPU time from /proc (Linux only): {exc}") from exc
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15 of stat)


def _get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _published(http_port: int) -> float:
    _, body = _get(http_port, "/metrics")
    match = _METRIC.search(body.decode())
    return float(match.group(1)) if match else 0.0


@contextlib.contextmanager
def _flowgauge(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FLOWGAUGE_LOG_LEVEL": "WARNING"}
    with log.open("wb") as out:
        command = [sys.executable, "-m", "flowgauge", *args]
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # our own child, by its handle
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _config(base: int, bus_port: int, http_port: int) -> dict[str, Any]:
    venues = {}
    for offset, (venue, (symbols, path)) in enumerate(DEMO_VENUES.items()):
        port = base + offset
        venues[venue] = {
            "symbols": symbols,
            "ws_url": f"ws://127.0.0.1:{port}{path}",
            "rest_url": f"http://127.0.0.1:{port}",
            "stale_after_s": 15,
        }
    return {
        "venues": venues,
        "bus": {"embedded": {"enabled": True, "host": "127.0.0.1", "port": bus_port}},
        "http": {"host": "127.0.0.1", "port": http_port},
        "log_level": "WARNING",
    }


def measure_demo_mix(speed: float = 20.0, window_s: float = 20.0, settle_s: float = 3.0) -> dict[str, Any]:
    """Run the demo mix once; returns the CPU per payload and what it was computed from.

    Raises:
        RuntimeError: a process died or the books did not all become VALID within two minutes.
    """
    base, bus_port, http_port = _five_free_ports(), _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="flowgauge-bench-") as tmp:
        folder = Path(tmp)
        config = folder / "demo-mix.yaml"
        config.write_bytes(orjson.dumps(_config(base, bus_port, http_port)))  # JSON is YAML
        simulate = ["simulate", "--venue", "all", "--base-port", str(base), "--speed", f"{speed:g}"]
        with (
            _flowgauge(simulate, folder / "simulate.log") as simulators,
            _flowgauge(["run", "-c", str(config)], folder / "daemon.log") as daemon,
        ):
            deadline = time.monotonic() + 120.0
            while True:
                for proc, name in ((simulators, "simulate"), (daemon, "daemon")):
                    if proc.poll() is not None:
                        tail = (folder / f"{name}.log").read_text(errors="replace")[-1500:]
                        raise RuntimeError(f"demo_mix: {name} exited with {proc.returncode}: {tail}")
                with contextlib.suppress(OSError):
                    if _get(http_port, "/readyz", timeout=2.0)[0] == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("demo_mix: the books did not all become VALID within 120 s")
                time.sleep(0.2)  # polling an external process's readiness, bounded by the deadline above
            time.sleep(settle_s)  # let the first snapshots and bursts pass before the window opens
            cpu0, published0, wall0 = _cpu_seconds(daemon.pid), _published(http_port), time.monotonic()
            time.sleep(window_s)  # the measurement window itself
            cpu1, published1, wall1 = _cpu_seconds(daemon.pid), _published(http_port), time.monotonic()
            _, status_body = _get(http_port, "/status")
            status = orjson.loads(status_body)
            ready = _get(http_port, "/readyz")[0] == 200
    cpu = cpu1 - cpu0
    payloads = published1 - published0
    seconds = wall1 - wall0
    return {
        "cpu_us_per_payload": cpu * 1e6 / payloads if payloads > 0 else None,
        "payloads": int(payloads),
        "payloads_per_s": payloads / seconds if seconds > 0 else 0.0,
        "daemon_cpu_share": cpu / seconds if seconds > 0 else 0.0,
        "window_s": seconds,
        "speed": speed,
        "venues": list(DEMO_VENUES),
        "books": sum(len(symbols) for symbols, _ in DEMO_VENUES.values()),
        "ready_at_end": ready,
        "core": status.get("core"),
    }
