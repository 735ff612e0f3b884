"""What `flowgauge.subscribe` raises when it cannot subscribe, on each transport, against real servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.brokers import BrokerProcess, _binary
from tests.procs import free_port

import flowgauge as fg

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scheme", ["ws", "nats", "redis"])
async def test_nothing_listening_is_bus_unreachable(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:{free_port()}"
    with pytest.raises(fg.BusUnreachable) as caught:
        async with fg.subscribe(url, "flowgauge.v1.>", open_timeout_s=2):
            pass
    assert "\n" not in str(caught.value) and url.split("//")[1] in str(caught.value)


async def test_nats_token_required(tmp_path: Path) -> None:
    port = free_port()
    server = BrokerProcess([_binary("nats-server"), "-a", "127.0.0.1", "-p", str(port), "--auth", "s3cret"],
                           port, tmp_path / "nats")
    server.start()
    try:
        url = f"nats://127.0.0.1:{port}"
        with pytest.raises(fg.Unauthorized):
            async with fg.subscribe(url, "flowgauge.v1.>", open_timeout_s=2):
                pass
        async with fg.subscribe(url, "flowgauge.v1.>", token="s3cret", open_timeout_s=2) as sub:
            assert sub.latest() == {}  # core NATS only: no state stream, no current values
    finally:
        server.stop()


async def test_redis_password_required(tmp_path: Path) -> None:
    port = free_port()
    server = BrokerProcess([_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "s3cret"],
                           port, tmp_path / "redis")
    server.start()
    try:
        url = f"redis://127.0.0.1:{port}/0"
        with pytest.raises(fg.Unauthorized):
            async with fg.subscribe(url, "flowgauge.v1.>", open_timeout_s=2):
                pass
        with pytest.raises(fg.Unauthorized):
            async with fg.subscribe(url, "flowgauge.v1.>", token="wrong", open_timeout_s=2):
                pass
        async with fg.subscribe(f"redis://:s3cret@127.0.0.1:{port}/0", "flowgauge.v1.>", open_timeout_s=2):
            pass
        async with fg.subscribe(url, "flowgauge.v1.>", token="s3cret", open_timeout_s=2):
            pass
    finally:
        server.stop()


async def test_a_nats_url_that_is_not_nats(tmp_path: Path) -> None:
    """A Redis port given as a NATS URL: NotABus in one line, not a hang, and no connection left open."""
    import redis.asyncio as aioredis

    port = free_port()
    server = BrokerProcess([_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no", "--dir", str(tmp_path)], port, tmp_path / "redis")
    server.start()
    try:
        for _ in range(3):  # as a reconnecting subscription would retry it
            with pytest.raises(fg.NotABus) as caught:
                async with fg.subscribe(f"nats://127.0.0.1:{port}", "flowgauge.v1.>", open_timeout_s=1):
                    pass
            assert "\n" not in str(caught.value) and "NATS" in str(caught.value)
        # Redis counts its client connections: only the one asking must be left (nats-py keeps the socket
        # of a failed handshake open unless the SDK closes the client).
        client = aioredis.from_url(f"redis://127.0.0.1:{port}/0")
        try:
            connections = await client.client_list()
        finally:
            await client.aclose()
        assert len(connections) == 1, connections
    finally:
        server.stop()
