"""Issue 11 regression: L1 OFI from the best-quote stream reproduces the CKS fit of an independent bookTicker OFI.

The whole 2024 ETHUSDT Binance USD-M session (345 s: `depth@0ms` diffs, one REST snapshot, ~54,000 `bookTicker`
frames, trades) is replayed through the daemon's parsers and engine. Over 1 s bars of exchange time, a
least-squares fit of the mid change (ticks) on the summed `ofi_l1` of the published payloads must give the R² of
the same fit computed here, independently, from the raw `bookTicker` frames with metrics.md 1.1 (case table, own
code, own bars, own mids), within 0.05. The R² and slopes of `ofi` (the depth stream's per-message e_n) and
`ofi_l1` at 1 s, 5 s and 10 s bars are printed (the issue's closing note quotes them). Like every conformance test
it runs under both cores (conftest), and the second run checks that both published identical payloads.

The recording is named `*.zst`, not `*.jsonl.zst`, to keep it out of the conformance tests that replay every
recording under tests/fixtures (its 74,000 frames would add ~20 s of CPU to each run of them); the reader detects
zstd by its magic number.
"""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import zstandard

from flowgauge import core
from flowgauge.replay.replay import replay

RECORDING = Path(__file__).resolve().parents[1] / "fixtures" / "binanceusdm" / "binance-usdm-ethusdt-2024-08-full.zst"
TOPIC = "flowgauge.v1.binanceusdm.ETH-USDT-USDT"
TICK = 0.01  # ETHUSDT price tick
_S = 1_000_000_000
L1_KEYS = ("ofi_l1", "ofi_l1_1s", "ofi_l1_10s", "ofi_l1_60s", "ofi_l1_ew_10s", "source_granularity")

Series = list[tuple[int, float]]  # (exchange time ns, value)


# -- the test's own reference: bookTicker OFI (metrics.md 1.1), bars and least squares --------------------------


def book_tickers() -> list[tuple[int, int, float, float, float, float]]:
    """(T in ns, u, bid, bid qty, ask, ask qty) of every recorded bookTicker, in update-id order."""
    with RECORDING.open("rb") as fh:
        text = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True).read().decode()
    out = []
    for line in io.StringIO(text):
        record = json.loads(line)
        if record.get("t") == "recv" and "@bookTicker" in record["data"][:40]:
            d = json.loads(record["data"])["data"]
            out.append((d["T"] * 1_000_000, d["u"], float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"])))
    out.sort(key=lambda q: q[1])
    return out


def cks_e(prev: tuple[float, ...], new: tuple[float, ...]) -> float:
    """metrics.md 1.1 as its case table: bid improves +q_new, same price +dq, retreats -q_prev; ask mirrored."""
    pb, qb, pa, qa = prev
    nb, nqb, na, nqa = new
    if nb > pb:
        bid = nqb
    elif nb == pb:
        bid = nqb - qb
    else:
        bid = -qb
    if na < pa:
        ask = -nqa
    elif na == pa:
        ask = qa - nqa
    else:
        ask = qa
    return bid + ask


def bars(
    flow: Iterable[tuple[int, float]], mids: Iterable[tuple[int, float]], seconds: int
) -> list[tuple[float, float]]:
    """(mid change in ticks, summed flow) per bar of `seconds` whose start and end mids exist."""
    width = seconds * _S
    summed: defaultdict[int, float] = defaultdict(float)
    last: dict[int, float] = {}
    for t, x in flow:
        summed[t // width] += x
    for t, mid in mids:
        last[t // width] = mid  # the last mid stamped in the bar
    first, end = min(last), max(last)
    return [
        ((last[k] - last[k - 1]) / TICK, summed.get(k, 0.0))
        for k in range(first + 1, end + 1)
        if k in last and k - 1 in last
    ]


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope, R²) of y = a + b x over (y, x) points."""
    n = len(points)
    mx = sum(x for _, x in points) / n
    my = sum(y for y, _ in points) / n
    sxx = sum((x - mx) ** 2 for _, x in points)
    syy = sum((y - my) ** 2 for y, _ in points)
    sxy = sum((x - mx) * (y - my) for y, x in points)
    return sxy / sxx, sxy * sxy / (sxx * syy)


# -- the daemon's side --------------------------------------------------------------------------------------------


_BY_CORE: dict[str, list[bytes]] = {}  # core -> every payload it published (the cores' runs compared)


@pytest.fixture(scope="module")
def payloads(hot_core: str) -> list[dict[str, Any]]:
    """The instrument's metrics payloads under the running core (conftest's `hot_core`)."""
    out: list[bytes] = []

    def sink(topic: str, body: bytes) -> None:
        if topic == TOPIC:
            out.append(body)

    replay([RECORDING], sink, clock=lambda: 0)
    _BY_CORE[hot_core] = out
    return [json.loads(body) for body in out]


def test_both_cores_publish_the_same_payloads(payloads: list[dict[str, Any]]) -> None:
    if len(_BY_CORE) < len(core.CORES):
        return  # the first core's run; the second compares
    python, compiled = (_BY_CORE[name] for name in (core.PYTHON, core.COMPILED))
    assert len(python) == len(compiled) > 6000
    assert python == compiled  # byte for byte (ts_publish is the injected clock)


def test_ofi_l1_reproduces_the_book_ticker_fit(payloads: list[dict[str, Any]], capsys: pytest.CaptureFixture) -> None:
    quotes = book_tickers()
    assert len(quotes) > 50_000
    ref_flow = [(quotes[i][0], cks_e(quotes[i - 1][2:], quotes[i][2:])) for i in range(1, len(quotes))]
    ref_mids = [(q[0], (q[2] + q[4]) / 2) for q in quotes]

    book = [p for p in payloads if p["trigger"] == "book" and p["mid"] is not None]
    assert len(book) > 6000
    assert {p["source_granularity"] for p in payloads} == {"best_quote"}
    # Null only until the first quote after the book turned VALID (the snapshot's payload and the diff bridging it).
    nulls = [i for i, p in enumerate(payloads) if p["ofi_l1"] is None]
    assert nulls == list(range(len(nulls))) and len(nulls) <= 3
    mids = [(p["ts_exchange"], p["mid"]) for p in book]
    ofi_l1 = [(p["ts_exchange"], p["ofi_l1"]) for p in payloads if p["ofi_l1"] is not None]
    ofi = [(p["ts_exchange"], p["ofi"]) for p in book if p["ofi"] is not None]

    lines = ["", f"CKS fit of mid change (ticks) on summed OFI, ETHUSDT 2024-08-08, 345 s ({core.active_core()} core):"]
    results = {}
    for seconds in (1, 5, 10):
        ref = least_squares(bars(ref_flow, ref_mids, seconds))
        l1_points = bars(ofi_l1, mids, seconds)
        l1 = least_squares(l1_points)
        diff = least_squares(bars(ofi, mids, seconds))
        results[seconds] = (ref, l1, diff, len(l1_points))
        lines.append(
            f"  {seconds:>2} s bars ({len(l1_points)}): ofi_l1 R2={l1[1]:.3f} slope={l1[0]:.4f} | ofi (depth diffs) "
            f"R2={diff[1]:.3f} slope={diff[0]:.4f} | test-side bookTicker OFI R2={ref[1]:.3f} slope={ref[0]:.4f}"
        )
    with capsys.disabled():
        print("\n".join(lines))

    ref, l1, _, n_bars = results[1]
    assert n_bars == 345
    assert abs(l1[1] - ref[1]) <= 0.05
    assert l1[0] == pytest.approx(ref[0], rel=0.1)  # and the same slope, where the diff stream's is ~2x
