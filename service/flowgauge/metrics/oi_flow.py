"""Open-interest flow per window (metrics.md 6.2): change, opening ratio, consistency, build-up / unwind scores and
regimes, for T in {1 min, 5 min, 1 h, 4 h}.

Pure, synchronous metric math. Evaluated at each OI observation `t` (the values then hold until the next one):

* `dOI = OI_t - OI_ref`, `OI_ref` the latest observation at or before `t - T` (none yet: every output of that
  window is null);
* `V` = all traded volume (forced prints included) between the two observations; `oi_open_ratio_T = clip(dOI/V)`,
  `oi_consistency_T = |dOI| / V` before clipping (above `1 + tol`: OI_INCONSISTENT), both null when `V = 0`;
* `d = tfi_vol` over the same interval (non-forced prints), `omega = (1 + rho) / 2`,
  `oi_buildup_score_T = d * omega`, `oi_unwind_score_T = d * (1 - omega)` (their sum is `d`);
* `oi_regime_T` (`metrics.regime`), LONG_UNWINDING reported as LONG_LIQUIDATION when the liquidated-long size is
  more than `liquidation_share` of `V` (a lower bound on Binance, whose liquidation stream is sampled).

1 min and 5 min take `dOI` and `V` exactly (`metrics.open_interest.OpenInterestFlow`, observation to
observation) and `d` from 1 s buckets over the same seconds (except 1 min, whose partial history is published
with coverage PARTIAL like `oi_open_ratio_5m`). 1 h and 4 h are sums of 1 min buckets (bounded memory): the
reference is the last observation of the latest minute whose last observation is at or before `t - T`, and
`V`, `d` and the liquidations are the buckets after that minute up to `t`'s (so trades in the reference's minute
after it are left out: at most one OI interval). When OI was not observed at `t - T` (a slow poll, an outage)
the reference is older, as far back as the rings hold (`LOOKBACK_MIN` beyond 4 h). Null with WARMUP until such a
reference exists.
"""

from __future__ import annotations

from flowgauge.metrics.buckets import BucketRing
from flowgauge.metrics.open_interest import OpenInterestFlow
from flowgauge.metrics.regime import RegimeTracker

__all__ = ["OI_FLOW_FIELDS", "OiFlowWindows"]

_S = 1_000_000_000
_MIN = 60 * _S
EXACT: tuple[tuple[str, int], ...] = (("1m", _MIN), ("5m", 5 * _MIN))
BUCKETED: tuple[tuple[str, int], ...] = (("1h", 60), ("4h", 240))  # label, minutes
LABELS = tuple(label for label, _ in (*EXACT, *BUCKETED))
# How far before t - T a bucketed window's reference may lie when OI was not observed just then (a slow poll, a
# feed or poll outage): the rings hold this many minutes beyond the 4 h window (the 1 h one reaches back further).
LOOKBACK_MIN = 15
_RING_MIN = 4 * 60 + LOOKBACK_MIN + 2
_KINDS = ("oi_chg_pct", "oi_open_ratio", "oi_consistency", "oi_buildup_score", "oi_unwind_score", "oi_regime")
# oi_chg_pct_5m and oi_open_ratio_5m are core-v1 fields (the accumulator's own 5 min flow publishes them)
OI_FLOW_FIELDS: tuple[str, ...] = tuple(
    f"{kind}_{label}" for label in LABELS for kind in _KINDS if f"{kind}_{label}" not in
    ("oi_chg_pct_5m", "oi_open_ratio_5m")
)  # fmt: skip


class _Result:
    __slots__ = ("chg", "consistency", "d", "inconsistent", "liq_long", "partial", "rho", "volume")

    def __init__(self) -> None:
        self.chg: float | None = None
        self.rho: float | None = None
        self.consistency: float | None = None
        self.d: float | None = None
        self.volume = 0.0
        self.liq_long = 0.0
        self.inconsistent = False
        self.partial = False


def _clip(x: float) -> float:
    return 1.0 if x > 1.0 else -1.0 if x < -1.0 else x


class OiFlowWindows:
    """OI flow of one instrument over the four windows; `fill` writes the values of the latest observation."""

    __slots__ = ("_exact", "_first_minute", "_minute_oi", "_minutes", "_regimes", "_results", "_seconds",
                 "liquidation_share", "tolerance")  # fmt: skip

    def __init__(
        self,
        tolerance: float = 0.02,
        rho_min: float = 0.05,
        d_min: float = 0.05,
        confirm_windows: int = 2,
        liquidation_share: float = 0.2,
    ) -> None:
        self.tolerance = tolerance
        self.liquidation_share = liquidation_share
        self._exact = tuple(OpenInterestFlow(ns, tolerance) for _, ns in EXACT)
        # 1 s buckets (signed non-forced volume, non-forced volume, liquidated-long size) for the exact windows' d
        self._seconds = BucketRing(_S, 5 * 60 + 2, 3)
        # 1 min buckets (volume, signed non-forced, non-forced volume, liquidated-long size) for 1 h / 4 h
        self._minutes = BucketRing(_MIN, _RING_MIN, 4)
        self._first_minute: int | None = None  # the minute of the first OI observation: no reference before it
        self._minute_oi: list[tuple[int, int, float] | None] = [None] * _RING_MIN  # (minute, t, oi): the last
        windows = [ns for _, ns in EXACT] + [m * _MIN for _, m in BUCKETED]
        self._regimes = tuple(RegimeTracker(ns, rho_min, d_min, confirm_windows) for ns in windows)
        self._results = tuple(_Result() for _ in windows)

    def on_trade(self, t: int, side: int, size: float, forced: bool) -> None:
        signed = 0.0 if forced else (size if side > 0 else -size)
        plain = 0.0 if forced else size
        for flow in self._exact:
            flow.on_trade(t, size)
        self._seconds.add(t, (signed, plain, 0.0))
        self._minutes.add(t, (size, signed, plain, 0.0))

    def on_liquidation(self, t: int, long_side: bool, size: float) -> None:
        if long_side:
            self._seconds.add(t, (0.0, 0.0, size))
            self._minutes.add(t, (0.0, 0.0, 0.0, size))

    def on_open_interest(self, t: int, oi: float) -> None:
        for i, flow in enumerate(self._exact):
            flow.on_open_interest(t, oi)
            self._exact_result(t, flow, self._results[i])
        minute = t // _MIN
        if self._first_minute is None or minute < self._first_minute:
            self._first_minute = minute
        slot = minute % len(self._minute_oi)
        held = self._minute_oi[slot]
        if held is None or held[0] < minute or (held[0] == minute and held[1] <= t):
            self._minute_oi[slot] = (minute, t, oi)
        for j, (_, minutes) in enumerate(BUCKETED):
            self._bucketed_result(t, oi, minutes, self._results[len(EXACT) + j])
        for result, tracker in zip(self._results, self._regimes, strict=True):
            tracker.update(t, result.rho, result.d)

    def _exact_result(self, t: int, flow: OpenInterestFlow, r: _Result) -> None:
        r.chg = flow.chg_pct
        r.rho = flow.open_ratio
        r.consistency = flow.consistency
        r.inconsistent = flow.inconsistent
        r.partial = flow.partial and flow.open_ratio is not None
        r.volume = flow.volume_in_window()
        ref = flow.reference_time()
        if ref is None or ref >= t:
            r.d = None
            r.liq_long = 0.0
            return
        signed, plain, liq = self._seconds.sums(t, t // _S - ref // _S)
        r.d = signed / plain if plain > 0.0 else None
        r.liq_long = liq

    def _reference(self, t: int, minutes: int) -> tuple[int, float] | None:
        """(minute, oi) of the latest minute whose last observation is at or before t - T, as far back as the
        rings still hold both that minute's observation and the volume after it (metrics.md 6.2: the latest
        observation at or before t - T, however long OI was silent before it)."""
        edge = t - minutes * _MIN
        ring = self._minute_oi
        oldest = t // _MIN - (len(ring) - 1)  # older slots have been taken over by the current minutes
        first = self._first_minute
        if first is None:
            return None
        if first > oldest:
            oldest = first  # nothing was observed before: do not scan the empty minutes (every observation asks)
        for minute in range(edge // _MIN, oldest - 1, -1):
            held = ring[minute % len(ring)]
            if held is not None and held[0] == minute and held[1] <= edge:
                return minute, held[2]
        return None

    def _bucketed_result(self, t: int, oi: float, minutes: int, r: _Result) -> None:
        ref = self._reference(t, minutes)
        r.partial = False
        if ref is None:
            r.chg = r.rho = r.consistency = r.d = None
            r.inconsistent = False
            r.volume = r.liq_long = 0.0
            return
        minute, ref_oi = ref
        volume, signed, plain, liq = self._minutes.sums(t, t // _MIN - minute)
        d_oi = oi - ref_oi
        r.chg = d_oi / ref_oi if ref_oi > 0.0 else None
        r.volume = volume
        r.liq_long = liq
        r.d = signed / plain if plain > 0.0 else None
        if volume > 0.0:
            ratio = d_oi / volume
            r.consistency = abs(ratio)
            r.rho = _clip(ratio)
            r.inconsistent = r.consistency > 1.0 + self.tolerance
        else:
            r.consistency = r.rho = None
            r.inconsistent = d_oi != 0.0

    def fill(self, out: dict[str, object], coverage: dict[str, str], flags: set[str]) -> None:
        for i, label in enumerate(LABELS):
            r = self._results[i]
            rho, d = r.rho, r.d
            if label != "5m":
                out[f"oi_chg_pct_{label}"] = r.chg
                out[f"oi_open_ratio_{label}"] = rho
            out[f"oi_consistency_{label}"] = r.consistency
            if rho is None or d is None:
                out[f"oi_buildup_score_{label}"] = out[f"oi_unwind_score_{label}"] = None
            else:
                omega = (1.0 + rho) * 0.5
                out[f"oi_buildup_score_{label}"] = d * omega
                out[f"oi_unwind_score_{label}"] = d * (1.0 - omega)
            regime = self._regimes[i].regime
            if regime == "LONG_UNWINDING" and r.volume > 0.0 and r.liq_long / r.volume > self.liquidation_share:
                regime = "LONG_LIQUIDATION"
            out[f"oi_regime_{label}"] = regime
            if r.inconsistent:
                flags.add("OI_INCONSISTENT")
            if r.partial:
                for kind in ("oi_open_ratio", "oi_consistency", "oi_buildup_score", "oi_unwind_score"):
                    key = f"{kind}_{label}"
                    if out.get(key) is not None and key != "oi_open_ratio_5m":
                        coverage[key] = "PARTIAL"
            if i >= len(EXACT) and r.chg is None and r.rho is None and self._exact[0].oi is not None:
                flags.add("WARMUP")  # a long window without its reference yet (after a start or restart)
