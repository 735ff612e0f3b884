"""Real nats-server and redis-server processes for the bus tests, each on a free loopback port.

The tests never use a broker already running on the machine (4222, 6379): every server here is started by the
test on a port `free_port()` picked, and stopped by it. Readiness is waited for by connecting to the port within
a bound, never by sleeping. tools/test.sh installs both servers (Debian packages) when they are missing.
`subscribe_live` is the core NATS subscription a test can rely on from the moment it returns.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from tests.procs import TIMEOUT_FACTOR, free_port

START_TIMEOUT_S = 10.0 * TIMEOUT_FACTOR
SUBSCRIBE_TIMEOUT_S = 30.0 * TIMEOUT_FACTOR


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/usr/local/bin")
    if path is None:
        raise RuntimeError(f"{name} is not installed: run tools/test.sh (it installs it with apt-get)")
    return path


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    """Return once 127.0.0.1:`port` accepts a TCP connection; fail if `proc` exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # polling interval of a bounded readiness wait
    raise AssertionError(f"server on port {port} not accepting after {timeout_s:.0f}s: {log.read_text()[-2000:]}")


class BrokerProcess:
    """One broker process that can be stopped and started again on the same port (restart tests)."""

    def __init__(self, args: Sequence[str], port: int, log: Path) -> None:
        self.args = list(args)
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        out = self.log.with_suffix(f".{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        wait_for_port(self.port, self.proc, self.log.with_suffix(f".{self.starts}.log"))

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def nats_server(tmp: Path, *, jetstream: bool = False) -> Iterator[BrokerProcess]:
    """A `nats-server` on a free loopback port (with JetStream on a temp store dir if asked)."""
    port = free_port()
    args = [_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port)]
    if jetstream:
        store = tmp / f"js-{port}"
        store.mkdir(parents=True, exist_ok=True)
        args += ["-js", "-sd", str(store)]
    server = BrokerProcess(args, port, tmp / f"nats-{port}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def redis_server(tmp: Path) -> Iterator[BrokerProcess]:
    """A `redis-server` on a free loopback port, no persistence, its files under `tmp`."""
    port = free_port()
    work = tmp / f"redis-{port}"
    work.mkdir(parents=True, exist_ok=True)
    args = [
        _binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(work), "--protected-mode", "yes",
    ]
    server = BrokerProcess(args, port, tmp / f"redis-{port}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def subscribe_live(nc: NatsClient, subject: str, cb: Callable[[Msg], Awaitable[None]]) -> Subscription:
    """Subscribe `cb` to the core NATS `subject` on `nc` and return once the server holds the subscription: what
    any connection publishes afterwards reaches `cb`.

    `nc.flush()` is no such barrier: nats-py 2.16 writes its PING straight to the socket, ahead of a SUB still in
    its pending buffer (nats-server's trace shows PING, PONG, then SUB), so a PONG does not mean the server has
    the SUB, and under load the server took another connection's PUB before it and routed it nowhere (5683bba).
    Instead a probe has to make the round trip after the SUB: a second subscription, to an inbox of this
    connection only, and a message published to that inbox, both queued behind the SUB. The server handles one
    connection's commands in order, so the probe coming back means it had the SUB first. The probe never goes
    to `subject`: `cb` sees only what others publish, an exact subject needs no special case, and no JetStream
    stream over the watched subjects can store it.
    """
    sub = await nc.subscribe(subject, cb=cb)
    await commands_handled(nc, f"the subscription to {subject}")
    return sub


async def commands_handled(nc: NatsClient, what: str = "the commands sent") -> None:
    """Return once the server has handled every command `nc` queued so far (its SUBs and PUBs): the probe round
    trip of `subscribe_live`, on its own. Raises AssertionError naming `what` when no answer comes in time."""
    probe = await nc.subscribe(nc.new_inbox())
    try:
        await nc.publish(probe.subject, b"")
        await probe.next_msg(timeout=SUBSCRIBE_TIMEOUT_S)
    except nats.errors.TimeoutError:
        raise AssertionError(f"the server did not confirm {what} within {SUBSCRIBE_TIMEOUT_S:.0f}s") from None
    finally:
        if not nc.is_closed:
            await probe.unsubscribe()
