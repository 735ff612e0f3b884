"""Helpers shared by the venue simulator tests (tests/integration/test_simulator.py and test_sim_*.py).

What every simulator test does the same way: run a simulator on a free loopback port, talk to it with a real
websockets client that drains while closing, wait on a condition with a deadline (never a fixed sleep), and
check the two lifecycle promises every simulator makes (`run_simulator` serves until cancelled; `close()`
says "going away" to its clients). Venue protocol stays in each test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.procs import TIMEOUT_FACTOR
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

STEP_S = 5.0 * TIMEOUT_FACTOR  # upper bound for any single wait on a simulator (FLOWGAUGE_TESTS_TIMEOUT_FACTOR)

SimT = TypeVar("SimT")


@contextlib.asynccontextmanager
async def ws_client(url: str, **options: Any) -> AsyncIterator[ClientConnection]:
    """A websocket client that keeps reading while it closes.

    At speed 0 a simulator streams as fast as the socket takes it; a client that stops reading has its
    receive queue full and would sit out its whole close timeout waiting for a close frame stuck behind
    unread data. Draining until the server's close frame arrives is what a well-behaved client does.
    """
    async with connect(url, **options) as ws:
        try:
            yield ws
        finally:
            closing = asyncio.create_task(ws.close())
            with contextlib.suppress(ConnectionClosed):
                async with asyncio.timeout(STEP_S):
                    async for _ in ws:
                        pass
            await closing


async def recv(ws: ClientConnection) -> str | bytes:
    async with asyncio.timeout(STEP_S):
        return await ws.recv()


async def recv_json(ws: ClientConnection) -> Any:
    return json.loads(await recv(ws))


async def until(check: Callable[[], Any], what: str) -> None:
    """Poll a condition on a simulator's counters, with a deadline (no fixed sleeps as synchronisation)."""
    deadline = time.monotonic() + STEP_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def running_sim(
    sim_cls: Callable[..., SimT], path: Path, request: pytest.FixtureRequest, **defaults: Any
) -> AsyncIterator[SimT]:
    """A simulator on a free port: speed 0 and looping unless `defaults` or the test's indirect param say
    otherwise (a param may also name another recording as `path`)."""
    options = {"speed": 0.0, "loop": True, **defaults, **getattr(request, "param", {})}
    path = options.pop("path", path)
    async with sim_cls(path, port=0, **options) as sim:  # type: ignore[attr-defined]
        yield sim


async def assert_serves_until_cancelled(
    run_simulator: Callable[..., Awaitable[None]], path: Path, probe: Callable[[Any], Awaitable[None]]
) -> None:
    """`run_simulator` hands the started simulator to `on_ready`, serves (`probe` talks to it) until its task
    is cancelled, and then no longer listens on its port."""
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_simulator(path, port=0, speed=0.0, on_ready=ready.set_result))
    try:
        async with asyncio.timeout(STEP_S):
            sim = await ready
        await probe(sim)
        port = sim.bound_port
    finally:
        task.cancel()
        await asyncio.wait([task])
    assert task.cancelled()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def assert_close_says_going_away(
    sim: Any, url_of: Callable[[Any], str], subscribe: Callable[[ClientConnection], Awaitable[None]]
) -> None:
    """Once started, `sim.close()` closes a subscribed client (at `url_of(sim)`) with 1001 and leaves none."""
    await sim.start()
    try:
        async with ws_client(url_of(sim)) as ws:
            await subscribe(ws)
            async with asyncio.timeout(STEP_S):
                await sim.close()
                await ws.wait_closed()
            assert ws.close_code == 1001
    finally:
        await sim.close()
    assert sim.clients == 0
