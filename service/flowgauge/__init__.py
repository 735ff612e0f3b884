"""flowgauge: live L2 books and order-flow / depth / open-interest imbalance metrics for crypto derivatives.

The public API for strategies is what this package exports (`__all__`): the subscriber client for the
daemon's bus, its errors, and where the payload and status JSON Schemas ship. Everything is imported on
first use (module `__getattr__`), so `import flowgauge` or `import flowgauge.book` stays free of asyncio,
websockets and orjson; a strategy that only needs the client installs `flowgauge[client]`'s dependencies.

    import asyncio
    from flowgauge import ConnectionLost, EmbeddedSubscriber

    async def main() -> None:
        async with EmbeddedSubscriber("ws://127.0.0.1:8765", ["flowgauge.v1.bybit.>"]) as sub:
            async for topic, payload in sub:
                print(topic, payload["mid"])

    asyncio.run(main())
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowgauge.client import (
        BusMessage,
        BusUnreachable,
        ConnectionLost,
        EmbeddedSubscriber,
        InvalidBusURL,
        NotABus,
        SubscribeRejected,
        SubscriberError,
        Unauthorized,
    )
    from flowgauge.sdk import Interrupted, Message, Subscription, subscribe

__all__ = [
    "SCHEMA_DIR",
    "BusMessage",
    "BusUnreachable",
    "ConnectionLost",
    "EmbeddedSubscriber",
    "Interrupted",
    "InvalidBusURL",
    "Message",
    "NotABus",
    "SubscribeRejected",
    "SubscriberError",
    "Subscription",
    "Unauthorized",
    "__version__",
    "schema_path",
    "subscribe",
]

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
"""Directory of the JSON Schemas of what the bus publishes (`payload.v1.json`, `status.v1.json`, `trade.v1.json`,
`agg.v1.json`, `bars.v1.json`)."""

_SCHEMAS = ("payload", "status", "trade", "agg", "bars")
_SCHEMA_VERSION = 1

# Public names that live in a submodule: imported when first asked for.
_LAZY = {
    name: "flowgauge.client"
    for name in (
        "BusMessage",
        "BusUnreachable",
        "ConnectionLost",
        "EmbeddedSubscriber",
        "InvalidBusURL",
        "NotABus",
        "SubscribeRejected",
        "SubscriberError",
        "Unauthorized",
    )
}
_LAZY.update({name: "flowgauge.sdk" for name in ("Interrupted", "Message", "Subscription", "subscribe")})

# What `__version__` is when the distribution's metadata is absent (a source tree on sys.path, not installed).
_UNKNOWN_VERSION = "0+unknown"


def schema_path(name: str) -> Path:
    """Path of the JSON Schema for `name`: "payload" (metrics payloads), "status" (book status payloads),
    "trade" (trade and liquidation records on `flowgauge.v1.trades.<venue>.<slug>`, with publish.trades), "agg"
    (cross-venue aggregates on `flowgauge.v1.agg.<BASE>`) or "bars" (closed clock bars on
    `flowgauge.v1.bars.<venue>.<slug>`, publish.bars).

    Raises:
        ValueError: for any other name.
    """
    if name not in _SCHEMAS:
        raise ValueError(f"unknown schema {name!r}; known: {', '.join(_SCHEMAS)}")
    return SCHEMA_DIR / f"{name}.v{_SCHEMA_VERSION}.json"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flowgauge")
    except PackageNotFoundError:
        return _UNKNOWN_VERSION


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # cached: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
