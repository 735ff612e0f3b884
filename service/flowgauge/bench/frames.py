"""Recorded venue frames for the benchmark, looped with shifted sequence ids so any count can be replayed.

Sits under `flowgauge.bench` and feeds the measured paths (`bench.paths`) and the cryptofeed driver the SAME
frame texts. Reads recordings through `replay.recording`; must not parse venue payloads into events (that is
the connectors' job, and part of what is measured) and must not import the engine.

Looping: one pass over the recording is a "loop". Loop k rewrites every id and exchange time by k times a
span larger than the recording's own range, so ids keep increasing, and each loop starts again from the
recorded book snapshots (Bybit: the `snapshot` frames; Binance: the REST depth body, emitted as a
`RestSnapshot` item before the loop's first frame). A book therefore never sees a gap or a stale id, and
every frame of every loop is applied by every book under test.

Only book frames are kept by default (Bybit `orderbook.*`, Binance `depthUpdate`): the comparisons with
cryptofeed are about turning book frames into books, and other channels would make the two sides do
different work. `load_bybit(book_only=False)` keeps every data frame of the linear connection (tickers,
trades) for the full-path figure on mixed traffic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from flowgauge.recording import Connect, Http, Recv, iter_records
from flowgauge.types import ContractKind, Instrument

__all__ = [
    "BINANCE_SAMPLE",
    "BYBIT_SAMPLE",
    "RecordedFeed",
    "RestSnapshot",
    "load_binance_usdm",
    "load_bybit",
]

BYBIT_SAMPLE = Path(__file__).resolve().parent.parent / "simulate" / "data" / "bybit-linear-2026-08.jsonl.zst"
BINANCE_SAMPLE = Path(__file__).resolve().parent / "data" / "binance-usdm-ethusdt-2024-08-depth.jsonl.zst"


class RestSnapshot(NamedTuple):
    """A REST book snapshot body to hand to the book before the frames that follow it (Binance)."""

    venue_id: str  # the venue's symbol, e.g. "ETHUSDT"
    body: str  # the REST response text, ids already shifted for its loop


Item = str | RestSnapshot
"""One thing a driver consumes: a websocket text frame, or a REST snapshot body."""


@dataclass(frozen=True, slots=True)
class RecordedFeed:
    """One loop of recorded frames of one venue, plus what the parsers need to be built.

    `items(n)` renders `n` frames (looping as needed), which is done before any timing starts.
    """

    venue: str  # ccxt id: "bybit" | "binanceusdm"
    instruments: tuple[Instrument, ...]
    symbol_info: tuple[Any, ...]  # decoded REST instrument-list bodies, for cryptofeed's symbol table
    frames: tuple[str, ...]  # one loop of websocket text frames, as recorded
    snapshots: tuple[tuple[str, str], ...]  # (venue id, REST body) emitted at the start of every loop
    shift: Callable[[dict[str, Any], int], None]  # rewrites one decoded frame / body in place for loop k

    def items(self, count: int) -> list[Item]:
        """`count` websocket frames (plus a REST snapshot item at each loop start), ids shifted per loop."""
        out: list[Item] = []
        produced = 0
        loop = 0
        while produced < count:
            for venue_id, body in self.snapshots:
                out.append(RestSnapshot(venue_id, self._render(body, loop)))
            for raw in self.frames:
                if produced >= count:
                    break
                out.append(self._render(raw, loop))
                produced += 1
            loop += 1
        return out

    def _render(self, raw: str, loop: int) -> str:
        if loop == 0:
            return raw
        message = orjson.loads(raw)
        self.shift(message, loop)
        return orjson.dumps(message).decode()


def frame_count(items: Iterable[Item]) -> int:
    """Websocket frames among `items` (REST snapshots are not messages)."""
    return sum(1 for item in items if isinstance(item, str))


def level_count(items: Iterable[Item]) -> int:
    """Price levels carried by the websocket frames among `items` (Bybit `data.b/a`, Binance `data.b/a`)."""
    total = 0
    for item in items:
        if isinstance(item, str):
            message = orjson.loads(item)
            data = message.get("data")
            if isinstance(data, dict):
                total += len(data.get("b") or ()) + len(data.get("a") or ())
    return total


# ---------------------------------------------------------------------------------------------- Bybit


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _span(values: list[int]) -> int:
    return (max(values) - min(values) + 1) if values else 1


def load_bybit(path: str | Path = BYBIT_SAMPLE, *, book_only: bool = True) -> RecordedFeed:
    """The linear-connection frames of a Bybit recording, and its linear instruments.

    Args:
        path: a recording with a linear connection and its `instruments-info` REST answer.
        book_only: keep only `orderbook.*` frames (the comparison set); False keeps every data frame.
    """
    linear_conns: set[str] = set()
    info_bodies: list[Any] = []
    frames: list[str] = []
    for record in iter_records(path):
        if isinstance(record, Connect) and record.addr.rstrip("/").endswith("/v5/public/linear"):
            linear_conns.add(record.conn)
        elif isinstance(record, Http) and "category=linear" in record.url:
            info_bodies.append(orjson.loads(record.data))
        elif isinstance(record, Recv) and record.conn in linear_conns:
            head = record.data[:40]
            if '"topic"' not in head:
                continue  # acks and pongs
            if book_only and '"orderbook.' not in head:
                continue
            if not book_only and '"kline.' in head:
                continue  # not consumed by flowgauge, and cryptofeed would build candles from it
            frames.append(record.data)
    if not frames or not info_bodies:
        raise ValueError(f"{path}: no linear frames or no linear instruments-info answer")
    ids: list[int] = []
    seqs: list[int] = []
    times: list[int] = []
    venue_ids: set[str] = set()
    for raw in frames:
        message = orjson.loads(raw)
        venue_ids.add(message["topic"].rpartition(".")[2])
        for key in ("ts", "cts"):
            if _is_int(message.get(key)):
                times.append(message[key])
        if _is_int(message.get("cs")):
            seqs.append(message["cs"])
        data = message.get("data")
        if isinstance(data, dict):
            if _is_int(data.get("u")):
                ids.append(data["u"])
            if _is_int(data.get("seq")):
                seqs.append(data["seq"])
        elif isinstance(data, list):
            for item in data:
                if isinstance(item, dict):
                    if _is_int(item.get("T")):
                        times.append(item["T"])
                    if _is_int(item.get("seq")):
                        seqs.append(item["seq"])
    # One span for `u` across topics is enough: each topic's loop restarts from its snapshot.
    u_span, seq_span, ts_span = max(ids) + 1, _span(seqs), _span(times)

    def shift(message: dict[str, Any], loop: int) -> None:
        dt = loop * ts_span
        for key in ("ts", "cts"):
            if _is_int(message.get(key)):
                message[key] += dt
        if _is_int(message.get("cs")):
            message["cs"] += loop * seq_span
        data = message.get("data")
        if isinstance(data, dict):
            if _is_int(data.get("u")):
                data["u"] += loop * u_span
            if _is_int(data.get("seq")):
                data["seq"] += loop * seq_span
        elif isinstance(data, list):
            for item in data:
                if isinstance(item, dict):
                    if _is_int(item.get("T")):
                        item["T"] += dt
                    if _is_int(item.get("seq")):
                        item["seq"] += loop * seq_span

    instruments = tuple(_bybit_instruments(info_bodies, venue_ids))
    return RecordedFeed("bybit", instruments, tuple(info_bodies), tuple(frames), (), shift)


def _bybit_instruments(bodies: list[Any], venue_ids: set[str]) -> list[Instrument]:
    # Built directly from the REST body rather than through ccxt: importing ccxt costs about a second,
    # which the smoke test cannot afford, and a linear USDT perpetual needs only these fields.
    out: list[Instrument] = []
    for body in bodies:
        for item in body["result"]["list"]:
            venue_id = item["symbol"]
            if venue_id not in venue_ids or item.get("contractType") != "LinearPerpetual":
                continue
            base, quote, settle = item["baseCoin"], item["quoteCoin"], item["settleCoin"]
            out.append(
                Instrument(
                    venue="bybit",
                    symbol=f"{base}/{quote}:{settle}",
                    venue_id=venue_id,
                    category="linear",
                    kind=ContractKind.LINEAR,
                    contract_size=1.0,
                    tick_size=float(item["priceFilter"]["tickSize"]),
                    base=base,
                    quote=quote,
                    settle=settle,
                    derivative=True,
                )
            )
    return out


# -------------------------------------------------------------------------------------- Binance USD-M


def load_binance_usdm(path: str | Path = BINANCE_SAMPLE) -> RecordedFeed:
    """The depth frames, REST depth snapshot and `exchangeInfo` of a Binance USD-M recording."""
    info: Any = None
    snapshot: str | None = None
    snapshot_symbol = ""
    frames: list[str] = []
    for record in iter_records(path):
        if isinstance(record, Http) and "exchangeInfo" in record.url:
            info = orjson.loads(record.data)
        elif isinstance(record, Http) and "/depth" in record.url:
            snapshot = record.data
            query = record.url.partition("?")[2]
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            snapshot_symbol = params.get("symbol", "")
        elif isinstance(record, Recv) and '"depthUpdate"' in record.data:
            frames.append(record.data)
    if info is None or snapshot is None or not frames:
        raise ValueError(f"{path}: exchangeInfo, depth snapshot or depth frames missing")
    ids: list[int] = [orjson.loads(snapshot)["lastUpdateId"]]
    times: list[int] = []
    for raw in frames:
        data = orjson.loads(raw)["data"]
        ids += [data["U"], data["u"], data["pu"]]
        times += [data["E"], data["T"]]
    id_span, ts_span = _span(ids), _span(times)

    def shift(message: dict[str, Any], loop: int) -> None:
        # A depth frame ({"stream":..,"data":{..}}) or the REST body ({"lastUpdateId":..,"E":..,"T":..}).
        dt = loop * ts_span
        dn = loop * id_span
        data = message.get("data", message)
        for key in ("U", "u", "pu", "lastUpdateId"):
            if _is_int(data.get(key)):
                data[key] += dn
        for key in ("E", "T"):
            if _is_int(data.get(key)):
                data[key] += dt

    instruments = tuple(_binance_instruments(info))
    return RecordedFeed(
        "binanceusdm", instruments, (info,), tuple(frames), ((snapshot_symbol, snapshot),), shift
    )


def _binance_instruments(info: Any) -> list[Instrument]:
    out: list[Instrument] = []
    for item in info["symbols"]:
        if item.get("contractType") != "PERPETUAL":
            continue
        tick = next((f["tickSize"] for f in item["filters"] if f.get("filterType") == "PRICE_FILTER"), "0")
        base, quote, settle = item["baseAsset"], item["quoteAsset"], item["marginAsset"]
        out.append(
            Instrument(
                venue="binanceusdm",
                symbol=f"{base}/{quote}:{settle}",
                venue_id=item["symbol"],
                category="linear",
                kind=ContractKind.LINEAR,
                contract_size=1.0,
                tick_size=float(tick),
                base=base,
                quote=quote,
                settle=settle,
                derivative=True,
            )
        )
    return out
