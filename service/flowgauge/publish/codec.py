"""Payload encoding and the fan-out wire frame: the one place payload bytes are produced.

Sits in `flowgauge.publish` between the engine (which builds one payload mapping per event) and the publishers
(which move opaque bytes). The engine calls `encode` once per event and every publisher ships the same bytes;
the embedded websocket fan-out wraps them with `frame` without decoding them again. Pure functions: must not
import asyncio, sockets or prometheus_client.

Wire frame of the embedded fan-out, one websocket text message per published payload:

    {"topic":"flowgauge.v1.bybit.BTC-USDT-USDT","payload":{...the encoded payload...}}

and, for a topic's current value replayed to a client that just subscribed (`snapshot_frame`):

    {"topic":"flowgauge.v1.bybit.BTC-USDT-USDT","payload":{...},"snapshot":true}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["decode_frame", "encode", "frame", "snapshot_frame"]

_FRAME_HEAD = b'{"topic":'
_FRAME_MID = b',"payload":'
_FRAME_TAIL = b"}"
_SNAPSHOT_TAIL = b',"snapshot":true}'


def encode(payload: Mapping[str, Any]) -> bytes:
    """Encode one payload as compact UTF-8 JSON.

    Plain orjson, no options: keys must be strings, NaN and infinities become `null` (which is also what
    metrics.md asks for an undefined value), numpy values are rejected rather than silently converted, so the
    engine has to hand over Python floats and ints.

    Raises:
        TypeError: (orjson.JSONEncodeError) on a value orjson cannot serialize.
    """
    return orjson.dumps(payload)


def frame(topic: str, payload_bytes: bytes) -> bytes:
    """Wrap already-encoded payload bytes in a fan-out frame `{"topic":...,"payload":...}`.

    The payload is spliced in by byte concatenation, never decoded and re-encoded: it must be the output of
    `encode` (one JSON object). The topic is JSON-escaped, so any string is safe.
    """
    return b"".join((_FRAME_HEAD, orjson.dumps(topic), _FRAME_MID, payload_bytes, _FRAME_TAIL))


def snapshot_frame(topic: str, payload_bytes: bytes) -> bytes:
    """Like `frame`, marked `"snapshot":true`: a topic's latest payload replayed on subscribe, not a new one."""
    return b"".join((_FRAME_HEAD, orjson.dumps(topic), _FRAME_MID, payload_bytes, _SNAPSHOT_TAIL))


def decode_frame(data: bytes | bytearray | memoryview | str) -> tuple[str, dict[str, Any]]:
    """Decode a fan-out frame into `(topic, payload)`; for clients and tests.

    Raises:
        ValueError: if `data` is not JSON (orjson.JSONDecodeError is a ValueError) or not a frame: an object
            with a string `topic` and an object `payload`.
    """
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise ValueError(f"frame must be a JSON object, got {type(obj).__name__}")
    topic = obj.get("topic")
    payload = obj.get("payload")
    if not isinstance(topic, str):
        raise ValueError("frame has no string 'topic'")
    if not isinstance(payload, dict):
        raise ValueError("frame has no object 'payload'")
    return topic, payload
