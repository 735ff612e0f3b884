"""All five venues at once: `flowgauge simulate --venue all` and `flowgauge run` as real processes.

Timeline: the simulators listen on five consecutive free loopback ports -> the daemon, configured
for BTC and ETH perpetuals on every venue and pointed at them by config only, loads instrument
metadata through ccxt, subscribes, bootstraps books (websocket snapshots, Binance and OKX REST
snapshots) -> a bus subscriber sees a VALID book payload for all ten instruments, each with a non-null `ofi_l1`
from the venue's best-quote stream (`source_granularity` "best_quote": Binance's recorded bookTicker, the other
simulators' derived from their books) or, on Hyperliquid, derived by the daemon from its book, then a cross-venue
aggregate
of BTC and of ETH counting several venues (flowgauge.v1.agg.<BASE>, valid per schema/agg.v1.json) -> /readyz 200
and /status lists every venue -> SIGTERM -> exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import jsonschema
import orjson
import pytest
import yaml
from tests.procs import flowgauge, free_port, http_get, reserve_ports, wait_for
from websockets.asyncio.client import connect

from flowgauge import schema_path as flowgauge_schema

pytestmark = pytest.mark.integration

VENUES = ("bybit", "binanceusdm", "okx", "deribit", "hyperliquid")
SYMBOLS = {
    "bybit": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
    "binanceusdm": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
    "okx": ["BTC/USDT:USDT", "ETH/USDT:USDT"],
    "deribit": ["BTC/USD:BTC", "ETH/USD:ETH"],
    "hyperliquid": ["BTC/USDC:USDC", "ETH/USDC:USDC"],
}
WS_PATHS = {
    "bybit": "/v5/public/linear",
    "binanceusdm": "",
    "okx": "/ws/v5/public",
    "deribit": "/ws/api/v2",
    "hyperliquid": "/ws",
}
# Where the L1 OFI comes from (README Venues): every venue's best-quote stream but Hyperliquid's (none subscribed).
GRANULARITY = {venue: "derived" if venue == "hyperliquid" else "best_quote" for venue in VENUES}


def five_free_ports() -> int:
    """A base port with the four after it free too."""
    for _ in range(50):
        base = free_port()
        if base + 4 > 65535:
            continue
        ok = True
        for port in range(base, base + 5):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            reserve_ports(range(base, base + 5))
            return base
    raise AssertionError("no five consecutive free ports")


async def test_daemon_runs_all_five_venues_against_the_simulator(tmp_path: Path) -> None:
    base = five_free_ports()
    bus_port, http_port = free_port(), free_port()
    venues = {}
    for offset, venue in enumerate(VENUES):
        port = base + offset
        venues[venue] = {
            "symbols": SYMBOLS[venue],
            "ws_url": f"ws://127.0.0.1:{port}{WS_PATHS[venue]}",
            "rest_url": f"http://127.0.0.1:{port}",
            "stale_after_s": 15,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 1.0,
        }
    config = tmp_path / "all.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "venues": venues,
                "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port}},
                "http": {"host": "127.0.0.1", "port": http_port},
            }
        )
    )
    with (
        flowgauge(["simulate", "--venue", "all", "--base-port", str(base), "--speed", "4"], tmp_path / "sim.log"),
        flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
    ):

        async def subscribe():
            ws = await connect(f"ws://127.0.0.1:{bus_port}", open_timeout=2)
            await ws.send(orjson.dumps({"op": "subscribe", "patterns": ["flowgauge.v1.*.>"]}).decode())
            assert orjson.loads(await ws.recv())["op"] == "subscribed"
            return ws

        ws = await wait_for(subscribe, "embedded bus subscription")
        wanted = {(venue, symbol) for venue, symbols in SYMBOLS.items() for symbol in symbols}
        seen: dict[tuple[str, str], dict] = {}
        latest: dict[tuple[str, str], tuple[object, object]] = {}  # (source_granularity, ofi_l1) last seen
        aggregates: dict[str, dict] = {}  # base -> latest aggregate counting at least two venues

        async def every_book_valid() -> bool:
            # Every queued message per check (the bus disconnects a subscriber that lags), a bounded wait each.
            for _ in range(1000):
                message = orjson.loads(await asyncio.wait_for(ws.recv(), 2.0))
                payload = message["payload"]
                if message["topic"].startswith("flowgauge.v1.agg."):
                    if len(payload["venues"]) >= 2:
                        aggregates[payload["base"]] = payload
                elif payload.get("trigger") == "book" and payload["book_state"] == "VALID":
                    key = (payload["venue"], payload["symbol"])
                    latest[key] = (payload["source_granularity"], payload["ofi_l1"])
                    # ofi_l1 is null until a first L1 state came after the book turned VALID
                    if payload["ofi_l1"] is not None and payload["source_granularity"] == GRANULARITY[key[0]]:
                        seen[key] = payload
                if wanted <= set(seen):
                    return True
            return False

        try:
            await wait_for(every_book_valid, "a VALID book payload for every venue and symbol", timeout_s=90)
        except AssertionError:
            missing = sorted(wanted - set(seen))
            log = (tmp_path / "daemon.log").read_text()[-4000:]
            got = {key: latest.get(key) for key in missing}
            raise AssertionError(f"no valid book with ofi_l1 for {missing}: {got}\n{log}") from None

        async def aggregates_across_venues() -> bool:
            await every_book_valid()
            return {"BTC", "ETH"} <= set(aggregates)

        await wait_for(aggregates_across_venues, "aggregates of BTC and ETH over several venues", timeout_s=30)
        agg_schema = orjson.loads(flowgauge_schema("agg").read_bytes())
        for base, aggregate in aggregates.items():
            jsonschema.validate(aggregate, agg_schema)
            assert set(aggregate["venues"]) <= set(VENUES), base
            assert aggregate["mid_median"] > 0 and aggregate["premium_dispersion_bps"] is not None, base
        await ws.close()
        for (venue, symbol), payload in seen.items():
            assert payload["bid_px"] < payload["ask_px"], (venue, symbol)
            assert payload["bid_sz"] > 0 and payload["ask_sz"] > 0, (venue, symbol)

        async def ready() -> bool:
            code, _ = await http_get(http_port, "/readyz")
            return code == 200

        await wait_for(ready, "/readyz 200 with every book valid", timeout_s=60)
        _, body = await http_get(http_port, "/status")
        status = orjson.loads(body)
        assert set(status["venues"]) == set(VENUES)
        assert status["ready_by_venue"] == dict.fromkeys(VENUES, True)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(5) == 0
