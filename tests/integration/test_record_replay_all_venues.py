"""Record -> replay round trip for all five venues: replay publishes what the live daemon published.

Timeline: the daemon starts first with `flowgauge record DIR` (its venues are not up yet, so it retries
loading markets) -> a bus subscriber subscribes to every topic -> `flowgauge simulate --venue all` starts
serving the packaged samples -> every book has published enough VALID book payloads live -> the simulators
stop (no frame can arrive after that) -> the subscriber has everything the daemon published (its /status
counts) -> SIGTERM flushes the recorder -> `flowgauge replay DIR/*` -> per book, the same book payloads.

Subscribing before any venue is reachable is what makes "everything the daemon published" exact: nothing
is published before the subscription is acknowledged. The recorder rotates files every few seconds, so the
replay also crosses file boundaries. Book payloads are compared (the issue's contract); replay also publishes
payloads the live daemon did not, for instruments outside the config (no `-c`: every derivative in the
recorded metadata, e.g. Binance's all-symbol mark price stream), and no INVALID status at the end (the
recording has no record of the simulators going away).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from tests.integration.test_all_venues import SYMBOLS, VENUES, WS_PATHS, five_free_ports
from tests.procs import flowgauge, free_port, http_get, wait_for

from flowgauge.client import EmbeddedSubscriber
from flowgauge.recording import Header, iter_records

pytestmark = pytest.mark.integration

ROTATE_S = 3.0
BOOK_PAYLOADS_PER_BOOK = 5  # live VALID book payloads each book must reach (Deribit ETH has a few per loop)

# What legitimately differs between a payload the live daemon published and its replay:
# - ts_publish: the publishing clock, by definition different.
# - ts_recv: the recorder stores the receive time the pipeline used (websocket arrival, REST answer read), but
#   as float unix seconds, the format's: about 240 ns resolution at today's epoch, so it comes back within
#   FLOAT_SECONDS_NS of the live value, not to the nanosecond.
# - ts_exchange of payloads stamped with the receive time because the venue sends no time with them
#   (Hyperliquid's asset contexts, Binance's first funding answer): the same float rounding. Book payloads
#   carry the venue's own book time, compared exactly.
#   The decayed sums of such a payload (`ofi_ew_10s`) are evaluated at that time, so they too come back equal
#   only to about the same relative precision (1e-8 of 240 ns over a 6.93 s half-life): compared within
#   DECAYED_REL_TOL. (They used to be identical only because the simulators' clocks ran seconds ahead of the wall
#   clock, which put every receive-stamped payload more than 5 s behind the book and so evaluated it at the
#   book's time.)
# Every other field, `seq` included (it counts the instrument's non-book payloads too), must be identical.
EXCLUDED_FIELDS = ("ts_publish", "ts_recv", "ts_exchange")
FLOAT_SECONDS_NS = 1_000
DECAYED_FIELDS = ("ofi_ew_10s", "ofi_l1_ew_10s")  # the L1 family's decayed sum, likewise
DECAYED_REL_TOL = 1e-6

Key = tuple[str, str]
Messages = list[tuple[str, dict[str, Any]]]  # (topic, payload) in publishing order


def _config(path: Path, base: int, bus_port: int, http_port: int) -> Path:
    venues = {}
    for offset, venue in enumerate(VENUES):
        port = base + offset
        venues[venue] = {
            "symbols": SYMBOLS[venue],
            "ws_url": f"ws://127.0.0.1:{port}{WS_PATHS[venue]}",
            "rest_url": f"http://127.0.0.1:{port}",
            "stale_after_s": 30,
            "backoff_initial_s": 0.1,
            "backoff_max_s": 1.0,
        }
    config = {
        "venues": venues,
        "bus": {"embedded": {"host": "127.0.0.1", "port": bus_port, "client_queue": 1_000_000}},
        "http": {"host": "127.0.0.1", "port": http_port},
        # Every book event published, and no backlog conflation: on a loaded machine the live daemon would
        # shed book payloads (a load-dependent choice replay never makes), and the sequences would differ.
        "publish": {"min_interval_ms": 0, "conflate": "off"},
        # Files rotate every few seconds: the round trip crosses rotations (each new file repeats the open
        # connections' connect lines and the metadata, which replay must not take for reconnects).
        "record": {"rotate_s": ROTATE_S},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _by_book(messages: Messages, trigger: str | None = "book") -> dict[Key, list[dict[str, Any]]]:
    """Payloads per (venue, symbol) in publishing order: book-triggered ones, or every trigger (None)."""
    books: dict[Key, list[dict[str, Any]]] = {}
    for topic, payload in messages:
        if ".status." in topic or ".agg." in topic or ".bars." in topic or (
            trigger is not None and payload.get("trigger") != trigger
        ):
            continue
        books.setdefault((payload["venue"], payload["symbol"]), []).append(payload)
    return books


def _assert_same(live: dict[str, Any], replayed: dict[str, Any], key: Key) -> None:
    context = (key, live["trigger"], live["seq"])
    # Receive-stamped (ts_exchange not the venue's): decayed sums within float rounding, the rest exactly.
    approx = DECAYED_FIELDS if replayed["ts_exchange"] != live["ts_exchange"] else ()
    skip = (*EXCLUDED_FIELDS, *approx)
    assert {k: v for k, v in replayed.items() if k not in skip} == {k: v for k, v in live.items() if k not in skip}, (
        context
    )
    for name in approx:
        ours, theirs = replayed[name], live[name]
        assert (ours is None) == (theirs is None), (context, name)
        if ours is not None:
            assert math.isclose(ours, theirs, rel_tol=DECAYED_REL_TOL), (context, name, ours, theirs)
    assert abs(replayed["ts_recv"] - live["ts_recv"]) < FLOAT_SECONDS_NS, context
    if live["trigger"] == "book":
        assert replayed["ts_exchange"] == live["ts_exchange"], context
    else:
        assert abs(replayed["ts_exchange"] - live["ts_exchange"]) < FLOAT_SECONDS_NS, context


async def test_every_venue_replays_what_it_published_live(tmp_path: Path) -> None:
    base = five_free_ports()
    bus_port, http_port = free_port(), free_port()
    config = _config(tmp_path / "all.yaml", base, bus_port, http_port)
    record_dir = tmp_path / "rec"
    live: Messages = []
    wanted = {(venue, symbol) for venue, symbols in SYMBOLS.items() for symbol in symbols}

    with flowgauge(["record", str(record_dir), "-c", str(config)], tmp_path / "daemon.log") as daemon:
        subscriber = EmbeddedSubscriber(f"ws://127.0.0.1:{bus_port}", ["flowgauge.v1.>"])
        await wait_for(subscriber.__aenter__, "the daemon's embedded bus")

        async def collect() -> None:
            async for topic, payload in subscriber:
                live.append((topic, payload))

        collector = asyncio.create_task(collect())
        try:
            sim_args = ["simulate", "--venue", "all", "--base-port", str(base), "--speed", "4"]
            with flowgauge(sim_args, tmp_path / "sim.log") as simulators:

                def every_book_has_enough() -> bool:
                    books = _by_book(live)
                    return all(
                        sum(p["book_state"] == "VALID" for p in books.get(key, ())) >= BOOK_PAYLOADS_PER_BOOK
                        for key in wanted
                    )

                try:
                    await wait_for(every_book_has_enough, "enough live book payloads for all ten books", 120)
                except AssertionError:
                    counts = {key: len(v) for key, v in _by_book(live).items()}
                    log = (tmp_path / "daemon.log").read_text()[-3000:]
                    raise AssertionError(f"live book payloads: {counts}\n{log}") from None
                # Stopped, not asserted: the simulators' own exit code is not what this test is about.
                simulators.send_signal(signal.SIGTERM)
                await asyncio.to_thread(simulators.wait, 10)

            async def subscriber_has_everything() -> bool:
                code, body = await http_get(http_port, "/status")
                if code != 200:
                    return False
                published = {
                    (venue, symbol): book["published"]
                    for venue, books in orjson.loads(body)["venues"].items()
                    for symbol, book in books.items()
                }
                received: dict[Key, int] = {}
                for topic, payload in live:
                    if ".status." not in topic and ".agg." not in topic and ".bars." not in topic:
                        key = (payload["venue"], payload["symbol"])
                        received[key] = received.get(key, 0) + 1
                return set(published) == wanted and published == received

            await wait_for(subscriber_has_everything, "every payload the daemon published")
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await subscriber.__aexit__(None, None, None)
        daemon.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(daemon.wait, 10) == 0

    # Kept beside the replay output for whoever has to read a failure.
    (tmp_path / "live.jsonl").write_bytes(b"".join(orjson.dumps({"topic": t, "payload": p}) + b"\n" for t, p in live))
    files = sorted(record_dir.glob("*.jsonl.zst"))
    headers = [next(iter(iter_records(f))) for f in files]
    assert all(isinstance(header, Header) for header in headers)
    # The daemon's own names, BINANCEUSDM included (what replay refused before).
    assert {header.exchange for header in headers if isinstance(header, Header)} == {v.upper() for v in VENUES}

    out = tmp_path / "replay.jsonl"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flowgauge", "replay", *map(str, files), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    replayed = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    messages = [(m["topic"], m["payload"]) for m in replayed]
    replay_books, live_books = _by_book(messages), _by_book(live)
    assert set(live_books) == wanted
    for key in sorted(wanted):
        live_payloads, replay_payloads = live_books[key], replay_books.get(key, [])
        assert [p["book_seq"] for p in replay_payloads] == [p["book_seq"] for p in live_payloads], key
        for live_payload, replay_payload in zip(live_payloads, replay_payloads, strict=True):
            _assert_same(live_payload, replay_payload, key)
    # Beyond the contract: the open interest, funding, long/short and liquidation payloads of the configured
    # books are the same too, in the same order.
    every_live, every_replayed = _by_book(live, trigger=None), _by_book(messages, trigger=None)
    for key in sorted(wanted):
        assert [p["trigger"] for p in every_replayed[key]] == [p["trigger"] for p in every_live[key]], key
        for live_payload, replay_payload in zip(every_live[key], every_replayed[key], strict=True):
            _assert_same(live_payload, replay_payload, key)
    # Interleaved by receive time (replay --interleave), the five venues' files publish the same payloads per book,
    # and cross-venue aggregates that count several venues at once, as the live daemon's did.
    interleaved_out = tmp_path / "replay-interleaved.jsonl"
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flowgauge", "replay", *map(str, files), "--interleave", "--out", str(interleaved_out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    interleaved = [(m["topic"], m["payload"]) for m in map(orjson.loads, interleaved_out.read_bytes().splitlines())]

    def without_publish_time(books: dict[Key, list[dict[str, Any]]]) -> dict[Key, list[dict[str, Any]]]:
        return {key: [{k: v for k, v in p.items() if k != "ts_publish"} for p in ps] for key, ps in books.items()}

    assert without_publish_time(_by_book(interleaved, trigger=None)) == without_publish_time(every_replayed)
    btc = [p for t, p in interleaved if t == "flowgauge.v1.agg.BTC"]
    assert max(len(p["venues"]) for p in btc) >= 3, [p["venues"] for p in btc]
    live_btc = [p for t, p in live if t == "flowgauge.v1.agg.BTC"]
    assert max(len(p["venues"]) for p in live_btc) >= 3
