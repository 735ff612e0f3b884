"""Embedded websocket fan-out over real loopback websockets (flowgauge.publish.embedded).

Every test starts its own `EmbeddedBus` on 127.0.0.1 port 0 with a fresh registry and talks to it with the
real `websockets` client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus

from flowgauge.publish.codec import decode_frame, encode
from flowgauge.publish.embedded import EmbeddedBus
from flowgauge.publish.topics import book_topic, status_topic
from flowgauge.telemetry.instruments import Telemetry

pytestmark = pytest.mark.integration

TIMEOUT = 5.0
BTC = book_topic("bybit", "BTC/USDT:USDT")
ETH = book_topic("bybit", "ETH/USDT:USDT")
BINANCE_BTC = book_topic("binanceusdm", "BTC/USDT:USDT")
BTC_STATUS = status_topic("bybit", "BTC/USDT:USDT")
PAD = "x" * 2000  # makes socket buffers fill after a few MB instead of after a million messages
# Upper bound on messages published while waiting for a stalled client's socket to back up (~80 MB).
MAX_PUBLISHED = 40_000


def _sample(registry: CollectorRegistry, name: str, labels: dict[str, str] | None = None) -> float:
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


async def _request(ws: ClientConnection, request: object) -> dict[str, object]:
    await ws.send(request if isinstance(request, str) else orjson.dumps(request).decode())
    async with asyncio.timeout(TIMEOUT):
        reply = orjson.loads(await ws.recv())
    assert isinstance(reply, dict)
    return reply


async def _subscribe(ws: ClientConnection, *patterns: str) -> None:
    reply = await _request(ws, {"op": "subscribe", "patterns": list(patterns)})
    assert reply["op"] == "subscribed", reply
    assert set(patterns) <= set(reply["patterns"])  # type: ignore[arg-type]


async def _frames(ws: ClientConnection, n: int) -> list[tuple[str, dict[str, object]]]:
    out = []
    async with asyncio.timeout(TIMEOUT):
        for _ in range(n):
            out.append(decode_frame(await ws.recv()))
    return out


class FastReader:
    """Reads one client continuously; `wait_for(n)` returns once n frames have arrived."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seqs: list[int] = []
        self._changed = asyncio.Condition()
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        async for message in self.ws:
            _, payload = decode_frame(message)
            async with self._changed:
                self.seqs.append(int(payload["seq"]))  # type: ignore[call-overload]
                self._changed.notify_all()

    async def wait_for(self, n: int) -> None:
        async with asyncio.timeout(TIMEOUT), self._changed:
            await self._changed.wait_for(lambda: len(self.seqs) >= n)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task])


async def _publish_until(bus: EmbeddedBus, fast: FastReader, done: Callable[[], bool], batch: int) -> int:
    """Publish in batches, letting the fast reader catch up after each, until `done()`; return the count.

    `batch` must be below the client queue size: a batch is published without yielding, so it all sits in the
    fast client's buffer before its relay runs.
    """
    published = 0
    while not done():
        assert published < MAX_PUBLISHED, "the stalled client's socket never backed up"
        for _ in range(batch):
            bus.publish(BTC, encode({"seq": published, "pad": PAD}))
            published += 1
        await fast.wait_for(published)
    return published


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def bus(registry: CollectorRegistry) -> AsyncIterator[EmbeddedBus]:
    async with EmbeddedBus("127.0.0.1", 0, None, 1000, Telemetry(registry)) as bus:
        yield bus


def _uri(bus: EmbeddedBus, query: str = "") -> str:
    return f"ws://127.0.0.1:{bus.bound_port}/{query}"


async def test_client_receives_only_frames_matching_its_pattern(bus: EmbeddedBus) -> None:
    async with connect(_uri(bus)) as ws:
        await _subscribe(ws, "flowgauge.v1.bybit.>")

        for seq, topic in enumerate([BTC, BINANCE_BTC, BTC_STATUS, ETH]):
            bus.publish(topic, encode({"seq": seq}))

        assert await _frames(ws, 2) == [(BTC, {"seq": 0}), (ETH, {"seq": 3})]
        # Nothing else is on the wire: the next frame is the next matching publish.
        bus.publish(BTC, encode({"seq": 4}))
        assert await _frames(ws, 1) == [(BTC, {"seq": 4})]


async def test_frames_are_text_messages_in_codec_frame_format(bus: EmbeddedBus) -> None:
    async with connect(_uri(bus)) as ws:
        await _subscribe(ws, BTC)
        payload = encode({"venue": "bybit", "mid": 65000.5})
        bus.publish(BTC, payload)
        async with asyncio.timeout(TIMEOUT):
            message = await ws.recv()
        assert isinstance(message, str)  # a text frame
        assert message.encode() == b'{"topic":"' + BTC.encode() + b'","payload":' + payload + b"}"


async def test_unsubscribe_stops_delivery(bus: EmbeddedBus) -> None:
    async with connect(_uri(bus)) as ws:
        await _subscribe(ws, BTC, ETH)
        reply = await _request(ws, {"op": "unsubscribe", "patterns": [BTC], "id": 7})
        assert reply == {"op": "subscribed", "patterns": [ETH], "id": 7}
        bus.publish(BTC, encode({"seq": 1}))
        bus.publish(ETH, encode({"seq": 2}))
        assert await _frames(ws, 1) == [(ETH, {"seq": 2})]


async def test_bad_requests_get_error_replies_and_the_connection_stays_usable(bus: EmbeddedBus) -> None:
    async with connect(_uri(bus)) as ws:
        bad_requests: list[tuple[object, str]] = [
            ("this is not json", "invalid JSON"),
            ("[1, 2]", "expected a JSON object"),
            ({"op": "publish", "patterns": [BTC]}, "unknown op"),
            ({"op": "subscribe"}, "non-empty list of strings"),
            ({"op": "subscribe", "patterns": []}, "non-empty list of strings"),
            ({"op": "subscribe", "patterns": [1]}, "non-empty list of strings"),
            ({"op": "subscribe", "patterns": ["flowgauge..bybit"]}, "empty token"),
            ({"op": "subscribe", "patterns": ["flowgauge.>.bybit"]}, "last token"),
        ]
        for request, expected in bad_requests:
            reply = await _request(ws, request)
            assert reply["op"] == "error", request
            assert expected in str(reply["error"]), (request, reply)

        # A refused request subscribes nothing, even its valid patterns.
        reply = await _request(ws, {"op": "subscribe", "patterns": [ETH, "a..b"]})
        assert reply["op"] == "error"
        bus.publish(ETH, encode({"seq": 0}))

        # Still the same open connection: a good request works and frames flow.
        await _subscribe(ws, BTC)
        bus.publish(BTC, encode({"seq": 1}))
        assert await _frames(ws, 1) == [(BTC, {"seq": 1})]


async def test_slow_client_drops_are_counted_while_fast_client_gets_everything(
    registry: CollectorRegistry,
) -> None:
    """A client that never reads fills its socket, then its buffer, then drops (oldest first).

    Timeline: both clients subscribe; batches of 20 messages are published and the fast client must have each
    batch before the next one is published; after a few MB the stalled client's socket is full, its relay
    blocks, its 50-message buffer fills and drops begin. The fast client must still have every message.
    """
    telemetry = Telemetry(registry)
    # max_queue=1: the stalled client's library stops reading its socket after one frame.
    async with (
        EmbeddedBus("127.0.0.1", 0, None, 50, telemetry, slow_client_overflows=10**9) as bus,
        connect(_uri(bus), max_queue=1) as stalled,
        connect(_uri(bus)) as fast_ws,
    ):
        await _subscribe(stalled, "flowgauge.v1.>")
        await _subscribe(fast_ws, "flowgauge.v1.bybit.>")
        assert _sample(registry, "flowgauge_fanout_clients") == 2
        fast = FastReader(fast_ws)
        try:
            # Keep going a little past the first drop, so several drops are counted.
            published = await _publish_until(
                bus,
                fast,
                lambda: _sample(registry, "flowgauge_fanout_dropped_messages_total") >= 100,
                batch=20,
            )
            assert fast.seqs == list(range(published))
        finally:
            await fast.stop()

        dropped = _sample(registry, "flowgauge_fanout_dropped_messages_total")
        assert dropped >= 100
        dropped_labels = {"backend": "embedded", "reason": "subscriber_full"}
        assert _sample(registry, "flowgauge_publish_dropped_total", dropped_labels) == dropped
        published_total = _sample(registry, "flowgauge_published_messages_total", {"backend": "embedded"})
        assert published_total == published
        # Not yet past the slow-client threshold: still connected.
        assert _sample(registry, "flowgauge_fanout_disconnects_total", {"reason": "slow"}) == 0
        assert _sample(registry, "flowgauge_fanout_clients") == 2

        # The stalled client catches up: it gets every message that was not dropped, in order; the dropped
        # ones were the oldest, so its buffer's 50 newest messages arrive last.
        received: list[int] = []
        async with asyncio.timeout(TIMEOUT):
            while not received or received[-1] != published - 1:
                _, payload = decode_frame(await stalled.recv())
                received.append(int(payload["seq"]))  # type: ignore[call-overload]
        assert received == sorted(set(received))
        assert len(received) == published - dropped
        assert received[-50:] == list(range(published - 50, published))


async def test_client_overflowing_k_times_in_a_row_is_disconnected_as_slow(
    registry: CollectorRegistry,
) -> None:
    """After K=20 consecutive overflows the stalled client is closed with 1013; the fast one is unaffected."""
    telemetry = Telemetry(registry)
    async with (
        EmbeddedBus("127.0.0.1", 0, None, 10, telemetry, slow_client_overflows=20) as bus,
        connect(_uri(bus), max_queue=1) as stalled,
        connect(_uri(bus)) as fast_ws,
    ):
        await _subscribe(stalled, "flowgauge.v1.>")
        await _subscribe(fast_ws, "flowgauge.v1.>")
        fast = FastReader(fast_ws)
        try:
            published = await _publish_until(
                bus,
                fast,
                lambda: _sample(registry, "flowgauge_fanout_disconnects_total", {"reason": "slow"}) > 0,
                batch=5,
            )
            # The fast client keeps receiving after the slow one was cut off.
            bus.publish(BTC, encode({"seq": published, "pad": PAD}))
            await fast.wait_for(published + 1)
            assert fast.seqs == list(range(published + 1))
        finally:
            await fast.stop()
        assert _sample(registry, "flowgauge_fanout_dropped_messages_total") >= 20

        # The stalled client now reads: it gets what was already in flight, then the close frame.
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(TIMEOUT):
                async for _ in stalled:
                    pass
                await stalled.recv()  # iteration ends silently only on 1000/1001; force the exception
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1013
    assert _sample(registry, "flowgauge_fanout_disconnects_total", {"reason": "slow"}) == 1


async def test_token_is_required_when_configured(registry: CollectorRegistry) -> None:
    async with EmbeddedBus("127.0.0.1", 0, "s3cret", 100, Telemetry(registry)) as bus:
        rejected = [
            (_uri(bus), {}),  # no token at all
            (_uri(bus), {"Authorization": "Bearer wrong"}),
            (_uri(bus), {"Authorization": "Basic czNjcmV0"}),
            (_uri(bus, "?token=wrong"), {}),
        ]
        for uri, headers in rejected:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(uri, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 401
        assert _sample(registry, "flowgauge_fanout_auth_rejected_total") == len(rejected)

        # The right token works, in the header or (for browsers) in the query string.
        async with (
            connect(_uri(bus), additional_headers={"Authorization": "Bearer s3cret"}) as by_header,
            connect(_uri(bus, "?token=s3cret")) as by_query,
        ):
            await _subscribe(by_header, BTC)
            await _subscribe(by_query, BTC)
            bus.publish(BTC, encode({"seq": 1}))
            assert await _frames(by_header, 1) == [(BTC, {"seq": 1})]
            assert await _frames(by_query, 1) == [(BTC, {"seq": 1})]
        assert _sample(registry, "flowgauge_fanout_auth_rejected_total") == len(rejected)


async def test_unknown_path_is_refused(bus: EmbeddedBus) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"ws://127.0.0.1:{bus.bound_port}/other"):
            pass
    assert refused.value.response.status_code == 404


async def test_close_sends_going_away_and_counts_shutdown(registry: CollectorRegistry) -> None:
    bus = EmbeddedBus("127.0.0.1", 0, None, 100, Telemetry(registry))
    await bus.start()
    port = bus.bound_port
    async with connect(_uri(bus)) as ws:
        await _subscribe(ws, BTC)
        await bus.close()
        with pytest.raises(ConnectionClosedOK) as closed:
            async with asyncio.timeout(TIMEOUT):
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1001
    assert _sample(registry, "flowgauge_fanout_disconnects_total", {"reason": "shutdown"}) == 1
    assert _sample(registry, "flowgauge_fanout_clients") == 0
    # No task outlives close(), and nothing listens any more.
    assert not bus._tasks
    with pytest.raises(OSError):
        async with connect(f"ws://127.0.0.1:{port}/", open_timeout=TIMEOUT):
            pass


async def test_close_is_bounded_with_a_client_that_never_reads(registry: CollectorRegistry) -> None:
    """close() must not wait forever for a peer whose socket is full: after close_timeout it aborts it."""
    bus = EmbeddedBus(
        "127.0.0.1", 0, None, 50, Telemetry(registry), slow_client_overflows=10**9, close_timeout=0.5
    )
    await bus.start()
    # close_timeout on the client too: its own closing handshake cannot complete against an aborted peer.
    async with connect(_uri(bus), max_queue=1, close_timeout=0.5) as stalled, connect(_uri(bus)) as fast_ws:
        await _subscribe(stalled, "flowgauge.v1.>")
        await _subscribe(fast_ws, "flowgauge.v1.>")
        fast = FastReader(fast_ws)
        try:
            await _publish_until(
                bus, fast, lambda: _sample(registry, "flowgauge_fanout_dropped_messages_total") > 0, batch=20
            )
        finally:
            await fast.stop()

        async with asyncio.timeout(3.0):
            await bus.close()

        assert _sample(registry, "flowgauge_fanout_disconnects_total", {"reason": "shutdown"}) == 2
        assert _sample(registry, "flowgauge_fanout_clients") == 0
        assert not bus._tasks


# ------------------------------------------------------------------------------------------ current values


async def _raw_frames(ws: ClientConnection, n: int) -> list[dict[str, object]]:
    out = []
    async with asyncio.timeout(TIMEOUT):
        for _ in range(n):
            out.append(orjson.loads(await ws.recv()))
    return out


async def test_late_subscriber_gets_current_values_marked_snapshot_then_live_in_order(bus: EmbeddedBus) -> None:
    # Arrange: BTC published twice (only its latest counts), ETH, a status, and a topic the pattern excludes.
    bus.publish(BTC, encode({"seq": 1}))
    bus.publish(ETH, encode({"seq": 2}))
    bus.publish(BTC_STATUS, encode({"state": "VALID"}))
    bus.publish(BINANCE_BTC, encode({"seq": 3}))
    bus.publish(BTC, encode({"seq": 4}))

    async with connect(_uri(bus)) as ws:
        # Act: subscribe with nothing new published; the current values must arrive on their own.
        await _subscribe(ws, "flowgauge.v1.bybit.>", "flowgauge.v1.status.>")
        snapshot = await _raw_frames(ws, 3)
        bus.publish(BINANCE_BTC, encode({"seq": 5}))
        bus.publish(ETH, encode({"seq": 6}))
        bus.publish(BTC_STATUS, encode({"state": "INVALID"}))
        live = await _raw_frames(ws, 2)

    # Assert: one snapshot frame per matching topic with its latest payload, binance filtered out.
    assert sorted((f["topic"], orjson.dumps(f["payload"])) for f in snapshot) == sorted([
        (BTC, b'{"seq":4}'), (ETH, b'{"seq":2}'), (BTC_STATUS, b'{"state":"VALID"}'),
    ])
    assert all(f["snapshot"] is True for f in snapshot)
    assert live == [
        {"topic": ETH, "payload": {"seq": 6}},
        {"topic": BTC_STATUS, "payload": {"state": "INVALID"}},
    ]


async def test_snapshot_follows_the_pattern_and_is_not_repeated_for_topics_already_streamed(
    bus: EmbeddedBus,
) -> None:
    bus.publish(BTC, encode({"seq": 1}))
    bus.publish(ETH, encode({"seq": 2}))
    bus.publish(BTC_STATUS, encode({"state": "VALID"}))
    async with connect(_uri(bus)) as ws:
        await _subscribe(ws, BTC)
        assert await _raw_frames(ws, 1) == [{"topic": BTC, "payload": {"seq": 1}, "snapshot": True}]
        # A wider pattern brings the current values of the topics it adds, not BTC's again.
        await _subscribe(ws, "flowgauge.v1.*.*")
        assert await _raw_frames(ws, 1) == [{"topic": ETH, "payload": {"seq": 2}, "snapshot": True}]
        bus.publish(BTC, encode({"seq": 3}))
        assert await _raw_frames(ws, 1) == [{"topic": BTC, "payload": {"seq": 3}}]


async def test_subscribing_mid_stream_loses_and_reorders_nothing(bus: EmbeddedBus) -> None:
    # A publisher runs on the loop the whole time: the snapshot and the live stream must join without a gap.
    stop = asyncio.Event()

    async def publish_forever() -> None:
        seq = 0
        while not stop.is_set():
            bus.publish(BTC, encode({"seq": seq}))
            seq += 1
            await asyncio.sleep(0)

    publisher = asyncio.ensure_future(publish_forever())
    try:
        async with connect(_uri(bus)) as ws:
            await _subscribe(ws, BTC)
            frames = await _raw_frames(ws, 200)
    finally:
        stop.set()
        await publisher

    assert frames[0]["snapshot"] is True
    assert all("snapshot" not in f for f in frames[1:])
    seqs = [int(f["payload"]["seq"]) for f in frames]  # type: ignore[index, call-overload]
    assert seqs == list(range(seqs[0], seqs[0] + 200))


async def test_embedded_subscriber_messages_tell_snapshots_from_live(bus: EmbeddedBus) -> None:
    from flowgauge.client import BusMessage, EmbeddedSubscriber

    bus.publish(BTC_STATUS, encode({"state": "VALID"}))
    async with EmbeddedSubscriber(_uri(bus), ["flowgauge.v1.status.>"]) as sub:
        messages = sub.messages()
        async with asyncio.timeout(TIMEOUT):
            first = await anext(messages)
            bus.publish(BTC_STATUS, encode({"state": "INVALID"}))
            second = await anext(messages)
        await messages.aclose()
    assert first == BusMessage(BTC_STATUS, {"state": "VALID"}, snapshot=True)
    assert second == BusMessage(BTC_STATUS, {"state": "INVALID"}, snapshot=False)


async def test_embedded_subscriber_plain_iteration_still_yields_pairs_including_snapshots(bus: EmbeddedBus) -> None:
    from flowgauge.client import EmbeddedSubscriber

    bus.publish(BTC, encode({"seq": 1}))
    async with EmbeddedSubscriber(_uri(bus), [BTC]) as sub:
        received = []
        async with asyncio.timeout(TIMEOUT):
            async for topic, payload in sub:
                received.append((topic, payload))
                if len(received) == 1:
                    bus.publish(BTC, encode({"seq": 2}))
                else:
                    break
    assert received == [(BTC, {"seq": 1}), (BTC, {"seq": 2})]
