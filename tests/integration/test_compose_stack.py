"""docker-compose.yml's data plane without Docker: its NATS (deploy/nats/nats.conf, the token from the
environment), its Redis (compose's own command line) and the simulators, with the daemon run on compose's
config (deploy/compose/flowgauge-demo.yaml) and compose's environment for it (interpolated from a .env as
.env.example describes); only what a container network provides is replaced: host names by 127.0.0.1, fixed
ports by free ones, 0.0.0.0 by loopback. The daemon must become ready and publish into NATS JetStream and Redis
with the tokens, and serve /metrics only with its token.
"""

from __future__ import annotations

import re
import shutil
import socket
from pathlib import Path

import aiohttp
import nats
import pytest
import redis.asyncio as aioredis
import yaml
from tests.brokers import wait_for_port
from tests.deploy_files import ROOT, example_env, interpolate
from tests.procs import flowgauge, free_port, http_get, process, wait_for

pytestmark = pytest.mark.integration


def _five_free_ports() -> int:
    """A base port B with B..B+4 free: `flowgauge simulate --venue all` serves the five venues there."""
    for _ in range(50):
        base = free_port()
        if base + 4 > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + 5):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise AssertionError("no five consecutive free ports")


async def test_the_compose_data_plane_runs_with_its_configs_and_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env_file = example_env()
    services = interpolate(compose["services"], env_file)
    sim_base, nats_port, monitor_port, redis_port, bus_port, http_port = (
        _five_free_ports(), free_port(), free_port(), free_port(), free_port(), free_port())

    # The daemon's config as compose mounts it, with the container network's names and ports mapped to loopback.
    config = (ROOT / "deploy" / "compose" / "flowgauge-demo.yaml").read_text()
    for k in range(5):
        config = config.replace(f"simulator:{9780 + k}", f"127.0.0.1:{sim_base + k}")
    config = (config.replace("nats:4222", f"127.0.0.1:{nats_port}").replace("redis:6379", f"127.0.0.1:{redis_port}")
              .replace('"0.0.0.0"', '"127.0.0.1"').replace("port: 8765", f"port: {bus_port}")
              .replace("port: 9464", f"port: {http_port}"))
    assert not re.search(r"//(simulator|nats|redis):", config), config
    (tmp_path / "flowgauge.yaml").write_text(config)
    daemon_env = {k: str(v) for k, v in services["flowgauge"]["environment"].items()}
    daemon_env["FLOWGAUGE_CONFIG"] = str(tmp_path / "flowgauge.yaml")

    nats_server = shutil.which("nats-server") or "/usr/sbin/nats-server"
    # compose's NATS config; its JetStream directory is a volume in compose, a scratch directory here.
    nats_conf = (ROOT / "deploy" / "nats" / "nats.conf").read_text()
    assert nats_conf.count("store_dir: /data") == 1
    (tmp_path / "nats.conf").write_text(nats_conf.replace("store_dir: /data", f'store_dir: "{tmp_path / "js"}"'))
    nats_args = [nats_server, "-c", str(tmp_path / "nats.conf"), "-a", "127.0.0.1",
                 "-p", str(nats_port), "-m", str(monitor_port)]
    redis_args = [shutil.which("redis-server") or "/usr/bin/redis-server", *services["redis"]["command"][1:],
                  "--port", str(redis_port), "--bind", "127.0.0.1"]
    sim_args = ["simulate", "--venue", "all", "--base-port", str(sim_base)]
    monkeypatch.setenv("NATS_TOKEN", services["nats"]["environment"]["NATS_TOKEN"])  # nats.conf reads it
    with (
        process(nats_args, tmp_path / "nats.log") as nats_proc,
        process(redis_args, tmp_path / "redis.log") as redis_proc,
        flowgauge(sim_args, tmp_path / "sim.log"),
    ):
        wait_for_port(nats_port, nats_proc, tmp_path / "nats.log")
        wait_for_port(redis_port, redis_proc, tmp_path / "redis.log")
        with flowgauge(["run"], tmp_path / "daemon.log", env=daemon_env):

            async def ready() -> bool:
                code, _ = await http_get(http_port, "/readyz")
                return code == 200

            await wait_for(ready, "the daemon ready on compose's config", timeout_s=60)
            # /metrics refuses a scrape without the token compose gives Prometheus.
            code, _ = await http_get(http_port, "/metrics")
            assert code == 401
            headers = {"Authorization": f"Bearer {env_file['FLOWGAUGE_HTTP_TOKEN']}"}

            async def every_venue_ready() -> dict[str, bool]:
                # /readyz wants one VALID book; the simulator service must serve every venue the config names.
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{http_port}/status", headers=headers) as response,
                ):
                    by_venue: dict[str, bool] = (await response.json())["ready_by_venue"]
                return by_venue if by_venue and all(by_venue.values()) else {}

            venues = await wait_for(every_venue_ready, "every venue's books VALID on the simulator", timeout_s=60)
            assert set(venues) == set(yaml.safe_load(config)["venues"])

            async def published() -> dict[str, float]:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"http://127.0.0.1:{http_port}/metrics", headers=headers) as response,
                ):
                    text = await response.text()
                counts = {m[0]: float(m[1]) for m in re.findall(
                    r'^flowgauge_published_messages_total\{backend="(\w+)"\} (\S+)$', text, re.M)}
                return counts if counts.get("nats", 0) > 0 and counts.get("redis", 0) > 0 else {}

            await wait_for(published, "payloads published to NATS and Redis", timeout_s=60)
            nc = await nats.connect(f"nats://127.0.0.1:{nats_port}", token=env_file["NATS_TOKEN"])
            try:
                info = await nc.jetstream().stream_info("FLOWGAUGE_STATE")
                assert info.state.messages > 0
            finally:
                await nc.close()
            client = aioredis.Redis(port=redis_port, password=env_file["REDIS_PASSWORD"])
            try:
                assert await client.keys("flowgauge:last:*")
            finally:
                await client.aclose()
