"""Desk-side signals computed from a published payload and what only the desk knows (its inventory).

Standard library only: `import flowgauge.signals` works from the client-only install (and from no install at all,
with the package on the path). A payload is either the decoded JSON object (a dict) or a typed
`flowgauge.sdk.payloads.MetricsPayload`.

    from flowgauge.signals import reservation_price
    r = reservation_price(payload, inventory=-0.8, gamma=0.1, horizon_s=30.0)
    if r is not None:
        bid, ask = r - half_spread, r + half_spread

docs/metrics.md "Maker risk and sizing" explains the model and its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["reservation_price"]


def _field(payload: Any, name: str) -> Any:
    if isinstance(payload, Mapping):
        return payload.get(name)
    return getattr(payload, name, None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def reservation_price(payload: Any, inventory: float, gamma: float, horizon_s: float) -> float | None:
    """Avellaneda–Stoikov (2008) reservation price: `r = s - q * gamma * sigma^2 * horizon_s`.

    The price at which a market maker holding `q = inventory` is indifferent between holding and not: below the
    centre when long (sell sooner), above it when short. `s` is the payload's `micro_price` when it has one (the
    micro-price, a better short-horizon estimate of the price than the mid), else its `mid`; `sigma` is the
    published `vol_1m` (bps of price per sqrt second) in price units, `vol_1m * 1e-4 * s`.

    Args:
        payload: a metrics payload (dict or `MetricsPayload`).
        inventory: the desk's position in base units (+ long, - short).
        gamma: risk aversion (per unit of quote currency), >= 0.
        horizon_s: time left to the horizon, seconds, >= 0.

    Returns:
        The reservation price in quote currency; None when the payload has no price or no volatility yet
        (`vol_1m` is null while warming up or with the risk family off): no inventory adjustment can be priced.

    Raises:
        ValueError: on a negative or non-finite `gamma` or `horizon_s`, or a non-finite `inventory`.
    """
    if not (math.isfinite(gamma) and gamma >= 0.0):
        raise ValueError(f"gamma must be a finite number >= 0 (got {gamma!r})")
    if not (math.isfinite(horizon_s) and horizon_s >= 0.0):
        raise ValueError(f"horizon_s must be a finite number >= 0 (got {horizon_s!r})")
    if not math.isfinite(inventory):
        raise ValueError(f"inventory must be a finite number (got {inventory!r})")
    centre = _number(_field(payload, "micro_price"))
    if centre is None:
        centre = _number(_field(payload, "mid"))
    vol_bps = _number(_field(payload, "vol_1m"))
    if centre is None or vol_bps is None or not centre > 0.0:
        return None
    sigma = vol_bps * 1e-4 * centre
    return centre - inventory * gamma * sigma * sigma * horizon_s
