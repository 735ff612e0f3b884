"""Broker credentials from files and the environment, end to end, and the secrets never shown (issue 10, item 8).

A real `nats-server` started with user/password authentication and a real `redis-server` with `requirepass`
(both refuse a client without them, checked first), the Bybit simulator, and `flowgauge run` as a subprocess:

* From files: `bus.nats.user` + `bus.nats.password_file`, `bus.redis.password_file`, `bus.embedded.token_file`,
  `http.token_file` (each file ends in a newline, stripped). The daemon publishes book payloads that an
  authenticated NATS subscriber receives and that land in Redis's last-value keys; `/status` (with the HTTP token)
  shows both publishers connected and how they authenticate; its log, `/status` and `check-config --print`
  never contain a secret. The daemon runs with its working directory and HOME in fresh directories made
  read-only (0555; the tests may run as root, whom chmod does not stop, so the check is an audit): after a run
  and a SIGTERM (exit 0) both are still empty: it wrote nothing outside its configured dirs.
* From the environment: both broker URLs carrying their credentials (`nats://user:pass@...`,
  `redis://:pass@...`) connect, and the passwords appear nowhere either.
* A missing or empty secret file: `run` and `check-config` exit 2 with one line naming the key and the file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import nats
import nats.errors
import orjson
import pytest
import redis.asyncio
import redis.exceptions
import yaml
from tests.brokers import BrokerProcess, _binary
from tests.conftest import BYBIT_RECORDING
from tests.procs import TIMEOUT_FACTOR, flowgauge, free_port, wait_for, write_config

pytestmark = pytest.mark.integration

# Distinct strings: any occurrence of one in an output is a leak.
NATS_USER = "flowgauge"
NATS_PASSWORD = "nats-pw-6a1f0c"
REDIS_PASSWORD = "redis-pw-93be27"
HTTP_TOKEN = "http-tok-5d8e41"
BUS_TOKEN = "bus-tok-c27a90"
SECRETS = (NATS_PASSWORD, REDIS_PASSWORD, HTTP_TOKEN, BUS_TOKEN)


@contextmanager
def _brokers(tmp: Path) -> Iterator[tuple[int, int]]:
    """A nats-server requiring user/password and a redis-server requiring a password, on free ports."""
    nats_port, redis_port = free_port(), free_port()
    work = tmp / "redis-data"
    work.mkdir()
    nats_server = BrokerProcess(
        [_binary("nats-server"), "-a", "127.0.0.1", "-p", str(nats_port), "--user", NATS_USER, "--pass", NATS_PASSWORD],
        nats_port,
        tmp / "nats",
    )
    redis_server = BrokerProcess(
        [
            _binary("redis-server"),
            "--port",
            str(redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
            "--requirepass",
            REDIS_PASSWORD,
        ],
        redis_port,
        tmp / "redis",
    )
    nats_server.start()
    try:
        redis_server.start()
        try:
            yield nats_port, redis_port
        finally:
            redis_server.stop()
    finally:
        nats_server.stop()


async def _servers_refuse_anonymous_clients(nats_port: int, redis_port: int) -> None:
    with pytest.raises(nats.errors.Error):
        await nats.connect(
            f"nats://127.0.0.1:{nats_port}", allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2
        )
    client = redis.asyncio.Redis(host="127.0.0.1", port=redis_port)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            await client.ping()
    finally:
        await client.aclose()


@contextmanager
def _daemon(
    args: Sequence[str], log_path: Path, cwd: Path, env: Mapping[str, str]
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m flowgauge ARGS` in `cwd` with `env` added; SIGTERM (then kill) on exit if still running."""
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", **env}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flowgauge", *args], stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=cwd
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as r,
    ):
        return r.status, await r.text()


def _secret_file(tmp: Path, name: str, secret: str) -> Path:
    path = tmp / "secrets" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(secret + "\n")
    path.chmod(0o400)
    return path


def _read_only_dir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir()
    path.chmod(0o555)
    return path


def _assert_no_secret(where: str, text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} shows {leaked}: {text[-3000:]}"


async def test_credentials_from_files_publish_and_no_secret_shows(tmp_path: Path) -> None:
    with _brokers(tmp_path) as (nats_port, redis_port):
        await _servers_refuse_anonymous_clients(nats_port, redis_port)
        # Arrange: the config names only files; the secrets are nowhere in it.
        sim_port, bus_port, http_port = free_port(), free_port(), free_port()
        config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
        data: dict[str, Any] = yaml.safe_load(config.read_text())
        data["bus"]["embedded"]["token_file"] = str(_secret_file(tmp_path, "bus_token", BUS_TOKEN))
        data["bus"]["nats"] = {
            "url": f"nats://127.0.0.1:{nats_port}",
            "user": NATS_USER,
            "password_file": str(_secret_file(tmp_path, "nats_password", NATS_PASSWORD)),
            "reconnect_wait_s": 0.2,
        }
        data["bus"]["redis"] = {
            "url": f"redis://127.0.0.1:{redis_port}/0",
            "password_file": str(_secret_file(tmp_path, "redis_password", REDIS_PASSWORD)),
        }
        data["http"]["token_file"] = str(_secret_file(tmp_path, "http_token", HTTP_TOKEN))
        config.write_text(yaml.safe_dump(data))
        _assert_no_secret("the config file", config.read_text())
        cwd, home = _read_only_dir(tmp_path, "cwd"), _read_only_dir(tmp_path, "home")
        scratch = tmp_path / "tmp"
        scratch.mkdir()
        env = {"HOME": str(home), "TMPDIR": str(scratch), "FLOWGAUGE_CONFIG": ""}

        printed = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "flowgauge", "check-config", "-c", str(config), "--print"],
            capture_output=True,
            text=True,
            timeout=60 * TIMEOUT_FACTOR,
            cwd=cwd,
            env={**os.environ, **env},
        )
        assert printed.returncode == 0, printed.stderr
        _assert_no_secret("check-config --print", printed.stdout + printed.stderr)
        shown = yaml.safe_load(printed.stdout.partition("\n")[2])
        assert shown["bus"]["nats"]["password"] == "***" and shown["bus"]["redis"]["password"] == "***"
        assert shown["http"]["token"] == "***" and shown["bus"]["embedded"]["token"] == "***"

        sim_args = [
            "simulate",
            "--venue",
            "bybit",
            "--recording",
            str(BYBIT_RECORDING),
            "--port",
            str(sim_port),
            "--speed",
            "4",
        ]
        subscriber = await nats.connect(f"nats://127.0.0.1:{nats_port}", user=NATS_USER, password=NATS_PASSWORD)
        received: list[bytes] = []

        async def on_message(msg: Any) -> None:
            received.append(msg.data)

        await subscriber.subscribe("flowgauge.v1.bybit.>", cb=on_message)
        store = redis.asyncio.Redis(host="127.0.0.1", port=redis_port, password=REDIS_PASSWORD)
        daemon_log = tmp_path / "daemon.log"
        try:
            with (
                flowgauge(sim_args, tmp_path / "sim.log"),
                _daemon(["run", "-c", str(config)], daemon_log, cwd, env) as daemon,
            ):
                # Act + assert: payloads through both authenticated brokers.
                try:
                    await wait_for(
                        lambda: any(b'"trigger":"book"' in m for m in received), "a book payload on NATS", 60
                    )
                    await wait_for(
                        lambda: store.keys("flowgauge:last:flowgauge.v1.bybit.*"), "last values in Redis", 30
                    )
                except AssertionError:
                    raise AssertionError(daemon_log.read_text()[-3000:]) from None
                assert await _get(http_port, "/status") == (401, "unauthorized\n")
                code, body = await _get(http_port, "/status", HTTP_TOKEN)
                assert code == 200
                _assert_no_secret("/status", body)
                publishers = orjson.loads(body)["publishers"]
                assert publishers["nats"]["connected"] and publishers["nats"]["auth"] == "user_password"
                assert publishers["redis"]["connected"] and publishers["redis"]["auth"] == "password"
                code, body = await _get(http_port, "/readyz")
                _assert_no_secret("/readyz", body)
                daemon.send_signal(signal.SIGTERM)
                assert daemon.wait(15 * TIMEOUT_FACTOR) == 0
        finally:
            await subscriber.close()
            await store.aclose()
        log = daemon_log.read_text()
        _assert_no_secret("the daemon's log", log)
        assert "nats_connected" in log and "redis_connected" in log, log[-3000:]
        # The audit: nothing written in the working directory or HOME.
        assert sorted(os.listdir(cwd)) == [] and sorted(os.listdir(home)) == [], (os.listdir(cwd), os.listdir(home))


async def test_broker_urls_with_credentials_from_the_environment(tmp_path: Path) -> None:
    with _brokers(tmp_path) as (nats_port, redis_port):
        http_port = free_port()
        config = write_config(tmp_path / "cfg.yaml", free_port(), free_port(), http_port)  # no simulator running
        env = {
            "FLOWGAUGE_BUS__NATS__URL": f"nats://{NATS_USER}:{NATS_PASSWORD}@127.0.0.1:{nats_port}",
            "FLOWGAUGE_BUS__REDIS__URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis_port}/0",
        }
        daemon_log = tmp_path / "daemon.log"
        with _daemon(["run", "-c", str(config)], daemon_log, tmp_path, env) as daemon:

            async def both_connected() -> bool:
                code, body = await _get(http_port, "/status")
                publishers = orjson.loads(body)["publishers"] if code == 200 else {}
                return bool(publishers) and all(p["connected"] for p in publishers.values())

            try:
                await wait_for(both_connected, "both publishers connected", 30)
            except AssertionError:
                raise AssertionError(daemon_log.read_text()[-3000:]) from None
            code, body = await _get(http_port, "/status")
            assert code == 200
            _assert_no_secret("/status", body)
            assert {p["auth"] for p in orjson.loads(body)["publishers"].values()} == {"url"}
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(15 * TIMEOUT_FACTOR) == 0
        _assert_no_secret("the daemon's log", daemon_log.read_text())


@pytest.mark.parametrize("command", ["run", "check-config"])
@pytest.mark.parametrize(
    ("key", "content", "why"),
    [
        ("bus.nats.password_file", None, "cannot read {path}: No such file or directory"),
        ("bus.redis.password_file", "\n", "{path} is empty"),
    ],
)
async def test_a_missing_or_empty_secret_file_exits_2_with_one_line(
    tmp_path: Path, command: str, key: str, content: str | None, why: str
) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    config = write_config(tmp_path / "cfg.yaml", free_port(), free_port(), free_port())
    data: dict[str, Any] = yaml.safe_load(config.read_text())
    backend = key.split(".")[1]
    data["bus"][backend] = {"url": f"{backend}://127.0.0.1:{free_port()}", key.split(".")[2]: str(path)}
    if backend == "nats":
        data["bus"]["nats"]["user"] = NATS_USER
    config.write_text(yaml.safe_dump(data))

    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flowgauge", command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60 * TIMEOUT_FACTOR,
    )

    assert result.returncode == 2, result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].endswith(f"{key}: {why.format(path=path)}"), lines[0]
    assert result.stdout == ""


async def test_flowgauge_tail_never_shows_the_credentials_in_its_url(tmp_path: Path) -> None:
    """`flowgauge tail --url` with credentials in the URL: its error lines name the URL with `***` in place of
    each secret. Against the real brokers with a wrong password (refused: the Unauthorized lines), a NATS token
    and a Redis password on a port where nothing listens (the unreachable lines), the embedded bus's `?token=`,
    and a password holding a raw `/` (the invalid-URL line, whose parser text would quote a piece of it)."""
    wrong = "wrong-pw-0b7d3e"
    with _brokers(tmp_path) as (nats_port, redis_port):
        closed = free_port()
        urls = [
            f"nats://{NATS_USER}:{wrong}@127.0.0.1:{nats_port}",
            f"redis://:{wrong}@127.0.0.1:{redis_port}/0",
            f"nats://{wrong}@127.0.0.1:{closed}",
            f"redis://app:{wrong}@127.0.0.1:{closed}/0",
            f"ws://127.0.0.1:{closed}/?token={wrong}",
            f"redis://:ab/{wrong}@127.0.0.1:{redis_port}/0",
        ]
        for url in urls:
            result = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "flowgauge", "tail", "--url", url, "-n", "1", "--json"],
                capture_output=True,
                text=True,
                timeout=60 * TIMEOUT_FACTOR,
            )
            assert result.returncode in (1, 2), (url, result)
            assert result.stderr.startswith("tail: ") and "***" in result.stderr, (url, result.stderr)
            assert wrong not in result.stderr and "'ab'" not in result.stderr, (url, result.stderr)
            assert "Traceback" not in result.stderr, result.stderr
