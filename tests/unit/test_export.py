"""`flowgauge export`: a recording replayed to Parquet, read back with pandas; deterministic; bars; clear errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import FIXTURES

from flowgauge import SCHEMA_DIR, cli
from flowgauge.engine import payload_template
from flowgauge.metrics.bar_feed import BarSpec
from flowgauge.metrics.families import ALL, resolve
from flowgauge.publish import topics
from flowgauge.replay.export import BarRows, bar_duration, export, payload_columns
from flowgauge.replay.replay import replay

OKX_RECORDING = FIXTURES / "okx" / "okx-v5-2022-05.jsonl.zst"  # 299 frames, one instrument: quick
S = 1_000_000_000
PAYLOAD_SCHEMA = orjson.loads((SCHEMA_DIR / "payload.v1.json").read_bytes())


def replayed_payloads(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def sink(topic: str, body: bytes) -> None:
        tokens = topic.split(".")
        if len(tokens) == 4 and tokens[2] not in topics.RESERVED_VENUES:
            out.append(orjson.loads(body))

    replay([path], sink)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "okx.parquet"
    export([str(OKX_RECORDING)], str(out))
    return out


def test_one_row_per_replayed_payload_typed_from_the_schema(exported: Path) -> None:
    payloads = replayed_payloads(OKX_RECORDING)
    frame = pd.read_parquet(exported)
    assert len(frame) == len(payloads) > 50
    # Columns: the payload's keys in publication order, ts_publish (the replaying machine's clock) left out.
    assert list(frame.columns) == [name for name in payloads[0] if name != "ts_publish"]
    for name in ("mid", "spread_bps", "ofi", "depth_bid_10bps", "oi_notional"):
        assert frame[name].dtype == "float64", name
    for name in ("seq", "ts_exchange", "ts_recv"):
        assert frame[name].dtype == "int64", name
    assert pd.api.types.is_string_dtype(frame["venue"]) and pd.api.types.is_string_dtype(frame["trigger"])
    arrow = pq.read_schema(exported)
    assert arrow.field("quality").type == pa.list_(pa.string())
    assert arrow.field("book_seq").type == pa.int64()
    # Rows in publication order, values as published.
    assert frame["seq"].tolist() == [p["seq"] for p in payloads]
    assert frame["mid"].tolist() == pytest.approx([p["mid"] for p in payloads], nan_ok=True)
    assert [list(q) for q in frame["quality"]] == [p["quality"] for p in payloads]
    assert frame["coverage"][0] == orjson.dumps(payloads[0]["coverage"], option=orjson.OPT_SORT_KEYS).decode()


def test_the_same_recording_gives_a_byte_identical_file(exported: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.parquet"
    export([str(OKX_RECORDING)], str(again))
    assert again.read_bytes() == exported.read_bytes()
    metadata = pq.read_metadata(again).metadata
    assert metadata[b"flowgauge.recordings"] == b'["okx-v5-2022-05.jsonl.zst"]'


def test_engine_bars_one_row_per_published_bar_typed_from_their_schema(tmp_path: Path) -> None:
    out = tmp_path / "bars.parquet"
    export([str(OKX_RECORDING)], str(out), bars_ns=1 * S)
    published: list[dict[str, Any]] = []
    replay([OKX_RECORDING], lambda t, b: published.append(orjson.loads(b)) if ".bars." in t else None,
           bars=BarSpec(interval_s=1.0))  # fmt: skip
    bars = pd.read_parquet(out)
    bar_schema = orjson.loads((SCHEMA_DIR / "bars.v1.json").read_bytes())
    assert list(bars.columns) == [name for name in bar_schema["properties"] if name != "ts_publish"]
    assert len(bars) == len(published) > 5
    assert bars["t_end"].tolist() == [bar["t_end"] for bar in published]
    assert bars["ofi"].tolist() == pytest.approx([bar["ofi"] for bar in published])
    assert bars["t_end"].dtype == "int64" and bars["mid_close"].dtype == "float64"
    assert pq.read_schema(out).field("quality").type == pa.list_(pa.string())


def test_payload_bars_hold_each_fields_last_value_and_every_payload_once(tmp_path: Path) -> None:
    out = tmp_path / "bars.parquet"
    export([str(OKX_RECORDING)], str(out), bars_ns=1 * S, bar_source="payloads")
    bars = pd.read_parquet(out)
    payloads = replayed_payloads(OKX_RECORDING)
    assert list(bars.columns[:2]) == ["bar_end", "n_payloads"]
    assert bars["n_payloads"].sum() == len(payloads)
    assert (bars["bar_end"] % S == 0).all() and bars["bar_end"].is_monotonic_increasing  # one instrument
    # Each bar's row is its last payload: stamped within (bar_end - 1 s, bar_end].
    assert ((bars["ts_exchange"] <= bars["bar_end"]) & (bars["ts_exchange"] > bars["bar_end"] - S)).all()
    last_of_first_bar = [p for p in payloads if p["ts_exchange"] <= bars["bar_end"][0]][-1]
    assert bars["seq"][0] == last_of_first_bar["seq"]


def test_bar_rows_close_as_time_passes_and_carry_empty_bars_forward() -> None:
    bars = BarRows(1 * S)
    closed = []
    for venue, ts, mid in (("okx", 100, 1.0), ("bybit", 200, 2.0), ("okx", S, 1.5), ("okx", 3 * S + 1, 3.0)):
        for end, last, n in bars.add({"venue": venue, "symbol": "BTC/USDT:USDT", "ts_exchange": ts, "mid": mid}):
            closed.append((end // S, last["venue"], last["mid"], n))
    # A payload exactly at 1 s belongs to the (0, 1 s] bar; 3 s + 1 ns closes it, and 2 s and 3 s had none (carried
    # forward); the open bars (Bybit's 1 s, OKX's 4 s) close at the end, by instrument.
    assert closed == [(1, "okx", 1.5, 2), (2, "okx", 1.5, 0), (3, "okx", 1.5, 0)]
    assert [(end // S, last["venue"], last["mid"], n) for end, last, n in bars.finish()] == [
        (1, "bybit", 2.0, 1), (4, "okx", 3.0, 1)
    ]


def test_columns_follow_the_schema_types() -> None:
    kinds = dict(payload_columns(PAYLOAD_SCHEMA, payload_template(resolve([ALL]))))
    assert kinds["mid"] == "float64" and kinds["seq"] == "int64" and kinds["book_seq"] == "int64"
    assert kinds["venue"] == "string" and kinds["book_state"] == "string" and kinds["liq_side"] == "string"
    assert kinds["quality"] == "list<string>" and kinds["coverage"] == "json" and "ts_publish" not in kinds


@pytest.mark.parametrize(("text", "ns"), [("100ms", 100_000_000), ("1s", S), ("10s", 10 * S), ("1m", 60 * S)])
def test_bar_durations(text: str, ns: int) -> None:
    assert bar_duration(text) == ns


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", *args])
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("flowgauge: warning:")]
    return int(exit_info.value.code or 0), lines


def test_cli_writes_and_reports_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.parquet"
    code, lines = _cli([str(OKX_RECORDING), "--out", str(out)], capsys)
    assert code == 0 and lines == [f"export: {len(pd.read_parquet(out))} rows to {out}"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.parquet"]  # no temporary file left beside it


def test_cli_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nope.jsonl.zst"
    assert _cli([str(missing), "--out", str(tmp_path / "x.parquet")], capsys) == (
        2, [f"export: no such recording: {missing}"]
    )
    unwritable = tmp_path / "no-dir" / "x.parquet"
    assert _cli([str(OKX_RECORDING), "--out", str(unwritable)], capsys) == (
        2, [f"export: cannot write --out {unwritable}: no such directory: {unwritable.parent}"]
    )
    not_a_recording = tmp_path / "bad.jsonl"
    not_a_recording.write_text("not json\n")
    code, lines = _cli([str(not_a_recording), "--out", str(tmp_path / "y.parquet")], capsys)
    assert code == 1 and lines[-1] == "export: 1 of 1 recordings failed: nothing written"
    assert not (tmp_path / "y.parquet").exists()
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as on an install without the research extra
    assert _cli([str(OKX_RECORDING), "--out", str(tmp_path / "z.parquet")], capsys) == (
        1, ["export: pyarrow is not installed; it comes with the 'research' extra: pip install 'flowgauge[research]'"]
    )


def test_families_pick_the_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "all.parquet"
    export([str(OKX_RECORDING)], str(out), families=[ALL])
    every = [name for name in payload_template(resolve([ALL])) if name != "ts_publish"]
    assert pq.read_schema(out).names == every
    assert pq.read_metadata(out).metadata[b"flowgauge.families"] == ",".join(resolve([ALL])).encode()
    code, lines = _cli([str(OKX_RECORDING), "--out", str(tmp_path / "x.parquet"), "--families", "core,nope"], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("export: --families: unknown metric family ")
    assert "nope" in lines[0]
