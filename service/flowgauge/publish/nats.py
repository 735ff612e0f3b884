"""The NATS publisher: core publish of every payload on its topic as the NATS subject, optionally into a JetStream
*state* stream that keeps the current value of every metric and status subject, and a *history* stream that keeps
the recent updates for replay.

Sits at the end of the engine -> publishers edge, beside the embedded bus. `publish(topic, payload)` only appends
to a bounded `Outbox` (drop-oldest, counted as `queue_full`) and returns; one sender task moves messages to
nats-py. Nothing here can block or crash the engine:

* connecting happens in the background: `start()` returns at once, and messages wait in the outbox (within its
  bound) until the first connection is up, however long that takes;
* nats-py reconnects by itself forever (`max_reconnect_attempts=-1`); while it is disconnected the sender stops
  draining, so the outbox keeps the newest `queue_size` messages and drops the oldest. What nats-py already
  holds is bounded by `pending_bytes` (its `pending_size`); a publish it refuses for that bound is counted as
  `buffer_full`.

JetStream state mode (`jetstream=True`): at connect (and after every reconnect) the publisher makes sure a
stream named `stream` exists over the metric and status subjects (`flowgauge.v1.*.*`, `flowgauge.v1.status.*.*`;
the first also covers the aggregates `flowgauge.v1.agg.<base>`) with `max_msgs_per_subject=1`, so a late joiner
reads the current value of every subject at once. Trade subjects (`flowgauge.v1.trades.<venue>.<slug>`, five
tokens) are never captured by it. Messages still go out by core publish (the server stores what the stream
captures; no per-message acknowledgement is awaited, which is what keeps the publish rate at core speed), with a
`Nats-Msg-Id` header built from what every replica sees identically, so two replicas store each update once
within the stream's duplicate window:

    <venue>:<instrument>:book:<book_seq>                  book-triggered payloads (venue sequence id)
    <venue>:<instrument>:<trigger>:<ts_exchange>          open_interest, funding, long_short payloads

Not de-duplicated (no id): status payloads, liquidation-triggered payloads (the payload carries no venue
liquidation id and several liquidations can share a timestamp), book payloads of a book that is not VALID
(`book_seq` is null), and aggregates.

History mode (`history=True`, with `jetstream`): a second stream, `history_stream`, keeps every update of the
same subjects, bounded by `history_max_age_s` and `history_max_bytes` (oldest discarded), for replaying recent
updates. NATS refuses two streams whose subjects overlap in one account (error 10065: a message stored in one and
not the other could not be repaired), and no single stream can keep one message per subject and a history too.
So with history on, the history stream is the one that captures the subjects (and de-duplicates by
`Nats-Msg-Id`), and the state stream has no subjects of its own: it *sources* the history stream (the server
copies each stored message into it, where `max_msgs_per_subject=1` keeps the newest). One publish, one stored
copy per update in each stream, no second subject family; the state stream lags the history stream by the
server's copy (typically milliseconds). The state stream is reconfigured first, so that it has released the
subjects when the history stream claims them. Turning history off again needs the history stream deleted by the
operator (the daemon never deletes a stream): until then the state stream keeps sourcing it, and the failed
reconfiguration is logged with that advice. Trades are in neither stream (they are the bulk of the volume, and
the state stream's one source could not filter two subject families on nats-server 2.9).

Must not import `flowgauge.telemetry` (a higher layer): counters go through `PublishTelemetry`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import urlsplit

import msgspec
import nats
import nats.errors
import nats.js.api
import nats.js.errors
from nats.aio.client import Client as NatsClient

from flowgauge.logs import event
from flowgauge.publish.base import PublishTelemetry
from flowgauge.publish.outbox import BrokerAccount, Outbox, describe_error, report_crash

__all__ = ["STATE_STREAM_SUBJECTS", "NatsPublisher", "message_id"]

log = logging.getLogger(__name__)

BACKEND = "nats"

STATE_STREAM_SUBJECTS: tuple[str, ...] = ("flowgauge.v1.*.*", "flowgauge.v1.status.*.*")
"""What the JetStream state stream captures: per-instrument metric payloads and aggregates (4 tokens) and
status payloads (5 tokens under `status`). Trades (`flowgauge.v1.trades.<venue>.<slug>`) and clock bars
(`flowgauge.v1.bars.<venue>.<slug>`) match neither: they are streams of events, not current values."""

# Messages moved to nats-py per wake-up of the sender before it yields to the loop again, so a long backlog
# after a reconnect cannot hold the loop for long.
_BATCH = 512
# How often a sender waiting for the connection checks the client's own state: nats-py runs its callbacks as
# tasks, in an order that under load can leave a "disconnected" after the connection is back up (seen: connected,
# then a stale disconnected, then no reconnected); the client's state is the truth, the callbacks only wake it.
_STATE_POLL_S = 0.25
_STREAM_RETRY_S = 5.0
_SUBJECTS_OVERLAP = 10065  # JetStream API error code: the subjects overlap with another stream's
_TS_TRIGGERS = frozenset({"open_interest", "funding", "long_short"})


class _IdFields(msgspec.Struct):
    """The payload fields a message id is built from; every other field is skipped by the decoder."""

    venue: str | None = None
    instrument: str | None = None
    trigger: str | None = None
    book_seq: int | None = None
    ts_exchange: int | None = None


_id_decoder = msgspec.json.Decoder(_IdFields)


def message_id(payload: bytes) -> str | None:
    """The `Nats-Msg-Id` of a metric payload, or None if it must not be de-duplicated (see the module doc)."""
    try:
        fields = _id_decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
    if fields.venue is None or fields.instrument is None:
        return None
    prefix = f"{fields.venue}:{fields.instrument}:{fields.trigger}:"
    if fields.trigger == "book":
        return None if fields.book_seq is None else prefix + str(fields.book_seq)
    if fields.trigger in _TS_TRIGGERS and fields.ts_exchange is not None:
        return prefix + str(fields.ts_exchange)
    return None


class NatsPublisher:
    """Publishes to NATS (core, optionally into a JetStream state stream); implements `Publisher`.

    Args:
        url: `nats://host:port` (or `tls://`); several servers may be given comma-separated. Credentials may be
            in it, or given below (one way only; config validation enforces that).
        telemetry: where counters go; None counts only locally (`published`, `dropped`).
        queue_size: bound of the outbox, in messages (drop-oldest beyond it).
        pending_bytes: bound of nats-py's own buffer (`pending_size`), in bytes.
        reconnect_wait_s: pause between reconnect attempts to one server.
        connect_timeout_s: deadline of one connection attempt.
        jetstream: keep the JetStream state stream (see the module doc) and send message ids.
        stream: name of the state stream.
        duplicate_window_s: the streams' de-duplication window for message ids.
        history: also keep the history stream (with `jetstream` only; see the module doc).
        history_stream: name of the history stream.
        history_max_age_s: age beyond which the history stream discards an update.
        history_max_bytes: size beyond which the history stream discards its oldest updates.
        name: client name the server shows in its connection list.
        user / password: user/password authentication.
        token: token authentication.
        credentials_file: a NATS `.creds` file (user JWT and NKey seed), read by nats-py at each connect.
    """

    backend = BACKEND

    def __init__(
        self,
        url: str,
        *,
        telemetry: PublishTelemetry | None = None,
        queue_size: int = 10_000,
        pending_bytes: int = 8 * 1024 * 1024,
        reconnect_wait_s: float = 1.0,
        connect_timeout_s: float = 2.0,
        jetstream: bool = False,
        stream: str = "FLOWGAUGE_STATE",
        duplicate_window_s: float = 120.0,
        history: bool = False,
        history_stream: str = "FLOWGAUGE_HISTORY",
        history_max_age_s: float = 3600.0,
        history_max_bytes: int = 1 << 30,
        name: str = "flowgauge",
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        credentials_file: str | None = None,
    ) -> None:
        if pending_bytes < 1:
            raise ValueError(f"pending_bytes must be >= 1, got {pending_bytes}")
        if history and not jetstream:
            raise ValueError("history needs jetstream")
        if history and history_stream == stream:
            raise ValueError(f"the history stream needs a name of its own, not {stream!r}")
        self._servers = [part.strip() for part in url.split(",") if part.strip()]
        self._telemetry = telemetry
        self._account = BrokerAccount(BACKEND, telemetry)
        self._pending_bytes = pending_bytes
        self._reconnect_wait_s = reconnect_wait_s
        self._connect_timeout_s = connect_timeout_s
        self._jetstream = jetstream
        self._stream = stream
        self._duplicate_window_s = duplicate_window_s
        self._history = history
        self._history_stream = history_stream
        self._history_max_age_s = history_max_age_s
        self._history_max_bytes = history_max_bytes
        self._name = name
        self._user = user
        self._password = password
        self._token = token
        self._credentials_file = credentials_file
        self.outbox = Outbox(queue_size, self._account.count_queue_full)
        self._nc: NatsClient | None = None
        self._connected = asyncio.Event()
        self._stream_due = jetstream  # (re)check the streams before the next batch
        self._stream_next_try = 0.0
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self.published = 0
        """Messages handed to nats-py."""
        self.reconnects = 0
        """Reconnections after the first connection."""

    @property
    def dropped(self) -> int:
        """Messages dropped, every reason together."""
        return self._account.dropped

    @property
    def connected(self) -> bool:
        nc = self._nc
        return nc is not None and nc.is_connected

    def status(self) -> dict[str, object]:
        """What /status shows for this backend."""
        return {
            "connected": self.connected,
            "published": self.published,
            "dropped": self.dropped,
            "queued": len(self.outbox),
            "reconnects": self.reconnects,
            "jetstream": self._jetstream,
            "history": self._history,
            "auth": self.auth,
        }

    @property
    def auth(self) -> str | None:
        """How the publisher authenticates (`user_password`, `token`, `credentials_file`, `url`), or None; never
        the secret itself."""
        if self._credentials_file:
            return "credentials_file"
        if self._user or self._password:
            return "user_password"
        if self._token:
            return "token"
        if any("@" in urlsplit(server).netloc for server in self._servers):
            return "url"
        return None

    # ------------------------------------------------------------------------------------ Publisher

    async def start(self) -> None:
        """Start the sender task, which connects in the background. Idempotent."""
        if self._closed:
            raise RuntimeError("the NATS publisher is closed")
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._run(), name="publish:nats")
            self._sender.add_done_callback(report_crash)

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one message (never blocks; drops the oldest queued message when the outbox is full)."""
        self.outbox.put(topic, payload)

    async def close(self) -> None:
        """Send what is queued while connected, then drain the connection and stop. Idempotent.

        Bounded by the caller (app.py runs it within its share of the shutdown budget); what cannot be sent
        by then is abandoned.
        """
        if self._closed:
            return
        self._closed = True
        self.outbox.close()
        sender = self._sender
        if sender is not None:
            if not self.connected:
                sender.cancel()  # nothing queued can be sent now
            with contextlib.suppress(asyncio.CancelledError, Exception):  # a crash was logged when it happened
                await sender
        nc = self._nc
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain() if nc.is_connected else await nc.close()
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                event(log, logging.WARNING, "nats_close_failed", error=describe_error(exc))
                await nc.close()

    # ------------------------------------------------------------------------------------ sender

    async def _run(self) -> None:
        nc = await self._connect()
        outbox = self.outbox
        while True:
            await outbox.wait()
            if not outbox and outbox.closed:
                return
            while not self._connected.is_set():
                if outbox.closed:
                    return
                if nc.is_connected:
                    self._connected.set()  # a stale callback cleared it: the client says it is up
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._connected.wait(), _STATE_POLL_S)
            if self._stream_due and time.monotonic() >= self._stream_next_try:
                await self._ensure_streams(nc)
            for topic, payload in outbox.take(_BATCH):
                headers: dict[str, str] | None = None
                if self._jetstream:
                    msg_id = message_id(payload)
                    if msg_id is not None:
                        headers = {"Nats-Msg-Id": msg_id}
                try:
                    await nc.publish(topic, payload, headers=headers)
                except nats.errors.OutboundBufferLimitError:
                    self._account.count_drop(1, "buffer_full")
                except nats.errors.ConnectionClosedError:
                    self._account.count_drop(1, "closed")
                except (nats.errors.Error, OSError) as exc:
                    self._account.count_drop(1, "send_failed")
                    self._account.log_error("nats_publish_failed", exc)
                else:
                    self.published += 1
                    if self._telemetry is not None:
                        self._telemetry.count_published(BACKEND)
            await asyncio.sleep(0)  # let the engine run between batches of a long backlog

    async def _connect(self) -> NatsClient:
        """Connect, retrying forever (nats-py does the retrying); returns once the first connection is up."""
        nc = await nats.connect(
            servers=self._servers,
            name=self._name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self._reconnect_wait_s,  # type: ignore[arg-type]  # seconds, float is fine
            connect_timeout=self._connect_timeout_s,  # type: ignore[arg-type]
            pending_size=self._pending_bytes,
            user=self._user,
            password=self._password,
            token=self._token,
            user_credentials=self._credentials_file,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
        )
        self._nc = nc
        self._connected.set()
        event(log, logging.INFO, "nats_connected", server=_server_name(nc))
        return nc

    async def _ensure_streams(self, nc: NatsClient) -> None:
        """Create the state (and history) stream, or bring existing ones to our configuration; retried later
        on failure."""
        # Bounded: this runs in the sender before a batch, so a JetStream API that does not answer must not
        # hold publishing for long (the outbox keeps filling meanwhile, within its bound).
        js = nc.jetstream(timeout=self._connect_timeout_s)
        state = nats.js.api.StreamConfig(
            name=self._stream,
            max_msgs_per_subject=1,
            duplicate_window=self._duplicate_window_s,
            storage=nats.js.api.StorageType.FILE,
            discard=nats.js.api.DiscardPolicy.OLD,
        )
        if self._history:
            # The history stream captures the subjects; the state stream copies from it (see the module doc).
            # The state stream goes first: it must have released the subjects before the history stream takes them.
            state.subjects = []
            state.sources = [nats.js.api.StreamSource(name=self._history_stream)]
            history = nats.js.api.StreamConfig(
                name=self._history_stream,
                subjects=list(STATE_STREAM_SUBJECTS),
                max_age=self._history_max_age_s,
                max_bytes=self._history_max_bytes,
                duplicate_window=self._duplicate_window_s,
                storage=nats.js.api.StorageType.FILE,
                discard=nats.js.api.DiscardPolicy.OLD,
            )
            configs: tuple[nats.js.api.StreamConfig, ...] = (state, history)
        else:
            state.subjects = list(STATE_STREAM_SUBJECTS)
            configs = (state,)
        for config in configs:
            try:
                await _put_stream(js, config)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                self._stream_next_try = time.monotonic() + _STREAM_RETRY_S
                fields: dict[str, object] = {"stream": config.name}
                if isinstance(exc, nats.js.errors.APIError) and exc.err_code == _SUBJECTS_OVERLAP:
                    holder = await _stream_capturing(js, STATE_STREAM_SUBJECTS[0]) or "another stream"
                    fields["advice"] = (
                        f"{holder} captures these subjects: delete it (nats stream rm {holder}) or turn history "
                        "back on" if not self._history else f"{holder} captures these subjects: delete or change it"
                    )
                self._account.log_error("nats_stream_failed", exc, **fields)
                return
        self._stream_due = False
        event(log, logging.INFO, "nats_streams_ready", stream=self._stream,
              history_stream=self._history_stream if self._history else None)

    # ------------------------------------------------------------------------------------ callbacks

    async def _on_error(self, exc: Exception) -> None:
        self._account.log_error("nats_error", exc)

    async def _on_disconnected(self) -> None:
        # nats-py runs its callbacks as tasks: the one for a failed first attempt (server not up yet) can run
        # after the connection came up, and must not mark a live connection down (the sender would wait forever).
        nc = self._nc
        if nc is not None and nc.is_connected:
            return
        if self._connected.is_set():
            self._connected.clear()
            event(log, logging.WARNING, "nats_disconnected")

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self._stream_due = self._jetstream  # a restarted server may have lost a memory-backed stream
        self._stream_next_try = 0.0
        self._connected.set()
        nc = self._nc
        event(log, logging.INFO, "nats_reconnected", server=_server_name(nc) if nc is not None else None)

    async def _on_closed(self) -> None:
        self._connected.clear()


def _server_name(nc: NatsClient) -> str | None:
    url = nc.connected_url
    return f"{url.hostname}:{url.port}" if url is not None else None


async def _put_stream(js: nats.js.JetStreamContext, config: nats.js.api.StreamConfig) -> None:
    """Create the stream `config` names, or update the existing one to `config`."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


async def _stream_capturing(js: nats.js.JetStreamContext, subject: str) -> str | None:
    """The name of the stream whose subjects overlap `subject`, if the server says (for an error's advice)."""
    try:
        return await js.find_stream_name_by_subject(subject)
    except (nats.errors.Error, OSError, TimeoutError):
        return None
