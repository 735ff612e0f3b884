"""A frame whose processing raises (a bug, an input nobody anticipated) costs a reconnect, not the daemon.

Timeline: a real websocket server sends "boom" then "ok" on every connection -> the handler raises on
"boom" -> the session drops the connection, the handler hears on_disconnected("error"), the session
reconnects and resubscribes -> run() is still running when the test cancels it.
"""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.server import ServerConnection, serve

from flowgauge.connectors.session import Session, SessionSettings

pytestmark = pytest.mark.integration


class Handler:
    venue = "testvenue"

    def __init__(self) -> None:
        self.disconnects: list[str] = []
        self.connected = 0
        self.reconnected = asyncio.Event()

    def on_connected(self) -> list[str]:
        self.connected += 1
        if self.connected == 2:
            self.reconnected.set()
        return ["subscribe"]

    def on_frame(self, raw: str | bytes, ts_recv: int) -> list[str]:
        if raw == "boom":
            raise KeyError("a field nobody expected")
        return []

    def on_idle(self, now_ns: int) -> list[str]:
        return []

    def on_disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)

    def ping_frame(self) -> str | None:
        return None


async def test_handler_exception_reconnects_instead_of_crashing() -> None:
    async def venue(ws: ServerConnection) -> None:
        assert await ws.recv() == "subscribe"
        await ws.send("boom")
        await ws.send("ok")
        await ws.wait_closed()

    handler = Handler()
    settings = SessionSettings(backoff_initial_s=0.01, backoff_max_s=0.02, stale_after_s=30)
    async with serve(venue, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        task = asyncio.create_task(Session(f"ws://127.0.0.1:{port}", handler, settings).run())
        try:
            await asyncio.wait_for(handler.reconnected.wait(), 5)
            assert not task.done()
            assert handler.disconnects[0] == "error"
        finally:
            task.cancel()
            await asyncio.wait([task])
    assert task.cancelled()
