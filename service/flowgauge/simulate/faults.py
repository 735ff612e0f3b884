"""Fault injection for the venue simulators: the catalogue of fault kinds, fault specs (from the command line
or a scenario file) and the scheduler a simulator asks, at each opportunity, whether a fault fires now.

Sits beside `base.py` and uses nothing of the daemon (no parsers, books or metrics). It decides *when*; each
venue module decides *how* a fault looks on its wire. Pure and synchronous: no asyncio, no sockets.

Catalogue (`FAULT_KINDS`; parameters and defaults in brackets):

* Book stream, one opportunity per book message of the instrument: `drop_diff` (a diff is withheld; the
  simulator's own book still applies it), `duplicate_diff` (sent twice; Bybit, OKX and
  Binance also send a stale copy after the next one, which only the "id at or below the book's is dropped" rule
  makes harmless), `reorder_diff` (sent after the next
  one), `seq_gap` (the venue's ids jump forward [by=1000], nothing lost), `bad_checksum` (venues with one),
  `malformed_json` and `truncated_frame` (a diff replaced by broken JSON / its first half),
  `oversized_frame` (a diff padded to [bytes=17 MiB], over the daemon's 16 MiB frame bound), `u1_restart`
  (Bybit: a snapshot with `u=1`, ids restart).
* Connection, one opportunity per book message (of the instrument, or of any when none is named):
  `disconnect` (abrupt: the TCP connection is reset, no close frame), `half_open` (the connection goes silent
  for [for_s=30] s, pings unanswered and nothing closed, then it is reset), `forced_disconnect` (a scheduled
  venue disconnect, 24 h-style: a clean close frame), `conn_limit` (connections reset and the next
  [refuse=3] websocket upgrades refused with HTTP 429, as at the venue's connection limit), `clock_skew` (the
  exchange clock is set [seconds=5] off the wall clock) and `clock_jump` (the exchange clock jumps by
  [seconds=48]).
* Requests: `slow_snapshot` (a book snapshot answered [delay_s=3] s late: REST, or the websocket snapshot after
  a subscribe on venues without REST snapshots), `rate_limit` (a REST request answered HTTP [status=429] or
  418 with `Retry-After: [retry_after=1]`, only requests whose path contains [path=""]), `sub_error` (a
  subscribe request answered with the venue's error reply).

Specs. `KIND[:key=value,...]` on the command line (`flowgauge simulate --fault drop_diff:every=50,
instrument=BTCUSDT`, repeatable), or a scenario file (`--scenario FILE.yaml`) holding a list of mappings with the
same keys plus `fault: KIND` (or `{faults: [...]}`). Keys: `instrument` (the venue's own symbol, e.g. BTCUSDT;
default all), `venue` (with `--venue all`; default every venue), when it starts (`after_s` seconds after the
simulator starts, `after_frames` book messages), how often (`every` book messages or `every_s` seconds between
firings, or back to back), `count` (firings; default 1 without `every`/`every_s`, unlimited with), `rotate=1` (a
spec for any instrument fires on the instruments in turn, in the order their first book messages came, instead of on
whichever has the next book message: with many books played in the same order, that is always the first of them; a
turn's instrument silent for `ROTATE_GRACE_S` after the firing was due gives the turn to whichever comes next), and
the kind's parameters. With `every=N` the first firing comes N messages after the start, with `every_s=S` S seconds
after it. A spec fires at an *opportunity* only: a book message for the first two groups, a request for the third
(so `rate_limit:count=3` rejects three requests in a row once started).

How to wire a venue (what Bybit's `bybit.py` does):

1. Declare `SUPPORTED_FAULTS` on the `SimulatorServer` subclass: `base.CONNECTION_FAULTS` (handled by
   `base` for every venue) plus the kinds the module implements. Asking for another kind is a one-line
   `FaultError` (the CLI exits 2).
2. For every book message of an instrument the player sends, call `sim.faults.frame(instrument)` first, then
   `sim.connection_faults(instrument, clients)` (disconnects, half-open, connection limit, clock faults; the
   clients are the instrument's subscribers), then `sim.faults.take(KIND, instrument)` for each book-stream
   kind the venue supports and shape the frame accordingly. The venue's own book keeps applying everything.
3. Record the truth after every applied book message: `sim.truth.record(instrument, key, ts_ms, bids, asks,
   snapshot=...)` with the book's sequence id as `key` (or, without one, the served `ts_exchange`, unique per
   message), the top levels in the venue's units, and `snapshot=True` when the venue sent that state whole
   (see `truth.py`).
4. Requests: `sim.faults.take("sub_error", instrument)` when a subscribe arrives, `take("slow_snapshot",
   instrument)` when a snapshot is asked for (`sim.later(delay_s, callback, ...)` runs the late answer and is
   cancelled on close). `rate_limit` and `conn_limit` refusals are `base`'s (an aiohttp middleware), so are
   the `/_flowgauge/truth` and `/_flowgauge/faults` endpoints.
5. A clock the venue makes itself (not `sim.clock` nor a `SimMarket`'s) must be registered with
   `sim.add_clock` for the clock faults to move it. `forced_disconnect` closes with `CLOSE_REASONS["forced"]`
   (1001 "scheduled disconnect"); override it for the venue's own code and reason.

Tests: `sim.configure(specs)` (again while running: a new schedule from then on), `sim.faults.log` (what fired
when), `truth.fetch_truth` and `truth.Comparator` (tests/integration/test_faults_bybit.py is the model).
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final

__all__ = [
    "BOOK_FAULTS",
    "CONNECTION_FAULTS",
    "FAULT_KINDS",
    "REQUEST_FAULTS",
    "FaultError",
    "FaultKind",
    "FaultScheduler",
    "FaultSpec",
    "check_supported",
    "load_scenario",
    "parse_fault",
    "specs_for_venue",
]

ParamValue = int | float | str


class FaultError(ValueError):
    """A fault spec or scenario the simulator cannot take; the message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Param:
    kind: type  # int, float or str
    default: ParamValue
    check: Callable[[Any], bool] = lambda _: True
    rule: str = ""  # what `check` requires, for the error message


@dataclass(frozen=True, slots=True)
class FaultKind:
    name: str
    doc: str
    params: Mapping[str, Param] = field(default_factory=dict)


def _positive(v: Any) -> bool:
    return bool(v > 0)


_KINDS: tuple[FaultKind, ...] = (
    FaultKind("drop_diff", "a book diff is withheld (the simulator's book still applies it)"),
    FaultKind("duplicate_diff", "a book diff is sent twice (and, on some venues, again after the next one)"),
    FaultKind("reorder_diff", "a book diff is sent after the next one"),
    FaultKind("seq_gap", "the venue's sequence ids jump forward (nothing lost)",
              {"by": Param(int, 1000, lambda v: v >= 2, ">= 2")}),
    FaultKind("bad_checksum", "a book diff carries a wrong checksum"),
    FaultKind("malformed_json", "a book diff is replaced by invalid JSON"),
    FaultKind("truncated_frame", "a book diff is cut short"),
    FaultKind("oversized_frame", "a book diff padded to `bytes`",
              {"bytes": Param(int, 17 * 1024 * 1024, lambda v: 1024 <= v <= 64 * 1024 * 1024, "in [1024, 64 MiB]")}),
    FaultKind("u1_restart", "service restart: a book snapshot with u=1, ids restart (Bybit)"),
    FaultKind("disconnect", "abrupt disconnect: the TCP connection is reset, no close frame"),
    FaultKind("half_open", "the connection goes silent (not closed, pings unanswered) for `for_s`, then resets",
              {"for_s": Param(float, 30.0, _positive, "> 0")}),
    FaultKind("forced_disconnect", "a scheduled venue disconnect (24 h-style): a clean close frame"),
    FaultKind("conn_limit", "connections reset and the next `refuse` upgrades refused (HTTP 429)",
              {"refuse": Param(int, 3, lambda v: v >= 1, ">= 1")}),
    FaultKind("clock_skew", "the exchange clock is set `seconds` off the wall clock",
              {"seconds": Param(float, 5.0, lambda v: abs(v) <= 86400, "within +-86400")}),
    FaultKind("clock_jump", "the exchange clock jumps by `seconds`",
              {"seconds": Param(float, 48.0, lambda v: v != 0 and abs(v) <= 86400, "non-zero, within +-86400")}),
    FaultKind("slow_snapshot", "a book snapshot is answered `delay_s` late",
              {"delay_s": Param(float, 3.0, lambda v: 0 < v <= 600, "in (0, 600]")}),
    FaultKind("rate_limit", "a REST request answered `status` (429 or 418) with Retry-After",
              {"status": Param(int, 429, lambda v: v in (418, 429), "429 or 418"),
               "retry_after": Param(float, 1.0, lambda v: 0 <= v <= 3600, "in [0, 3600]"),
               "path": Param(str, "")}),
    FaultKind("sub_error", "a subscribe request is answered with the venue's error reply"),
)  # fmt: skip

FAULT_KINDS: Final[Mapping[str, FaultKind]] = {k.name: k for k in _KINDS}
BOOK_FAULTS: Final = frozenset(
    {"drop_diff", "duplicate_diff", "reorder_diff", "seq_gap", "bad_checksum", "malformed_json",
     "truncated_frame", "oversized_frame", "u1_restart"}
)  # fmt: skip
# Handled in `base` for every venue that calls `SimulatorServer.connection_faults` per book message.
CONNECTION_FAULTS: Final = frozenset(
    {"disconnect", "half_open", "forced_disconnect", "conn_limit", "clock_skew", "clock_jump"}
)
REQUEST_FAULTS: Final = frozenset({"slow_snapshot", "rate_limit", "sub_error"})

_SCHEDULE_KEYS: Final = ("instrument", "venue", "after_s", "after_frames", "every", "every_s", "count", "rotate")
ROTATE_GRACE_S: Final = 2.0  # how long a rotating spec waits for its turn's instrument before taking any


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One fault: which, on which instrument, when it starts, how often, and its parameters."""

    kind: str
    instrument: str | None = None  # the venue's own symbol (e.g. BTCUSDT); None = any
    venue: str | None = None  # with several simulators: only this one; None = every one
    after_s: float = 0.0  # starts this long after the simulator starts
    after_frames: int = 0  # ... and after this many book messages (of `instrument`, or of any)
    every: int | None = None  # book messages between firings
    every_s: float | None = None  # seconds between firings
    count: int | None = None  # firings in all; None = 1 without every/every_s, else unlimited
    rotate: int = 0  # 1: without `instrument`, fire on the instruments in turn (module doc)
    params: Mapping[str, ParamValue] = field(default_factory=dict)

    @property
    def limit(self) -> float:
        if self.count is not None:
            return self.count
        return math.inf if self.every is not None or self.every_s is not None else 1

    def param(self, name: str) -> Any:
        value = self.params.get(name)
        return FAULT_KINDS[self.kind].params[name].default if value is None else value

    def describe(self) -> str:
        keys = [f"{k}={getattr(self, k)}" for k in _SCHEDULE_KEYS if getattr(self, k) not in (None, 0, 0.0)]
        keys += [f"{k}={v}" for k, v in self.params.items()]
        return self.kind + (":" + ",".join(keys) if keys else "")


def _convert(kind: type, key: str, raw: object, where: str) -> Any:
    if isinstance(raw, bool):
        raise FaultError(f"{where}: {key} must be a number, not {raw!r}")
    try:
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            value: Any = int(raw)  # type: ignore[call-overload]
        elif kind is float:
            value = float(raw)  # type: ignore[arg-type]
            if not math.isfinite(value):
                raise ValueError
        else:
            if not isinstance(raw, (str, int, float)):
                raise ValueError
            value = str(raw)
    except (TypeError, ValueError):
        name = {int: "an integer", float: "a finite number"}.get(kind, "a string")
        raise FaultError(f"{where}: {key} must be {name} (got {raw!r})") from None
    return value


def make_spec(fields: Mapping[str, object], where: str) -> FaultSpec:
    """A validated `FaultSpec` from `fault` plus schedule and parameter keys (`where` prefixes errors)."""
    kind_name = fields.get("fault")
    if not isinstance(kind_name, str) or not kind_name:
        raise FaultError(f"{where}: missing `fault: KIND` (one of {', '.join(FAULT_KINDS)})")
    kind = FAULT_KINDS.get(kind_name)
    if kind is None:
        raise FaultError(f"{where}: unknown fault {kind_name!r} (one of {', '.join(FAULT_KINDS)})")
    where = f"{where}: {kind_name}"
    sched: dict[str, Any] = {}
    params: dict[str, ParamValue] = {}
    for key, raw in fields.items():
        if key == "fault":
            continue
        if raw is None:
            raise FaultError(f"{where}: {key} has no value")
        if key in ("instrument", "venue"):
            if not isinstance(raw, str) or not raw:
                raise FaultError(f"{where}: {key} must be a non-empty string (got {raw!r})")
            sched[key] = raw
        elif key in ("after_frames", "every", "count"):
            value = _convert(int, key, raw, where)
            if value < (0 if key == "after_frames" else 1):
                raise FaultError(f"{where}: {key} must be >= {0 if key == 'after_frames' else 1} (got {value})")
            sched[key] = value
        elif key == "rotate":
            value = _convert(int, key, raw, where)
            if value not in (0, 1):
                raise FaultError(f"{where}: rotate must be 0 or 1 (got {value})")
            sched[key] = value
        elif key in ("after_s", "every_s"):
            value = _convert(float, key, raw, where)
            if value < 0 or (key == "every_s" and value == 0):
                raise FaultError(f"{where}: {key} must be {'>= 0' if key == 'after_s' else '> 0'} (got {value})")
            sched[key] = value
        elif key in kind.params:
            param = kind.params[key]
            value = _convert(param.kind, key, raw, where)
            if not param.check(value):
                raise FaultError(f"{where}: {key} must be {param.rule} (got {value})")
            params[key] = value
        else:
            known = [*_SCHEDULE_KEYS, *kind.params]
            raise FaultError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
    if "every" in sched and "every_s" in sched:
        raise FaultError(f"{where}: give every (messages) or every_s (seconds), not both")
    if sched.get("rotate") and "instrument" in sched:
        raise FaultError(f"{where}: rotate takes the instruments in turn; it cannot go with instrument=")
    return FaultSpec(kind_name, params=params, **sched)


def parse_fault(text: str) -> FaultSpec:
    """`KIND[:key=value,...]` (the command line's `--fault`) as a validated spec."""
    kind, _, rest = text.strip().partition(":")
    fields: dict[str, object] = {"fault": kind.strip()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise FaultError(f"--fault {text}: expected key=value, got {item!r}")
        fields[key.strip()] = value.strip()
    return make_spec(fields, f"--fault {text}")


def load_scenario(path: str | Path) -> list[FaultSpec]:
    """The faults of a scenario file: a YAML list of mappings (`fault: KIND` + keys), or `{faults: [...]}`.

    Raises:
        FaultError: one line naming the file and the entry (unreadable file, bad YAML, bad entry).
    """
    import yaml  # the daemon's config loader depends on it; imported here so the catalogue stays light

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FaultError(f"--scenario {path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        doc = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise FaultError(f"--scenario {path}: not valid YAML{at}: {problem}") from None
    if isinstance(doc, dict) and set(doc) == {"faults"}:
        doc = doc["faults"]
    if not isinstance(doc, list) or not doc:
        raise FaultError(f"--scenario {path}: expected a non-empty list of faults (or a mapping `faults: [...]`)")
    specs = []
    for n, entry in enumerate(doc, 1):
        if not isinstance(entry, dict) or not all(isinstance(k, str) for k in entry):
            raise FaultError(f"--scenario {path}: entry {n}: expected a mapping like `fault: drop_diff`")
        specs.append(make_spec(entry, f"--scenario {path}: entry {n}"))
    return specs


def check_supported(specs: Iterable[FaultSpec], supported: Iterable[str], venue: str) -> None:
    """Raise `FaultError` (one line) for the first spec whose kind `venue`'s simulator does not inject."""
    have = frozenset(supported)
    for spec in specs:
        if spec.kind not in have:
            listed = ", ".join(sorted(have)) or "none yet"
            raise FaultError(f"the {venue} simulator does not inject {spec.kind} (it supports: {listed})")


def specs_for_venue(specs: Iterable[FaultSpec], venue: str) -> list[FaultSpec]:
    return [s for s in specs if s.venue is None or s.venue == venue]


# --------------------------------------------------------------------------------------------------
# The scheduler


@dataclass(slots=True)
class _State:
    spec: FaultSpec
    fired: int = 0
    mark_frames: int = 0  # book messages counted at the last firing (or at the start)
    mark_s: float = 0.0  # monotonic time of the last firing (or of the start)
    due_s: float | None = None  # rotate: when the spec last became due (its turn's book may be silent)


class FaultScheduler:
    """Which fault fires at each opportunity, per the specs' schedules; counts and logs every firing.

    `frame(instrument)` counts one book message; `take(kind, instrument)` is an opportunity for `kind` and
    returns the spec that fires now (marking it fired) or None. Everything is bounded: the log keeps the
    last `LOG_SIZE` firings.
    """

    LOG_SIZE: ClassVar[int] = 1000

    def __init__(self, specs: Sequence[FaultSpec] = (), clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self._states: dict[str, list[_State]] = collections.defaultdict(list)
        for spec in specs:
            self._states[spec.kind].append(
                _State(spec, mark_frames=spec.after_frames, mark_s=self._start + spec.after_s)
            )
        self.specs = tuple(specs)
        self.frames: collections.Counter[str] = collections.Counter()  # book messages per instrument
        self.instruments: list[str] = []  # in the order their first book messages came (the rotation's order)
        self.total_frames = 0
        self.fired: collections.Counter[str] = collections.Counter()  # firings per kind
        self.log: collections.deque[dict[str, Any]] = collections.deque(maxlen=self.LOG_SIZE)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def wants(self, kind: str) -> bool:
        """Whether any spec is of `kind` (lets a venue skip work for kinds nobody asked for)."""
        return kind in self._states

    def frame(self, instrument: str) -> None:
        if instrument not in self.frames:
            self.instruments.append(instrument)
        self.frames[instrument] += 1
        self.total_frames += 1

    def take(
        self, kind: str, instrument: str | None = None, accept: Callable[[FaultSpec], bool] | None = None
    ) -> FaultSpec | None:
        """An opportunity for `kind` (on `instrument`, or on none in particular): the spec firing now, or None.
        `accept` narrows the specs that may fire (e.g. `rate_limit`'s path)."""
        states = self._states.get(kind)
        if not states:
            return None
        now = self._clock()
        for state in states:
            spec = state.spec
            if spec.instrument is not None and instrument is not None and spec.instrument != instrument:
                continue
            if state.fired >= spec.limit:
                continue
            frames = self.frames[spec.instrument] if spec.instrument is not None else self.total_frames
            if now < self._start + spec.after_s or frames < spec.after_frames:
                continue
            if spec.every is not None and frames - state.mark_frames < spec.every:
                continue
            if spec.every_s is not None and now - state.mark_s < spec.every_s:
                continue
            if spec.rotate and instrument is not None and self.instruments:
                if state.due_s is None:
                    state.due_s = now
                turn = self.instruments[state.fired % len(self.instruments)]
                if instrument != turn and now - state.due_s < ROTATE_GRACE_S:
                    continue
            if accept is not None and not accept(spec):
                continue
            state.fired += 1
            state.mark_frames = frames
            state.mark_s = now
            state.due_s = None
            self.fired[kind] += 1
            self.log.append({"kind": kind, "instrument": instrument, "spec": spec.describe(), "ts_ns": time.time_ns()})
            return spec
        return None

    def report(self) -> dict[str, Any]:
        """What `/_flowgauge/faults` answers: the specs, firings per kind, and the recent firings in order."""
        return {
            "specs": [s.describe() for s in self.specs],
            "fired": dict(self.fired),
            "frames": self.total_frames,
            "log": list(self.log),
        }
