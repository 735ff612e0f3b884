"""The trade-flow imbalance family of metrics.md 5.1 over the windows of section 9 (0.1, 1, 10, 60, 300 s).

Pure, synchronous metric math. Per window `T`, from the taker side `s` (+1 buy, -1 sell), size `v` (base) and
price `p` of every trade in `(t - T, t]` (forced prints excluded unless `include_forced`):

* `tfi_vol_T = (B - S) / (B + S)` (volume), `tfi_notional_T` (same with `p v`), `tfi_count_T` (trade counts):
  in [-1, 1], null without trades;
* `signed_vol_T = B - S` (base), `signed_notional_T = sum s p v` (quote): 0.0 without trades (a flow, not a ratio);
* `tfi_ew_T`: decayed signed volume over decayed volume, half-life `T ln 2` (mass-equivalent, metrics.md 0.3).
  Both sums decay alike, so the ratio changes only with trades. Null before the first trade.
* `ti_depthnorm_T = (B - S) / AD_ew`: the signed volume over the time-weighted L1 depth (`metrics.l1_depth`, the
  owner passes it); null without one.

Windows up to 60 s are exact boxcars (`metrics.windows`); 300 s is a sum of 1 s buckets (`metrics.buckets`),
null with WARMUP until the instrument has been observed for 300 s, so a restart never publishes a short
window under a long name. The 0.1 s to 60 s windows are published while not yet covered, marked `coverage`
PARTIAL (issue 11 item 2).
"""

from __future__ import annotations

import math

from flowgauge.metrics.buckets import BucketRing
from flowgauge.metrics.windows import LATE_HORIZON_NS, MAX_WINDOW_ITEMS, DecayedSum, _Boxcar

__all__ = ["EXACT_WINDOWS", "TFI_FIELDS", "TradeFlowWindows"]

_S = 1_000_000_000
EXACT_WINDOWS: tuple[tuple[str, int], ...] = (("100ms", _S // 10), ("1s", _S), ("10s", 10 * _S), ("60s", 60 * _S))
BUCKET_WINDOWS: tuple[tuple[str, int], ...] = (("300s", 300),)  # label, seconds (1 s buckets)
_LABELS = tuple(label for label, _ in (*EXACT_WINDOWS, *BUCKET_WINDOWS))
_SECONDS = {label: ns / _S for label, ns in EXACT_WINDOWS} | {label: float(n) for label, n in BUCKET_WINDOWS}
_KINDS = ("tfi_vol", "tfi_notional", "tfi_count", "signed_vol", "signed_notional", "tfi_ew", "ti_depthnorm")
TFI_FIELDS: tuple[str, ...] = tuple(f"{kind}_{label}" for label in _LABELS for kind in _KINDS)
"""Payload keys, window by window."""


class _SixFlow(_Boxcar):
    """Exact boxcar sums of (signed vol, vol, signed notional, notional, signed count, count)."""

    __slots__ = ()

    def __init__(self, window_ns: int) -> None:
        super().__init__(window_ns, 6, MAX_WINDOW_ITEMS, LATE_HORIZON_NS)

    def add(self, t: int, item: tuple[float, ...]) -> None:
        self._add(t, item)

    def evaluate(self, now: int) -> tuple[float, ...] | None:
        self._move(now)
        if self._lo == self._hi:
            return None
        return tuple(total.value() for total in self._sums)


def _ratio(signed: float, mass: float) -> float | None:
    return signed / mass if mass > 0.0 else None


class TradeFlowWindows:
    """TFI family state of one instrument: feed `add` with every non-forced trade, read `fill` per payload."""

    __slots__ = ("_buckets", "_ew", "_exact", "since")

    def __init__(self) -> None:
        self._exact = tuple(_SixFlow(ns) for _, ns in EXACT_WINDOWS)
        self._buckets = BucketRing(_S, max(n for _, n in BUCKET_WINDOWS) + 1, 6)
        self._ew = tuple(
            (DecayedSum.for_window(_SECONDS[label]), DecayedSum.for_window(_SECONDS[label])) for label in _LABELS
        )
        self.since: int | None = None  # the owner's first input: windows are covered from it

    def add(self, t: int, side: int, size: float, price: float) -> None:
        s = 1.0 if side > 0 else -1.0
        notional = price * size
        item = (s * size, size, s * notional, notional, s, 1.0)
        for window in self._exact:
            window.add(t, item)
        self._buckets.add(t, item)
        for signed, mass in self._ew:
            signed.add(t, s * size)
            mass.add(t, size)

    def fill(
        self, now: int, out: dict[str, object], coverage: dict[str, str], flags: set[str], depth: float | None = None
    ) -> None:
        """Write every TFI key at `now`; mark uncovered exact windows PARTIAL, uncovered long ones null + WARMUP.
        `depth`: the L1 depth normaliser of ti_depthnorm_T (None: those are null)."""
        since = self.since
        ew = iter(self._ew)
        for (label, ns), window in zip(EXACT_WINDOWS, self._exact, strict=True):
            sums = window.evaluate(now)
            self._write(label, sums, next(ew), now, out, depth)
            if sums is not None and (since is None or now - since < ns):
                for kind in (*_KINDS[:5], _KINDS[6]):
                    if out[f"{kind}_{label}"] is not None:
                        coverage[f"{kind}_{label}"] = "PARTIAL"
        for label, seconds in BUCKET_WINDOWS:
            pair = next(ew)
            if since is None or now - since < seconds * _S:
                for kind in _KINDS:
                    out[f"{kind}_{label}"] = None
                out[f"tfi_ew_{label}"] = self._ew_value(pair, now)
                flags.add("WARMUP")
                continue
            b = self._buckets.sums(now, seconds)
            self._write(label, tuple(b) if b[5] > 0.0 else None, pair, now, out, depth)

    def _write(
        self,
        label: str,
        sums: tuple[float, ...] | None,
        pair: tuple[DecayedSum, DecayedSum],
        now: int,
        out: dict[str, object],
        depth: float | None,
    ) -> None:
        if sums is None:
            out[f"tfi_vol_{label}"] = out[f"tfi_notional_{label}"] = out[f"tfi_count_{label}"] = None
            out[f"signed_vol_{label}"] = out[f"signed_notional_{label}"] = 0.0
        else:
            sv, v, sn, n, sc, c = sums
            out[f"tfi_vol_{label}"] = _ratio(sv, v)
            out[f"tfi_notional_{label}"] = _ratio(sn, n)
            out[f"tfi_count_{label}"] = _ratio(sc, c)
            out[f"signed_vol_{label}"] = sv
            out[f"signed_notional_{label}"] = sn
        out[f"tfi_ew_{label}"] = self._ew_value(pair, now)
        signed = out[f"signed_vol_{label}"]
        out[f"ti_depthnorm_{label}"] = signed / depth if depth is not None and isinstance(signed, float) else None

    @staticmethod
    def _ew_value(pair: tuple[DecayedSum, DecayedSum], now: int) -> float | None:
        mass = pair[1].value(now)
        if not mass > 0.0 or not math.isfinite(mass):
            return None
        ratio = pair[0].value(now) / mass
        return 1.0 if ratio > 1.0 else -1.0 if ratio < -1.0 else ratio  # rounding can cross the bound by an ulp

    def items(self) -> int:
        """Items held by the exact windows (the memory the long window does not use)."""
        return sum(len(w) for w in self._exact)
