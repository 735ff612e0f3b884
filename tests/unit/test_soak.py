"""`flowgauge soak`'s parts that run without the soak: replicated recordings, the lag histogram, the checker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from flowgauge.recording import Http, Recv, iter_records
from flowgauge.simulate import DATA_DIR, SIMULATORS
from flowgauge.simulate.truth import TruthStore, depth_imbalance, ofi_contribution, top_of
from flowgauge.soak.check import PayloadChecker
from flowgauge.soak.child import LagHistogram
from flowgauge.soak.tapes import replicate_recording


def test_replicated_recording_serves_new_instruments_with_the_recorded_streams(tmp_path: Path) -> None:
    source = DATA_DIR / SIMULATORS["bybit"].recording
    target = tmp_path / "x3.jsonl.zst"
    replicate_recording(source, target, 3)
    frames = [r for r in iter_records(source) if isinstance(r, Recv) and "orderbook" in r.data]
    copied = [r for r in iter_records(target) if isinstance(r, Recv) and "orderbook" in r.data]
    assert len(copied) == 3 * len(frames)
    assert sum('"orderbook.50.R01BTCUSDT"' in r.data for r in copied) == sum(
        '"orderbook.50.BTCUSDT"' in r.data for r in frames
    )
    assert not any('"BTCUSDT"' in r.data or ".BTCUSDT" in r.data for r in copied)  # every copy renamed
    linear = [
        orjson.loads(r.data)["result"]["list"]
        for r in iter_records(target)
        if isinstance(r, Http) and "category=linear" in r.url
    ]
    listed = {(item["symbol"], item["baseCoin"]) for page in linear for item in page}
    assert {("R00BTCUSDT", "R00BTC"), ("R02ETHUSDT", "R02ETH")} <= listed


def test_lag_histogram_percentiles_are_bucket_upper_edges() -> None:
    hist = LagHistogram()
    assert hist.percentile_ms(0.99) is None
    for _ in range(98):
        hist.add(0.0004)  # 0.4 ms: bucket [0, 1)
    hist.add(0.0123)
    hist.add(12.5)  # beyond the buckets: the maximum is reported
    assert hist.percentile_ms(0.5) == 1.0
    assert hist.percentile_ms(0.99) == 13.0
    assert hist.percentile_ms(1.0) == 12500.0
    assert hist.summary()["max_ms"] == 12500.0


BOOKS = [  # (key, bids, asks) of the simulator's book after each message
    (10, [(100.0, 5.0), (99.0, 1.0)], [(101.0, 3.0)]),
    (11, [(100.0, 7.0), (99.0, 1.0)], [(101.0, 3.0)]),
    (12, [(100.5, 1.0), (100.0, 7.0)], [(101.0, 2.0)]),
    (13, [(100.5, 2.0), (100.0, 7.0)], [(101.0, 2.0)]),
    (14, [(100.5, 2.0), (100.0, 7.0)], [(100.9, 4.0)]),
    (15, [(100.5, 3.0), (100.0, 7.0)], [(100.9, 4.0)]),
    (16, [(100.5, 3.0), (100.0, 7.0)], [(100.9, 1.0)]),
]


def _payload(seq: int, key: int, prev_key: int | None, **wrong: Any) -> dict[str, Any]:
    store = TruthStore()
    for k, bids, asks in BOOKS:
        store.record("BTCUSDT", k, None, bids, asks)
    record = store.get("BTCUSDT", key)
    assert record is not None
    bid_px, bid_sz, ask_px, ask_sz = top_of(record)
    prev = store.get("BTCUSDT", prev_key) if prev_key is not None else None
    payload = {
        "venue": "bybit", "symbol": "BTC/USDT:USDT", "instrument": "BTCUSDT", "trigger": "book", "seq": seq,
        "book_seq": key, "book_state": "VALID", "bid_px": bid_px, "bid_sz": bid_sz, "ask_px": ask_px,
        "ask_sz": ask_sz, "depth_imb_5": depth_imbalance(record.bids, record.asks, 5),
        "depth_imb_10": depth_imbalance(record.bids, record.asks, 10),
        "ofi": ofi_contribution(top_of(prev), top_of(record)) if prev is not None else None,
    }  # fmt: skip
    payload.update(wrong)
    return payload


async def test_checker_counts_wrong_payloads_and_tells_missed_ones_apart() -> None:
    """A real truth endpoint on loopback; payloads in publish order: right, right, wrong size, then one after a
    payload the subscriber missed (its ofi cannot be verified: not wrong), then right again, then the same state
    restated by a snapshot (ofi null: allowed on a state sent whole)."""
    store = TruthStore()
    for key, bids, asks in BOOKS:
        store.record("BTCUSDT", key, None, bids, asks)

    async def truth(request: web.Request) -> web.Response:
        status, body = store.answer(request.query)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/_flowgauge/truth", truth)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        checker = PayloadChecker({"bybit": f"http://127.0.0.1:{port}"})
        topic = "flowgauge.v1.bybit.BTC-USDT-USDT"
        checker.on_message(topic, _payload(1, 10, None), False)
        checker.on_message(topic, _payload(2, 11, 10), False)
        # The instrument's bars topic counts its own seq: neither a gap nor a break in the book topic's ofi chain.
        bars_topic = "flowgauge.v1.bars.bybit.BTC-USDT-USDT"
        bar = {"venue": "bybit", "symbol": "BTC/USDT:USDT", "instrument": "BTCUSDT", "interval_s": 1.0}
        checker.on_message(bars_topic, {**bar, "seq": 1}, False)
        checker.on_message(topic, _payload(3, 12, 11, bid_sz=9.0), False)  # wrong
        checker.on_message(topic, _payload(5, 14, 12, ofi=123.0), False)  # seq 4 missed: ofi unverifiable
        async with aiohttp.ClientSession() as session:
            await checker.round(session)
            checker.on_message(bars_topic, {**bar, "seq": 2}, False)
            checker.on_message(topic, _payload(6, 14, 14), False)  # a later round, same chain
            checker.on_message(topic, _payload(7, 14, None), False)  # the same state re-sent whole: flow reset
            # A snapshot reaching the VALID book mid-stream at a new id (a second resubscribe's answer): the
            # daemon resets the flow and flags RESET. Allowed, counted; a null ofi without the flag is wrong.
            checker.on_message(topic, _payload(8, 15, None, quality=["RESET"]), False)
            checker.on_message(topic, _payload(9, 16, None, quality=[]), False)  # wrong
            await checker.round(session)
    finally:
        await runner.cleanup()
    counts = checker.counts
    assert counts.wrong == 2 and counts.wrong_by_venue == {"bybit": 2}
    assert "bid_sz 9.0 != 1.0" in counts.wrong_examples[0]
    assert "ofi None != " in counts.wrong_examples[1]
    assert counts.checked == 8 and counts.restated == 2
    assert counts.missed == 1 and counts.unverified == 1
    assert counts.truth_records == len(BOOKS) and counts.truth_gaps == 0
    assert checker.buffered() <= 1  # checked truth is forgotten every round
    (instrument,) = checker._instruments.values()
    (track,) = instrument.comparator._tracks.values()
    assert set(track.keys) == {record.key for record in track.records}  # and so are their keys


def test_rss_growth_is_judged_on_medians_not_on_two_single_samples() -> None:
    from flowgauge.soak.run import MAX_GROWTH, median_growth

    # A sawtooth of +-3% around a flat 160 MiB: the single samples at its trough and its crest differ by 6%, the
    # medians of the two minutes not at all; a real 3% step shows in the medians.
    flat = [160_000, 165_000, 155_000] * 4
    assert (max(flat) - min(flat)) / min(flat) > MAX_GROWTH
    growth = median_growth(flat, list(reversed(flat)))
    assert growth is not None and growth < MAX_GROWTH
    stepped = median_growth(flat, [x + 4_800 for x in flat])
    assert stepped is not None and stepped >= MAX_GROWTH
    assert median_growth([], flat) is None and median_growth(flat, []) is None


def test_rss_growth_is_judged_on_the_trend_of_every_sample() -> None:
    from flowgauge.soak.run import MAX_GROWTH, median_growth, trend_growth

    # 11 minutes of reports every 5 s around a flat 160 MiB, swinging 4% every 4 minutes (a connection-wide fault
    # empties 50 books' windows for a minute), the first minute after the warm-up in such a dip: its median and
    # the last minute's differ by 4%, the trend is flat. A real leak of 3% over the run shows in the trend.
    times = [300.0 + 5 * i for i in range(133)]
    flat = [160_000 - (6_400 if int(t - 300) % 240 < 60 else 0) + (i % 3 - 1) * 800 for i, t in enumerate(times)]
    medians = median_growth(flat[:12], flat[-12:])
    assert medians is not None and medians >= MAX_GROWTH
    growth = trend_growth(list(zip(times, flat, strict=True)))
    assert growth is not None and abs(growth) < MAX_GROWTH / 2
    leaking = [rss + round(4_800 * (t - 300) / 660) for t, rss in zip(times, flat, strict=True)]
    growth = trend_growth(list(zip(times, leaking, strict=True)))
    assert growth is not None and growth >= MAX_GROWTH
    assert trend_growth([(300.0, 160_000), (330.0, 170_000)]) is None  # no two samples a minute apart


def test_trend_samples_stay_evenly_spread_over_a_day() -> None:
    """A day of 5-second reports: the samples kept for the trend are evenly spaced from the first report to the
    last (thinning only the newest half again and again left 377 of 384 from the last 2 hours), so a leak over
    the whole day is measured as one."""
    import itertools

    from flowgauge.soak.run import TREND_SAMPLES, TrendSamples, trend_growth

    samples = TrendSamples()
    reports = 24 * 720
    for i in range(reports):
        samples.add(300.0 + 5 * i, 160_000 + i * 4_800 // reports)  # +3% over the day, steadily
    kept = samples.kept
    assert TREND_SAMPLES // 2 <= len(kept) < TREND_SAMPLES
    gaps = {b[0] - a[0] for a, b in itertools.pairwise(kept)}
    assert len(gaps) == 1 and kept[0][0] == 300.0
    assert kept[-1][0] > 300.0 + 5 * reports - 2 * gaps.pop()
    growth = trend_growth(kept)
    assert growth is not None and abs(growth - 0.03) < 0.002
