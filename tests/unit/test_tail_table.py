"""The live table's model: one row per instrument, metrics from book topics, state from status topics."""

from __future__ import annotations

from flowgauge.sdk.message import Message
from flowgauge.tail import COLUMNS, InstrumentTable

NOW_NS = 1_800_000_000 * 10**9


def _metrics(symbol: str, slug: str, **values: object) -> Message:
    payload = {"venue": "bybit", "symbol": symbol, "book_state": "VALID", "ts_publish": NOW_NS - 2 * 10**9,
               "mid": 65000.5, "spread_bps": 0.15, "depth_imb_5": 0.25, "ofi_raw_10s": -1.5, "tfi_10s": None,
               "oi_chg_pct_5m": 0.0123, **values}
    return Message(f"flowgauge.v1.bybit.{slug}", payload=payload)


def test_rows_per_instrument_sorted_with_formatted_cells() -> None:
    table = InstrumentTable()
    table.update(_metrics("ETH/USDT:USDT", "ETH-USDT-USDT", mid=3000.25))
    table.update(_metrics("BTC/USDT:USDT", "BTC-USDT-USDT"))
    table.update(_metrics("BTC/USDT:USDT", "BTC-USDT-USDT", mid=65001.0))  # refreshed in place
    rows = table.rows(NOW_NS / 1e9)
    assert [r[1] for r in rows] == ["BTC/USDT:USDT", "ETH/USDT:USDT"]
    btc = dict(zip([c[0] for c in COLUMNS], rows[0], strict=True))
    assert btc["mid"] == "65,001.00" and btc["book"] == "VALID" and btc["depth_imb_5"] == "+0.250"
    assert btc["tfi_10s"] == "-" and btc["oi_chg_pct_5m"] == "+1.230%" and btc["age"] == "2.0s"


def test_status_sets_the_book_state_and_trades_are_ignored() -> None:
    table = InstrumentTable()
    table.update(_metrics("BTC/USDT:USDT", "BTC-USDT-USDT"))
    table.update(Message("flowgauge.v1.status.bybit.BTC-USDT-USDT", payload={"state": "INVALID"}))
    table.update(Message("flowgauge.v1.trades.bybit.SOL-USDT-USDT", payload={"price": 1.0}))
    rows = table.rows(NOW_NS / 1e9, is_stale=lambda topic: topic.endswith("BTC-USDT-USDT"))
    assert len(rows) == 1 and rows[0][2] == "INVALID" and rows[0][-1].endswith("stale")


def test_data_that_is_not_a_json_object_adds_no_row() -> None:
    table = InstrumentTable()
    table.update(Message("flowgauge.v1.bybit.BTC-USDT-USDT", data=b"not json"))
    table.update(Message("flowgauge.v1.bybit.ETH-USDT-USDT", data=b"[1, 2]"))
    table.update(Message("flowgauge.v1.status.bybit.ETH-USDT-USDT", data=b"7"))
    assert table.rows(NOW_NS / 1e9) == []
