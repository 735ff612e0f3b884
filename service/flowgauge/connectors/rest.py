"""The REST side of ingest: book snapshots and scheduled polls, inside each venue's request budget.

One `RestScheduler` per venue runs as its own task, so a slow or rate-limited REST API never stalls
the websocket path. Requests are charged against a token bucket (the venue's weight per minute,
refilled continuously, with a small burst) so a warm-up for hundreds of symbols is spread out instead
of fired at once. Snapshots go before polls; a snapshot request for a symbol that already has one
pending is merged, so a resync of one symbol never delays or resets another's. A 429 or 418 pauses
the whole venue for the server's Retry-After (418 means the IP is already banned: wait longer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from flowgauge.connectors.base import FetchSnapshot, PollRequest
from flowgauge.connectors.failures import FailureReporter, cause_class, describe, http_cause
from flowgauge.logs import event

log = logging.getLogger(__name__)

BodyCallback = Callable[[str, int], None]  # (body, ts_recv_ns)

DEFAULT_RETRY_AFTER_S = 10.0
BANNED_RETRY_AFTER_S = 120.0  # a 418 without Retry-After: the ban is on, back off hard
MAX_ERROR_DELAY_S = 60.0


class RestHooks(Protocol):
    def rest_request(self, venue: str, kind: str, outcome: str) -> None: ...


class TokenBucket:
    """Request weight budget: `rate_per_s` refill, at most `capacity` saved up. Pure; clock injected."""

    def __init__(self, rate_per_s: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("token bucket needs a positive rate and capacity")
        self.rate = rate_per_s
        self.capacity = capacity
        self._clock = clock
        self._tokens = capacity
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self, weight: float) -> float:
        """Seconds until `weight` can be spent (0 if now). A weight above capacity waits for a full bucket."""
        self._refill()
        need = min(weight, self.capacity)
        if self._tokens >= need:
            return 0.0
        return (need - self._tokens) / self.rate

    def spend(self, weight: float) -> None:
        self._refill()
        self._tokens -= weight


def retry_after_s(status: int, header: str | None) -> float:
    """How long to pause after a rate-limit answer (RFC 9110 Retry-After in seconds; dates are rare here)."""
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass
    return BANNED_RETRY_AFTER_S if status == 418 else DEFAULT_RETRY_AFTER_S


@dataclass
class _Poll:
    request: PollRequest
    callback: BodyCallback
    due: float
    failures: int = 0


@dataclass
class _Snapshot:
    fetch: FetchSnapshot
    callbacks: list[BodyCallback] = field(default_factory=list)
    not_before: float = 0.0
    failures: int = 0


class RestScheduler:
    """Performs FetchSnapshot and PollRequest for one venue within `weight_per_minute`.

    Args:
        venue: ccxt id (logs, telemetry).
        base_url: the venue's REST base from configuration (production or the simulator).
        weight_per_minute: the budget; bursts are capped at a tenth of it.
        timeout_s: per-request deadline.
    """

    def __init__(
        self,
        venue: str,
        base_url: str,
        weight_per_minute: float,
        *,
        timeout_s: float = 10.0,
        hooks: RestHooks | None = None,
        on_response: Callable[[str, str, int], None] | None = None,
        failures: FailureReporter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.venue = venue
        self.base_url = base_url.rstrip("/")
        self.bucket = TokenBucket(weight_per_minute / 60.0, max(1.0, weight_per_minute / 10.0), clock)
        self.timeout_s = timeout_s
        self.hooks = hooks
        # (url with query, body, ts_recv ns): lets the recorder keep REST answers with the receive time the
        # pipeline gets, so a replay of them sees the same clock.
        self.on_response = on_response
        self.failures = failures
        self._clock = clock
        self._snapshots: dict[str, _Snapshot] = {}  # by symbol; insertion order = request order
        self._polls: list[_Poll] = []
        self._wake = asyncio.Event()
        self._paused_until = 0.0
        self.requests = 0
        self.rate_limited = 0
        self.errors = 0

    # ------------------------------------------------------------------ requests (sync, from any task)

    def request_snapshot(self, fetch: FetchSnapshot, callback: BodyCallback) -> None:
        """Queue a snapshot; merged with a pending one for the same symbol."""
        pending = self._snapshots.get(fetch.symbol)
        if pending is None:
            self._snapshots[fetch.symbol] = _Snapshot(fetch, [callback])
        elif callback not in pending.callbacks:
            pending.callbacks.append(callback)
        self._wake.set()

    def add_poll(self, request: PollRequest, callback: BodyCallback) -> None:
        """Poll `request` every `interval_s`; first runs are staggered across the interval."""
        same_interval = sum(1 for p in self._polls if p.request.interval_s == request.interval_s)
        offset = (same_interval * 0.37) % request.interval_s  # spread, deterministic
        self._polls.append(_Poll(request, callback, self._clock() + offset))
        self._wake.set()

    def forget(self, symbol: str) -> None:
        """Stop polling for `symbol` and drop its pending snapshot (its book retired: the instrument is gone)."""
        self._polls = [p for p in self._polls if p.request.symbol != symbol]
        self._snapshots.pop(symbol, None)

    def pending_snapshots(self) -> int:
        return len(self._snapshots)

    def budget_per_minute(self) -> float:
        """Weight per minute the registered polls need on their own (must stay under the budget)."""
        return sum(p.request.weight * 60.0 / p.request.interval_s for p in self._polls)

    # ------------------------------------------------------------------ the task

    async def run(self) -> None:
        """Serve requests until cancelled."""
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while True:
                job, wait = self._next_job()
                if job is None:
                    self._wake.clear()
                    try:
                        async with asyncio.timeout(wait):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                    continue
                weight = job.fetch.weight if isinstance(job, _Snapshot) else job.request.weight
                delay = max(self.bucket.wait_time(weight), self._paused_until - self._clock())
                if delay > 0:
                    await asyncio.sleep(delay)
                    continue  # re-evaluate: a more urgent job may have arrived
                self.bucket.spend(weight)
                await self._perform(http, job)

    def _next_job(self) -> tuple[_Snapshot | _Poll | None, float]:
        now = self._clock()
        soonest = 1.0
        for snapshot in self._snapshots.values():
            if snapshot.not_before <= now:
                return snapshot, 0.0
            soonest = min(soonest, snapshot.not_before - now)
        if self._polls:
            poll = min(self._polls, key=lambda p: p.due)
            if poll.due <= now:
                return poll, 0.0
            soonest = min(soonest, poll.due - now)
        return None, max(0.01, soonest)

    async def _perform(self, http: aiohttp.ClientSession, job: _Snapshot | _Poll) -> None:
        if isinstance(job, _Snapshot):
            kind, path, params, method, body = "snapshot", job.fetch.path, job.fetch.params, "GET", None
        else:
            request = job.request
            kind, path, params, method, body = request.kind, request.path, request.params, request.method, request.body
        self.requests += 1
        outcome = "ok"
        text: str | None = None
        ts_recv: int | None = None
        failure: tuple[str, str] | None = None  # (cause class, message)
        try:
            async with http.request(
                method,
                self.base_url + path,
                params=params or None,
                data=body,
                headers={"Content-Type": "application/json"} if body else None,
            ) as response:
                if response.status in (418, 429):
                    self.rate_limited += 1
                    pause = retry_after_s(response.status, response.headers.get("Retry-After"))
                    self._paused_until = self._clock() + pause
                    outcome = "rate_limited"
                    event(log, logging.WARNING, "rest_rate_limited", venue=self.venue, status=response.status,
                          pause_s=pause)
                    failure = (http_cause(response.status), f"HTTP {response.status} {response.reason or ''}")
                elif response.status >= 400:
                    outcome = "error"
                    failure = (http_cause(response.status), f"HTTP {response.status} {response.reason or ''}")
                    event(log, logging.WARNING, "rest_failed", venue=self.venue, path=path, cause=failure[0],
                          error=failure[1])
                else:
                    # Decoded leniently: a mislabelled charset must become a parse error downstream,
                    # not an exception that ends the scheduler.
                    text = (await response.read()).decode(response.get_encoding() or "utf-8", "replace")
                    ts_recv = time.time_ns()
                    if self.on_response is not None:
                        self.on_response(str(response.url), text, ts_recv)
        except (aiohttp.ClientError, TimeoutError, OSError, LookupError) as exc:  # LookupError: unknown charset
            outcome = "error"
            failure = (cause_class(exc), describe(exc, 200))
            event(log, logging.WARNING, "rest_failed", venue=self.venue, path=path, cause=failure[0],
                  error=failure[1])
        if self.hooks is not None:
            self.hooks.rest_request(self.venue, kind, outcome)
        if failure is not None and self.failures is not None:
            symbols = [job.fetch.symbol] if isinstance(job, _Snapshot) else []
            cause, message = failure
            self.failures.venue_failure(self.venue, f"rest:{kind}", cause, f"{path}: {message.strip()}", symbols)
        if ts_recv is None:
            ts_recv = time.time_ns()
        if isinstance(job, _Snapshot):
            self._finish_snapshot(job, text, ts_recv)
        else:
            self._finish_poll(job, text, ts_recv)

    def _finish_snapshot(self, job: _Snapshot, text: str | None, ts_recv: int) -> None:
        if text is None:
            job.failures += 1
            self.errors += 1
            job.not_before = self._clock() + min(MAX_ERROR_DELAY_S, 0.5 * 2 ** min(job.failures, 16))
            return
        self._snapshots.pop(job.fetch.symbol, None)
        for callback in job.callbacks:
            self._deliver(callback, text, ts_recv)

    def _finish_poll(self, job: _Poll, text: str | None, ts_recv: int) -> None:
        interval = job.request.interval_s
        if text is None:
            job.failures += 1
            self.errors += 1
            job.due = self._clock() + min(max(interval, MAX_ERROR_DELAY_S), interval * 2 ** min(job.failures, 16))
            return
        job.failures = 0
        job.due = self._clock() + interval
        self._deliver(job.callback, text, ts_recv)

    def _deliver(self, callback: BodyCallback, text: str, ts_recv: int) -> None:
        """A callback that raises (a parser bug, an unanticipated body) must not end the scheduler."""
        try:
            callback(text, ts_recv)
        except Exception:
            self.errors += 1
            log.exception("rest_callback_failed", extra={"fields": {"venue": self.venue}})
