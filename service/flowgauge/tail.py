"""`flowgauge tail`: what the bus publishes, over any transport the SDK speaks.

On a terminal it draws a live table, one row per instrument refreshed in place (venue, symbol, book state,
mid, spread, `depth_imb_5`, `ofi_raw_10s`, `tfi_10s`, `oi_chg_pct_5m`, age of the last update); it
reconnects when the connection drops and says so under the table. With `--json`, or whenever stdout is not
a terminal, it prints every payload as one JSON line (`{"topic": ..., "payload": {...}}`, plus
`"snapshot": true` for a current value replayed on subscribe) and exits 1 when the connection is lost, so a
script reading it sees the end of its input.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

from flowgauge.client import shown_url
from flowgauge.sdk import Interrupted, Message, Subscription, subscribe
from flowgauge.sdk.patterns import instrument_key

__all__ = ["COLUMNS", "InstrumentTable", "tail_json", "tail_table"]

_REFRESH_PER_S = 4
_NS_PER_S = 1e9

# Column title, payload field (None: computed), format.
COLUMNS: tuple[tuple[str, str | None, str], ...] = (
    ("venue", None, ""),
    ("symbol", None, ""),
    ("book", None, ""),
    ("mid", "mid", "price"),
    ("spread bps", "spread_bps", ".2f"),
    ("depth_imb_5", "depth_imb_5", "+.3f"),
    ("ofi_raw_10s", "ofi_raw_10s", "+.4g"),
    ("tfi_10s", "tfi_10s", "+.3f"),
    ("oi_chg_pct_5m", "oi_chg_pct_5m", "+.3%"),
    ("age", None, ""),
)


@dataclass
class _Row:
    venue: str
    symbol: str
    state: str = "?"
    values: dict[str, Any] = field(default_factory=dict)
    ts_publish: int | None = None


class InstrumentTable:
    """The table's model: the latest metrics and book state per instrument, fed message by message."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], _Row] = {}
        self.interruption: str | None = None  # the last connection loss not yet healed, for the caption

    def update(self, message: Message) -> None:
        key = instrument_key(message.topic)
        payload = _payload(message)
        if key is None or payload is None:
            return
        family = message.topic.split(".")[2]
        if family == "trades":
            return  # inputs, not state
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = _Row(payload.get("venue", key[0]), payload.get("symbol", key[1]))
        if family == "status":
            row.state = str(payload.get("state", row.state))
            return
        row.state = str(payload.get("book_state", row.state))
        row.values = payload
        ts = payload.get("ts_publish")
        if isinstance(ts, int):
            row.ts_publish = ts
        self.interruption = None

    def rows(self, now: float, is_stale: Callable[[str], bool] | None = None) -> list[list[str]]:
        """Formatted cells, sorted by venue then symbol; a stale row's age ends in ' stale'."""
        out: list[list[str]] = []
        for (venue, slug), row in sorted(self._rows.items()):
            cells = [row.venue, row.symbol, row.state]
            for _, name, fmt in COLUMNS[3:-1]:
                cells.append(_cell(row.values.get(name) if name else None, fmt))
            age = "-" if row.ts_publish is None else _age(now - row.ts_publish / _NS_PER_S)
            if is_stale is not None and is_stale(f"flowgauge.v1.{venue}.{slug}"):
                age += " stale"
            cells.append(age)
            out.append(cells)
        return out


def _payload(message: Message) -> dict[str, Any] | None:
    """The payload as a JSON object, or None for data that is not one (another publisher on these topics)."""
    try:
        payload = message.payload
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _cell(value: Any, fmt: str) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    if fmt == "price":
        return f"{value:,.6g}" if abs(value) < 1000 else f"{value:,.2f}"
    return format(value, fmt)


def _age(seconds: float) -> str:
    if seconds < 0:
        return "0.0s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.0f}m"


class _QuietNote:
    """Says once on stderr that nothing matched within `after_s`: a typo looks exactly like a quiet market."""

    def __init__(self, pattern: str, after_s: float, err: TextIO) -> None:
        self.seen = 0
        self._pattern = pattern
        self._err = err
        self._timer = asyncio.get_running_loop().call_later(after_s, self._note) if after_s > 0 else None
        self._after_s = after_s

    def _note(self) -> None:
        if self.seen == 0:
            print(f"tail: nothing published matching {self._pattern!r} in {self._after_s:g} s; still waiting "
                  f"(topics look like flowgauge.v1.<venue>.<BASE-QUOTE-SETTLE>)", file=self._err, flush=True)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


async def tail_json(url: str, pattern: str, *, token: str | None = None, count: int = 0,
                    quiet_after_s: float = 5.0) -> None:
    """Print every matching payload as one JSON line; raises `ConnectionLost` when the connection drops."""
    async with subscribe(url, pattern, token=token, reconnect=False) as sub:
        quiet = _QuietNote(pattern, quiet_after_s, sys.stderr)
        skipped = 0
        try:
            async for message in sub:
                assert isinstance(message, Message)  # reconnect=False: losses raise, no markers
                payload = _payload(message)
                if payload is None:
                    if not skipped:
                        print(f"tail: skipped a message on {message.topic} that is not a JSON object (not a "
                              f"flowgauge payload; further ones are skipped silently)", file=sys.stderr, flush=True)
                    skipped += 1
                    continue
                line: dict[str, object] = {"topic": message.topic, "payload": payload}
                if message.snapshot:
                    line["snapshot"] = True
                sys.stdout.write(orjson.dumps(line).decode() + "\n")
                sys.stdout.flush()
                quiet.seen += 1
                if count and quiet.seen >= count:
                    return
        finally:
            quiet.cancel()


async def tail_table(url: str, pattern: str, *, token: str | None = None, count: int = 0,
                     quiet_after_s: float = 5.0) -> None:
    """Draw the live table on the terminal until interrupted (or `count` messages)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    table = InstrumentTable()
    async with subscribe(url, pattern, token=token) as sub:
        quiet = _QuietNote(pattern, quiet_after_s, sys.stderr)
        with Live(_render(table, sub, url, pattern), console=console, refresh_per_second=_REFRESH_PER_S,
                  transient=False) as live:
            refresher = asyncio.create_task(_refresh(live, table, sub, url, pattern))
            try:
                async for item in sub:
                    if isinstance(item, Interrupted):
                        table.interruption = item.reason
                        continue
                    table.update(item)
                    quiet.seen += 1
                    if count and quiet.seen >= count:
                        break
            finally:
                quiet.cancel()
                refresher.cancel()
                live.update(_render(table, sub, url, pattern))


async def _refresh(live: Any, table: InstrumentTable, sub: Subscription, url: str, pattern: str) -> None:
    """Redraw a few times a second so ages and staleness move even when nothing arrives."""
    while True:
        live.update(_render(table, sub, url, pattern))
        await asyncio.sleep(1 / _REFRESH_PER_S)


def _render(table: InstrumentTable, sub: Subscription, url: str, pattern: str) -> Any:
    from rich.table import Table

    view = Table(title=f"flowgauge tail {pattern}  ({shown_url(url)})", title_justify="left", expand=False)
    for title, _, fmt in COLUMNS:
        view.add_column(title, justify="right" if fmt else "left", no_wrap=True)
    for cells in table.rows(time.time(), sub.is_stale):
        style = "dim" if cells[-1].endswith("stale") else ("red" if cells[2] == "INVALID" else None)
        view.add_row(*cells, style=style)
    if table.interruption:
        view.caption = f"connection lost: {table.interruption}; reconnecting"
    elif not table.rows(time.time()):
        view.caption = "waiting for payloads"
    return view
