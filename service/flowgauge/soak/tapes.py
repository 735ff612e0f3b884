"""Many-instrument recordings for the soak: a packaged venue recording replicated under new coin names.

Sits under `flowgauge.soak`, beside the simulators it feeds; it only rewrites recording lines (text), it parses
no venue payload and imports nothing of the daemon. The simulators serve whatever a recording holds (the
instruments in its REST metadata answers, the streams in its frames), so a recording whose every coin name
(`BTC`, `ETH`; in lower case only as `btcusdt`-style stream names, since `eth` is
also in `method`) is rewritten to `R07BTC`, `R07ETH`, ... holds a new,
independent pair of instruments with the recorded market's shape, ids and timing. Copy `k` of a frame keeps
the recorded receive time: the copies play side by side, so the stream rate grows with the copies.

Only the coin names change. Prices, sizes and sequence ids are the recording's, so every copy's book follows
the same valid sequence (each copy is still checked on its own: its truth and its payloads are its own).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import zstandard

__all__ = ["COINS", "replica_coin", "replicate_recording"]

COINS = ("BTC", "ETH")  # the coins of the packaged recordings that get renamed
_HEADER = b'{"t":"header"'
_CONNECT = b'{"t":"connect"'


def replica_coin(coin: str, copy: int) -> str:
    """The coin name of `coin` in copy `copy` (0-based): `R00BTC`, `R01BTC`, ... (letters and digits only, so
    every venue's symbol grammar takes it)."""
    return f"R{copy:02d}{coin}"


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as stream:
        rest = b""
        while chunk := stream.read(1 << 16):
            rest += chunk
            *lines, rest = rest.split(b"\n")
            yield from lines
        if rest:
            yield rest


def replicate_recording(source: Path, target: Path, copies: int, coins: Sequence[str] = COINS) -> int:
    """Write `target`: `source` with every line that names one of `coins` repeated `copies` times, the coins
    renamed per copy (`replica_coin`); the header and connection lines once. Returns the lines written.

    Raises:
        ValueError: `copies` < 1.
        OSError: `source` unreadable or `target` unwritable.
    """
    if copies < 1:
        raise ValueError("copies must be >= 1")
    lower = [f"{c.lower()}usdt" for c in coins]
    pattern = re.compile("|".join(re.escape(c) for c in (*coins, *lower)).encode())
    renamed = [
        {c.encode(): replica_coin(c, k).encode() for c in coins}
        | {f"{c.lower()}usdt".encode(): f"{replica_coin(c, k).lower()}usdt".encode() for c in coins}
        for k in range(copies)
    ]
    written = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out, zstandard.ZstdCompressor(level=3).stream_writer(out) as writer:
        for line in _lines(source):
            if not line.strip():
                continue
            if line.startswith((_HEADER, _CONNECT)) or pattern.search(line) is None:
                writer.write(line + b"\n")
                written += 1
                continue
            for table in renamed:
                writer.write(pattern.sub(lambda m, t=table: t[m.group(0)], line) + b"\n")  # type: ignore[misc]
                written += 1
    return written
