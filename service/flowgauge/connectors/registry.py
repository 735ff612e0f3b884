"""Venue adapters by ccxt exchange id. Imports are lazy so one venue's module loads only when used."""

from __future__ import annotations

import importlib
from typing import Any

# ccxt id -> (module, adapter class)
_ADAPTERS: dict[str, tuple[str, str]] = {
    "bybit": ("flowgauge.connectors.bybit", "BybitAdapter"),
    "binanceusdm": ("flowgauge.connectors.binance", "BinanceUsdmAdapter"),
    "okx": ("flowgauge.connectors.okx", "OkxAdapter"),
    "deribit": ("flowgauge.connectors.deribit", "DeribitAdapter"),
    "hyperliquid": ("flowgauge.connectors.hyperliquid", "HyperliquidAdapter"),
}


def venues() -> tuple[str, ...]:
    return tuple(_ADAPTERS)


def adapter_class(venue: str) -> Any:
    """The adapter class for `venue`; KeyError names the supported venues."""
    try:
        module_name, class_name = _ADAPTERS[venue]
    except KeyError:
        raise KeyError(f"venue {venue!r} is not supported; supported: {', '.join(_ADAPTERS)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def adapter(venue: str, **options: Any) -> Any:
    """A new adapter instance for `venue`."""
    return adapter_class(venue)(**options)
