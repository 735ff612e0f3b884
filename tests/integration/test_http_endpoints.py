"""HTTP endpoints (flowgauge.telemetry.http) over a real loopback socket, scraped with aiohttp.

`/metrics` is parsed with prometheus_client's own parser. The signal gauges come from a `SignalCollector`
reading a small in-test `SignalSource`: that is our own interface, not a network peer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from flowgauge.telemetry.collector import SignalCollector
from flowgauge.telemetry.http import HttpServer
from flowgauge.telemetry.instruments import Telemetry

pytestmark = pytest.mark.integration

TIMEOUT = aiohttp.ClientTimeout(total=5)
TS_NS = 1_700_000_000_123_000_000


class TableSource:
    """A SignalSource backed by plain dicts, mutable between scrapes."""

    def __init__(self) -> None:
        self.signals: dict[tuple[str, str], dict[str, object]] = {
            ("bybit", "BTC/USDT:USDT"): {
                "depth_imb_1": 0.5,
                "depth_imb_5": -0.25,
                "depth_imb_10": None,  # undefined: must not be exported
                "depth_imb_20": 0.125,
                "ofi_raw_1s": 3.0,
                "ofi_raw_10s": -7.5,
                "ofi_raw_60s": 12,
                "ofi_ew_10s": 1.5,
                "tfi_10s": 0.2,
                "tfi_60s": None,
                "oi": 51_000.0,
                "oi_notional": 3.3e9,
                "funding_rate_8h": 0.0001,
                "premium_bps_live": -1.25,
                "spread_bps": 0.015,
                "mid": 65_000.5,
                "ts_exchange": TS_NS,
                "schema": 1,  # not a metric key: ignored
                "venue": "bybit",
            },
        }
        self.states: dict[tuple[str, str], str] = {
            ("bybit", "BTC/USDT:USDT"): "VALID",
            ("bybit", "ETH/USDT:USDT"): "INVALID",
            ("okx", "BTC/USDT:USDT"): "SYNCING",
        }

    def latest_signals(self) -> Iterable[tuple[str, str, Mapping[str, object]]]:
        for (venue, symbol), payload in self.signals.items():
            yield venue, symbol, payload

    def book_states(self) -> Iterable[tuple[str, str, str]]:
        for (venue, symbol), state in self.states.items():
            yield venue, symbol, state


class Readiness:
    def __init__(self) -> None:
        self.ready = False

    def __call__(self) -> bool:
        return self.ready


@pytest.fixture
def source() -> TableSource:
    return TableSource()


@pytest.fixture
def readiness() -> Readiness:
    return Readiness()


@pytest.fixture
def registry(source: TableSource) -> CollectorRegistry:
    registry = CollectorRegistry()
    telemetry = Telemetry(registry, version="1.2.3")
    telemetry.register_venue("bybit").frame_received(100)
    telemetry.register_book("bybit", "BTC/USDT:USDT")
    registry.register(SignalCollector(source))
    return registry


@pytest.fixture
async def server(registry: CollectorRegistry, readiness: Readiness) -> AsyncIterator[HttpServer]:
    def status() -> Mapping[str, object]:
        return {"venues": {"bybit": {"connected": True, "books": 2}}, "version": "1.2.3"}

    async with HttpServer("127.0.0.1", 0, registry, readiness, status) as server:
        yield server


@pytest.fixture
async def http(server: HttpServer) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session, f"http://127.0.0.1:{server.bound_port}"


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> [(labels, value)], from the Prometheus text format."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def _value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float | None:
    for sample_labels, value in samples.get(name, []):
        if sample_labels == labels:
            return value
    return None


async def test_metrics_exposes_signal_gauges_from_the_source(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert "version=" in response.headers["Content-Type"]
        text = await response.text()
    samples = _samples(text)
    btc = {"venue": "bybit", "symbol": "BTC/USDT:USDT"}

    # Assert: depth imbalance per level; the None level is absent, not 0.
    assert _value(samples, "flowgauge_depth_imbalance", **btc, levels="5") == -0.25
    assert _value(samples, "flowgauge_depth_imbalance", **btc, levels="20") == 0.125
    assert _value(samples, "flowgauge_depth_imbalance", **btc, levels="10") is None
    assert len(samples["flowgauge_depth_imbalance"]) == 3
    # OFI windows, including the decayed one.
    assert _value(samples, "flowgauge_ofi", **btc, window="10s") == -7.5
    assert _value(samples, "flowgauge_ofi", **btc, window="60s") == 12.0
    assert _value(samples, "flowgauge_ofi", **btc, window="ew10s") == 1.5
    assert _value(samples, "flowgauge_trade_flow_imbalance", **btc, window="10s") == 0.2
    assert _value(samples, "flowgauge_trade_flow_imbalance", **btc, window="60s") is None
    # Scalars.
    assert _value(samples, "flowgauge_open_interest", **btc) == 51_000.0
    assert _value(samples, "flowgauge_open_interest_notional", **btc) == 3.3e9
    assert _value(samples, "flowgauge_funding_rate_8h", **btc) == 0.0001
    # bps in the payload, ratios on /metrics (Prometheus base units).
    assert _value(samples, "flowgauge_premium_ratio", **btc) == pytest.approx(-1.25e-4)
    assert _value(samples, "flowgauge_book_spread_ratio", **btc) == pytest.approx(1.5e-6)
    assert _value(samples, "flowgauge_mid_price", **btc) == 65_000.5
    last_update = _value(samples, "flowgauge_book_last_update_timestamp_seconds", **btc)
    assert last_update == pytest.approx(TS_NS / 1e9)
    # Book states for every book, including ones without a payload yet: a state set, 1 on the current state.
    for venue, symbol, current in (("bybit", "BTC/USDT:USDT", "VALID"), ("bybit", "ETH/USDT:USDT", "INVALID"),
                                   ("okx", "BTC/USDT:USDT", "SYNCING")):
        for state in ("VALID", "SYNCING", "INVALID"):
            value = _value(samples, "flowgauge_book_state", venue=venue, symbol=symbol, state=state)
            assert value == (1.0 if state == current else 0.0), (venue, symbol, state)
    # Operational instruments from the same registry.
    assert _value(samples, "flowgauge_build_info", version="1.2.3") == 1.0
    assert _value(samples, "flowgauge_ws_received_bytes_total", venue="bybit") == 100.0
    assert _value(samples, "flowgauge_ws_connected", venue="bybit") == 0.0
    assert _value(samples, "flowgauge_book_resyncs_total", **btc, reason="gap") == 0


async def test_metrics_follow_the_source_between_scrapes(
    http: tuple[aiohttp.ClientSession, str], source: TableSource
) -> None:
    session, base = http
    source.signals[("bybit", "BTC/USDT:USDT")]["mid"] = 64_000.0
    source.signals[("okx", "ETH/USDT:USDT")] = {"mid": 3_000.0, "depth_imb_1": None}
    del source.states[("bybit", "ETH/USDT:USDT")]

    async with session.get(f"{base}/metrics") as response:
        samples = _samples(await response.text())

    assert _value(samples, "flowgauge_mid_price", venue="bybit", symbol="BTC/USDT:USDT") == 64_000.0
    assert _value(samples, "flowgauge_mid_price", venue="okx", symbol="ETH/USDT:USDT") == 3_000.0
    okx_eth = {"venue": "okx", "symbol": "ETH/USDT:USDT"}
    assert _value(samples, "flowgauge_depth_imbalance", **okx_eth, levels="1") is None
    # A book that left the source leaves /metrics.
    assert not [labels for labels, _ in samples["flowgauge_book_state"] if labels["symbol"] == "ETH/USDT:USDT"
                and labels["venue"] == "bybit"]


async def test_every_metric_has_a_help_text(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/metrics") as response:
        families = list(text_string_to_metric_families(await response.text()))
    flowgauge = [f for f in families if f.name.startswith("flowgauge_")]
    assert len(flowgauge) >= 25
    for family in flowgauge:
        assert family.documentation, family.name


async def test_metrics_negotiates_openmetrics(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
    async with session.get(f"{base}/metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).rstrip().endswith("# EOF")


async def test_healthz(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/healthz") as response:
        assert response.status == 200
        assert await response.text() == "ok"


async def test_readyz_follows_the_ready_callable(
    http: tuple[aiohttp.ClientSession, str], readiness: Readiness
) -> None:
    session, base = http
    async with session.get(f"{base}/readyz") as response:
        assert response.status == 503
        body = await response.json()
        assert body["ready"] is False
        assert body["reason"]

    readiness.ready = True
    async with session.get(f"{base}/readyz") as response:
        assert response.status == 200
        assert await response.json() == {"ready": True}

    readiness.ready = False
    async with session.get(f"{base}/readyz") as response:
        assert response.status == 503


async def test_readyz_is_503_when_the_check_raises(registry: CollectorRegistry) -> None:
    def broken() -> bool:
        raise RuntimeError("boom")

    async with (
        HttpServer("127.0.0.1", 0, registry, broken, None) as server,
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.get(f"http://127.0.0.1:{server.bound_port}/readyz") as response,
    ):
        assert response.status == 503
        assert "RuntimeError" in (await response.json())["reason"]


async def test_status_serves_the_status_document(http: tuple[aiohttp.ClientSession, str]) -> None:
    session, base = http
    async with session.get(f"{base}/status") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert await response.json() == {
            "venues": {"bybit": {"connected": True, "books": 2}},
            "version": "1.2.3",
        }


async def test_close_stops_listening(registry: CollectorRegistry) -> None:
    server = HttpServer("127.0.0.1", 0, registry)
    await server.start()
    port = server.bound_port
    await server.close()
    await server.close()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.bound_port
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"http://127.0.0.1:{port}/healthz"):
                pass
    with pytest.raises(RuntimeError, match="closed"):
        await server.start()


def test_collector_registration_rejects_a_duplicate(registry: CollectorRegistry, source: TableSource) -> None:
    # describe() exposes the names, so a second collector (or a clashing metric) is refused at startup.
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(SignalCollector(source))


async def test_readyz_body_carries_the_reasons(registry: CollectorRegistry) -> None:
    def reasons() -> Mapping[str, object]:
        return {"reason": "1 of 2 books not VALID (last venue errors: dns)", "not_ready": [{"venue": "okx"}]}

    def broken_reasons() -> Mapping[str, object]:
        raise RuntimeError("boom")

    async with (
        HttpServer("127.0.0.1", 0, registry, lambda: False, None, not_ready=reasons) as server,
        HttpServer("127.0.0.1", 0, registry, lambda: False, None, not_ready=broken_reasons) as broken,
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
    ):
        async with session.get(f"http://127.0.0.1:{server.bound_port}/readyz") as response:
            assert response.status == 503
            assert await response.json() == {
                "ready": False,
                "reason": "1 of 2 books not VALID (last venue errors: dns)",
                "not_ready": [{"venue": "okx"}],
            }
        # Explaining must never break the probe: the plain 503 still answers.
        async with session.get(f"http://127.0.0.1:{broken.bound_port}/readyz") as response:
            assert response.status == 503
            assert await response.json() == {"ready": False, "reason": "not ready"}
