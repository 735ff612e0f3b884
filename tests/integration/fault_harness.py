"""Checks the Binance USD-M and OKX fault tests (issue 10 items 1-2) add to `tests/fault_scenarios.py` (whose
`Bus`, `periods`, `fired` and `compare` they use).

A test starts one venue simulator and one real daemon (`flowgauge run`, one payload per applied message), applies
a scenario of faults back to back once every book is VALID, then hands what it saw to these:

1. `check_payloads`: zero wrong payloads, every VALID payload (book-triggered or not) against the simulator's
   truth at its `book_seq` (`truth.Comparator`);
2. `check_recovery`: each fault's books go INVALID (or their connection drops) within `detect[kind]` of the
   firing and are VALID again within `bounds[kind]` of it (the issue's bound: resync interval + snapshot latency +
   2 s, plus what the fault itself adds); a kind in `never_invalidate` must leave the book VALID, a kind in
   `min_took` must not recover sooner (a slow snapshot, a Retry-After); and other instruments untouched: every
   INVALID period of a book has a fault aimed at it (or at its connection) that fired just before, and while one
   instrument is faulted the others keep publishing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from tests.fault_scenarios import Fired, Message, compare, periods
from tests.procs import TIMEOUT_FACTOR

from flowgauge.simulate.truth import Comparator, TruthRecord

# How long another instrument may publish nothing while one is faulted (it streams several payloads a second);
# scaled like every wall-time bound, for a loaded CI box.
QUIET_S = 2.0 * TIMEOUT_FACTOR


@dataclass
class Rules:
    """How one venue's faults show (kinds absent from `bounds` are not checked for recovery)."""

    symbols: Mapping[str, str]  # payload symbol -> venue id
    venue: str  # the payload topic's venue part
    bounds: Mapping[str, float]  # kind -> s from firing to VALID again
    detect: Mapping[str, float]  # kind -> s from firing to INVALID at most
    connection_kinds: Collection[str]  # faults that hit every book of the connection
    clock_kinds: Collection[str] = ("clock_skew", "clock_jump")  # invalidate nothing
    never_invalidate: Collection[str] = ()  # e.g. a duplicate diff the venue's rule drops harmlessly
    may_invalidate: Collection[str] = ()  # handled in stream, though a resync would be right too
    # Kinds that fire on a request made while the book is already INVALID (a resync's snapshot, a reconnect's
    # subscribe): checked inside the period that contains their firing.
    inside_period: Collection[str] = ("slow_snapshot", "rate_limit", "sub_error")
    min_took: Mapping[str, float] = field(default_factory=dict)  # kind -> VALID again no sooner than this
    size_factor: Mapping[str, float] = field(default_factory=dict)  # payload symbol -> venue size unit in base

    def targets(self, fault: Fired) -> set[str]:
        if fault.kind in self.connection_kinds or fault.kind in self.clock_kinds or fault.instrument is None:
            return set(self.symbols)
        by_id = {v: k for k, v in self.symbols.items()}
        return {by_id[fault.instrument]}


def check_payloads(
    messages: list[Message], truth: Mapping[str, tuple[list[TruthRecord], int]], rules: Rules
) -> Comparator:
    """Assert 1: every payload against the truth at its book_seq; returns the comparator (for its counts)."""
    if rules.size_factor:
        # `compare` with sizes converted: venue units (OKX contracts) -> the payloads' base units.
        comparator = Comparator(rules.symbols, rules.size_factor)
        for symbol, (records, evicted) in truth.items():
            assert evicted == 0, f"{symbol}: truth ring evicted {evicted} records; raise truth_capacity"
            comparator.add_truth(symbol, records)
        for _, topic, payload in messages:
            if topic.startswith("flowgauge.v1.status."):
                if payload["state"] != "VALID":
                    comparator.not_valid(payload["symbol"])
            elif topic.startswith(f"flowgauge.v1.{rules.venue}."):
                comparator.check(payload)
    else:
        comparator = compare(messages, truth, rules.symbols, rules.venue)
    assert comparator.wrong == [], f"{len(comparator.wrong)} wrong payloads, first: {comparator.wrong[:5]}"
    # Nothing skipped: a payload of a symbol the comparator does not know would never have been compared.
    assert comparator.untracked == 0, f"{comparator.untracked} {rules.venue} payloads of an untracked symbol"
    valid = sum(
        1
        for _, topic, p in messages
        if topic.startswith(f"flowgauge.v1.{rules.venue}.") and p.get("book_state") == "VALID"
    )
    assert comparator.checked == valid, (comparator.checked, valid)
    print(
        f"{rules.venue} faults: {comparator.checked} of {valid} VALID payloads compared, {comparator.ofi_checked} ofi"
        f" ({comparator.ofi_multi} over several truth steps), {comparator.unverified_ofi} ofi unverifiable"
    )
    return comparator


def check_recovery(messages: list[Message], faults: list[Fired], applied: float, rules: Rules) -> list[str]:
    """Asserts 2 and 3: the problems found (empty when every fault behaved)."""
    spans = {symbol: periods(messages, symbol, applied) for symbol in rules.symbols}
    problems = []
    for fault in faults:
        if fault.kind in rules.clock_kinds:
            continue
        for symbol in rules.targets(fault):
            window = rules.detect.get(fault.kind, 0.0)
            hits = [p for p in spans[symbol] if fault.t - 0.05 <= p[0] <= fault.t + window]
            if fault.kind in rules.inside_period:
                hits = [p for p in spans[symbol] if p[0] <= fault.t + 0.05 <= p[1]] or hits
            if fault.kind in rules.never_invalidate:
                if hits:
                    problems.append(f"{fault.kind} on {symbol}: INVALID at +{hits[0][0] - fault.t:.2f} s")
                continue
            if not hits:
                # Landed on a book that was not VALID already (on a loaded machine an earlier fault's recovery can
                # still be under way): the period it fell into must then end within this fault's bound too.
                hits = [p for p in spans[symbol] if p[0] <= fault.t + 0.05 <= p[1]]
            if not hits:
                if fault.kind not in rules.may_invalidate:
                    problems.append(f"{fault.kind} on {symbol}: never INVALID")
                continue
            took = hits[0][1] - fault.t
            # Several faults in one period (a disconnect and the refused subscribe of its reconnect): the period
            # may last as long as the latest of them allows.
            bound = max(
                rules.bounds[f.kind] + f.t - fault.t
                for f in faults
                if f.kind in rules.bounds and symbol in rules.targets(f) and fault.t <= f.t <= hits[0][1]
            )
            if took > bound:
                problems.append(f"{fault.kind} on {symbol}: VALID again after {took:.2f} s > {bound:.2f} s")
            if took < rules.min_took.get(fault.kind, 0.0):
                problems.append(f"{fault.kind} on {symbol}: VALID again after {took:.2f} s, too soon")
    for symbol, found in spans.items():
        for start, _ in found:
            causes = [
                f
                for f in faults
                if f.kind not in rules.clock_kinds
                and f.kind not in rules.never_invalidate
                and symbol in rules.targets(f)
                and f.t - 0.05 <= start <= f.t + rules.detect.get(f.kind, 1.5)
            ]
            if not causes:
                problems.append(f"{symbol}: INVALID at +{start - applied:.2f} s with no fault aimed at it")
    for fault in faults:
        others = set(rules.symbols) - rules.targets(fault)
        for other in others:
            published = [
                t
                for t, _, p in messages
                if p.get("symbol") == other and p.get("book_state") == "VALID" and fault.t <= t <= fault.t + QUIET_S
            ]
            if not published and not any(p[0] <= fault.t + 1 <= p[1] for p in spans[other]):
                problems.append(f"{fault.kind} on {fault.instrument}: {other} published nothing for {QUIET_S:.1f} s")
    return problems


def timeline(messages: list[Message], faults: list[Fired], applied: float, rules: Rules) -> str:
    """The faults and the not-VALID periods, in seconds from `applied` (for a failure's message)."""
    lines = [f"fault {f.kind} {f.instrument} +{f.t - applied:.2f}" for f in faults]
    for symbol in rules.symbols:
        found = periods(messages, symbol, applied)
        lines.append(f"{symbol} not VALID: " + ", ".join(f"+{a - applied:.2f}..+{b - applied:.2f}" for a, b in found))
    return "\n".join(lines)
