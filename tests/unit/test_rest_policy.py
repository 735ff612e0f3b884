"""Token bucket and Retry-After: the pure parts of the REST scheduler."""

from __future__ import annotations

import pytest

from flowgauge.connectors.rest import BANNED_RETRY_AFTER_S, DEFAULT_RETRY_AFTER_S, TokenBucket, retry_after_s


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_spends_burst_then_refills_at_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=10.0, capacity=20.0, clock=clock)
    assert bucket.wait_time(20) == 0.0
    bucket.spend(20)
    assert bucket.wait_time(5) == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.wait_time(5) == 0.0
    bucket.spend(5)
    clock.now += 100
    assert bucket.wait_time(20) == 0.0  # never saves more than capacity
    bucket.spend(20)
    assert bucket.wait_time(1) == pytest.approx(0.1)


def test_weight_above_capacity_waits_for_a_full_bucket_not_forever() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=1.0, capacity=5.0, clock=clock)
    bucket.spend(5)
    assert bucket.wait_time(50) == pytest.approx(5.0)


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [
        (429, "7", 7.0),
        (429, None, DEFAULT_RETRY_AFTER_S),
        (418, None, BANNED_RETRY_AFTER_S),
        (418, "300", 300.0),
        (429, "Wed, 21 Oct 2015 07:28:00 GMT", DEFAULT_RETRY_AFTER_S),
        (429, "-3", 0.0),
    ],
)
def test_retry_after(status: int, header: str | None, expected: float) -> None:
    assert retry_after_s(status, header) == expected
