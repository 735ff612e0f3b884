"""The brokers of the bus benchmark: a core nats-server, a nats-server with JetStream and a redis-server, each
started by the bench on a free loopback port with its files in a temporary directory, and stopped by it.

Sits under `flowgauge.bench`, used by `bench.bus`. Never touches a broker already running on the machine (4222,
6379): every server here is the bench's own child process. The binaries are looked up in PATH, then in the
system directories given (Debian puts nats-server in /usr/sbin, outside a user's PATH).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_SBIN", "BrokerMissing", "Brokers", "cpu_seconds", "find_binaries", "running_brokers"]

DEFAULT_SBIN = "/usr/sbin:/sbin"
_START_TIMEOUT_S = 15.0
_PACKAGES = {"nats-server": "nats-server", "redis-server": "redis-server"}


class BrokerMissing(Exception):
    """A broker binary is not installed; the message is the one line for stderr."""


def find_binaries(sbin: str = DEFAULT_SBIN) -> dict[str, str]:
    """name -> path of nats-server and redis-server, from PATH then `sbin` (os.pathsep-separated).

    Raises:
        BrokerMissing: naming every missing binary and the Debian package that provides it.
    """
    found: dict[str, str] = {}
    missing: list[str] = []
    for name in _PACKAGES:
        path = shutil.which(name) or (shutil.which(name, path=sbin) if sbin else None)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        where = f"PATH or {sbin}" if sbin else "PATH"
        packages = " ".join(_PACKAGES[name] for name in missing)
        raise BrokerMissing(f"{' and '.join(missing)} not found in {where}: install Debian's {packages} "
                            f"(apt-get install {packages})")
    return found


@dataclass(frozen=True, slots=True)
class Brokers:
    """URLs of the running brokers and their versions."""

    nats_core_url: str
    nats_jetstream_url: str
    redis_url: str
    versions: dict[str, str]
    pids: dict[str, int]  # "nats", "nats_jetstream", "redis" -> the server's process id (for its CPU time)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(name: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{name} exited with {proc.returncode}: {tail[0][:200]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)  # polling interval of a bounded readiness wait
    raise RuntimeError(f"{name} not accepting on 127.0.0.1:{port} after {_START_TIMEOUT_S:.0f} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # our own child, by its handle
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _start(args_for: Sequence[str], port_flag_index: int, log: Path,
           procs: list[subprocess.Popen[bytes]]) -> tuple[int, int]:
    """Start a server on a free port (a second port if another process took the first meanwhile); returns
    (port, pid)."""
    for attempt in range(2):
        port = _free_port()
        args = list(args_for)
        args[port_flag_index] = str(port)
        with log.open("ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(proc)
        try:
            _wait_for_port(Path(args[0]).name, port, proc, log)
            return port, proc.pid
        except RuntimeError:
            _stop(proc)
            if attempt == 1:
                raise
    raise AssertionError("unreachable")


def _version(binary: str) -> str:
    try:
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip().splitlines()[0][:80] if (done.stdout or done.stderr) else "unknown"


@contextlib.contextmanager
def running_brokers(binaries: dict[str, str]) -> Iterator[Brokers]:
    """Start the three brokers, yield their URLs, stop them (and remove their files) on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="flowgauge-bench-bus-") as tmp:
        work = Path(tmp)
        try:
            nats, redis = binaries["nats-server"], binaries["redis-server"]
            core, core_pid = _start([nats, "-a", "127.0.0.1", "-p", "0"], 4, work / "nats-core.log", procs)
            store = work / "jetstream"
            store.mkdir()
            jetstream, jetstream_pid = _start([nats, "-a", "127.0.0.1", "-p", "0", "-js", "-sd", str(store)], 4,
                                              work / "nats-js.log", procs)
            redis_dir = work / "redis"
            redis_dir.mkdir()
            redis_port, redis_pid = _start(
                [redis, "--port", "0", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(redis_dir), "--protected-mode", "yes"],
                2, work / "redis.log", procs,
            )
            yield Brokers(
                nats_core_url=f"nats://127.0.0.1:{core}",
                nats_jetstream_url=f"nats://127.0.0.1:{jetstream}",
                redis_url=f"redis://127.0.0.1:{redis_port}/0",
                versions={"nats-server": _version(nats), "redis-server": _version(redis)},
                pids={"nats": core_pid, "nats_jetstream": jetstream_pid, "redis": redis_pid},
            )
        finally:
            for proc in procs:
                _stop(proc)



def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) process `pid` has used, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
        return ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
