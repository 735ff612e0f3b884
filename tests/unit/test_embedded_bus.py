"""In-process side of the embedded bus (flowgauge.publish.embedded) and the null publisher.

No sockets: the bus is built with `port=None`, so `start()` runs no websocket server.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from flowgauge.publish.base import NullPublisher, Publisher
from flowgauge.publish.codec import encode
from flowgauge.publish.embedded import EmbeddedBus, Message, Subscription
from flowgauge.publish.topics import book_topic, status_topic
from flowgauge.telemetry.instruments import Telemetry

TIMEOUT = 2.0

BTC = book_topic("bybit", "BTC/USDT:USDT")
ETH = book_topic("bybit", "ETH/USDT:USDT")
BINANCE_BTC = book_topic("binanceusdm", "BTC/USDT:USDT")
BTC_STATUS = status_topic("bybit", "BTC/USDT:USDT")


def _payload(seq: int) -> bytes:
    return encode({"seq": seq})


async def _take(sub: Subscription[Message], n: int) -> list[Message]:
    out: list[Message] = []
    async with asyncio.timeout(TIMEOUT):
        while len(out) < n:
            out.append(await anext(sub))
    return out


def _drain_nowait(sub: Subscription[Message]) -> list[Message]:
    out: list[Message] = []
    while (item := sub.get_nowait()) is not None:
        out.append(item)
    return out


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def bus(registry: CollectorRegistry):
    bus = EmbeddedBus(port=None, telemetry=Telemetry(registry))
    await bus.start()
    yield bus
    await bus.close()


def test_bus_and_null_publisher_satisfy_the_publisher_protocol() -> None:
    assert isinstance(EmbeddedBus(port=None), Publisher)
    assert isinstance(NullPublisher(), Publisher)


async def test_null_publisher_counts_and_drops() -> None:
    async with NullPublisher() as pub:
        pub.publish(BTC, b'{"a":1}')
        pub.publish(ETH, b"{}")
        assert pub.started
    assert pub.published == 2
    assert pub.published_bytes == 9
    assert pub.closed


async def test_patterns_deliver_matching_topics_only(bus: EmbeddedBus, registry: CollectorRegistry) -> None:
    # Arrange
    bybit = bus.subscribe("flowgauge.v1.bybit.>")
    btc_any_venue = bus.subscribe("flowgauge.v1.*.BTC-USDT-USDT")
    exact = bus.subscribe(ETH)
    status = bus.subscribe("flowgauge.v1.status.>")

    # Act
    for seq, topic in enumerate([BTC, BINANCE_BTC, ETH, BTC_STATUS]):
        bus.publish(topic, _payload(seq))

    # Assert: each subscription saw exactly the topics its pattern matches, in publish order.
    assert [t for t, _ in await _take(bybit, 2)] == [BTC, ETH]
    assert [t for t, _ in await _take(btc_any_venue, 2)] == [BTC, BINANCE_BTC]
    assert await _take(exact, 1) == [(ETH, _payload(2))]
    assert await _take(status, 1) == [(BTC_STATUS, _payload(3))]
    for sub in (bybit, btc_any_venue, exact, status):
        assert len(sub) == 0
    assert bus.published == 4
    assert registry.get_sample_value("flowgauge_published_messages_total", {"backend": "embedded"}) == 4


async def test_a_waiting_subscriber_is_woken_by_publish(bus: EmbeddedBus) -> None:
    sub = bus.subscribe("flowgauge.v1.>")
    parked = asyncio.Event()

    async def consume() -> Message:
        # set() and the call to anext() run in one step, so once `parked` is seen the consumer waits on its
        # empty buffer.
        parked.set()
        return await anext(sub)

    waiter = asyncio.ensure_future(consume())
    async with asyncio.timeout(TIMEOUT):
        await parked.wait()
        assert not waiter.done()
        bus.publish(BTC, _payload(1))
        assert await waiter == (BTC, _payload(1))


async def test_full_buffer_drops_oldest_and_counts(bus: EmbeddedBus, registry: CollectorRegistry) -> None:
    # Arrange: a subscriber that never reads, with room for 3 messages.
    sub = bus.subscribe("flowgauge.v1.bybit.>", maxsize=3)

    # Act
    for seq in range(8):
        bus.publish(BTC, _payload(seq))

    # Assert: the newest 3 survive, the 5 oldest were dropped and counted everywhere.
    assert sub.dropped == 5
    assert bus.dropped == 5
    dropped_labels = {"backend": "embedded", "reason": "subscriber_full"}
    assert registry.get_sample_value("flowgauge_publish_dropped_total", dropped_labels) == 5
    assert _drain_nowait(sub) == [(BTC, _payload(seq)) for seq in (5, 6, 7)]


async def test_non_reading_subscriber_does_not_delay_a_reading_one(bus: EmbeddedBus) -> None:
    """A reader awaits every message as it is published while a stalled subscriber overflows.

    Timeline: publish one message, the reader must have it before the next publish; 500 times. The stalled
    subscriber's buffer (10) overflows from message 11 on without affecting the reader.
    """
    stalled = bus.subscribe("flowgauge.v1.>", maxsize=10)
    reader = bus.subscribe("flowgauge.v1.bybit.>", maxsize=10)
    received: list[Message] = []

    for seq in range(500):
        bus.publish(BTC, _payload(seq))
        received.extend(await _take(reader, 1))

    assert received == [(BTC, _payload(seq)) for seq in range(500)]
    assert reader.dropped == 0
    assert stalled.dropped == 490
    assert len(stalled) == 10


async def test_publish_never_raises_on_overflow_and_keeps_order(bus: EmbeddedBus) -> None:
    sub = bus.subscribe(BTC, maxsize=1)
    for seq in range(1000):
        bus.publish(BTC, _payload(seq))
    assert sub.dropped == 999
    assert _drain_nowait(sub) == [(BTC, _payload(999))]


async def test_close_ends_iteration_after_buffered_messages(bus: EmbeddedBus) -> None:
    sub = bus.subscribe("flowgauge.v1.>")
    bus.publish(BTC, _payload(1))
    bus.publish(ETH, _payload(2))
    sub.close()
    bus.publish(BTC, _payload(3))  # after close: not delivered

    async def consume() -> list[Message]:
        return [item async for item in sub]

    async with asyncio.timeout(TIMEOUT):
        assert await consume() == [(BTC, _payload(1)), (ETH, _payload(2))]
    assert bus.subscription_count == 0


async def test_close_wakes_a_waiting_iterator(bus: EmbeddedBus) -> None:
    sub = bus.subscribe("flowgauge.v1.>")
    parked = asyncio.Event()

    async def consume() -> list[Message]:
        parked.set()
        return [item async for item in sub]

    task = asyncio.ensure_future(consume())
    async with asyncio.timeout(TIMEOUT):
        await parked.wait()
        assert not task.done()
        sub.close()
        assert await task == []


async def test_pattern_changes_invalidate_the_route_cache(bus: EmbeddedBus) -> None:
    sub = bus.subscribe(ETH)
    bus.publish(BTC, _payload(1))  # caches "BTC -> nobody"
    assert len(sub) == 0

    sub.add_patterns(["flowgauge.v1.*.BTC-USDT-USDT"])
    bus.publish(BTC, _payload(2))
    assert _drain_nowait(sub) == [(BTC, _payload(2))]

    sub.remove_patterns(["flowgauge.v1.*.BTC-USDT-USDT"])
    bus.publish(BTC, _payload(3))
    assert len(sub) == 0
    assert sub.patterns == (ETH,)

    late = bus.subscribe("flowgauge.v1.>")  # a new subscription must also see a cached topic
    bus.publish(BTC, _payload(4))
    assert _drain_nowait(late) == [(BTC, _payload(4))]


async def test_invalid_pattern_and_maxsize_are_rejected(bus: EmbeddedBus) -> None:
    with pytest.raises(ValueError, match="'>' is only allowed as the last token"):
        bus.subscribe("flowgauge.>.bybit")
    with pytest.raises(ValueError, match="maxsize"):
        bus.subscribe("flowgauge.v1.>", maxsize=0)
    sub = bus.subscribe(BTC)
    with pytest.raises(ValueError, match="empty token"):
        sub.add_patterns(["a..b"])
    assert sub.patterns == (BTC,)


async def test_closed_bus_ends_subscriptions_and_ignores_publish() -> None:
    bus = EmbeddedBus(port=None)
    await bus.start()
    sub = bus.subscribe("flowgauge.v1.>")
    await bus.close()
    await bus.close()  # idempotent
    assert sub.closed
    bus.publish(BTC, _payload(1))
    assert bus.published == 0
    with pytest.raises(RuntimeError, match="closed"):
        bus.subscribe("flowgauge.v1.>")
    with pytest.raises(RuntimeError, match="not running"):
        _ = bus.bound_port


async def test_latest_value_cache_keeps_one_payload_per_topic_and_counts_evictions(
    bus: EmbeddedBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowgauge.publish import embedded

    monkeypatch.setattr(embedded, "_MAX_LATEST", 2)
    bus.publish(BTC, _payload(1))
    bus.publish(ETH, _payload(2))
    bus.publish(BTC, _payload(3))  # a known topic replaces its value, evicting nothing
    assert (bus.latest(BTC), bus.latest(ETH), bus.latest_evicted) == (_payload(3), _payload(2), 0)

    bus.publish(BTC_STATUS, _payload(4))  # a third topic evicts the one first published longest ago
    assert (bus.latest(BTC), bus.latest(ETH), bus.latest(BTC_STATUS)) == (None, _payload(2), _payload(4))
    assert bus.latest_evicted == 1


def test_snapshot_frame_is_a_frame_marked_snapshot() -> None:
    import orjson

    from flowgauge.publish.codec import decode_frame, snapshot_frame

    data = snapshot_frame(BTC, _payload(7))
    assert orjson.loads(data) == {"topic": BTC, "payload": {"seq": 7}, "snapshot": True}
    assert decode_frame(data) == (BTC, {"seq": 7})
