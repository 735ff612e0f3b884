"""Book lifecycle against real components (issue 10 item 9): `flowgauge run` against a Binance USD-M simulator (in
this test's event loop, so its counters can be read) whose instruments get delisted or expire while the daemon runs.

Delisted mid-run (metadata refresh every second): ETH is shown CLOSE by exchangeInfo, its streams stop and its REST
requests are refused and counted by the simulator -> the daemon retires its book: one `book_retired` log line, one
final status (RETIRED) on the bus and nothing of it afterwards (no heartbeat), no request about it after a forced
reconnect that resyncs BTC, its series gone from /metrics, /status RETIRED, /readyz still 200 (BTC is VALID). Then BTC
is delisted too -> /readyz 503.

Expiring: a quarterly whose deliveryDate is 12 s away, with no metadata refresh due for an hour -> retired at that time
by the daemon's own timer (EXPIRED).
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import web
from tests.procs import flowgauge, free_port, http_get, wait_for
from websockets.asyncio.client import ClientConnection, connect

from flowgauge.simulate import DATA_DIR, SIMULATORS
from flowgauge.simulate.binanceusdm import BinanceUsdmSimulator
from flowgauge.simulate.deribit import DeribitSimulator
from flowgauge.simulate.lifecycle import Lifecycle, Retirement

pytestmark = pytest.mark.integration

RECORDING = DATA_DIR / SIMULATORS["binanceusdm"].recording
BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"


def write_config(path: Path, sim: BinanceUsdmSimulator, symbols: list[str], refresh_s: float) -> tuple[Path, int, int]:
    bus_port, http_port = free_port(), free_port()
    config = {
        "venues": {
            "binanceusdm": {
                "symbols": symbols,
                "ws_url": sim.ws_base,
                "rest_url": sim.http_url,
                "backoff_initial_s": 0.1,
                "backoff_max_s": 0.5,
                "markets_refresh_s": refresh_s,
            }
        },
        "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port}},
        "http": {"host": "127.0.0.1", "port": http_port},
        "publish": {"heartbeat_s": 0.5},
    }
    path.write_text(yaml.safe_dump(config))
    return path, bus_port, http_port


async def status(http_port: int, venue: str = "binanceusdm") -> dict[str, Any]:
    code, text = await http_get(http_port, "/status")
    assert code == 200, text
    return orjson.loads(text)["venues"][venue]  # type: ignore[no-any-return]


def book_state(
    http_port: int, symbol: str, wanted: str, venue: str = "binanceusdm"
) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    async def check() -> dict[str, Any] | None:
        book = (await status(http_port, venue))[symbol]
        return book if book["state"] == wanted else None

    return check


def retired_lines(log: Path, symbol: str) -> list[str]:
    return [line for line in log.read_text().splitlines() if "book_retired" in line and symbol in line]


async def subscribe(bus_port: int, patterns: list[str]) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{bus_port}", open_timeout=2)
    await ws.send(orjson.dumps({"op": "subscribe", "patterns": patterns}).decode())
    return ws


async def test_a_delisted_instrument_retires_and_is_never_asked_for_again(tmp_path: Path) -> None:
    lifecycle = Lifecycle()
    async with BinanceUsdmSimulator(RECORDING, port=0, speed=2.0, lifecycle=lifecycle) as sim:
        config, bus_port, http_port = write_config(tmp_path / "cfg.yaml", sim, [BTC, ETH], refresh_s=1.0)
        log = tmp_path / "daemon.log"
        with flowgauge(["run", "-c", str(config)], log):
            # Arrange: both books VALID, a subscriber on everything of both.
            for symbol in (BTC, ETH):
                await wait_for(book_state(http_port, symbol, "VALID"), f"{symbol} VALID", 60)
            ws = await wait_for(lambda: subscribe(bus_port, ["flowgauge.v1.>"]), "bus subscription")
            received: list[dict[str, Any]] = []

            async def read() -> None:
                async for text in ws:
                    message = orjson.loads(text)
                    if message.get("topic"):
                        received.append(message)

            reader = asyncio.create_task(read())
            try:
                # Act: the venue delists ETH now.
                lifecycle.schedule(Retirement("ETHUSDT", time.time(), announced=False))
                book = await wait_for(book_state(http_port, ETH, "RETIRED"), "ETH RETIRED", 30)
                assert (book["reason"], book["detail"]) == ("DELISTED", "binanceusdm status is CLOSE")
                refused = lifecycle.requests_after["ETHUSDT"]
                # A forced reconnect: the daemon resyncs BTC (a new REST snapshot) and asks nothing about ETH.
                resyncs = (await status(http_port))[BTC]["resyncs"]
                for client in list(sim._clients):
                    client.kick("forced")

                async def btc_resynced() -> bool:
                    book = (await status(http_port))[BTC]
                    return book["resyncs"] > resyncs and book["state"] == "VALID"

                await wait_for(btc_resynced, "BTC resynced after the reconnect", 30)
                # Heartbeats of BTC keep coming; none of ETH follows its final status.
                heartbeats_before = sum(1 for m in received if m["topic"].endswith("BTC-USDT-USDT")
                                        and ".status." in m["topic"] and m["payload"]["heartbeat"])  # fmt: skip

                def btc_heartbeats() -> bool:
                    beats = [m for m in received if ".status." in m["topic"] and m["topic"].endswith("BTC-USDT-USDT")
                             and m["payload"]["heartbeat"]]  # fmt: skip
                    return len(beats) >= heartbeats_before + 3

                await wait_for(btc_heartbeats, "three more BTC heartbeats", 30)
            finally:
                reader.cancel()
                await ws.close()
            # Assert: one final RETIRED status of ETH, and nothing of ETH after it.
            eth = [m for m in received if m["topic"].endswith("ETH-USDT-USDT")]
            retired_at = next(i for i, m in enumerate(eth) if m["payload"].get("state") == "RETIRED")
            assert eth[retired_at]["payload"]["heartbeat"] is False
            assert eth[retired_at + 1 :] == [], eth[retired_at + 1 :][:3]
            assert lifecycle.requests_after["ETHUSDT"] == refused, "the daemon asked about ETH after retiring it"
            assert len(retired_lines(log, ETH)) == 1
            code, metrics = await http_get(http_port, "/metrics")
            assert code == 200 and 'symbol="BTC/USDT:USDT"' in metrics
            assert 'symbol="ETH/USDT:USDT"' not in metrics, [
                line for line in metrics.splitlines() if "ETH/USDT:USDT" in line
            ][:5]
            code, text = await http_get(http_port, "/readyz")
            assert code == 200, text  # BTC is VALID
            # No book VALID any more: not ready, saying why.
            lifecycle.schedule(Retirement("BTCUSDT", time.time(), announced=False))
            await wait_for(book_state(http_port, BTC, "RETIRED"), "BTC RETIRED", 30)
            code, text = await http_get(http_port, "/readyz")
            body = orjson.loads(text)
            assert code == 503 and body["ready"] is False, text
            assert body["reason"].startswith("2 of 2 books not VALID, 2 of them retired"), body

            # Both connections closed for good: no 'websocket down' (flowgauge_ws_connected 0) is left to page anyone.
            async def no_connected_series() -> bool:
                code, metrics = await http_get(http_port, "/metrics")
                return code == 200 and 'flowgauge_ws_connected{venue="binanceusdm"}' not in metrics

            await wait_for(no_connected_series, "flowgauge_ws_connected of binanceusdm gone", 10)


async def test_a_dated_future_retires_when_it_expires(tmp_path: Path) -> None:
    at = time.time() + 12.0
    day = datetime.datetime.fromtimestamp(at, tz=datetime.UTC).strftime("%y%m%d")
    quarterly_id, quarterly = f"BTCUSDT_{day}", f"BTC/USDT:USDT-{day}"
    lifecycle = Lifecycle([Retirement(quarterly_id, at, announced=True)])
    async with BinanceUsdmSimulator(
        RECORDING, port=0, speed=2.0, serve=("BTCUSDT", "ETHUSDT", quarterly_id), lifecycle=lifecycle
    ) as sim:
        # No metadata refresh for an hour: only the expiry time read at start can retire it.
        config, _, http_port = write_config(tmp_path / "cfg.yaml", sim, [BTC, quarterly], refresh_s=3600.0)
        log = tmp_path / "daemon.log"
        with flowgauge(["run", "-c", str(config)], log):
            await wait_for(book_state(http_port, quarterly, "VALID"), f"{quarterly} VALID", 30)
            assert time.time() < at, "the quarterly expired before the test could see it VALID"
            book = await wait_for(book_state(http_port, quarterly, "RETIRED"), f"{quarterly} RETIRED", 30)
            assert time.time() >= at
            assert book["reason"] == "EXPIRED" and book["detail"].startswith("expired at "), book
            assert len(retired_lines(log, quarterly)) == 1
            code, text = await http_get(http_port, "/readyz")
            assert code == 200, text
            assert (await status(http_port))[BTC]["state"] == "VALID"


async def test_bybit_perpetual_with_a_scheduled_delisting_retires_at_that_time(tmp_path: Path) -> None:
    """Through the command line: `flowgauge simulate --venue bybit --expire BTCUSDT@+15` serves BTCUSDT with
    `deliveryTime` 15 s ahead (a perpetual's scheduled delisting time) and `status` Closed after it; the daemon, with
    no refresh due, retires the book at that time (EXPIRED) while ETH stays VALID (the stream still carries BTC's
    frames: they are ignored)."""
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    config = tmp_path / "bybit.yaml"
    config.write_text(yaml.safe_dump({
        "venues": {"bybit": {
            "symbols": [BTC, ETH], "ws_url": f"ws://127.0.0.1:{sim_port}/v5/public/linear",
            "rest_url": f"http://127.0.0.1:{sim_port}", "backoff_initial_s": 0.1, "backoff_max_s": 0.5,
            "markets_refresh_s": 3600,
        }},
        "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port}},
        "http": {"host": "127.0.0.1", "port": http_port},
    }))  # fmt: skip
    started = time.time()
    simulate = ["simulate", "--venue", "bybit", "--port", str(sim_port), "--speed", "2", "--expire", "BTCUSDT@+15"]
    with (
        flowgauge(simulate, tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log"),
    ):
        await wait_for(book_state(http_port, BTC, "VALID", "bybit"), "BTC VALID", 60)
        book = await wait_for(book_state(http_port, BTC, "RETIRED", "bybit"), "BTC RETIRED", 40)
        assert time.time() >= started + 15
        assert book["reason"] == "EXPIRED", book
        eth = await wait_for(book_state(http_port, ETH, "VALID", "bybit"), "ETH VALID", 30)
        published = (await status(http_port, "bybit"))[BTC]["published"]
        await wait_for(lambda: _more_published(http_port, ETH, eth["published"] + 20), "ETH payloads go on", 30)
        assert (await status(http_port, "bybit"))[BTC]["published"] == published  # BTC's frames ignored
        code, text = await http_get(http_port, "/readyz")
        assert code == 200, text
        assert len(retired_lines(tmp_path / "daemon.log", BTC)) == 1


async def _more_published(http_port: int, symbol: str, at_least: int) -> bool:
    return bool((await status(http_port, "bybit"))[symbol]["published"] >= at_least)


async def test_deribit_state_channel_retires_a_book_before_any_refresh(tmp_path: Path) -> None:
    """A venue stream signal: the Deribit simulator delists ETH-PERPETUAL and says so on `instrument.state` (closed);
    with no metadata refresh due for an hour, the daemon retires the book from that notification alone. After a
    forced reconnect (BTC resyncs), the daemon subscribes nothing of ETH: the simulator counts no request for it."""
    lifecycle = Lifecycle()
    btc, eth = "BTC/USD:BTC", "ETH/USD:ETH"
    recording = DATA_DIR / SIMULATORS["deribit"].recording
    async with DeribitSimulator(recording, port=0, speed=2.0, lifecycle=lifecycle) as sim:
        http_port = free_port()
        config = tmp_path / "deribit.yaml"
        config.write_text(yaml.safe_dump({
            "venues": {"deribit": {
                "symbols": [btc, eth], "ws_url": sim.ws_url(), "rest_url": sim.http_url,
                "backoff_initial_s": 0.1, "backoff_max_s": 0.5, "markets_refresh_s": 3600,
            }},
            "bus": {"embedded": {"host": "127.0.0.1", "port": free_port()}},
            "http": {"host": "127.0.0.1", "port": http_port},
        }))  # fmt: skip
        log = tmp_path / "daemon.log"
        with flowgauge(["run", "-c", str(config)], log):
            for symbol in (btc, eth):
                await wait_for(book_state(http_port, symbol, "VALID", "deribit"), f"{symbol} VALID", 60)
            lifecycle.schedule(Retirement("ETH-PERPETUAL", time.time(), announced=False))
            book = await wait_for(book_state(http_port, eth, "RETIRED", "deribit"), "ETH RETIRED", 30)
            assert (book["reason"], book["detail"]) == ("DELISTED", "deribit instrument.state closed"), book
            resyncs = (await status(http_port, "deribit"))[btc]["resyncs"]
            for client in list(sim._clients):
                client.kick("forced")

            async def btc_resynced() -> bool:
                book = (await status(http_port, "deribit"))[btc]
                return book["resyncs"] > resyncs and book["state"] == "VALID"

            await wait_for(btc_resynced, "BTC resynced after the reconnect", 30)
            assert lifecycle.requests_after["ETH-PERPETUAL"] == 0
            assert len(retired_lines(log, eth)) == 1
            code, text = await http_get(http_port, "/readyz")
            assert code == 200, text


class ListingProxy:
    """A REST front for the simulator (real aiohttp on loopback) whose exchangeInfo answers can be cut as a venue's
    glitch would: each entry of `plan` shapes one answer ('omit_eth', 'empty': no symbol at all, 'truncated': BTC
    only), then answers pass through whole. `answers` counts the exchangeInfo answers given."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan: list[str] = []
        self.persistent: str | None = None
        self.answers = 0
        self.port = free_port()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> ListingProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._runner.cleanup()
        await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        async with self._session.request(request.method, self.upstream + str(request.rel_url)) as answer:
            body = await answer.read()
            status = answer.status
        if request.path.endswith("/exchangeInfo") and status == 200:
            mode = self.plan.pop(0) if self.plan else self.persistent
            info = orjson.loads(body)
            if mode == "omit_eth":
                info["symbols"] = [row for row in info["symbols"] if row.get("symbol") != "ETHUSDT"]
            elif mode == "empty":
                info["symbols"] = []
            elif mode == "truncated":
                info["symbols"] = [row for row in info["symbols"] if row.get("symbol") == "BTCUSDT"]
            body = orjson.dumps(info)
            self.answers += 1
        return web.Response(body=body, status=status, content_type="application/json")


async def test_an_instrument_missing_from_one_answer_is_not_retired(tmp_path: Path) -> None:
    """'No longer listed' retires a book only when two usable answers in a row leave it out: one answer without ETH
    (a glitch), an empty answer (a failed refresh) and a truncated one (BTC alone, fewer than half the markets) retire
    nothing; ETH left out of every answer retires on the second one (DELISTED)."""
    async with (
        BinanceUsdmSimulator(RECORDING, port=0, speed=2.0) as sim,
        ListingProxy(sim.http_url) as proxy,
    ):
        config, _, http_port = write_config(tmp_path / "cfg.yaml", sim, [BTC, ETH], refresh_s=0.5)
        raw = yaml.safe_load(config.read_text())
        raw["venues"]["binanceusdm"]["rest_url"] = proxy.url
        config.write_text(yaml.safe_dump(raw))
        log = tmp_path / "daemon.log"
        with flowgauge(["run", "-c", str(config)], log):
            for symbol in (BTC, ETH):
                await wait_for(book_state(http_port, symbol, "VALID"), f"{symbol} VALID", 60)
            # Glitches, each followed by a whole answer: omitted once, empty, omitted once then truncated.
            proxy.plan = ["omit_eth", "whole", "empty", "whole", "omit_eth", "truncated", "whole"]
            seen = proxy.answers

            def glitches_over() -> bool:
                assert retired_lines(log, BTC) == retired_lines(log, ETH) == [], "a glitch retired a book"
                return proxy.answers >= seen + 9

            await wait_for(glitches_over, "nine more exchangeInfo answers", 30)
            assert (await status(http_port))[ETH]["state"] == "VALID"
            assert retired_lines(log, ETH) == []
            text = log.read_text()
            assert "instrument_unlisted" in text and "markets_refresh_failed" in text, text[-2000:]
            # Really delisted: left out of every answer -> retired at the second one.
            proxy.persistent = "omit_eth"
            book = await wait_for(book_state(http_port, ETH, "RETIRED"), "ETH RETIRED", 30)
            assert book["reason"] == "DELISTED", book
            assert book["detail"] == f"binanceusdm no longer lists {ETH} (two refreshes in a row)", book
            assert (await status(http_port))[BTC]["state"] == "VALID"
            assert len(retired_lines(log, ETH)) == 1


async def test_a_delivered_quarterly_the_venue_no_longer_lists_is_retired_at_start(tmp_path: Path) -> None:
    """A configured dated contract whose delivery date is past and that the venue dropped from its listing (as OKX,
    Deribit and Bybit do) does not stop the daemon as an unknown symbol would: after a restart past an expiry, the
    other books must still run. Its book is RETIRED (EXPIRED) from the start and never asked for."""
    delivered = "BTC/USDT:USDT-250328"
    async with BinanceUsdmSimulator(RECORDING, port=0, speed=2.0) as sim:
        config, _, http_port = write_config(tmp_path / "cfg.yaml", sim, [BTC, delivered], refresh_s=3600.0)
        log = tmp_path / "daemon.log"
        with flowgauge(["run", "-c", str(config)], log) as proc:

            async def btc_valid() -> dict[str, Any] | None:
                assert proc.poll() is None, log.read_text()[-2000:]
                return await book_state(http_port, BTC, "VALID")()

            await wait_for(btc_valid, "BTC VALID", 60)
            book = (await status(http_port))[delivered]
            assert (book["state"], book["reason"]) == ("RETIRED", "EXPIRED"), book
            assert book["detail"] == "delivered on 2025-03-28, no longer listed", book
            code, text = await http_get(http_port, "/readyz")
            assert code == 200, text
            code, metrics = await http_get(http_port, "/metrics")
            assert code == 200 and delivered not in metrics
            assert len(retired_lines(log, delivered)) == 1
