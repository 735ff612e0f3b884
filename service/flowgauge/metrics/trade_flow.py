"""The "trade_flow" family (issue 11 item 6): the TFI family, volume-bucket flow toxicity and Kyle's lambda.

Slow-cadence state fed by the accumulator's `on_trade` (both cores run this same Python code, so they publish
the same values); `fill` writes the family's keys into a payload at its exchange time. See `metrics.tfi`,
`metrics.toxicity` and `metrics.kyle` for the definitions.
"""

from __future__ import annotations

from typing import Any

from flowgauge.metrics.flow_params import TradeFlowParams
from flowgauge.metrics.kyle import KyleLambda
from flowgauge.metrics.l1_depth import L1DepthEw
from flowgauge.metrics.tfi import TFI_FIELDS, TradeFlowWindows
from flowgauge.metrics.toxicity import FlowToxicity
from flowgauge.types import FundingRate, Liquidation, LongShortRatio, OpenInterest, Trade

__all__ = ["TRADE_FLOW_FIELDS", "TradeFlowFamily"]

TRADE_FLOW_FIELDS: tuple[str, ...] = (
    *TFI_FIELDS,
    "flow_toxicity", "flow_toxicity_bvc", "flow_toxicity_cdf", "flow_toxicity_bucket_volume",
    "kyle_lambda_bps_per_musd", "kyle_r2", "kyle_n",
)  # fmt: skip


class TradeFlowFamily:
    __slots__ = ("_depth", "_kyle", "_tfi", "_toxicity", "params")

    def __init__(self, params: TradeFlowParams | None = None) -> None:
        self.params = params = params if params is not None else TradeFlowParams()
        self._tfi = TradeFlowWindows()
        self._toxicity = FlowToxicity(params.toxicity)
        self._kyle = KyleLambda(params.kyle)
        self._depth = L1DepthEw(params.depth_half_life_s)

    def set_since(self, t: int) -> None:
        if self._tfi.since is None:
            self._tfi.since = t

    def on_trade(self, trade: Trade) -> None:
        self.set_since(trade.ts_exchange)
        if trade.forced and not self.params.include_forced:
            return  # forced prints stay out of trade flow (5.1); they still count in OI volume
        self._tfi.add(trade.ts_exchange, trade.side, trade.size, trade.price)
        self._toxicity.on_trade(trade.ts_exchange, trade.side, trade.size, trade.price)
        self._kyle.on_trade(trade.ts_exchange, trade.side, trade.size, trade.price)

    def on_open_interest(self, oi: OpenInterest) -> None:
        self.set_since(oi.ts_exchange)

    def on_funding(self, funding: FundingRate) -> None:
        self.set_since(funding.ts_exchange)
        if funding.volume_24h is not None:  # the venue's own 24 h volume: the bucket size until 24 h observed
            self._toxicity.set_venue_volume(funding.volume_24h)

    def on_liquidation(self, liq: Liquidation) -> None:
        self.set_since(liq.ts_exchange)

    def on_long_short(self, ratio: LongShortRatio) -> None:
        self.set_since(ratio.ts_exchange)

    def on_feed_reset(self, ts_ns: int) -> None:
        """Trades may have been lost: the toxicity buckets filling now and the next n are marked (5.2)."""
        self._toxicity.mark_gap()

    def fill(self, book: Any, out: dict[str, object], now: int, flags: set[str]) -> None:
        """Write the family's keys at `now` (the payload's exchange time); windows count as covered from the
        first input or payload this family saw."""
        self.set_since(now)
        held = out.get("coverage")
        coverage: dict[str, str] = held if isinstance(held, dict) else {}
        before = len(coverage)
        self._depth.sample(book, now)
        self._tfi.fill(now, out, coverage, flags, self._depth.value())
        exact, bvc, cdf = self._toxicity.values()
        out["flow_toxicity"] = exact
        out["flow_toxicity_bvc"] = bvc
        out["flow_toxicity_cdf"] = cdf
        exact_gap, bvc_gap = self._toxicity.gapped()
        if exact_gap and exact is not None:
            coverage["flow_toxicity"] = "PARTIAL"
            if cdf is not None:
                coverage["flow_toxicity_cdf"] = "PARTIAL"
        if bvc_gap and bvc is not None:
            coverage["flow_toxicity_bvc"] = "PARTIAL"
        volume = self._toxicity.bucket_volume
        out["flow_toxicity_bucket_volume"] = volume if volume > 0.0 else None
        beta, r2, n = self._kyle.values()
        out["kyle_lambda_bps_per_musd"] = beta
        out["kyle_r2"] = r2
        out["kyle_n"] = float(n)
        if len(coverage) > before:
            flags.add("PARTIAL_WINDOW")
