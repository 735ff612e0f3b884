"""Cross-venue aggregates per base asset (issue 11 item 10), published on `flowgauge.v1.agg.<BASE>`.

Pure, synchronous, sans-I/O: no asyncio, no sockets, no prometheus_client. The engine hands it every metrics
payload it publishes (`observe`) and every book that leaves VALID (`invalidate`); it answers with the aggregate
payloads that are due, which the engine encodes and publishes. It never reads a book or a clock itself.

Members. Every perpetual (unified symbol `BASE/QUOTE:SETTLE`, no expiry suffix) joins the group of its base
currency, whatever it is margined in: `BTC/USDT:USDT`, `BTC/USDC:USDC` and `BTC/USD:BTC` all aggregate under `BTC`.
Dated futures stay out (their basis to spot would read as premium dispersion). Quote currencies are treated
as one dollar: USDT, USDC and USD notionals are summed as they are, and the stablecoins' own basis shows up in
the premium fields (a few bps in calm markets).

A group publishes only while its members span at least `min_venues` venues (default 2): with one venue there is
nothing cross-venue to say, and a single-venue daemon publishes no aggregates at all.

Cadence, on exchange time (deterministic in replay). Aggregates fall on the multiples of `interval_ns` of
exchange time. A group's clock is the newest `ts_exchange` among its members' payloads (a venue flagged
CLOCK_SKEW does not move it). When a payload arrives later than the next multiple B not yet published, the
aggregate at B is published first, from every member's latest payload with `ts_exchange <= B` (the members'
state over `(.., B]`, as a window is half-open `(t - T, t]`), and then the payload is taken in. A quiet stretch
spanning several multiples yields one aggregate, at the last multiple before the payload that ended it; the
group publishes nothing while none of its members publishes.

Exclusion. A member counts in an aggregate when its latest payload has a VALID book and a mid, it has not been
invalidated since, its latest `ts_exchange` is within `stale_ns` of B, and that payload is not flagged
CLOCK_SKEW. Every other member is listed in `excluded` with why (`INVALID`, `STALE`, `CLOCK_SKEW`, `NO_DATA`).

Values (all in quote currency unless said; null when no counted member has the input):
- `oi_notional`: sum of the members' one-sided `oi_notional`; `oi_share[venue]` its venue's fraction of it.
- `ofi_notional_{1s,10s,60s}`: sum over members of `ofi_raw_<w> x mid`, each member's window evaluated at its
  own latest payload (at most `stale_ns` before B). From the windows rather than from summing per-payload `ofi`,
  so the value does not depend on throttling or conflation.
- `depth_{bid,ask}_{10,25}bps`: sums of the members' band depths (already quote notional).
- `mid_median`: median of the counted members' mids; `premium_bps[venue:symbol]` = 1e4 * (mid / mid_median - 1).
- `premium_dispersion_bps`: root mean square of those premiums (the spread of the venues' mids around their
  median, in bps; null with fewer than two counted members); `premium_range_bps`: max - min premium.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "DEFAULT_INTERVAL_MS",
    "DEFAULT_MIN_VENUES",
    "DEFAULT_STALE_S",
    "EXCLUDE_REASONS",
    "OFI_WINDOWS",
    "CrossVenueAggregates",
    "base_of",
    "premium_stats",
]

DEFAULT_INTERVAL_MS = 1000
DEFAULT_STALE_S = 5.0
DEFAULT_MIN_VENUES = 2
OFI_WINDOWS = ("1s", "10s", "60s")
_DEPTH_KEYS = ("depth_bid_10bps", "depth_ask_10bps", "depth_bid_25bps", "depth_ask_25bps")
EXCLUDE_REASONS = ("INVALID", "STALE", "CLOCK_SKEW", "NO_DATA")
_SCHEMA = "flowgauge.v1"
_VALID = "VALID"
_CLOCK_SKEW = "CLOCK_SKEW"


def base_of(symbol: str, base: str) -> str | None:
    """The aggregate group of an instrument: its base currency for a perpetual, None for anything else.

    Args:
        symbol: ccxt unified symbol; a perpetual is `BASE/QUOTE:SETTLE`, a dated future has `-YYMMDD` after it.
        base: the instrument's base currency (Instrument.base).
    """
    _, colon, settle = symbol.partition(":")
    if not colon or "-" in settle or not base:
        return None
    return base.upper()


def premium_stats(mids: Mapping[str, float]) -> tuple[float | None, dict[str, float], float | None, float | None]:
    """Median mid, each member's premium over it in bps, their RMS (dispersion) and range.

    Args:
        mids: member key -> mid (positive).

    Returns:
        (median, premiums, dispersion, range): median None and premiums empty with no mid; dispersion and
        range None with fewer than two mids (one venue has nothing to disperse from).
    """
    if not mids:
        return None, {}, None, None
    ordered = sorted(mids.values())
    n = len(ordered)
    half = n // 2
    median = ordered[half] if n % 2 else (ordered[half - 1] + ordered[half]) / 2.0
    premiums = {key: 1e4 * (mid / median - 1.0) for key, mid in mids.items()}
    if n < 2:
        return median, premiums, None, None
    values = list(premiums.values())
    dispersion = math.sqrt(math.fsum(p * p for p in values) / n)
    return median, premiums, dispersion, max(values) - min(values)


class _Member:
    """One instrument of a group: its latest payload (at or before the group's clock) and validity."""

    __slots__ = ("latest", "symbol", "valid", "venue")

    def __init__(self, venue: str, symbol: str) -> None:
        self.venue = venue
        self.symbol = symbol
        self.latest: Mapping[str, Any] | None = None
        self.valid = False  # the book was VALID at the latest payload and has not been invalidated since


class _Group:
    """The members of one base asset and the group's exchange-time clock."""

    __slots__ = ("base", "clock", "last_boundary", "latest", "members", "seq")

    def __init__(self, base: str) -> None:
        self.base = base
        self.members: dict[tuple[str, str], _Member] = {}
        self.clock: int | None = None  # newest ts_exchange taken in (CLOCK_SKEW payloads aside)
        self.last_boundary: int | None = None  # the last multiple published (or passed before the first payload)
        self.seq = 0
        self.latest: dict[str, Any] | None = None  # the last aggregate built (for Prometheus)


class CrossVenueAggregates:
    """Groups of perpetuals by base asset, fed payloads, building aggregates on exchange-time multiples.

    Args:
        interval_ms: the aggregate cadence, in ms of exchange time (> 0).
        stale_s: a member whose latest payload is older than this at the aggregate's time is excluded (> 0).
        min_venues: a group publishes only while its members span at least this many venues (>= 1).
    """

    def __init__(
        self,
        interval_ms: float = DEFAULT_INTERVAL_MS,
        stale_s: float = DEFAULT_STALE_S,
        min_venues: int = DEFAULT_MIN_VENUES,
    ) -> None:
        if not interval_ms > 0 or not stale_s > 0:
            raise ValueError("interval_ms and stale_s must be > 0")
        if min_venues < 1:
            raise ValueError("min_venues must be >= 1")
        self.min_venues = min_venues
        self.interval_ms = interval_ms
        self.interval_ns = int(interval_ms * 1_000_000)
        self.stale_ns = int(stale_s * 1e9)
        self._groups: dict[str, _Group] = {}
        self._member_group: dict[tuple[str, str], _Group] = {}

    def track(self, venue: str, symbol: str, base: str) -> str | None:
        """Make (venue, symbol) a member of its base's group. Returns the group's base, None when not aggregated."""
        group_base = base_of(symbol, base)
        if group_base is None:
            return None
        group = self._groups.get(group_base)
        if group is None:
            group = self._groups[group_base] = _Group(group_base)
        key = (venue, symbol)
        group.members.setdefault(key, _Member(venue, symbol))
        self._member_group[key] = group
        return group_base

    def remove(self, venue: str, symbol: str) -> None:
        """The instrument is gone (retired): it leaves its group, and later aggregates no longer list it."""
        group = self._member_group.pop((venue, symbol), None)
        if group is not None:
            group.members.pop((venue, symbol), None)

    def invalidate(self, venue: str, symbol: str) -> None:
        """The book left VALID: the member is excluded until a payload with a VALID book arrives."""
        group = self._member_group.get((venue, symbol))
        if group is not None:
            group.members[(venue, symbol)].valid = False

    def observe(self, venue: str, symbol: str, payload: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Take in one published metrics payload; returns the `(base, aggregate)` due before it (at most one).

        The aggregate's `ts_publish` is 0: the caller stamps it when it publishes.
        """
        key = (venue, symbol)
        group = self._member_group.get(key)
        if group is None:
            return []
        member = group.members[key]
        ts = payload.get("ts_exchange")
        if not isinstance(ts, int):
            return []
        quality = payload.get("quality")
        skewed = isinstance(quality, list) and _CLOCK_SKEW in quality
        due: list[tuple[str, dict[str, Any]]] = []
        interval = self.interval_ns
        if not skewed:
            if group.last_boundary is None:
                # Start at the multiple at or before the first payload: the first aggregate is the next one.
                group.last_boundary = ((ts - 1) // interval) * interval
            elif group.clock is not None and ts > group.clock:
                boundary = ((ts - 1) // interval) * interval  # the last multiple strictly before ts
                if boundary > group.last_boundary:
                    group.last_boundary = boundary
                    if len({venue for venue, _ in group.members}) >= self.min_venues:
                        due.append((group.base, self._build(group, boundary)))
            if group.clock is None or ts > group.clock:
                group.clock = ts
        member.latest = payload
        member.valid = payload.get("book_state") == _VALID
        return due

    def latest(self) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(base, last aggregate built) for every group that has built one (for Prometheus, at scrape time)."""
        for base, group in self._groups.items():
            if group.latest is not None:
                yield base, group.latest

    def _build(self, group: _Group, boundary: int) -> dict[str, Any]:
        counted: list[_Member] = []
        excluded: list[dict[str, Any]] = []
        for member in sorted(group.members.values(), key=lambda m: (m.venue, m.symbol)):
            reason = self._exclusion(member, boundary)
            if reason is None:
                counted.append(member)
            else:
                last = member.latest.get("ts_exchange") if member.latest is not None else None
                excluded.append({"venue": member.venue, "symbol": member.symbol, "reason": reason, "ts_exchange": last})
        group.seq += 1
        aggregate: dict[str, Any] = {
            "schema": _SCHEMA,
            "base": group.base,
            "seq": group.seq,
            "ts_exchange": boundary,
            "ts_publish": 0,
            "interval_ms": self.interval_ms,
            "venues": sorted({m.venue for m in counted}),
            "instruments": [f"{m.venue}:{m.symbol}" for m in counted],
            "excluded": excluded,
        }
        # Open interest and each venue's share of it.
        oi_by_venue: dict[str, float] = {}
        for m in counted:
            oi = _number(m, "oi_notional")
            if oi is not None:
                oi_by_venue[m.venue] = oi_by_venue.get(m.venue, 0.0) + oi
        oi_total = math.fsum(oi_by_venue.values()) if oi_by_venue else None
        aggregate["oi_notional"] = oi_total
        aggregate["oi_share"] = {venue: oi / oi_total for venue, oi in sorted(oi_by_venue.items())} if oi_total else {}
        # Order-flow imbalance in notional: each member's window times its mid.
        for window in OFI_WINDOWS:
            flows = []
            for m in counted:
                ofi, mid = _number(m, f"ofi_raw_{window}"), _number(m, "mid")
                if ofi is not None and mid is not None:
                    flows.append(ofi * mid)
            aggregate[f"ofi_notional_{window}"] = math.fsum(flows) if flows else None
        for depth_key in _DEPTH_KEYS:
            depths = [v for v in (_number(m, depth_key) for m in counted) if v is not None]
            aggregate[depth_key] = math.fsum(depths) if depths else None
        mids = {f"{m.venue}:{m.symbol}": mid for m in counted if (mid := _number(m, "mid")) is not None}
        median, premiums, dispersion, spread = premium_stats(mids)
        aggregate["mid_median"] = median
        aggregate["premium_bps"] = premiums
        aggregate["premium_dispersion_bps"] = dispersion
        aggregate["premium_range_bps"] = spread
        group.latest = aggregate
        return aggregate

    def _exclusion(self, member: _Member, boundary: int) -> str | None:
        latest = member.latest
        if latest is None:
            return "NO_DATA"
        if not member.valid or _number(member, "mid") is None:
            return "INVALID"
        quality = latest.get("quality")
        if isinstance(quality, list) and _CLOCK_SKEW in quality:
            return "CLOCK_SKEW"
        ts = latest.get("ts_exchange")
        if not isinstance(ts, int) or boundary - ts > self.stale_ns:
            return "STALE"
        return None


def _number(member: _Member, key: str) -> float | None:
    """A finite number from the member's latest payload, None for null, missing or non-numbers."""
    latest = member.latest
    value = latest.get(key) if latest is not None else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
