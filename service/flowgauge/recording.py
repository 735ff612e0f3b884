"""Recordings of raw venue traffic: typed records, a streaming reader and a rotating zstd writer.

Sits in `service/replay` beside the replayer and the simulator. The file format is cryptofeed's
"format 2" (one JSON object per line, zstd-compressed), so recordings from either tool replay in
the other:

    {"t":"header","format":2,"exchange":"BYBIT","config":{...},"recorded":<unix s>}
    {"t":"http","conn":"BYBIT.http.1","ts":<unix s>,"url":"https://...","data":"<response body>"}
    {"t":"connect","conn":"BYBIT.ws.2","ts":<unix s>,"addr":"wss://..."}
    {"t":"send","conn":"BYBIT.ws.2","ts":<unix s>,"addr":"wss://...","data":"<text frame sent>"}
    {"t":"recv","conn":"BYBIT.ws.2","ts":<unix s>,"data":"<text frame received>"}

This module does file I/O only. It must not parse venue payloads (that is the connectors' job),
must not import asyncio (the writer is synchronous so the app can flush it from a worker thread),
and must never hold an unbounded amount of data in memory.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import msgspec
import zstandard

__all__ = [
    "EXCHANGE_VENUES",
    "FORMAT_VERSION",
    "MARKETS_CONN",
    "Connect",
    "Header",
    "Http",
    "ReadStats",
    "Record",
    "RecordingError",
    "RecordingWriter",
    "Recv",
    "Send",
    "iter_records",
    "read_header",
]

FORMAT_VERSION = 2
# `conn` suffix of the instrument-metadata answers a recorder fetched before streaming (`BYBIT.http.markets`):
# they describe the instruments; other `http` lines are answers the daemon acted on (polls, snapshots).
MARKETS_CONN = "http.markets"
# Header `exchange` names -> the venue (ccxt id) they record. Two spellings exist: cryptofeed's (the format's
# origin; its Binance USD-M is BINANCE_FUTURES) and flowgauge's own recorder's, the venue id upper-cased
# (BINANCEUSDM). Replay and the simulators both read recordings by this table.
EXCHANGE_VENUES: dict[str, str] = {
    "BYBIT": "bybit",
    "BINANCEUSDM": "binanceusdm",
    "BINANCE_FUTURES": "binanceusdm",
    "OKX": "okx",
    "DERIBIT": "deribit",
    "HYPERLIQUID": "hyperliquid",
}
MiB = 1 << 20
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_READ_CHUNK = 1 << 16  # decompressed bytes per read: bounded memory, and progress moves in small steps


class Header(msgspec.Struct, frozen=True, tag_field="t", tag="header"):
    """First line of every file: what was recorded. Unknown extra keys (cryptofeed adds some) are ignored."""

    format: int
    exchange: str
    config: dict[str, Any] = {}
    recorded: float = 0.0  # unix seconds when the file was started


class Http(msgspec.Struct, frozen=True, tag_field="t", tag="http"):
    """One REST response body, as text."""

    conn: str
    ts: float  # local receive time, unix seconds
    url: str
    data: str


class Connect(msgspec.Struct, frozen=True, tag_field="t", tag="connect"):
    """A websocket connection opened: `addr` is the only thing that tells linear from spot on Bybit."""

    conn: str
    ts: float
    addr: str


class Send(msgspec.Struct, frozen=True, tag_field="t", tag="send"):
    """A text frame we sent (subscriptions, pings)."""

    conn: str
    ts: float
    addr: str
    data: str


class Recv(msgspec.Struct, frozen=True, tag_field="t", tag="recv"):
    """A text frame the venue sent."""

    conn: str
    ts: float
    data: str


Record = Header | Http | Connect | Send | Recv

_KNOWN_TAGS = frozenset({"header", "http", "connect", "send", "recv"})
_DECODER = msgspec.json.Decoder(Record)
_ENCODER = msgspec.json.Encoder()


class RecordingError(ValueError):
    """A recording line could not be read. Carries the file, the 1-based line number and the reason."""

    def __init__(self, path: str | os.PathLike[str], line_no: int, why: str) -> None:
        self.path = Path(path)
        self.line_no = line_no
        self.why = why
        super().__init__(f"{self.path}:{line_no}: {why}")


@dataclass(slots=True)
class ReadStats:
    """What `iter_records` saw; pass one in to get the counts back from the generator."""

    lines: int = 0
    records: int = 0
    bytes_read: int = 0  # bytes of the file (compressed, if it is) consumed so far: progress through it
    skipped: collections.Counter[str] = field(default_factory=collections.Counter)  # unknown `t` -> count


def iter_records(path: str | os.PathLike[str], stats: ReadStats | None = None) -> Iterator[Record]:
    """Yield the records of a `.jsonl.zst` (any number of zstd frames) or plain `.jsonl` file, streaming.

    Compression is detected from the zstd magic number, not the file name. Blank lines are ignored,
    lines with an unknown `t` are skipped and counted in `stats.skipped`, and anything else that is not
    a valid record raises `RecordingError` naming the line.
    """
    p = Path(path)
    st = stats if stats is not None else ReadStats()
    with open(p, "rb") as fh:
        compressed = fh.read(4) == _ZSTD_MAGIC
        fh.seek(0)
        stream: BinaryIO = (
            zstandard.ZstdDecompressor().stream_reader(  # type: ignore[assignment]
                fh, read_size=_READ_CHUNK // 4, read_across_frames=True
            )
            if compressed
            else fh
        )
        for line in _iter_lines(stream, fh, p, st):
            st.lines += 1
            if not line.strip():
                continue
            record = _decode_line(line, p, st)
            if record is not None:
                st.records += 1
                yield record


def read_header(path: str | os.PathLike[str]) -> Header | None:
    """The file's header record, or None when its first record is not one (reads only that far).

    Raises:
        OSError: the file cannot be opened or read.
        RecordingError: its first line is not a valid record.
    """
    for record in iter_records(path):
        return record if isinstance(record, Header) else None
    return None


def _iter_lines(stream: BinaryIO, raw: BinaryIO, path: Path, st: ReadStats) -> Iterator[bytes]:
    """Split a byte stream on newlines in bounded chunks (one line may be a megabyte-sized REST body)."""
    tail = b""
    while True:
        try:
            chunk = stream.read(_READ_CHUNK)
        except zstandard.ZstdError as exc:
            raise RecordingError(path, st.lines + 1, f"zstd decompression failed: {exc}") from exc
        st.bytes_read = raw.tell()
        if not chunk:
            break
        parts = (tail + chunk).split(b"\n")
        tail = parts.pop()
        yield from parts
    if tail:
        yield tail  # last line without a trailing newline is still a line


def _decode_line(line: bytes, path: Path, st: ReadStats) -> Record | None:
    line_no = st.lines
    try:
        return _DECODER.decode(line)
    except msgspec.DecodeError as exc:
        why = str(exc)
    # Tell "a record kind we do not know" (skip, count) from "a broken line" (error).
    try:
        generic = msgspec.json.decode(line)
    except msgspec.DecodeError:
        raise RecordingError(path, line_no, f"not valid JSON: {why}") from None
    if not isinstance(generic, dict):
        raise RecordingError(path, line_no, f"expected a JSON object, got {type(generic).__name__}")
    tag = generic.get("t")
    if not isinstance(tag, str):
        raise RecordingError(path, line_no, "missing string field 't'")
    if tag not in _KNOWN_TAGS:
        st.skipped[tag] += 1
        return None
    raise RecordingError(path, line_no, f"bad {tag!r} record: {why}")


class RecordingWriter:
    """Append-only writer of the recording format with size/age rotation.

    The recording methods (`http`, `connect`, `send`, `recv`) only encode one line and append it to a
    bounded in-memory list, so they are cheap enough for the receive path. `flush()` does the file I/O:
    it compresses everything pending as one complete zstd frame and appends it to the current file, so
    every file is a valid zstd stream after every flush (a crash loses only what was never flushed).
    Call it from a thread or a periodic task; it is thread-safe against the recording methods.

    Each file starts with a header line. A file after the first also repeats the last `connect` line of
    every connection and the last metadata `http` response per URL written before it (URLs containing one
    of `carry_http_markers`), so a rotated file replays on its own: the simulator needs the connect
    address to tell linear from spot and the instruments list to answer REST.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        exchange: str,
        rotate_bytes: int = 64 * MiB,
        rotate_seconds: float = 3600.0,
        max_pending: int = 100_000,
        *,
        config: dict[str, Any] | None = None,
        level: int = 3,
        carry_http_markers: tuple[str, ...] = ("instruments", "exchangeInfo"),
        max_carry: int = 256,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.exchange = exchange
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.max_pending = max_pending
        self.config = dict(config or {})
        self.carry_http_markers = carry_http_markers
        self.max_carry = max_carry
        self.dropped = 0  # records refused because `max_pending` was reached or the writer was closed
        self.written = 0  # records written to files (headers and carried lines not included)
        self.files: list[Path] = []  # every file started, oldest first
        self._cctx = zstandard.ZstdCompressor(level=level)
        # (carry key or None, encoded line). The carry key marks lines worth repeating in the next file.
        self._pending: list[tuple[tuple[str, str] | None, bytes]] = []
        self._closed = False
        self._lock = threading.Lock()  # guards _pending/_closed/dropped: producers vs. a flushing thread
        self._io_lock = threading.Lock()  # serialises flush/rotate/close
        self._carry: collections.OrderedDict[tuple[str, str], bytes] = collections.OrderedDict()
        self._fh: BinaryIO | None = None
        self._file_bytes = 0
        self._file_started = 0.0  # time.monotonic() when the current file was opened
        self._last_stamp_ms = 0

    # -- recording (hot path: encode + append, no I/O) ---------------------------------------------

    def http(self, conn: str, url: str, data: str | bytes, ts: float | None = None) -> None:
        carry = ("http", url) if any(m in url for m in self.carry_http_markers) else None
        self._append(Http(conn, _now(ts), url, _text(data)), carry)

    def connect(self, conn: str, addr: str, ts: float | None = None) -> None:
        self._append(Connect(conn, _now(ts), addr), ("connect", conn))

    def send(self, conn: str, addr: str, data: str | bytes, ts: float | None = None) -> None:
        self._append(Send(conn, _now(ts), addr, _text(data)), None)

    def recv(self, conn: str, data: str | bytes, ts: float | None = None) -> None:
        self._append(Recv(conn, _now(ts), _text(data)), None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _append(self, record: Record, carry: tuple[str, str] | None) -> None:
        line = _ENCODER.encode(record) + b"\n"
        with self._lock:
            if self._closed or len(self._pending) >= self.max_pending:
                self.dropped += 1
                return
            self._pending.append((carry, line))

    # -- file I/O ------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything pending as one zstd frame, rotating first if the file is due. Returns lines."""
        with self._io_lock:
            with self._lock:
                pending, self._pending = self._pending, []
            if not pending:
                return 0
            if self._fh is not None and self._rotation_due():
                self._finish_file()
            prefix = self._open_file() if self._fh is None else b""
            payload = prefix + b"".join(line for _, line in pending)
            frame = self._cctx.compress(payload)
            assert self._fh is not None
            self._fh.write(frame)
            self._fh.flush()
            self._file_bytes += len(frame)
            self.written += len(pending)
            for key, line in pending:
                if key is not None:
                    self._remember(key, line)
            return len(pending)

    def close(self) -> None:
        """Flush what is pending and close the current file. Later records are dropped and counted."""
        with self._lock:
            self._closed = True
        self.flush()
        with self._io_lock:
            self._finish_file()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _rotation_due(self) -> bool:
        if self._file_bytes >= self.rotate_bytes:
            return True
        return time.monotonic() - self._file_started >= self.rotate_seconds

    def _open_file(self) -> bytes:
        """Create the next file and return the lines that must start it (header, then carried lines)."""
        now = time.time()
        # Names sort in time order: a name already taken (two rotations in one millisecond, or a file
        # left by an earlier run) moves the stamp forward by a millisecond instead of adding a suffix.
        stamp_ms = max(int(now * 1000), self._last_stamp_ms + 1)
        while True:
            stamp = dt.datetime.fromtimestamp(stamp_ms / 1000, dt.UTC)
            path = self.directory / f"{self.exchange}-{stamp:%Y%m%dT%H%M%S}.{stamp_ms % 1000:03d}Z.jsonl.zst"
            try:
                self._fh = open(path, "xb")  # noqa: SIM115 - lives until rotation/close
            except FileExistsError:
                stamp_ms += 1
                continue
            break
        self._last_stamp_ms = stamp_ms
        self.files.append(path)
        self._file_bytes = 0
        self._file_started = time.monotonic()
        header = Header(FORMAT_VERSION, self.exchange, self.config, now)
        return _ENCODER.encode(header) + b"\n" + b"".join(self._carry.values())

    def _finish_file(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _remember(self, key: tuple[str, str], line: bytes) -> None:
        self._carry[key] = line
        self._carry.move_to_end(key)
        while len(self._carry) > self.max_carry:
            self._carry.popitem(last=False)


def _now(ts: float | None) -> float:
    return time.time() if ts is None else ts


def _text(data: str | bytes) -> str:
    # The format stores text frames. Venues send text; a binary frame is kept readable, not lost.
    return data if isinstance(data, str) else data.decode("utf-8", errors="replace")
