"""The simulators' best-quote streams (issue 11 item 1), read with the daemon's own parsers.

Binance serves its recording's `bookTicker` frames; Bybit (`orderbook.1`), OKX (`bbo-tbt`) and Deribit (`quote`)
derive theirs from the book each keeps: one frame per change of the top, which is the simulator's truth (its book
state recorded under the same id) on Bybit and OKX, where the frame carries the book's id.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import orjson
import pytest
from tests.sim_helpers import STEP_S, recv, ws_client

from flowgauge.connectors.binance import BinanceUsdmParser
from flowgauge.connectors.bybit import BybitParser
from flowgauge.connectors.deribit import DeribitParser
from flowgauge.connectors.okx import OkxParser
from flowgauge.recording import Recv, iter_records
from flowgauge.simulate import DATA_DIR, SIMULATORS
from flowgauge.simulate.binanceusdm import BinanceUsdmSimulator
from flowgauge.simulate.bybit import BybitSimulator
from flowgauge.simulate.deribit import DeribitSimulator
from flowgauge.simulate.okx import OkxSimulator
from flowgauge.types import BestQuote, ContractKind, Instrument

pytestmark = pytest.mark.integration

N_QUOTES = 40


def _inst(venue: str, symbol: str, venue_id: str, kind: ContractKind, contract_size: float) -> Instrument:
    base, quote = symbol.split("/")[0], symbol.split("/")[1].split(":")[0]
    return Instrument(venue, symbol, venue_id, "linear", kind, contract_size, 0.1, base, quote, quote, True)


async def _quotes(ws: Any, parser: Any, n: int = N_QUOTES) -> list[BestQuote]:
    out: list[BestQuote] = []
    async with asyncio.timeout(4 * STEP_S):
        while len(out) < n:
            out += [e for e in parser.feed(await recv(ws), 1) if isinstance(e, BestQuote)]
    return out


def _changes_only(quotes: list[BestQuote]) -> None:
    tops = [(q.bid_px, q.bid_sz, q.ask_px, q.ask_sz) for q in quotes]
    assert all(a != b for a, b in itertools.pairwise(tops))  # one frame per change of the top
    assert all(q.bid_px is not None and q.ask_px is not None and q.bid_px < q.ask_px for q in quotes)


async def test_bybit_derives_orderbook_1_from_its_book() -> None:
    btc = _inst("bybit", "BTC/USDT:USDT", "BTCUSDT", ContractKind.LINEAR, 1.0)
    async with BybitSimulator(DATA_DIR / SIMULATORS["bybit"].recording, port=0, speed=0.0) as sim:
        async with ws_client(sim.ws_url("linear")) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "args": ["orderbook.1.BTCUSDT"]}).decode())
            quotes = await _quotes(ws, BybitParser("linear", [btc]))
        _changes_only(quotes)
        for q in quotes:
            truth = sim.truth.get("BTCUSDT", q.seq)  # type: ignore[arg-type]
            assert truth is not None
            assert (truth.bids[0], truth.asks[0]) == ((q.bid_px, q.bid_sz), (q.ask_px, q.ask_sz))


async def test_okx_derives_bbo_tbt_from_its_book() -> None:
    swap = _inst("okx", "BTC/USDT:USDT", "BTC-USDT-SWAP", ContractKind.LINEAR, 0.01)
    async with OkxSimulator(DATA_DIR / SIMULATORS["okx"].recording, port=0, speed=0.0) as sim:
        async with ws_client(sim.ws_url()) as ws:
            arg = {"channel": "bbo-tbt", "instId": "BTC-USDT-SWAP"}
            await ws.send(orjson.dumps({"op": "subscribe", "args": [arg]}).decode())
            quotes = await _quotes(ws, OkxParser([swap]))
        _changes_only(quotes)
        for q in quotes:
            truth = sim.truth.get("BTC-USDT-SWAP", q.seq)  # type: ignore[arg-type]  # sizes in contracts
            assert truth is not None
            assert truth.bids[0] == (q.bid_px, pytest.approx(q.bid_sz / 0.01))  # type: ignore[operator]
            assert truth.asks[0] == (q.ask_px, pytest.approx(q.ask_sz / 0.01))  # type: ignore[operator]


async def test_deribit_derives_quote_from_its_book() -> None:
    perp = _inst("deribit", "BTC/USD:BTC", "BTC-PERPETUAL", ContractKind.INVERSE, 10.0)
    request = {"jsonrpc": "2.0", "id": 1, "method": "public/subscribe", "params": {"channels": ["quote.BTC-PERPETUAL"]}}
    path = DATA_DIR / SIMULATORS["deribit"].recording
    async with DeribitSimulator(path, port=0, speed=0.0) as sim, ws_client(sim.ws_url()) as ws:
        await ws.send(json.dumps(request))
        quotes = await _quotes(ws, DeribitParser([perp]), n=10)
    _changes_only(quotes)
    for q in quotes:  # USD amounts (whole 10 USD contracts of the relabelled perpetual) read as coin
        assert round(q.bid_sz * q.bid_px) % 10 == 0 and round(q.ask_sz * q.ask_px) % 10 == 0  # type: ignore[operator]


async def test_binance_serves_the_recorded_book_ticker() -> None:
    path = DATA_DIR / SIMULATORS["binanceusdm"].recording
    recorded = {
        json.loads(rec.data)["data"]["u"]
        for rec in iter_records(path)
        if isinstance(rec, Recv) and '"ethusdt@bookTicker"' in rec.data[:40]
    }
    assert len(recorded) > 1000  # the packaged excerpt keeps its bookTicker frames (tests/fixtures/make_fixtures.py)
    eth = _inst("binanceusdm", "ETH/USDT:USDT", "ETHUSDT", ContractKind.LINEAR, 1.0)
    async with BinanceUsdmSimulator(path, port=0, speed=0.0) as sim, ws_client(sim.ws_url("public")) as ws:
        await ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 1}).decode())
        quotes = await _quotes(ws, BinanceUsdmParser([eth], route="public"))
    seqs = [q.seq for q in quotes]
    assert seqs == sorted(seqs) and set(seqs) <= recorded  # type: ignore[type-var]
