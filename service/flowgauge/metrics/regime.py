"""OI / price regimes of metrics.md 6.2 with hysteresis.

Pure metric logic. From the net opening ratio `rho` and the directional pressure `d` of one window:

| rho          | d            | regime          |
| >= rho_min   | >= d_min     | LONG_BUILDUP    |
| >= rho_min   | <= -d_min    | SHORT_BUILDUP   |
| <= -rho_min  | >= d_min     | SHORT_COVERING  |
| <= -rho_min  | <= -d_min    | LONG_UNWINDING  |
| otherwise                   | NEUTRAL         |

Hysteresis: NEUTRAL is entered at once; any other regime only after its condition has held for
`confirm_windows` consecutive windows, i.e. at every evaluation for `(confirm_windows - 1) * T` since it was first
seen (a different candidate in between restarts the count). Undefined inputs (null rho or d) publish null and
forget the pending candidate.
"""

from __future__ import annotations

__all__ = ["REGIMES", "RegimeTracker", "classify"]

REGIMES = ("NEUTRAL", "LONG_BUILDUP", "SHORT_BUILDUP", "SHORT_COVERING", "LONG_UNWINDING", "LONG_LIQUIDATION")


def classify(rho: float, d: float, rho_min: float, d_min: float) -> str:
    if rho >= rho_min:
        if d >= d_min:
            return "LONG_BUILDUP"
        if d <= -d_min:
            return "SHORT_BUILDUP"
    elif rho <= -rho_min:
        if d >= d_min:
            return "SHORT_COVERING"
        if d <= -d_min:
            return "LONG_UNWINDING"
    return "NEUTRAL"


class RegimeTracker:
    """The published regime of one window, updated at each evaluation."""

    __slots__ = ("_pending", "_pending_since", "confirm_ns", "d_min", "regime", "rho_min")

    def __init__(self, window_ns: int, rho_min: float, d_min: float, confirm_windows: int) -> None:
        self.rho_min = rho_min
        self.d_min = d_min
        self.confirm_ns = max(confirm_windows - 1, 0) * window_ns
        self.regime: str | None = None
        self._pending: str | None = None
        self._pending_since = 0

    def update(self, t: int, rho: float | None, d: float | None) -> str | None:
        if rho is None or d is None:
            self.regime = None
            self._pending = None
            return None
        candidate = classify(rho, d, self.rho_min, self.d_min)
        if candidate == "NEUTRAL" or candidate == self.regime:
            self.regime = candidate
            self._pending = None
            return candidate
        if candidate != self._pending:
            self._pending = candidate
            self._pending_since = t
        if t - self._pending_since >= self.confirm_ns:
            self.regime = candidate
            self._pending = None
        elif self.regime is None:
            self.regime = "NEUTRAL"  # nothing confirmed yet
        return self.regime
