"""Real payloads for the bus benchmark: the packaged Bybit sample replayed through the engine, made reusable.

Sits under `flowgauge.bench` and feeds `bench.bus`. The payloads are what `flowgauge replay --out` writes for
the sample (metric payloads of every trigger and the status payloads, ~1.2 KB of JSON each), produced by the
same replay and engine, once, before anything is timed.

Each payload is sent many times, so a few fields are rewritten per pass to keep every message a distinct
update, as live: `book_seq` and `ts_exchange` grow by a pass offset (they make the JetStream `Nats-Msg-Id`, and
a repeated id would be de-duplicated by the server, i.e. less work than live), and `ts_publish` is stamped
when the message is handed to the publisher (the latency is measured from it). The values are spliced into
the encoded bytes, never re-encoded, so rendering a message costs about a microsecond.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from flowgauge.replay.replay import replay
from flowgauge.simulate import DATA_DIR

__all__ = ["SAMPLE", "PayloadSet", "load_payloads"]

SAMPLE = DATA_DIR / "bybit-linear-2026-08.jsonl.zst"

_FIELDS = re.compile(rb'"(book_seq|ts_exchange|ts_publish)":(-?\d+)')
# A pass shifts ids and exchange times past the sample's own range, so they keep increasing like live ones.
_SEQ_STEP = 10**9
_TS_STEP = 10**12  # ns: about 17 minutes per pass


@dataclass(frozen=True, slots=True)
class _Template:
    topic: str
    parts: tuple[bytes, ...]  # the payload's bytes around the rewritten numbers (len(fields) + 1 parts)
    fields: tuple[tuple[str, int], ...]  # (field name, value in the sample), in order of appearance


def _template(topic: str, payload: bytes) -> _Template:
    parts: list[bytes] = []
    fields: list[tuple[str, int]] = []
    start = 0
    for match in _FIELDS.finditer(payload):
        parts.append(payload[start:match.start(2)])
        fields.append((match.group(1).decode(), int(match.group(2))))
        start = match.end(2)
    parts.append(payload[start:])
    return _Template(topic, tuple(parts), tuple(fields))


class PayloadSet:
    """The sample's payloads in publish order; `render(i, ts_publish)` makes the i-th message of the run.

    Message i is payload `i % len` of pass `i // len`; passes shift `book_seq` and `ts_exchange`.
    """

    def __init__(self, messages: list[tuple[str, bytes]]) -> None:
        if not messages:
            raise ValueError("no payloads")
        self._templates = [_template(topic, payload) for topic, payload in messages]
        sizes = [len(payload) for _, payload in messages]
        self.count = len(messages)
        self.mean_bytes = statistics.fmean(sizes)
        self.min_bytes = min(sizes)
        self.max_bytes = max(sizes)
        self.topics = sorted({topic for topic, _ in messages})

    def render(self, index: int, ts_publish: int) -> tuple[str, bytes]:
        template = self._templates[index % self.count]
        shift = index // self.count
        values: list[bytes] = []
        for name, value in template.fields:
            if name == "ts_publish":
                values.append(str(ts_publish).encode())
            elif name == "book_seq":
                values.append(str(value + shift * _SEQ_STEP).encode())
            else:
                values.append(str(value + shift * _TS_STEP).encode())
        parts = template.parts
        pieces = [parts[0]]
        for value_bytes, part in zip(values, parts[1:], strict=True):
            pieces.append(value_bytes)
            pieces.append(part)
        return template.topic, b"".join(pieces)


def load_payloads(sample: Path = SAMPLE) -> PayloadSet:
    """Replay `sample` through the engine (as `flowgauge replay --out` does) and keep what it published."""
    published: list[tuple[str, bytes]] = []
    replay([sample], lambda topic, payload: published.append((topic, payload)))
    return PayloadSet(published)
