"""Helpers to run flowgauge commands as real subprocesses on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import yaml

TIMEOUT_FACTOR = float(os.environ.get("FLOWGAUGE_TESTS_TIMEOUT_FACTOR", "1"))


# Ports this test process has handed out: a port is free only until something binds it, and the kernel hands the
# same ephemeral port out again at once, so a test that took a simulator's five ports and then two more for the
# daemon's listeners got one of the five back (the daemon then failed with "address already in use").
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port not handed out before in this process."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise AssertionError("no free loopback port that was not handed out already")


def reserve_ports(ports: range) -> None:
    """Mark `ports` (taken by a test without `free_port`) as handed out, so `free_port` never returns them."""
    _HANDED_OUT.update(ports)


@contextmanager
def flowgauge(
    args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `python -m flowgauge ARGS` (with `env` added to this environment); on exit terminate it if still
    running."""
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "flowgauge", *args]
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def process(args: Sequence[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start any program (a real server the test needs); terminate it on exit."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def write_config(path: Path, sim_port: int, bus_port: int, http_port: int, **venue: Any) -> Path:
    config = {
        "venues": {
            "bybit": {
                "symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
                "ws_url": f"ws://127.0.0.1:{sim_port}/v5/public/linear",
                "rest_url": f"http://127.0.0.1:{sim_port}",
                "stale_after_s": 10,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 1.0,
                **venue,
            }
        },
        "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port}},
        "http": {"host": "127.0.0.1", "port": http_port},
        "log_level": "INFO",
    }
    path.write_text(yaml.safe_dump(config))
    return path


async def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """Poll an async or sync condition until it returns a truthy value; fail naming `what`."""
    deadline = time.monotonic() + timeout_s * TIMEOUT_FACTOR
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            last_error = exc
        await asyncio.sleep(0.05)  # polling interval of a condition wait, not a synchronisation sleep
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error!r})")


async def http_get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", timeout=aiohttp.ClientTimeout(total=5)) as response,
    ):
        return response.status, await response.text()


def wait_until(check: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout_s` (scaled by TIMEOUT_FACTOR)."""
    deadline = time.monotonic() + timeout_s * TIMEOUT_FACTOR
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval of a bounded condition wait


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, theirs, ...)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            text = Path(f"/proc/{parent}/task/{parent}/children").read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
