"""flowgauge.signals: the reservation price, and that it imports from the client-only install."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

import flowgauge
from flowgauge.sdk.payloads import MetricsPayload
from flowgauge.signals import reservation_price

SERVICE = Path(flowgauge.__file__).resolve().parent.parent


def test_reservation_price_vector() -> None:
    payload = {"mid": 100.0, "micro_price": 100.02, "vol_1m": 2.0}
    # sigma = 2e-4 * 100.02 per sqrt s; r = s - q * gamma * sigma^2 * T
    sigma = 2.0e-4 * 100.02
    assert reservation_price(payload, 3.0, 0.5, 10.0) == pytest.approx(100.02 - 3.0 * 0.5 * sigma**2 * 10.0)
    assert reservation_price(payload, 0.0, 0.5, 10.0) == 100.02
    long = reservation_price(payload, 1.0, 0.5, 10.0)
    short = reservation_price(payload, -1.0, 0.5, 10.0)
    assert long is not None and short is not None and long < 100.02 < short  # a long leans to selling


def test_reservation_price_falls_back_to_the_mid_and_needs_a_volatility() -> None:
    assert reservation_price({"mid": 100.0, "micro_price": None, "vol_1m": 0.0}, 5.0, 1.0, 1.0) == 100.0
    assert reservation_price({"mid": 100.0, "vol_1m": None}, 1.0, 1.0, 1.0) is None
    assert reservation_price({"mid": None, "vol_1m": 1.0}, 1.0, 1.0, 1.0) is None
    assert reservation_price({"mid": True, "vol_1m": 1.0}, 1.0, 1.0, 1.0) is None  # a bool is no price
    for bad in ({"gamma": -1.0}, {"horizon_s": math.nan}, {"inventory": math.inf}):
        args = {"inventory": 1.0, "gamma": 1.0, "horizon_s": 1.0, **bad}
        with pytest.raises(ValueError):
            reservation_price({"mid": 1.0, "vol_1m": 1.0}, **args)


def test_reservation_price_reads_a_typed_payload() -> None:
    typed = MetricsPayload(schema="flowgauge.v1", venue="bybit", symbol="BTC/USDT:USDT", instrument="BTCUSDT",
                           trigger="book", seq=1, book_seq=1, book_state="VALID", ts_exchange=1, ts_recv=1,
                           ts_publish=1, quality=[], mid=100.0)  # fmt: skip
    # no volatility in it: nothing to price inventory risk with
    assert reservation_price(typed, 1.0, 1.0, 1.0) is None
    with_vol = msgspec.structs.replace(typed, vol_1m=2.0)
    sigma = 2.0e-4 * 100.0
    assert reservation_price(with_vol, 2.0, 0.5, 4.0) == pytest.approx(100.0 - 2.0 * 0.5 * sigma**2 * 4.0)


def test_signals_import_without_any_daemon_or_client_dependency() -> None:
    heavy = ("asyncio", "websockets", "orjson", "msgspec", "numpy", "ccxt", "yaml", "nats", "redis")
    code = (
        f"import sys, json; sys.path.insert(0, {str(SERVICE)!r}); import flowgauge.signals; "
        "print(json.dumps([sorted(m for m in sys.modules if m.startswith('flowgauge')), "
        f"[m for m in {heavy!r} if m in sys.modules]]))"
    )
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, check=True)
    ours, loaded = json.loads(out.stdout)
    assert ours == ["flowgauge", "flowgauge.signals"]
    assert loaded == []
