"""The "positioning" family (issue 11 item 7): OI flow and regimes, funding pressure, long/short skew z-scores,
liquidation imbalance and intensity.

Slow-cadence state fed by the accumulator's `on_trade`, `on_open_interest`, `on_funding`, `on_long_short` and
`on_liquidation` (both cores run this same Python code, so they publish the same values); `fill` writes the
family's keys into a payload at its exchange time. Definitions: `metrics.oi_flow`, `metrics.liquidations`,
`metrics.funding` (`funding_pressure`, `funding_ann`), `metrics.ewz` (the z-scores, null until warm).
"""

from __future__ import annotations

from flowgauge.metrics.ewz import EwZScore
from flowgauge.metrics.flow_params import PositioningParams
from flowgauge.metrics.funding import FundingState, funding_annualised, funding_pressure
from flowgauge.metrics.liquidations import LIQUIDATION_FIELDS, LiquidationWindows
from flowgauge.metrics.oi_context import OiContext
from flowgauge.metrics.oi_flow import OI_FLOW_FIELDS, OiFlowWindows
from flowgauge.types import FundingRate, Instrument, Liquidation, LongShortRatio, OpenInterest, Trade

__all__ = ["POSITIONING_FIELDS", "PositioningFamily"]

POSITIONING_FIELDS: tuple[str, ...] = (
    *OI_FLOW_FIELDS,
    "oi_to_volume_24h", "oi_price_corr_4h",
    "funding_ann", "funding_pressure", "funding_pressure_z",
    "ls_skew_accounts_z", "ls_skew_top_positions_z",
    *LIQUIDATION_FIELDS,
)  # fmt: skip

_LS_KINDS = {"accounts": 0, "top_positions": 1}


class PositioningFamily:
    __slots__ = ("_context", "_funding", "_funding_z", "_liq", "_ls_z", "_oi", "_oi_flow", "params")

    def __init__(self, instrument: Instrument, params: PositioningParams | None = None) -> None:
        self.params = p = params if params is not None else PositioningParams()
        self._oi_flow = OiFlowWindows(p.consistency_tolerance, p.rho_min, p.d_min, p.regime_confirm_windows,
                                      p.liquidation_share)  # fmt: skip
        self._liq = LiquidationWindows(instrument.venue in p.sampled_liquidation_venues)
        self._funding = FundingState()
        self._funding_z = EwZScore(p.funding_z_half_life_s, p.z_min_weight)
        self._ls_z = (EwZScore(p.ls_z_half_life_s, p.z_min_weight), EwZScore(p.ls_z_half_life_s, p.z_min_weight))
        self._oi: float | None = None
        self._context = OiContext(p.oi_price_corr_half_life_s, p.z_min_weight)

    def set_since(self, t: int) -> None:
        if self._liq.since is None:
            self._liq.since = t

    def on_trade(self, trade: Trade) -> None:
        self.set_since(trade.ts_exchange)
        self._oi_flow.on_trade(trade.ts_exchange, trade.side, trade.size, trade.forced)
        self._liq.on_trade(trade.ts_exchange, trade.price * trade.size)
        self._context.on_trade(trade.ts_exchange, trade.price, trade.size)

    def on_open_interest(self, oi: OpenInterest) -> None:
        self.set_since(oi.ts_exchange)
        self._oi = oi.open_interest
        self._oi_flow.on_open_interest(oi.ts_exchange, oi.open_interest)
        self._context.on_open_interest(oi.ts_exchange, oi.open_interest)

    def on_funding(self, funding: FundingRate) -> None:
        self.set_since(funding.ts_exchange)
        self._funding.update(funding)
        if funding.rate is not None:
            rate_8h = self._funding.rate_8h()
            if rate_8h is not None:
                self._funding_z.update(funding.ts_exchange, rate_8h)

    def on_long_short(self, ratio: LongShortRatio) -> None:
        self.set_since(ratio.ts_exchange)
        i = _LS_KINDS.get(ratio.kind)
        if i is not None and ratio.ratio >= 0.0:
            self._ls_z[i].update(ratio.ts_exchange, (ratio.ratio - 1.0) / (ratio.ratio + 1.0))

    def on_liquidation(self, liq: Liquidation) -> None:
        self.set_since(liq.ts_exchange)
        long_side = liq.liquidated_side == "long"
        self._liq.on_liquidation(liq.ts_exchange, long_side, liq.price * liq.size)
        self._oi_flow.on_liquidation(liq.ts_exchange, long_side, liq.size)

    def on_feed_reset(self, ts_ns: int) -> None:
        """Nothing to mark: OI and liquidation values rest on observations, not on an unbroken tape."""

    def fill(self, book: object, out: dict[str, object], now: int, flags: set[str]) -> None:
        """Write the family's keys at `now` (the payload's exchange time); windows count as covered from the
        first input or payload this family saw."""
        self.set_since(now)
        held = out.get("coverage")
        coverage: dict[str, str] = held if isinstance(held, dict) else {}
        before = len(coverage)
        p = self.params
        self._oi_flow.fill(out, coverage, flags)
        ratio, corr, warming = self._context.values(now, self._oi, self._liq.since)
        out["oi_to_volume_24h"] = ratio
        out["oi_price_corr_4h"] = corr
        if warming and self._oi is not None:
            flags.add("WARMUP")  # a 24 h window without 24 h observed (after a start or restart)
        funding = self._funding
        out["funding_ann"] = funding_annualised(funding.rate, funding.interval_hours)
        out["funding_pressure"] = funding_pressure(funding.rate_8h(), p.funding_base_8h, p.funding_scale)
        out["funding_pressure_z"] = self._funding_z.value()
        out["ls_skew_accounts_z"] = self._ls_z[0].value()
        out["ls_skew_top_positions_z"] = self._ls_z[1].value()
        mark = funding.mark_price
        oi_notional = self._oi * mark if self._oi is not None and mark is not None else None
        self._liq.fill(now, oi_notional, out, coverage, flags)
        if len(coverage) > before:
            flags.add("PARTIAL_WINDOW")
