"""RestScheduler against a real HTTP server: budget, priority, merging, rate-limit pauses.

Timeline per test: an aiohttp server on a free loopback port answers depth snapshots and polls, and
records when each request arrived; the scheduler runs as a task and is cancelled at the end.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

import pytest
from aiohttp import web

from flowgauge.connectors.base import FetchSnapshot, PollRequest
from flowgauge.connectors.rest import RestScheduler

pytestmark = pytest.mark.integration


class Venue:
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str, str]] = []
        self.limit_next = 0  # answer this many requests with 429 first
        self.retry_after = "0.3"

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append((time.monotonic(), request.path, request.query.get("symbol", "")))
        if self.limit_next > 0:
            self.limit_next -= 1
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        return web.Response(text=f'{{"path":"{request.path}","symbol":"{request.query.get("symbol", "")}"}}')


@pytest.fixture
async def venue():
    state = Venue()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield state, f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def run_until(scheduler: RestScheduler, done: asyncio.Event, limit_s: float = 10.0) -> None:
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.wait_for(done.wait(), limit_s)
    finally:
        task.cancel()
        await asyncio.wait([task])


async def test_snapshots_are_spread_within_the_budget(venue) -> None:
    state, url = venue
    # 600 weight/min = 10/s with a burst of 60: 8 snapshots of weight 10 = 80 weight, so 6 go at once
    # and the other 20 weight must wait 2 s for the bucket to refill.
    scheduler = RestScheduler("testvenue", url, weight_per_minute=600)
    got: list[str] = []
    done = asyncio.Event()

    def callback(body: str, ts: int) -> None:
        got.append(body)
        if len(got) == 8:
            done.set()

    for i in range(8):
        scheduler.request_snapshot(FetchSnapshot(f"S{i}", "/depth", {"symbol": f"S{i}"}, weight=10), callback)
    started = time.monotonic()
    await run_until(scheduler, done)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.8
    first_six_spread = state.arrivals[5][0] - state.arrivals[0][0]
    assert first_six_spread < 1.0  # the burst went at once
    assert len(state.arrivals) == 8
    assert [a[2] for a in state.arrivals] == [f"S{i}" for i in range(8)]


async def test_duplicate_snapshot_requests_merge(venue) -> None:
    state, url = venue
    scheduler = RestScheduler("testvenue", url, weight_per_minute=6000)
    calls: list[str] = []
    done = asyncio.Event()

    def first(body: str, ts: int) -> None:
        calls.append("first")

    def second(body: str, ts: int) -> None:
        calls.append("second")
        done.set()

    scheduler.request_snapshot(FetchSnapshot("BTC", "/depth", {"symbol": "BTC"}), first)
    scheduler.request_snapshot(FetchSnapshot("BTC", "/depth", {"symbol": "BTC"}), second)
    assert scheduler.pending_snapshots() == 1
    await run_until(scheduler, done)
    assert calls == ["first", "second"]
    assert len(state.arrivals) == 1


async def test_rate_limit_pauses_for_retry_after_then_retries(venue) -> None:
    state, url = venue
    state.limit_next = 1
    state.retry_after = "1"
    scheduler = RestScheduler("testvenue", url, weight_per_minute=6000)
    done = asyncio.Event()
    scheduler.request_snapshot(FetchSnapshot("BTC", "/depth", {"symbol": "BTC"}), lambda b, t: done.set())
    await run_until(scheduler, done)
    assert len(state.arrivals) == 2
    assert state.arrivals[1][0] - state.arrivals[0][0] >= 1.0
    assert scheduler.rate_limited == 1


async def test_polls_repeat_and_snapshots_go_first(venue) -> None:
    state, url = venue
    scheduler = RestScheduler("testvenue", url, weight_per_minute=6000)
    polled: list[str] = []
    done = asyncio.Event()

    def on_poll(body: str, ts: int) -> None:
        polled.append(body)
        if len(polled) == 3:
            done.set()

    scheduler.add_poll(PollRequest("oi:BTC", "BTC", "open_interest", "/oi", {"symbol": "BTC"}, 1, 0.2), on_poll)
    scheduler.request_snapshot(FetchSnapshot("ETH", "/depth", {"symbol": "ETH"}), lambda b, t: None)
    await run_until(scheduler, done)
    assert state.arrivals[0][1] == "/depth"  # the snapshot went before the due poll
    poll_times = [a[0] for a in state.arrivals if a[1] == "/oi"]
    assert len(poll_times) >= 3
    assert all(b - a >= 0.18 for a, b in itertools.pairwise(poll_times))
    assert scheduler.budget_per_minute() == pytest.approx(300.0)


async def test_a_raising_callback_or_a_mislabelled_body_does_not_stop_the_scheduler(venue) -> None:
    state, url = venue
    scheduler = RestScheduler("testvenue", url, weight_per_minute=6000)
    done = asyncio.Event()

    def explodes(body: str, ts: int) -> None:
        raise RuntimeError("parser bug")

    scheduler.request_snapshot(FetchSnapshot("BTC", "/depth", {"symbol": "BTC"}), explodes)
    scheduler.request_snapshot(FetchSnapshot("ETH", "/depth", {"symbol": "ETH"}), lambda b, t: done.set())
    await run_until(scheduler, done)
    assert scheduler.errors == 1
    assert len(state.arrivals) == 2


class FailureLog:
    def __init__(self) -> None:
        self.reports: list[tuple[str, str, str, str, list[str]]] = []
        self.seen = asyncio.Event()

    def venue_failure(self, venue: str, where: str, cause: str, message: str, symbols) -> None:
        self.reports.append((venue, where, cause, message, list(symbols)))
        self.seen.set()


async def test_failures_are_reported_with_their_cause_class(venue) -> None:
    state, url = venue
    state.limit_next = 1
    state.retry_after = "0"
    failures = FailureLog()
    # A 429 from the venue: an HTTP failure of that snapshot's book.
    scheduler = RestScheduler("testvenue", url, weight_per_minute=600, failures=failures)
    scheduler.request_snapshot(FetchSnapshot("S1", "/depth", {"symbol": "S1"}), lambda body, ts: None)
    await run_until(scheduler, failures.seen)
    assert failures.reports[0][:3] == ("testvenue", "rest:snapshot", "http_429")
    assert failures.reports[0][4] == ["S1"]
    assert "HTTP 429" in failures.reports[0][3]

    # Nothing listening: a poll fails with `connect` and concerns no book.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    failures = FailureLog()
    scheduler = RestScheduler("testvenue", f"http://127.0.0.1:{closed}", weight_per_minute=600, failures=failures)
    poll = PollRequest("oi:S1", "S1", "open_interest", "/oi", {"symbol": "S1"}, weight=1, interval_s=60)
    scheduler.add_poll(poll, lambda body, ts: None)
    await run_until(scheduler, failures.seen)
    assert failures.reports[0][:3] == ("testvenue", "rest:open_interest", "connect")
    assert failures.reports[0][4] == []
