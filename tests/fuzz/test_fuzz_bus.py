"""Fuzzing the embedded bus's client protocol over a real websocket against a real EmbeddedBus.

Per example a fresh bus is started on a loopback port with one well-behaved subscriber (the witness). A second
client sends one to four control messages, mutated from real ones (text frames, and binary frames, which is how
invalid UTF-8 arrives), and each must be answered with a JSON reply or end in a clean close of that client's
connection, within a bound. Afterwards the bus must still serve: a payload published then reaches the witness,
a new client can subscribe, and the bus logged no failed task.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.fuzz.mutations import mutated
from tests.fuzz.profiles import examples
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from flowgauge.publish.embedded import EmbeddedBus

TOPIC = "flowgauge.v1.bybit.BTC-USDT-USDT"
SEEDS = [
    '{"op":"subscribe","patterns":["flowgauge.v1.>"]}',
    '{"op":"subscribe","patterns":["flowgauge.v1.bybit.*","flowgauge.v1.status.>"],"id":7}',
    '{"op":"unsubscribe","patterns":["flowgauge.v1.>"],"id":"a"}',
    '{"op":"subscribe","patterns":["flowgauge.v1.*.BTC-USDT-USDT"],"id":"req-1"}',
]
REPLY_TIMEOUT_S = 5.0


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def _subscribe(port: int) -> ClientConnection:
    ws = await connect(f"ws://127.0.0.1:{port}", open_timeout=5)
    await ws.send(SEEDS[0])
    reply = orjson.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT_S))
    assert reply["op"] == "subscribed", reply
    return ws


async def _scenario(messages: list[str | bytes]) -> None:
    failures = _Failures()
    logger = logging.getLogger("flowgauge.publish.embedded")
    logger.addHandler(failures)
    bus = EmbeddedBus(port=0)
    try:
        await bus.start()
        port = bus.bound_port
        witness = await _subscribe(port)
        fuzzer = await connect(f"ws://127.0.0.1:{port}", open_timeout=5, max_size=None)
        closed = False
        for message in messages:
            try:
                await fuzzer.send(message)
                reply = await asyncio.wait_for(fuzzer.recv(), REPLY_TIMEOUT_S)
            except ConnectionClosed:
                closed = True  # the server may end a misbehaving client: cleanly, with a close frame
                break
            except TimeoutError:
                raise AssertionError(f"no reply and no close within {REPLY_TIMEOUT_S} s for {message!r:.200}") from None
            answer = orjson.loads(reply)
            assert isinstance(answer, dict) and ("op" in answer or "topic" in answer), answer
        if closed:
            assert fuzzer.close_code is not None
        # The bus keeps serving: the witness gets a new payload, and a newcomer can subscribe.
        bus.publish(TOPIC, b'{"n":1}')
        while True:
            frame = orjson.loads(await asyncio.wait_for(witness.recv(), REPLY_TIMEOUT_S))
            if frame.get("topic") == TOPIC and not frame.get("snapshot"):
                break
        newcomer = await _subscribe(port)
        await newcomer.close()
        await witness.close()
        await fuzzer.close()
    finally:
        await bus.close()
        logger.removeHandler(failures)
    assert not failures.records, [r.getMessage() for r in failures.records]


control_messages = st.lists(
    st.one_of(
        mutated(SEEDS),
        mutated(SEEDS).map(lambda m: m.encode() if isinstance(m, str) else m),  # binary frames too
        st.text(max_size=50),
        st.binary(max_size=50),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=examples())
@given(messages=control_messages)
def test_control_messages(messages: list[str | bytes]) -> None:
    asyncio.run(_scenario(messages))
