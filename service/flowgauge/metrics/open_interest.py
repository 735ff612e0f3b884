"""Open-interest change and the net opening ratio between OI observations (metrics.md §6.2).

Pure, synchronous metric math: no I/O, no asyncio, no prometheus_client.

Rules kept from §6.2: `dOI` is taken only between two OI observations (never interpolated), and the volume `V`
it is compared with is the volume of ALL trades (forced included) between the same two exchange timestamps,
`(t_ref, t_now]`. The reference is the latest observation at or before `t_now - T`. With less than `T` of
history there is none: `chg_pct` is then None (a change over less than its name says is not that change, issue 11
item 2), while the bounded `open_ratio` is taken since the oldest observation and flagged partial.

Trades and OI come from different venue streams, so a trade may arrive after an OI observation that is later
than the trade. Volume is therefore kept per OI interval (the trades in `(t_{k-1}, t_k]` belong to
observation k) in exact sums: a late trade is added to the interval it belongs to, and the window total is the
exact sum of the intervals after the reference, whatever the arrival order was.

Memory. Trades newer than the last OI observation wait one by one for the observation that closes their
interval, but only within a late horizon (`LATE_HORIZON_NS` of `metrics.windows`, 5 s) behind the newest trade:
older ones are folded into one exact sum that joins the first interval ending at or after its newest trade. An
OI feed that goes silent (a venue that stops pushing it, failing polls) therefore holds 5 s of trades, not every
trade since its last observation (issue 10 item 5: ~27 trades/s per book piled up at 20x until the hard cap of
100k per book, ~12 MB each). The fold is exact unless an observation arrives stamped more than the horizon
behind the newest trade, the same bound within which the flow windows are exact.
"""

from __future__ import annotations

from collections import deque

from flowgauge.metrics.windows import LATE_HORIZON_NS, ExactSum

__all__ = ["OI_STALE_POLLS", "OI_TOLERANCE", "OpenInterestFlow"]

OI_TOLERANCE = 0.02
"""`|dOI| / V` above `1 + tol` is inconsistent with the trades (§6.2 / §9: tol 2%)."""

OI_STALE_POLLS = 10
"""Consecutive unchanged OI observations with volume traded in between before the feed is flagged STALE
(§6.2 rule 2; the count is a practitioner default, not from a paper)."""

_MAX_PENDING_TRADES = 100_000  # trades newer than the last OI observation kept one by one (within the horizon)
_MAX_OBSERVATIONS = 20_000  # OI history; a 5-min window at a 100 ms cadence needs ~3000


class _Obs:
    """One OI observation and the exact volume traded in the interval that ends at it."""

    __slots__ = ("oi", "t", "volume")

    def __init__(self, t: int, oi: float) -> None:
        self.t = t
        self.oi = oi
        self.volume = ExactSum()


class OpenInterestFlow:
    """OI observations and traded volume; recomputes `oi_chg_pct_T` / `oi_open_ratio_T` per observation.

    After each `on_open_interest`, read: `oi`, `chg_pct` (`dOI / OI_ref`), `open_ratio`
    (`clip(dOI / V, -1, 1)`), `consistency` (`|dOI| / V` before clipping), and the flags `partial`,
    `inconsistent`, `stale`.
    """

    __slots__ = (
        "_folded",
        "_folded_t",
        "_obs",
        "_pending",
        "_pending_high",
        "_unchanged_polls",
        "_window",
        "chg_pct",
        "consistency",
        "horizon_ns",
        "inconsistent",
        "late_dropped",
        "oi",
        "open_ratio",
        "partial",
        "stale",
        "tolerance",
        "window_ns",
    )

    def __init__(self, window_ns: int, tolerance: float = OI_TOLERANCE, horizon_ns: int = LATE_HORIZON_NS) -> None:
        if horizon_ns < 0:
            raise ValueError("late horizon must be >= 0")
        self.window_ns = window_ns
        self.tolerance = tolerance
        self.horizon_ns = horizon_ns
        self._obs: deque[_Obs] = deque()
        self._window = ExactSum()  # sum of _obs[1:].volume: the trades in (t_ref, t_last]
        self._pending: deque[tuple[int, float]] = deque()  # trades with t > t_last, in time order
        self._pending_high: int | None = None  # the newest trade time seen while trades were pending
        # Pending trades older than the horizon behind the newest one (or beyond the hard cap) are folded into
        # one exact sum; it joins the first interval that ends at or after its newest trade.
        self._folded = ExactSum()
        self._folded_t: int | None = None
        self._unchanged_polls = 0
        self.late_dropped = 0  # OI observations older than the last one, and trades older than the reference
        self.oi: float | None = None
        self.chg_pct: float | None = None
        self.open_ratio: float | None = None
        self.consistency: float | None = None
        self.partial = False
        self.inconsistent = False
        self.stale = False

    def on_trade(self, t: int, size: float) -> None:
        """Count a trade's volume (every trade, forced ones too)."""
        obs = self._obs
        if not obs or t > obs[-1].t:
            pending = self._pending
            if pending and pending[-1][0] > t:
                i = len(pending)
                while i > 0 and pending[i - 1][0] > t:
                    i -= 1
                pending.insert(i, (t, size))
            else:
                pending.append((t, size))
            high = self._pending_high
            if high is None or t > high:
                self._pending_high = high = t
            edge = high - self.horizon_ns
            if pending[0][0] <= edge:
                self._fold_through(edge)
            if len(pending) > _MAX_PENDING_TRADES:
                self._fold_pending()
            return
        # Late trade: it belongs to the interval of the first observation at or after it.
        k = len(obs) - 1
        while k > 0 and obs[k - 1].t >= t:
            k -= 1
        if k == 0:
            self.late_dropped += 1  # at or before the reference: outside every window we will compute
            return
        obs[k].volume.add(size)
        self._window.add(size)

    def _fold_pending(self) -> None:
        """The hard cap: fold the older half (a burst of more than the cap within the horizon)."""
        for _ in range(len(self._pending) // 2):
            self._fold_first()

    def _fold_through(self, edge: int) -> None:
        """Fold the pending trades at or before `edge` (the late horizon behind the newest trade)."""
        pending = self._pending
        while pending and pending[0][0] <= edge:
            self._fold_first()

    def _fold_first(self) -> None:
        t, size = self._pending.popleft()
        self._folded.add(size)
        if self._folded_t is None or t > self._folded_t:
            self._folded_t = t

    def on_open_interest(self, t: int, oi: float) -> None:
        """Record a one-sided OI observation (base units) and recompute the window metrics."""
        obs = self._obs
        if obs and t < obs[-1].t:
            self.late_dropped += 1
            return
        if obs and t == obs[-1].t:
            obs[-1].oi = oi  # a restatement of the same instant: same interval, newer value
        else:
            prev_oi = obs[-1].oi if obs else None
            entry = _Obs(t, oi)
            self._collect_pending(entry)
            obs.append(entry)
            if len(obs) > 1:
                self._window.add_sum(entry.volume)
            if prev_oi is not None and oi == prev_oi and entry.volume.value() > 0.0:
                self._unchanged_polls += 1
            else:
                self._unchanged_polls = 0
            self._advance_reference(t)
        self.oi = oi
        self._recompute()

    def _collect_pending(self, entry: _Obs) -> None:
        """Move the trades at or before the new observation into its interval."""
        if self._folded_t is not None and self._folded_t <= entry.t:
            entry.volume.add_sum(self._folded)
            self._folded.clear()
            self._folded_t = None
        pending = self._pending
        volume = entry.volume
        while pending and pending[0][0] <= entry.t:
            volume.add(pending.popleft()[1])
        if not self._obs:
            # The first observation is everyone's earliest possible reference: nothing before it is used.
            volume.clear()

    def _advance_reference(self, t: int) -> None:
        obs = self._obs
        edge = t - self.window_ns
        while len(obs) >= 2 and (obs[1].t <= edge or len(obs) > _MAX_OBSERVATIONS):
            obs.popleft()
            # obs[0] is now the reference: its interval ends at the reference, so it leaves the window.
            self._window.sub_sum(obs[0].volume)

    def _recompute(self) -> None:
        obs = self._obs
        last = obs[-1]
        ref = obs[0]
        self.stale = self._unchanged_polls >= OI_STALE_POLLS
        if ref is last:
            self.chg_pct = None
            self.open_ratio = None
            self.consistency = None
            self.partial = False
            self.inconsistent = False
            return
        d_oi = last.oi - ref.oi
        self.partial = last.t - ref.t < self.window_ns
        self.chg_pct = d_oi / ref.oi if ref.oi > 0.0 and not self.partial else None
        volume = self._window.value()
        if volume <= 0.0:
            # No trades: the ratio is 0/0 (unknown, not 0) or x/0 (inconsistent) -- null either way (issue 11).
            self.consistency = None
            self.open_ratio = None
            self.inconsistent = d_oi != 0.0
            return
        ratio = d_oi / volume
        self.consistency = abs(ratio)
        self.inconsistent = self.consistency > 1.0 + self.tolerance
        self.open_ratio = 1.0 if ratio > 1.0 else -1.0 if ratio < -1.0 else ratio

    def reference_time(self) -> int | None:
        """Exchange time of the reference observation (the window's start), None before the first one."""
        return self._obs[0].t if self._obs else None

    def volume_in_window(self) -> float:
        """V over `(t_ref, t_last]` as it stands now (late trades included)."""
        return self._window.value()
