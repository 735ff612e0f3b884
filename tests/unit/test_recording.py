"""Recording I/O: the reader on the shipped Bybit fixture, and writer -> reader round trips with rotation."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import zstandard

from flowgauge.recording import (
    FORMAT_VERSION,
    Connect,
    Header,
    Http,
    ReadStats,
    RecordingError,
    RecordingWriter,
    Recv,
    Send,
    iter_records,
)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "bybit" / "bybit-linear-2026-08.jsonl.zst"


def _zstd_text(path: Path) -> str:
    """Decompress independently of iter_records: the zstd CLI when present, else frame by frame."""
    if shutil.which("zstd"):
        return subprocess.run(["zstd", "-dc", str(path)], check=True, capture_output=True).stdout.decode()
    data, out = path.read_bytes(), []
    while data:
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out.append(dobj.decompress(data))
        data = dobj.unused_data
    return b"".join(out).decode()


def _sample_records() -> list[Connect | Http | Send | Recv]:
    return [
        Http(
            "BYBIT.http.1",
            1786310817.601629,
            "https://api.bybit.com/v5/market/instruments-info?category=linear",
            '{"retCode":0,"result":{"category":"linear","list":[]}}',
        ),
        Connect("BYBIT.ws.2", 1786310818.2235148, "wss://stream.bybit.com/v5/public/linear"),
        Send(
            "BYBIT.ws.2",
            1786310819.228447,
            "wss://stream.bybit.com/v5/public/linear",
            '{"op":"subscribe","args":["orderbook.200.BTCUSDT"]}',
        ),
        Recv("BYBIT.ws.2", 1786310819.7200031, '{"topic":"orderbook.200.BTCUSDT","type":"snapshot","ts":1}'),
        Recv("BYBIT.ws.2", 1786310819.721646, '{"note":"non-ASCII kept: \u00e9\u2192"}'),
    ]


def _write(writer: RecordingWriter, rec: Connect | Http | Send | Recv) -> None:
    if isinstance(rec, Http):
        writer.http(rec.conn, rec.url, rec.data, ts=rec.ts)
    elif isinstance(rec, Connect):
        writer.connect(rec.conn, rec.addr, ts=rec.ts)
    elif isinstance(rec, Send):
        writer.send(rec.conn, rec.addr, rec.data, ts=rec.ts)
    else:
        writer.recv(rec.conn, rec.data, ts=rec.ts)


# -- reader on the real fixture ---------------------------------------------------------------------


def test_reader_counts_frame_kinds_of_the_bybit_fixture() -> None:
    stats = ReadStats()
    records = list(iter_records(FIXTURE, stats))
    kinds = collections.Counter(type(r).__name__ for r in records)
    assert kinds == {"Header": 1, "Http": 2, "Connect": 2, "Send": 24, "Recv": 1996}
    assert isinstance(records[0], Header) and records[0].exchange == "BYBIT" and records[0].format == 2
    assert stats.records == 2025 and not stats.skipped

    addr = {r.conn: r.addr for r in records if isinstance(r, Connect)}
    frames: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for r in records:
        if isinstance(r, Recv):
            msg = json.loads(r.data)
            if "topic" in msg:
                path = addr[r.conn].rsplit("/", 1)[1]
                frames[(path, msg["topic"].split(".")[0], msg.get("type", ""))] += 1
    assert frames[("linear", "orderbook", "snapshot")] == 2
    assert frames[("linear", "orderbook", "delta")] == 833
    assert frames[("spot", "orderbook", "snapshot")] == 2
    assert frames[("spot", "orderbook", "delta")] == 548
    assert frames[("linear", "publicTrade", "snapshot")] == 28
    assert frames[("linear", "tickers", "delta")] == 399


def test_fixture_instruments_bodies_are_trimmed_to_the_session_symbols() -> None:
    bodies = [json.loads(r.data) for r in iter_records(FIXTURE) if isinstance(r, Http)]
    symbols = {b["result"]["category"]: sorted(i["symbol"] for i in b["result"]["list"]) for b in bodies}
    assert symbols == {
        "linear": ["BTCUSDT", "DOGEUSDT", "ETHUSDT", "SOLUSDT"],
        "spot": ["BTCUSDT", "ETHUSDT"],
    }
    linear = next(b for b in bodies if b["result"]["category"] == "linear")
    assert list(linear) == ["retCode", "retMsg", "result", "retExtInfo", "time"]
    assert list(linear["result"]) == ["category", "list", "nextPageCursor"]
    btc = next(i for i in linear["result"]["list"] if i["symbol"] == "BTCUSDT")
    assert btc["priceFilter"]["tickSize"] == "0.10" and btc["lotSizeFilter"]["qtyStep"] == "0.001"


# -- reader edge cases ------------------------------------------------------------------------------


def test_plain_jsonl_with_unknown_kind_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"t":"header","format":2,"exchange":"X","config":{},"recorded":1.5,"extra":"ignored"}\n'
        '{"t":"future-kind","whatever":1}\n'
        "\n"
        '{"t":"recv","conn":"c","ts":2,"data":"hello"}'  # no trailing newline
    )
    stats = ReadStats()
    records = list(iter_records(path, stats))
    assert records == [Header(2, "X", {}, 1.5), Recv("c", 2.0, "hello")]
    assert stats.skipped == {"future-kind": 1}


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"conn":"c"}', "missing string field 't'"),
        ('{"t":"recv","conn":"c","ts":"yesterday","data":"x"}', "bad 'recv' record"),
    ],
)
def test_malformed_line_raises_with_path_and_line_number(tmp_path: Path, line: str, why: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"t":"recv","conn":"c","ts":1.0,"data":"ok"}\n' + line + "\n")
    with pytest.raises(RecordingError) as info:
        list(iter_records(path))
    assert info.value.line_no == 2 and info.value.path == path
    assert why in str(info.value) and str(path) in str(info.value)


def test_corrupt_zstd_raises_recording_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.zst"
    good = zstandard.ZstdCompressor().compress(b'{"t":"recv","conn":"c","ts":1.0,"data":"ok"}\n' * 100)
    path.write_bytes(good[: len(good) // 2] + b"\x00" * 64 + good[len(good) // 2 :])
    with pytest.raises(RecordingError, match="zstd"):
        list(iter_records(path))


# -- writer ----------------------------------------------------------------------------------------


def test_round_trip_writer_to_reader(tmp_path: Path) -> None:
    written = _sample_records()
    with RecordingWriter(tmp_path, "BYBIT", config={"l2_book": ["BTC-USDT-PERP"]}) as writer:
        for rec in written:
            _write(writer, rec)
        assert writer.pending == len(written)
    assert writer.pending == 0 and writer.written == len(written) and writer.dropped == 0
    [path] = writer.files
    assert path.name.startswith("BYBIT-") and path.name.endswith("Z.jsonl.zst")
    header, *rest = list(iter_records(path))
    assert isinstance(header, Header)
    assert (header.format, header.exchange, header.config) == (
        FORMAT_VERSION,
        "BYBIT",
        {"l2_book": ["BTC-USDT-PERP"]},
    )
    assert rest == written
    # Readable by an independent decoder too, one JSON object per line, header first.
    lines = _zstd_text(path).splitlines()
    assert json.loads(lines[0])["t"] == "header" and len(lines) == 1 + len(written)


def test_ts_defaults_to_call_time_and_bytes_are_decoded(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path, "BYBIT") as writer:
        writer.recv("c", b'{"a":1}')
    _, rec = list(iter_records(writer.files[0]))
    assert isinstance(rec, Recv) and rec.data == '{"a":1}' and rec.ts > 1.7e9


def test_size_rotation_makes_several_files_each_readable_and_self_contained(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path, "BYBIT", rotate_bytes=300)
    writer.http("h", "https://api.bybit.com/v5/market/instruments-info?category=linear", '{"list":[]}', ts=1.0)
    writer.http("h", "https://api.bybit.com/v5/market/orderbook?symbol=BTCUSDT", '{"b":[]}', ts=1.5)
    writer.connect("ws.2", "wss://stream.bybit.com/v5/public/linear", ts=2.0)
    writer.flush()
    sent = []
    for i in range(40):
        data = json.dumps({"topic": "orderbook.200.BTCUSDT", "i": i, "pad": f"{i:x}" * (i % 7 + 30)})
        writer.recv("ws.2", data, ts=3.0 + i)
        sent.append(data)
        if i % 4 == 3:
            writer.flush()
    writer.close()
    assert len(writer.files) >= 3 and writer.files == sorted(writer.files)

    received = []
    for n, path in enumerate(writer.files):
        records = list(iter_records(path))
        assert isinstance(records[0], Header)
        assert len(_zstd_text(path).splitlines()) == len(records)
        if n > 0:
            # Every later file repeats the connect line and the metadata (not the order-book) response.
            carried = [r for r in records[1:] if not isinstance(r, Recv)]
            assert [type(r).__name__ for r in carried] == ["Http", "Connect"]
            assert "instruments-info" in carried[0].url
        received += [r.data for r in records if isinstance(r, Recv)]
    assert received == sent


def test_age_rotation_starts_a_new_file_per_flush_when_due(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path, "BYBIT", rotate_seconds=0.0)
    for i in range(3):
        writer.recv("c", f"frame {i}", ts=float(i))
        writer.flush()
    assert writer.flush() == 0  # nothing pending: no empty file
    writer.close()
    assert len(writer.files) == 3 and len(set(writer.files)) == 3
    assert [[r.data for r in iter_records(p) if isinstance(r, Recv)] for p in writer.files] == [
        ["frame 0"],
        ["frame 1"],
        ["frame 2"],
    ]


def test_flushed_but_unclosed_file_is_already_readable(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path, "BYBIT")
    writer.recv("c", "first", ts=1.0)
    writer.flush()
    writer.recv("c", "second", ts=2.0)
    writer.flush()
    # No close(): a crash here must not lose flushed data.
    assert [r.data for r in iter_records(writer.files[0]) if isinstance(r, Recv)] == ["first", "second"]
    assert "second" in _zstd_text(writer.files[0])
    writer.close()


def test_pending_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path, "BYBIT", max_pending=5)
    for i in range(8):
        writer.recv("c", str(i), ts=float(i))
    assert writer.pending == 5 and writer.dropped == 3
    writer.close()
    writer.recv("c", "after close")
    assert writer.dropped == 4
    assert [r.data for r in iter_records(writer.files[0]) if isinstance(r, Recv)] == ["0", "1", "2", "3", "4"]


def test_flush_from_a_thread_loses_nothing(tmp_path: Path) -> None:
    writer = RecordingWriter(tmp_path, "BYBIT", rotate_bytes=4096)
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            writer.flush()

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(3000):
            writer.recv("c", str(i), ts=float(i))
    finally:
        stop.set()
        thread.join()
    writer.close()
    got = [r.data for p in writer.files for r in iter_records(p) if isinstance(r, Recv)]
    assert got == [str(i) for i in range(3000)] and writer.dropped == 0


def test_every_venue_is_known_by_its_upper_case_name_in_headers() -> None:
    # flowgauge's recorder writes the venue id upper-cased: every venue it records must replay and simulate.
    from flowgauge.connectors import registry
    from flowgauge.recording import EXCHANGE_VENUES

    assert {venue: EXCHANGE_VENUES.get(venue.upper()) for venue in registry.venues()} == {
        venue: venue for venue in registry.venues()
    }
    assert EXCHANGE_VENUES["BINANCE_FUTURES"] == "binanceusdm"  # cryptofeed's name
