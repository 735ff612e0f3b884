"""Why is it not ready? The real daemon against venues that fail for different reasons.

One daemon, three venues, each pointed at a different failure: bybit at a closed loopback port (connect),
okx at an aiohttp server answering 403 to everything (a geo-block: http_403), binanceusdm at a host under
`.invalid` (NXDOMAIN without any network: dns). The cause class must show in the log line of the failure,
in /status (every configured book listed, NOT_STARTED, with its last error), in the /readyz 503 body and in
`flowgauge_venue_errors_total{venue,kind}`. A second daemon loads markets from the Bybit simulator but
its websocket URL answers 403: the failure moves to the stream (where=ws) and the books wait for it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, http_get, wait_for

pytestmark = pytest.mark.integration

FAST_RETRY = {"connect_timeout_s": 2, "backoff_initial_s": 0.1, "backoff_max_s": 0.5}


@pytest.fixture
async def geo_blocked() -> AsyncIterator[int]:
    """An HTTP server answering 403 to every request, websocket upgrades included; yields its port."""

    async def forbidden(request: web.Request) -> web.Response:
        return web.Response(status=403, text="The requested URL was rejected: not available in your region")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forbidden)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write(path: Path, venues: dict[str, Any], http_port: int) -> Path:
    config = {
        "venues": venues,
        "bus": {"embedded": {"host": "127.0.0.1", "port": free_port()}},
        "http": {"host": "127.0.0.1", "port": http_port},
        "log_level": "INFO",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            events.append(orjson.loads(line))
    return events


async def _venue_errors(http_port: int) -> dict[tuple[str, str], float]:
    _, text = await http_get(http_port, "/metrics")
    return {
        (s.labels["venue"], s.labels["kind"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "flowgauge_venue_errors_total"
    }


async def test_each_failing_venue_reports_its_cause_everywhere(tmp_path: Path, geo_blocked: int) -> None:
    closed = _closed_port()
    expected = {"bybit": "connect", "okx": "http_403", "binanceusdm": "dns"}
    venues = {
        "bybit": {
            "symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
            "rest_url": f"http://127.0.0.1:{closed}",
            "ws_url": f"ws://127.0.0.1:{closed}/v5/public/linear",
            **FAST_RETRY,
        },
        "okx": {
            "symbols": ["BTC/USDT:USDT"],
            "rest_url": f"http://127.0.0.1:{geo_blocked}",
            "ws_url": f"ws://127.0.0.1:{geo_blocked}/ws/v5/public",
            **FAST_RETRY,
        },
        "binanceusdm": {
            "symbols": ["BTC/USDT:USDT"],
            "rest_url": "http://fapi.flowgauge-test.invalid",
            "ws_url": "ws://fstream.flowgauge-test.invalid",
            **FAST_RETRY,
        },
    }
    http_port = free_port()
    config = _write(tmp_path / "cfg.yaml", venues, http_port)
    log_path = tmp_path / "daemon.log"
    with flowgauge(["run", "-c", str(config)], log_path) as daemon:
        # /status lists every configured venue and book from the start, before anything could load.
        async def status_with_all_causes() -> dict[str, Any] | None:
            code, body = await http_get(http_port, "/status")
            doc = orjson.loads(body)
            causes = {venue: (info["last_error"] or {}).get("cause") for venue, info in doc["venue_status"].items()}
            return doc if code == 200 and causes == expected else None

        status = await wait_for(status_with_all_causes, "/status naming each venue's failure cause")
        assert {venue: set(books) for venue, books in status["venues"].items()} == {
            venue: set(body["symbols"]) for venue, body in venues.items()
        }
        for venue, books in status["venues"].items():
            for symbol, book in books.items():
                assert book["state"] == "NOT_STARTED", (venue, symbol)
                assert book["published"] == 0 and book["resyncs"] == 0  # the engine's keys, nothing counted
                assert book["last_error"]["cause"] == expected[venue]
                assert book["last_error"]["where"] == "markets"
                assert book["last_error"]["time"].endswith("Z")
            assert status["venue_status"][venue]["markets_loaded"] is False
            assert status["venue_status"][venue]["errors"][expected[venue]] >= 1
        assert "HTTP 403" in status["venue_status"]["okx"]["last_error"]["message"]
        assert status["ready"] is False and status["ready_by_venue"] == dict.fromkeys(venues, False)

        # /readyz: still 503, and the body says which books and why.
        code, body = await http_get(http_port, "/readyz")
        assert code == 503
        readyz = orjson.loads(body)
        assert readyz["ready"] is False
        assert readyz["reason"].startswith("4 of 4 books not VALID")
        for cause in expected.values():
            assert cause in readyz["reason"]
        not_ready = {(b["venue"], b["symbol"]): b for b in readyz["not_ready"]}
        assert set(not_ready) == {(v, s) for v, body in venues.items() for s in body["symbols"]}
        assert not_ready[("okx", "BTC/USDT:USDT")]["last_error"]["cause"] == "http_403"
        assert not_ready[("bybit", "ETH/USDT:USDT")]["state"] == "NOT_STARTED"

        # /metrics counts the failures by venue and cause class; the other classes exist at 0.
        errors = await _venue_errors(http_port)
        for venue, cause in expected.items():
            assert errors[(venue, cause)] >= 1
            assert errors[(venue, "tls")] == 0
        assert daemon.poll() is None  # a venue outage never ends the daemon

    # The log line of each failure names its cause class.
    failures = [e for e in _log_events(log_path) if e["event"] == "markets_load_failed"]
    assert {e["venue"]: e["cause"] for e in failures} == expected
    text = log_path.read_text()
    assert "Traceback" not in text


async def test_a_rejected_websocket_is_reported_after_markets_load(tmp_path: Path, geo_blocked: int) -> None:
    sim_port, http_port = free_port(), free_port()
    venues = {
        "bybit": {
            "symbols": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
            "rest_url": f"http://127.0.0.1:{sim_port}",  # markets from the simulator
            "ws_url": f"ws://127.0.0.1:{geo_blocked}/v5/public/linear",  # the stream is geo-blocked
            **FAST_RETRY,
        }
    }
    config = _write(tmp_path / "cfg.yaml", venues, http_port)
    sim_args = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port)]
    log_path = tmp_path / "daemon.log"
    with (
        flowgauge(sim_args, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], log_path),
    ):

        async def ws_failure_reported() -> dict[str, Any] | None:
            _, body = await http_get(http_port, "/status")
            doc = orjson.loads(body)
            book = doc["venues"]["bybit"]["BTC/USDT:USDT"]
            error = book["last_error"] or {}
            return doc if error.get("where") == "ws" and doc["venue_status"]["bybit"]["markets_loaded"] else None

        status = await wait_for(ws_failure_reported, "a websocket failure on the bybit books")
        for book in status["venues"]["bybit"].values():
            # SYNCING, or INVALID(RESET) once the failed connection attempt invalidated what it carried.
            assert (book["state"], book["reason"]) in {("SYNCING", None), ("INVALID", "RESET")}
            assert book["last_error"]["cause"] == "http_403"
            assert "HTTP 403" in book["last_error"]["message"]

        code, body = await http_get(http_port, "/readyz")
        assert code == 503
        assert "http_403" in orjson.loads(body)["reason"]
        assert (await _venue_errors(http_port))[("bybit", "http_403")] >= 1

    disconnects = [e for e in _log_events(log_path) if e["event"] == "ws_disconnected"]
    assert disconnects and all(e["cause"] == "http_403" for e in disconnects)
