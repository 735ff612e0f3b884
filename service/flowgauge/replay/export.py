"""`flowgauge export`: recordings replayed to a Parquet dataset for research and backtests (issue 11 item 12).

The recordings go through `replay.replay` (the daemon's parsers and engine, exchange time driving every metric),
and every metrics payload (`flowgauge.v1.<venue>.<slug>`, every trigger) becomes one row, in publication order.
With `--bars DURATION`, one row per instrument per clock bar instead: by default the engine's own clock bars of that
length (`flowgauge.v1.bars.<venue>.<slug>`, schema/bars.v1.json: OHLC mid, summed OFI, taker volumes, z-scores;
closed by the recording's events, so an instrument's last, still open bar is not in the file), or with
`--bar-source payloads` each payload field's last value per bar (see `BarRows`). Status, trade and aggregate
messages are not exported.

Columns are the payload's keys for the metric families exported (`--families`, default the daemon's default
families; `all` for every one), in publication order, typed from the metrics payload's JSON Schema
(schema/payload.v1.json): numbers float64, integers int64, strings and enums string, booleans bool, `quality`
list<string>, other arrays list of their item type, objects (`coverage`) their JSON text with sorted keys.
`ts_publish` is left out: it is the replaying machine's clock, the one field that differs between two replays.
The file is deterministic: the same recordings with the same flowgauge and pyarrow versions give a byte-identical
file (fixed row and column order, no timestamp in the metadata).

Exit codes: 0 written; 1 a recording could not be replayed (nothing written); 2 bad arguments (a recording that
does not exist, an output that cannot be written); 130 interrupted (nothing written). pyarrow missing is one line
naming the extra that installs it, exit 1. Imports only argparse at module level (the CLI builds its parser from
here on every command).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

EXIT_FAILED = 1
EXIT_BAD_ARGUMENTS = 2
EXIT_INTERRUPTED = 130
ROW_GROUP_ROWS = 65_536  # rows buffered before a row group is written: bounds memory on long recordings
EXTRA = "research"  # the pyproject extra that installs pyarrow
BAR_SOURCES = ("engine", "payloads")  # --bar-source: the engine's clock bars, or payload fields folded into bars
_LEFT_OUT = frozenset({"ts_publish"})  # the replaying machine's clock: not data, and never deterministic
_BAR_UNITS_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION = re.compile(r"^(\d+)(ms|s|m|h)$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="RECORDING", help="recordings (.jsonl.zst or .jsonl), in order")
    parser.add_argument("--out", required=True, metavar="FILE.parquet", help="the Parquet file to write")
    parser.add_argument("--interleave", action="store_true",
                        help="replay the files of different venues interleaved by receive time, as `flowgauge "
                             "replay --interleave` (rows of a session of several venues in the order received)")
    parser.add_argument("--families", default=None, metavar="NAME[,NAME...]",
                        help="metric families to export (as publish.families; 'all' for every one; default: the "
                             "daemon's default families)")  # fmt: skip
    parser.add_argument("--bars", type=bar_duration, default=None, metavar="DURATION",
                        help="one row per instrument per clock bar of DURATION (e.g. 100ms, 1s, 1m) of exchange "
                             "time instead of one row per payload")  # fmt: skip
    parser.add_argument("--bar-source", choices=BAR_SOURCES, default="engine",
                        help="with --bars: 'engine' (default) exports the engine's clock bars (OHLC mid, summed "
                             "OFI, taker volumes, z-scores: the flowgauge.v1.bars payloads); 'payloads' each "
                             "payload field's last value in the bar")  # fmt: skip


def bar_duration(text: str) -> int:
    """`100ms`, `1s`, `10s`, `1m`, `1h` -> nanoseconds (> 0)."""
    match = _DURATION.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a bar duration: {text!r} (e.g. 100ms, 1s, 10s, 1m)")
    return int(match.group(1)) * _BAR_UNITS_NS[match.group(2)]


# ------------------------------------------------------------------------------------------- columns


def payload_columns(schema: Mapping[str, Any], keys: Iterable[str]) -> list[tuple[str, str]]:
    """(field, column kind) for each payload key, `ts_publish` left out, typed from the payload schema (a key the
    schema does not describe, which tests/unit/test_schema_registry.py rules out, would be its JSON text).

    Kinds: "float64", "int64", "string", "bool", "list<string>", "list<float64>", "list<int64>", "json".
    """
    properties = schema["properties"]
    return [(name, _kind(properties.get(name, {}))) for name in keys if name not in _LEFT_OUT]


def _kind(spec: Mapping[str, Any]) -> str:
    if "const" in spec:
        return _scalar_kind({type(spec["const"]).__name__})
    if "enum" in spec:
        return _scalar_kind({type(v).__name__ for v in spec["enum"] if v is not None})
    types = spec.get("type", [])
    types = {t for t in (types if isinstance(types, list) else [types]) if t != "null"}
    if types == {"array"}:
        item = _kind(spec.get("items", {}))
        return f"list<{item}>" if item in ("string", "float64", "int64") else "json"
    if types == {"object"} or not types:
        return "json"
    return _scalar_kind({{"number": "float", "integer": "int", "string": "str", "boolean": "bool"}.get(t, t)
                         for t in types})  # fmt: skip


def _scalar_kind(python_types: set[str]) -> str:
    if python_types == {"str"}:
        return "string"
    if python_types == {"bool"}:
        return "bool"
    if python_types == {"int"}:
        return "int64"
    if python_types <= {"int", "float"} and python_types:
        return "float64"
    return "json"


def _convert(kind: str, value: Any) -> Any:
    """The value as the column stores it: None stays None; a value of the wrong type becomes None rather than
    failing the export (the schema test guarantees the engine never publishes one)."""
    if value is None:
        return None
    if kind == "float64":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if kind == "int64":
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if kind == "string":
        return value if isinstance(value, str) else None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if kind == "json":
        import orjson

        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    if isinstance(value, list):  # list<...>
        item = kind[5:-1]
        return [_convert(item, v) for v in value]
    return None


# ------------------------------------------------------------------------------------------- bars


class BarRows:
    """Payload rows folded into clock bars of exchange time, per instrument.

    A payload stamped `t` belongs to the bar `(k*D - D, k*D]` with `k = ceil(t / D)` (half-open, as every window:
    metrics.md 0.2.3), labelled by its end `bar_end = k*D`. Each bar's row holds every field's last value in that
    bar (the latest payload's, in publication order) and `n_payloads`, how many payloads fell in it. Bars with no
    payload between an instrument's first and last one are emitted too (`n_payloads` 0, values carried forward from
    the bar before), as clock bars are (metrics.md 0.3).

    Rows are handed out as bars close, so nothing but each instrument's open bar is held (a day of 1 s bars does
    not sit in memory): an instrument's rows are in time order, and instruments interleave as the replay reaches
    them (files replay one after another); the bars still open at the end come last, by (venue, symbol). The order
    is fixed by the input: sort by `bar_end` for a time-ordered panel.

    These are computed here from the payloads (`--bar-source payloads`), not taken from the engine's own clock bars:
    every field of the payload gets its bar-close value, whichever family it belongs to.
    """

    def __init__(self, duration_ns: int) -> None:
        self.duration_ns = duration_ns
        self._open: dict[tuple[str, str], tuple[int, dict[str, Any], int]] = {}  # key -> (bar_end, last, n)

    def add(self, payload: dict[str, Any]) -> list[tuple[int, dict[str, Any], int]]:
        """Take in one payload; returns the bars it closed, (bar_end, last payload, n_payloads), oldest first."""
        ts = payload.get("ts_exchange")
        venue, symbol = payload.get("venue"), payload.get("symbol")
        if not (isinstance(ts, int) and isinstance(venue, str) and isinstance(symbol, str)):
            return []
        d = self.duration_ns
        bar_end = -(-ts // d) * d
        key = (venue, symbol)
        current = self._open.get(key)
        closed: list[tuple[int, dict[str, Any], int]] = []
        if current is not None:
            end, last, n = current
            if bar_end <= end:  # the same bar (or a payload stamped earlier than the bar: counted in it)
                self._open[key] = (end, payload, n + 1)
                return closed
            closed.append((end, last, n))
            closed.extend((empty_end, last, 0) for empty_end in range(end + d, bar_end, d))  # carried forward
        self._open[key] = (bar_end, payload, 1)
        return closed

    def finish(self) -> list[tuple[int, dict[str, Any], int]]:
        """The bars still open, closed, by (venue, symbol)."""
        return [self._open[key] for key in sorted(self._open)]


# ------------------------------------------------------------------------------------------- writing


class ParquetRows:
    """Rows of typed columns written to a Parquet file in row groups of `ROW_GROUP_ROWS`."""

    def __init__(self, path: str, columns: Sequence[tuple[str, str]], metadata: Mapping[str, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self.columns = list(columns)
        types = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string(), "bool": pa.bool_(),
                 "json": pa.string(), "list<string>": pa.list_(pa.string()), "list<float64>": pa.list_(pa.float64()),
                 "list<int64>": pa.list_(pa.int64())}  # fmt: skip
        self.schema = pa.schema([pa.field(name, types[kind]) for name, kind in self.columns], metadata=dict(metadata))
        # No statistics timestamps or writer clocks go into a Parquet file; created_by names the library version.
        self._writer = pq.ParquetWriter(path, self.schema, compression="zstd")
        self._buffer: list[list[Any]] = [[] for _ in self.columns]
        self.rows = 0

    def add(self, values: Iterable[Any]) -> None:
        for column, value in zip(self._buffer, values, strict=True):
            column.append(value)
        self.rows += 1
        if len(self._buffer[0]) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer or not self._buffer[0]:
            return
        pa = self._pa
        arrays = [pa.array(values, type=field.type) for values, field in zip(self._buffer, self.schema, strict=True)]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self._buffer = [[] for _ in self.columns]

    def close(self) -> None:
        self._flush()
        self._writer.close()


def export(
    files: Sequence[str],
    out: str,
    *,
    bars_ns: int | None = None,
    bar_source: str = "engine",
    families: Iterable[str] | None = None,
    on_file_error: Callable[[str, str], None] | None = None,
    interleave: bool = False,
) -> int:
    """Replay `files` and write their metrics payloads (or bars) to the Parquet file `out`. Returns the row count.

    With `bars_ns`: `bar_source` "engine" writes the engine's clock bars of that length (the
    `flowgauge.v1.bars.<venue>.<slug>` messages, columns from schema/bars.v1.json); "payloads" folds the metrics
    payloads into bars here (`BarRows`: each payload field's last value per bar).

    Written to a temporary file beside `out` and renamed over it at the end, so `out` is whole or untouched.

    Raises:
        ReplayError, RecordingError, OSError: a recording could not be replayed (after `on_file_error`, if given).
    """
    import orjson

    from flowgauge import SCHEMA_DIR, __version__
    from flowgauge.engine import payload_template
    from flowgauge.metrics.bar_feed import BarSpec
    from flowgauge.metrics.families import DEFAULT_FAMILIES, resolve
    from flowgauge.publish import topics
    from flowgauge.replay.replay import replay

    selected = resolve(families if families is not None else DEFAULT_FAMILIES)
    schema = orjson.loads((SCHEMA_DIR / "payload.v1.json").read_bytes())
    fields = payload_columns(schema, payload_template(selected))
    engine_bars = bars_ns is not None and bar_source == "engine"
    if bar_source not in BAR_SOURCES:
        raise ValueError(f"bar_source must be one of {', '.join(BAR_SOURCES)}")
    if engine_bars:
        bar_schema = orjson.loads((SCHEMA_DIR / "bars.v1.json").read_bytes())
        fields = payload_columns(bar_schema, bar_schema["properties"])
    lead = [("bar_end", "int64"), ("n_payloads", "int64")] if bars_ns is not None and not engine_bars else []
    rows_are = "one per payload"
    if bars_ns is not None:
        rows_are = f"{'clock bars' if engine_bars else 'payload fields last per bar'} of {bars_ns} ns per instrument"
    metadata = {
        "flowgauge.schema": "flowgauge.v1",
        "flowgauge.version": __version__,
        "flowgauge.rows": rows_are,
        "flowgauge.families": ",".join(selected),
        "flowgauge.recordings": orjson.dumps([Path(f).name for f in files]).decode(),
    }
    directory = os.path.dirname(os.path.abspath(out))
    fd, tmp = tempfile.mkstemp(prefix=".flowgauge-export-", suffix=".parquet", dir=directory)
    os.close(fd)
    try:
        writer = ParquetRows(tmp, [*lead, *fields], metadata)
        bars = BarRows(bars_ns) if bars_ns is not None and not engine_bars else None

        def row(payload: Mapping[str, Any]) -> list[Any]:
            return [_convert(kind, payload.get(name)) for name, kind in fields]

        def sink(topic: str, body: bytes) -> None:
            tokens = topic.split(".")
            if engine_bars:
                if tokens[2] == "bars":
                    writer.add(row(orjson.loads(body)))
                return
            if len(tokens) != 4 or tokens[2] in topics.RESERVED_VENUES:
                return  # status, trades, aggregates: not metrics payloads
            payload = orjson.loads(body)
            if bars is None:
                writer.add(row(payload))
                return
            for bar_end, last, n in bars.add(payload):
                writer.add([bar_end, n, *row(last)])

        bar_spec = BarSpec(interval_s=bars_ns / 1e9) if engine_bars and bars_ns is not None else None
        _, stats = replay(
            list(files), sink, clock=lambda: 0, on_file_error=on_file_error, families=selected, bars=bar_spec,
            interleave=interleave,
        )
        if stats.failed and on_file_error is not None:
            raise _ExportFailed(stats.failed)
        if bars is not None:
            for bar_end, last, n in bars.finish():
                writer.add([bar_end, n, *row(last)])
        writer.close()
        os.replace(tmp, out)
        return writer.rows
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class _ExportFailed(Exception):
    def __init__(self, failed: list[tuple[str, str]]) -> None:
        super().__init__(", ".join(path for path, _ in failed))
        self.failed = failed


# ------------------------------------------------------------------------------------------- command


def run(args: argparse.Namespace) -> int:
    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        print(f"export: pyarrow is not installed; it comes with the '{EXTRA}' extra: "
              f"pip install 'flowgauge[{EXTRA}]'", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    for path in args.files:
        if not os.path.isfile(path):
            print(f"export: no such recording: {path}", file=sys.stderr)
            return EXIT_BAD_ARGUMENTS
    from flowgauge.metrics.families import UnknownFamily, resolve

    families = [name.strip() for name in args.families.split(",") if name.strip()] if args.families else None
    try:
        if families is not None:
            resolve(families)
    except UnknownFamily as exc:
        print(f"export: --families: {exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    problem = _unwritable(args.out)
    if problem is not None:
        print(f"export: cannot write --out {args.out}: {problem}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    from flowgauge import logs

    logs.configure(os.environ.get("FLOWGAUGE_LOG_LEVEL", "WARNING"))
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_file_error(path: str, why: str) -> None:
        print(f"export: cannot replay {path}: {why}", file=sys.stderr)

    try:
        rows = export(args.files, args.out, bars_ns=args.bars, bar_source=args.bar_source, families=families,
                      on_file_error=on_file_error, interleave=args.interleave)  # fmt: skip
    except KeyboardInterrupt:
        print("export interrupted: nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _ExportFailed as exc:
        print(f"export: {len(exc.failed)} of {len(args.files)} recordings failed: nothing written", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # the output filled the disk, or its directory went away
        print(f"export: cannot write --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_ARGUMENTS
    print(f"export: {rows} rows to {args.out}", file=sys.stderr)
    return 0


def _unwritable(out: str) -> str | None:
    """Why `out` cannot be written, None when it can (checked before a long replay, not after)."""
    directory = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        return "is a directory"
    if not os.path.isdir(directory):
        return f"no such directory: {directory}"
    try:
        fd, probe = tempfile.mkstemp(prefix=".flowgauge-export-", dir=directory)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None
