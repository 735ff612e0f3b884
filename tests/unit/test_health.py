"""HealthBoard: the latest failure per configured venue and book, counts per cause, nothing unbounded."""

from __future__ import annotations

from flowgauge.telemetry.health import HealthBoard

T0 = 1_796_400_000_000_000_000


def test_latest_error_per_venue_and_per_affected_book() -> None:
    clock = iter(range(T0, T0 + 10))
    board = HealthBoard({"okx": ["BTC/USDT:USDT", "ETH/USDT:USDT"]}, clock=lambda: next(clock))
    assert board.venue_error("okx") is None and board.book_error("okx", "BTC/USDT:USDT") is None

    board.record("okx", "markets", "http_403", "HTTP 403 Forbidden", ["BTC/USDT:USDT", "ETH/USDT:USDT"])
    board.record("okx", "rest:snapshot", "timeout", "/books: TimeoutError", ["ETH/USDT:USDT"])
    board.record("okx", "rest:long_short", "connect", "refused")  # a poll: no book affected

    assert board.venue_error("okx").cause == "connect"  # type: ignore[union-attr]
    btc, eth = board.book_error("okx", "BTC/USDT:USDT"), board.book_error("okx", "ETH/USDT:USDT")
    assert btc is not None and btc.cause == "http_403" and btc.where == "markets"
    assert eth is not None and eth.cause == "timeout"
    assert btc.as_dict() == {
        "cause": "http_403",
        "where": "markets",
        "message": "HTTP 403 Forbidden",
        "time": "2026-12-04T16:00:00.000Z",
    }
    assert board.counts("okx") == {"http_403": 1, "timeout": 1, "connect": 1}


def test_unconfigured_venues_books_and_causes_cannot_grow_the_board() -> None:
    board = HealthBoard({"okx": ["BTC/USDT:USDT"]})
    board.record("bybit", "ws", "dns", "x", ["BTC/USDT:USDT"])
    board.record("okx", "ws", "made-up", "x", ["DOGE/USDT:USDT"])
    assert board.venue_error("bybit") is None and board.counts("bybit") == {}
    assert board.book_error("okx", "DOGE/USDT:USDT") is None
    assert board.counts("okx") == {"other": 1}
