"""L1 OFI from the best-quote stream (metrics.ofi_l1): the metrics.md 1.5 vector exact, the 1.1 invariants, the 1.4
validity rules (no flow across an invalid period, stale / crossed / restarted quotes), the "since the previous
payload" accounting of `ofi_l1`, the derived mode, and identical output over both cores' window classes."""

from __future__ import annotations

import itertools
import math
import random
from types import ModuleType
from typing import Any

import pytest

from flowgauge import core
from flowgauge.book.l2 import L2Book
from flowgauge.metrics import windows as py_windows
from flowgauge.metrics.ofi import mirror, ofi_event
from flowgauge.metrics.ofi_l1 import BEST_QUOTE, DERIVED, FIELDS, OfiL1, l1_event

_S = 1_000_000_000
_MS = 1_000_000
T0 = 1_700_000_000 * _S

# metrics.md 1.5, tick 0.1. S0: bid 100.0x5, ask 100.1x3; then S1..S6 with their CKS e_n.
S0 = (100.0, 5.0, 100.1, 3.0)
VECTOR = [
    ((100.0, 7.0, 100.1, 3.0), 2.0),
    ((100.0, 7.0, 100.1, 1.0), 2.0),
    ((100.0, 7.0, 100.2, 4.0), 1.0),
    ((100.1, 2.0, 100.2, 4.0), 2.0),
    ((100.0, 7.0, 100.2, 4.0), -2.0),
    ((100.0, 7.0, 100.1, 5.0), -5.0),
]


def window_modules() -> list[Any]:
    mods: list[Any] = [pytest.param(py_windows, id="python")]
    if core.fallback_reason() is None:
        mods.append(pytest.param(core.compiled_module(), id="compiled"))
    else:  # a checkout without the built core must say so, not pass quietly
        mods.append(pytest.param(None, id="compiled", marks=pytest.mark.xfail(reason=core.fallback_reason())))
    return mods


def valid_book(bid: tuple[float, float] = (100.0, 5.0), ask: tuple[float, float] = (100.1, 3.0)) -> L2Book:
    book = L2Book()
    book.load([bid], [ask], 1, T0)
    return book


def payload(l1: OfiL1, ts: int, book: Any = True) -> dict[str, Any]:
    out: dict[str, Any] = {"coverage": {}}
    flags: set[str] = set()
    l1.fill(valid_book() if book is True else book, out, ts, flags)
    out["quality"] = sorted(flags)
    return out


def started(win: ModuleType) -> OfiL1:
    """A family whose book is VALID (one book message applied), fed S0 as its first best quote."""
    l1 = OfiL1(win)
    l1.on_book(valid_book(), T0)
    l1.on_best_quote(*S0, T0)
    return l1


@pytest.mark.parametrize("win", window_modules())
def test_hand_computed_vector_one_payload_per_quote(win: ModuleType) -> None:
    l1 = started(win)
    first = payload(l1, T0)
    assert first["ofi_l1"] is None  # the first state yields no e_n: no interval to measure yet
    assert first["source_granularity"] == BEST_QUOTE
    got = []
    for i, (state, _) in enumerate(VECTOR, start=1):
        l1.on_best_quote(*state, T0 + i * _MS)
        got.append(payload(l1, T0 + i * _MS)["ofi_l1"])
    assert got == [e for _, e in VECTOR] == [2.0, 2.0, 1.0, 2.0, -2.0, -5.0]
    last = payload(l1, T0 + 6 * _MS)
    assert last["ofi_l1"] == 0.0  # nothing since the previous payload
    assert last["ofi_l1_1s"] == last["ofi_l1_10s"] == last["ofi_l1_60s"] == 0.0  # OFI(S0 -> S6) = 0
    assert l1.events == 6


@pytest.mark.parametrize("win", window_modules())
def test_ofi_l1_sums_every_quote_since_the_previous_payload(win: ModuleType) -> None:
    """Additivity: the payload after S3 carries e_1 + e_2 + e_3, the one after S6 the rest."""
    l1 = started(win)
    payload(l1, T0)
    for i, (state, _) in enumerate(VECTOR, start=1):
        l1.on_best_quote(*state, T0 + i * _MS)
        if i == 3:
            assert payload(l1, T0 + i * _MS)["ofi_l1"] == 5.0
    after = payload(l1, T0 + 6 * _MS)
    assert after["ofi_l1"] == -5.0
    assert after["ofi_l1_1s"] == 0.0


@pytest.mark.parametrize("win", window_modules())
def test_a_quote_stamped_after_the_payload_is_held_back(win: ModuleType) -> None:
    l1 = started(win)
    l1.on_best_quote(*VECTOR[0][0], T0 + 10 * _MS)  # +2 at t0 + 10 ms
    l1.on_best_quote(*VECTOR[1][0], T0 + 30 * _MS)  # +2 at t0 + 30 ms
    early = payload(l1, T0 + 20 * _MS)
    assert early["ofi_l1"] == 2.0
    assert early["ofi_l1_1s"] == 2.0
    later = payload(l1, T0 + 30 * _MS)
    assert later["ofi_l1"] == 2.0  # the held-back one, counted once
    assert later["ofi_l1_1s"] == 4.0


def test_l1_event_is_the_case_table() -> None:
    rng = random.Random(7)
    prices = [99.9, 100.0, 100.1, 100.2, -math.inf, math.inf]
    for _ in range(2000):
        a = (rng.choice([*prices[:4], -math.inf]), rng.choice([0.0, 1.0, 2.5, 7.0]))
        b = (rng.choice([*prices[:4], math.inf]), rng.choice([0.0, 1.0, 2.5, 7.0]))
        c = (rng.choice([*prices[:4], -math.inf]), rng.choice([0.0, 1.0, 2.5, 7.0]))
        d = (rng.choice([*prices[:4], math.inf]), rng.choice([0.0, 1.0, 2.5, 7.0]))
        prev, new = (*a, *b), (*c, *d)
        assert l1_event(*prev, *new) == ofi_event(prev, new)
        assert l1_event(*mirror(prev), *mirror(new)) == -ofi_event(prev, new)  # mirror symmetry, exact


def test_pure_cancel_at_an_unchanged_best_bid_is_minus_x() -> None:
    assert l1_event(100.0, 5.0, 100.1, 3.0, 100.0, 3.5, 100.1, 3.0) == -1.5


@pytest.mark.parametrize("win", window_modules())
def test_no_flow_across_an_invalid_book(win: ModuleType) -> None:
    l1 = started(win)
    l1.on_best_quote(*VECTOR[0][0], T0 + 1 * _MS)  # +2 pending
    l1.on_book_invalid(T0 + 2 * _MS)
    assert payload(l1, T0 + 2 * _MS, book=None)["ofi_l1"] is None
    l1.on_best_quote(100.0, 1.0, 100.1, 9.0, T0 + 3 * _MS)  # while invalid: ignored
    l1.on_book(valid_book(), T0 + 4 * _MS)
    l1.on_best_quote(100.0, 50.0, 100.1, 1.0, T0 + 5 * _MS)  # first state after the resync: no e_n
    assert payload(l1, T0 + 5 * _MS)["ofi_l1"] is None  # the first state's own time: nothing to measure yet
    out = payload(l1, T0 + 5 * _MS + 1)
    assert out["ofi_l1"] == 0.0  # the pending +2 went with the invalid period
    assert out["ofi_l1_1s"] == 2.0  # real flow before the gap stays in the windows
    assert out["coverage"]["ofi_l1_1s"] == "PARTIAL"
    l1.on_best_quote(100.0, 51.0, 100.1, 1.0, T0 + 6 * _MS)
    assert payload(l1, T0 + 6 * _MS)["ofi_l1"] == 1.0


@pytest.mark.parametrize("win", window_modules())
def test_quotes_before_the_book_is_valid_count_nothing(win: ModuleType) -> None:
    l1 = OfiL1(win)
    l1.on_best_quote(*S0, T0)
    l1.on_best_quote(*VECTOR[0][0], T0 + _MS)
    out = payload(l1, T0 + _MS)
    assert out["ofi_l1"] is None
    assert out["ofi_l1_10s"] is None
    assert out["source_granularity"] == BEST_QUOTE


@pytest.mark.parametrize("win", window_modules())
def test_stale_crossed_and_restarted_quotes(win: ModuleType) -> None:
    l1 = OfiL1(win)
    l1.on_book(valid_book(), T0)
    l1.on_best_quote(*S0, T0, seq=10)
    l1.on_best_quote(100.0, 9.0, 100.1, 3.0, T0 + _MS, seq=9)  # older id: dropped
    assert l1.stale_dropped == 1
    l1.on_best_quote(100.0, 6.0, 100.1, 3.0, T0 + 2 * _MS, seq=11)
    assert payload(l1, T0 + 2 * _MS)["ofi_l1"] == 1.0
    l1.on_best_quote(100.1, 6.0, 100.1, 3.0, T0 + 3 * _MS, seq=12)  # locked: data error, state forgotten
    assert l1.crossed == 1
    out = payload(l1, T0 + 3 * _MS)
    assert out["ofi_l1"] is None
    assert "RESET" in out["quality"]
    l1.on_best_quote(100.0, 6.0, 100.1, 3.0, T0 + 4 * _MS, seq=13)  # first state again
    l1.on_best_quote(100.0, 8.0, 100.1, 3.0, T0 + 5 * _MS, seq=1, reset=True)  # stream restart
    l1.on_best_quote(100.0, 9.0, 100.1, 3.0, T0 + 6 * _MS, seq=2)
    assert payload(l1, T0 + 6 * _MS)["ofi_l1"] == 1.0
    assert "RESET" not in payload(l1, T0 + 70 * _S)["quality"]


@pytest.mark.parametrize("win", window_modules())
def test_derived_mode_follows_the_book_top(win: ModuleType) -> None:
    l1 = OfiL1(win)
    book = L2Book()
    book.load([(100.0, 5.0)], [(100.1, 3.0)], 1, T0)
    l1.on_book(book, T0)
    book.apply([(100.0, 7.0)], [], 2, T0 + _MS)
    l1.on_book(book, T0 + _MS)
    book.apply([], [(100.1, 0.0), (100.2, 4.0)], 3, T0 + 2 * _MS)
    l1.on_book(book, T0 + 2 * _MS)
    out = payload(l1, T0 + 2 * _MS, book=book)
    assert out["source_granularity"] == DERIVED
    assert out["ofi_l1"] == 2.0 + 3.0  # bid +2; ask 100.1x3 retreated: +q_prev
    # The first best quote switches the source: the windows start afresh.
    l1.on_best_quote(100.0, 7.0, 100.2, 4.0, T0 + 3 * _MS)
    out = payload(l1, T0 + 3 * _MS, book=book)
    assert out["source_granularity"] == BEST_QUOTE
    assert out["ofi_l1_60s"] == 0.0
    assert out["ofi_l1"] is None  # the new source's first state, at the payload's time
    book.apply([(100.0, 1.0)], [], 4, T0 + 4 * _MS)
    l1.on_book(book, T0 + 4 * _MS)  # ignored for L1 now
    assert payload(l1, T0 + 4 * _MS, book=book)["ofi_l1"] == 0.0


def test_pending_is_bounded_and_keeps_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("flowgauge.metrics.ofi_l1.MAX_PENDING", 100)
    l1 = OfiL1(py_windows)
    l1.on_book(valid_book(), T0)
    size = 5.0
    l1.on_best_quote(100.0, size, 100.1, 3.0, T0)
    for i in range(1, 1001):
        size += 0.5 if i % 3 else -0.25
        l1.on_best_quote(100.0, size, 100.1, 3.0, T0 + i * 1000)
    assert len(l1._pending_t) <= 101
    assert l1.pending_folded > 0
    assert payload(l1, T0 + _S)["ofi_l1"] == pytest.approx(size - 5.0, abs=1e-9)


def _random_run(win: ModuleType, seed: int, batch_payloads: int, invalid: bool = True) -> list[tuple[Any, ...]]:
    """A random quote stream (with invalid periods unless `invalid` is False) and payloads every `batch_payloads`
    quotes; the outputs."""
    rng = random.Random(seed)
    l1 = OfiL1(win)
    l1.on_book(valid_book(), T0)
    bid, ask, t, out = 100.0, 100.1, T0, []
    for i in range(3000):
        t += rng.randrange(1, 40) * _MS
        step = rng.random()
        if step < 0.1:
            bid = round(bid + rng.choice([-0.1, 0.1]), 1)
            ask = round(max(ask + rng.choice([-0.1, 0.1]), bid + 0.1), 1)
        if step > 0.995 and invalid:
            l1.on_book_invalid(t)
        elif step > 0.99:
            l1.on_book(valid_book(), t)
        ts_quote = t - rng.randrange(0, 3) * _MS  # a little out of order, as venues are
        l1.on_best_quote(bid, rng.uniform(0.001, 50.0), ask, rng.uniform(0.001, 50.0), ts_quote, seq=i)
        if i % batch_payloads == 0:
            got = payload(l1, t)
            out.append((*tuple(got[key] for key in FIELDS), tuple(got["quality"])))
    got = payload(l1, t + 10 * _MS)  # a last payload after every quote
    out.append((*tuple(got[key] for key in FIELDS), tuple(got["quality"])))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_both_cores_identical(seed: int) -> None:
    if core.fallback_reason() is not None:
        pytest.fail(f"compiled core unavailable: {core.fallback_reason()}")
    python = _random_run(py_windows, seed, 7)
    compiled = _random_run(core.compiled_module(), seed, 7)
    assert python == compiled  # bit for bit (floats compare exactly)


def test_sum_of_ofi_l1_equals_the_flow_whatever_the_payload_cadence() -> None:
    """T15-style: the L1 flow summed over payloads does not depend on how often payloads come (between resets:
    the e_n not yet published when the book goes invalid are dropped with its state)."""
    totals = []
    for every in (1, 5, 50):
        rows = _random_run(py_windows, 3, every, invalid=False)
        totals.append(math.fsum(row[0] for row in rows if row[0] is not None))
    assert totals[0] == pytest.approx(totals[1], abs=1e-6)
    assert totals[0] == pytest.approx(totals[2], abs=1e-6)


def test_fields_are_the_family_keys() -> None:
    from flowgauge.metrics.families import FAMILIES

    assert FAMILIES["ofi_l1"] == FIELDS
    assert list(itertools.chain(FIELDS)) == [
        "ofi_l1", "ofi_l1_1s", "ofi_l1_10s", "ofi_l1_60s", "ofi_l1_ew_10s", "source_granularity",
    ]  # fmt: skip
