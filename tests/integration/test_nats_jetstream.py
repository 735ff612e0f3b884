"""JetStream state and history modes against a real `nats-server -js` (temp store dir) the test starts on a free port.

The publisher keeps a state stream over the metric and status subjects with one message per subject: a late
joiner reads the current value of every subject at once; two replicas' copies of one book update (same venue
sequence id, different replica-local seq) are stored once; trade subjects never enter the stream. With history on,
a history stream (bounded by age and bytes) keeps the recent updates in order for replay, and the state stream,
which then sources it, still keeps one message per subject. Two replica daemons against one simulator store each
book update once.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import nats.js.api
import nats.js.errors
import orjson
import pytest
import yaml
from tests.brokers import commands_handled, nats_server, subscribe_live
from tests.conftest import BYBIT_RECORDING
from tests.procs import flowgauge, free_port, wait_for, write_config

from flowgauge.publish import topics
from flowgauge.publish.codec import encode
from flowgauge.publish.nats import STATE_STREAM_SUBJECTS, NatsPublisher

pytestmark = pytest.mark.integration

BTC = topics.book_topic("bybit", "BTC/USDT:USDT")
ETH = topics.book_topic("bybit", "ETH/USDT:USDT")
BTC_STATUS = topics.status_topic("bybit", "BTC/USDT:USDT")
TRADES = "flowgauge.v1.trades.bybit.BTC-USDT-USDT"  # the future trades family: must stay out of the state stream
STREAM = "FG_TEST_STATE"
HISTORY = "FG_TEST_HISTORY"


def _book(instrument: str, symbol: str, book_seq: int, seq: int, bid: float) -> bytes:
    return encode({
        "schema": "flowgauge.v1", "venue": "bybit", "symbol": symbol, "instrument": instrument, "trigger": "book",
        "seq": seq, "book_seq": book_seq, "book_state": "VALID", "ts_exchange": 1_700_000_000_000_000_000 + book_seq,
        "ts_recv": 0, "ts_publish": 0, "bid_px": bid,
    })


def _status(state: str) -> bytes:
    return encode({"schema": "flowgauge.v1", "venue": "bybit", "symbol": "BTC/USDT:USDT", "instrument": "BTCUSDT",
                   "state": state, "reason": None, "ts_exchange": 1, "ts_recv": 1, "ts_publish": 1})


async def _publisher(port: int, **history: Any) -> NatsPublisher:
    publisher = NatsPublisher(f"nats://127.0.0.1:{port}", jetstream=True, stream=STREAM, reconnect_wait_s=0.1,
                              **history)
    await publisher.start()
    return publisher


async def test_state_stream_gives_a_late_joiner_every_current_value_once(tmp_path: Path) -> None:
    with nats_server(tmp_path, jetstream=True) as server:
        nc = await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
        js = nc.jetstream()
        replica_a = await _publisher(server.port)
        replica_b = await _publisher(server.port)
        try:
            # Both replicas see the same venue updates; their replica-local seq differs.
            for book_seq in (100, 101, 102):
                replica_a.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", book_seq, seq=book_seq - 99, bid=book_seq))
            replica_a.publish(ETH, _book("ETHUSDT", "ETH/USDT:USDT", 7, seq=1, bid=3000.0))
            replica_a.publish(BTC_STATUS, _status("RESYNCING"))
            replica_a.publish(BTC_STATUS, _status("VALID"))
            replica_a.publish(TRADES, b'{"trade":1}')

            async def stored() -> bool:
                try:
                    info = await js.stream_info(STREAM)
                except nats.js.errors.NotFoundError:
                    return False
                return info.state.messages == 3 and info.state.last_seq >= 6

            await wait_for(stored, "replica A's updates in the state stream")
            info = await js.stream_info(STREAM)
            assert info.config.max_msgs_per_subject == 1
            assert sorted(info.config.subjects or []) == sorted(STATE_STREAM_SUBJECTS)
            last_seq = info.state.last_seq

            # Replica B publishes the same venue update 102 (its own seq 5000): de-duplicated, not stored again.
            replica_b.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 102, seq=5000, bid=-1.0))
            # ... then a new update 103 first (stored) and A's copy of it (dropped).
            replica_b.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 103, seq=5001, bid=103.0))
            await wait_for(lambda: replica_b.published == 2, "replica B handing both messages to nats-py")
            # B's copy of 103 reaches the server before A's. Not flush(): nats-py writes its PING ahead of PUBs still
            # in its pending buffer, so a PONG does not mean the server has them (tests.brokers.subscribe_live).
            await commands_handled(_client(replica_b), "replica B's copy of update 103")
            replica_a.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 103, seq=5, bid=-2.0))
            await wait_for(lambda: replica_a.published == 8, "replica A handing its last message to nats-py")

            # Once the server has handled A's copy of 103, the stream holds exactly one new message: B's.
            await commands_handled(_client(replica_a), "replica A's copy of update 103")
            assert (await js.stream_info(STREAM)).state.last_seq == last_seq + 1

            # A late joiner: one subscription, the current value of every subject at once.
            current: dict[str, dict[str, Any]] = {}
            sub = await js.subscribe(
                "flowgauge.v1.>", ordered_consumer=True,
                deliver_policy=nats.js.api.DeliverPolicy.LAST_PER_SUBJECT,
            )
            try:
                while len(current) < 3:
                    msg = await sub.next_msg(timeout=5)
                    current[msg.subject] = orjson.loads(msg.data)
            finally:
                await sub.unsubscribe()
            assert set(current) == {BTC, ETH, BTC_STATUS}
            assert current[BTC]["book_seq"] == 103 and current[BTC]["bid_px"] == 103.0
            assert current[ETH]["bid_px"] == 3000.0
            assert current[BTC_STATUS]["state"] == "VALID"
            with pytest.raises(nats.js.errors.NotFoundError):
                await js.get_last_msg(STREAM, TRADES)
            btc = await js.get_last_msg(STREAM, BTC)
            assert btc.headers is not None and btc.headers["Nats-Msg-Id"] == "bybit:BTCUSDT:book:103"
        finally:
            await replica_a.close()
            await replica_b.close()
            await nc.close()


def _client(publisher: NatsPublisher) -> nats.NATS:
    nc = publisher._nc
    assert nc is not None
    return nc


async def test_state_stream_is_recreated_after_a_restart_and_publishing_resumes(tmp_path: Path) -> None:
    """The stream is (re)checked after every reconnect; an existing stream is brought to our configuration."""
    with nats_server(tmp_path, jetstream=True) as server:
        publisher = await _publisher(server.port)
        try:
            publisher.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 1, seq=1, bid=1.0))
            await wait_for(lambda: publisher.published == 1, "first message")
            server.stop()
            await wait_for(lambda: not publisher.connected, "disconnect noticed")
            server.start()  # same store dir: the stream survives on disk
            await wait_for(lambda: publisher.connected, "reconnected")
            publisher.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 2, seq=2, bid=2.0))
            nc = await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
            try:
                js = nc.jetstream()

                async def latest_is_2() -> bool:
                    try:
                        msg = await js.get_last_msg(STREAM, BTC)
                    except (TimeoutError, nats.js.errors.NotFoundError, nats.errors.TimeoutError):
                        return False
                    return bool(orjson.loads(msg.data)["book_seq"] == 2)

                await wait_for(latest_is_2, "the update published after the restart as the current value")
            finally:
                await nc.close()
        finally:
            await publisher.close()


async def test_both_streams_are_recreated_after_a_server_lost_them(tmp_path: Path) -> None:
    """History on: a server restarted without its store (as a memory-backed stream would be lost) gets both
    streams back from the publisher's check after the reconnect, and the next update lands in both."""
    with nats_server(tmp_path, jetstream=True) as server:
        publisher = await _publisher(server.port, history=True, history_stream=HISTORY)
        try:
            publisher.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 1, seq=1, bid=1.0))
            await wait_for(lambda: publisher.published == 1, "first message")
            server.stop()
            await wait_for(lambda: not publisher.connected, "disconnect noticed")
            _wipe_store(server.args)  # the streams are gone with it
            server.start()
            await wait_for(lambda: publisher.connected, "reconnected")
            publisher.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 2, seq=2, bid=2.0))
            nc = await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
            try:
                js = nc.jetstream()

                async def latest_in(stream: str) -> int | None:
                    try:
                        msg = await js.get_last_msg(stream, BTC)
                    except (TimeoutError, nats.js.errors.NotFoundError, nats.errors.TimeoutError):
                        return None
                    return int(orjson.loads(msg.data)["book_seq"])

                async def in_both() -> bool:
                    return await latest_in(HISTORY) == 2 and await latest_in(STREAM) == 2

                await wait_for(in_both, "the update published after the restart in the history and state streams")
                history = await js.stream_info(HISTORY)
                assert history.state.messages == 1  # the new store: only what came after the restart
                assert sorted(history.config.subjects or []) == sorted(STATE_STREAM_SUBJECTS)
                state = await js.stream_info(STREAM)
                assert [source.name for source in state.config.sources or []] == [HISTORY]
            finally:
                await nc.close()
        finally:
            await publisher.close()


async def test_turning_history_off_again_says_to_delete_the_history_stream(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The state stream cannot take the subjects back while the history stream holds them (NATS forbids the
    overlap), and the daemon never deletes a stream: the failure is logged with the advice, and the old
    arrangement (history captures, state sources) keeps storing updates meanwhile."""
    with nats_server(tmp_path, jetstream=True) as server:
        with_history = await _publisher(server.port, history=True, history_stream=HISTORY)
        with_history.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 1, seq=1, bid=1.0))
        await wait_for(lambda: with_history.published == 1, "first message")
        await with_history.close()
        with caplog.at_level(logging.WARNING, logger="flowgauge.publish.outbox"):
            without = await _publisher(server.port)
            try:
                without.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 2, seq=2, bid=2.0))
                await wait_for(lambda: without.published == 1, "the message after history was turned off")
                failed = [getattr(r, "fields", {}) for r in caplog.records if r.getMessage() == "nats_stream_failed"]
                assert failed and failed[0]["stream"] == STREAM and "10065" in str(failed[0]["error"])
                assert f"nats stream rm {HISTORY}" in str(failed[0]["advice"])
                nc = await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
                try:
                    js = nc.jetstream()

                    async def stored_in_both() -> bool:
                        try:
                            history = await js.get_last_msg(HISTORY, BTC)
                            state = await js.get_last_msg(STREAM, BTC)
                        except nats.js.errors.NotFoundError:
                            return False
                        return bool(orjson.loads(history.data)["book_seq"] == orjson.loads(state.data)["book_seq"] == 2)

                    await wait_for(stored_in_both, "update 2 still stored by the old arrangement")
                finally:
                    await nc.close()
            finally:
                await without.close()


def _wipe_store(args: list[str]) -> None:
    """Empty the JetStream store directory a nats-server was started with (`-sd DIR`)."""
    store = Path(args[args.index("-sd") + 1])
    shutil.rmtree(store)
    store.mkdir()


async def test_daemon_with_jetstream_configured_keeps_current_values(tmp_path: Path) -> None:
    """`bus.nats.jetstream: true` in the config: a late joiner reads every book's and status's current value."""
    sim_port, bus_port, http_port = free_port(), free_port(), free_port()
    with nats_server(tmp_path, jetstream=True) as server:
        config = write_config(tmp_path / "cfg.yaml", sim_port, bus_port, http_port)
        data = yaml.safe_load(config.read_text())
        data["bus"]["nats"] = {"url": f"nats://127.0.0.1:{server.port}", "jetstream": True,
                               "stream": STREAM}
        config.write_text(yaml.safe_dump(data))
        sim_args = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port),
                    "--speed", "4"]
        with (
            flowgauge(sim_args, tmp_path / "sim.log"),
            flowgauge(["run", "-c", str(config)], tmp_path / "daemon.log") as daemon,
        ):
            nc = await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
            try:
                js = nc.jetstream()
                wanted = {BTC, ETH, BTC_STATUS, topics.status_topic("bybit", "ETH/USDT:USDT")}

                async def late_joiner() -> dict[str, dict[str, Any]] | None:
                    try:
                        current = {subject: await js.get_last_msg(STREAM, subject) for subject in wanted}
                    except (TimeoutError, nats.js.errors.NotFoundError, nats.errors.TimeoutError):
                        return None
                    return {subject: orjson.loads(msg.data) for subject, msg in current.items()}

                current = await wait_for(late_joiner, "current values of both books and their status")
                assert current[BTC]["symbol"] == "BTC/USDT:USDT"
                assert current[BTC_STATUS]["state"] in {"SYNCING", "VALID"}
                info = await js.stream_info(STREAM, subjects_filter=">")
                assert info.config.max_msgs_per_subject == 1
                subjects = info.state.subjects or {}
                assert wanted <= set(subjects) and set(subjects.values()) == {1}  # one per subject ...
                assert info.state.messages == len(subjects) < info.state.last_seq  # ... of many stored updates
            finally:
                await nc.close()
            daemon.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(daemon.wait, 10) == 0


async def test_jetstream_mode_on_a_server_without_jetstream_still_publishes_core(tmp_path: Path) -> None:
    with nats_server(tmp_path) as server:  # no -js
        nc = await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
        received: list[bytes] = []

        async def on_msg(msg: Any) -> None:
            received.append(msg.data)

        await subscribe_live(nc, BTC, on_msg)
        publisher = await _publisher(server.port)
        try:
            publisher.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", 1, seq=1, bid=1.0))
            await wait_for(lambda: len(received) == 1, "the payload by core publish")
            assert orjson.loads(received[0])["book_seq"] == 1
        finally:
            await publisher.close()
            await nc.close()


async def test_history_stream_keeps_recent_updates_bounded_and_in_order(tmp_path: Path) -> None:
    """History on, over a state stream that existed without it (the upgrade path): the history stream holds the
    newest updates within its byte bound, a consumer replays them in order, the state stream (now sourcing the
    history stream) still holds one message per subject, and a replica's duplicate is stored in neither."""
    max_bytes, max_age_s, n = 16_384, 600.0, 200
    with nats_server(tmp_path, jetstream=True) as server:
        nc = await nats.connect(f"nats://127.0.0.1:{server.port}", allow_reconnect=False, connect_timeout=2)
        js = nc.jetstream()
        before = await _publisher(server.port)  # history off: the state stream captures the subjects itself
        try:
            before.publish(ETH, _book("ETHUSDT", "ETH/USDT:USDT", 7, seq=1, bid=3000.0))
            await wait_for(lambda: before.published == 1, "the first publisher's message")

            async def state_has_eth() -> bool:
                try:
                    return bool((await js.stream_info(STREAM)).state.messages == 1)
                except nats.js.errors.NotFoundError:
                    return False

            await wait_for(state_has_eth, "the state stream, created without history")
        finally:
            await before.close()
        history = {"history": True, "history_stream": HISTORY, "history_max_age_s": max_age_s,
                   "history_max_bytes": max_bytes}
        replica_a = await _publisher(server.port, **history)
        replica_b = await _publisher(server.port, **history)
        try:
            replica_a.publish(BTC_STATUS, _status("VALID"))

            async def state_has_status() -> bool:
                try:
                    return bool(orjson.loads((await js.get_last_msg(STREAM, BTC_STATUS)).data)["state"] == "VALID")
                except nats.js.errors.NotFoundError:
                    return False

            # The server starts copying into the state stream once it finds the new history stream (it retries
            # its source every few seconds); until then only the history stream's bounds keep what it will copy.
            await wait_for(state_has_status, "the state stream sourcing the history stream")
            for book_seq in range(1, n + 1):
                replica_a.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", book_seq, seq=book_seq, bid=float(book_seq)))

            async def history_has_all() -> bool:
                try:
                    info = await js.stream_info(HISTORY)
                except nats.js.errors.NotFoundError:
                    return False
                return info.state.last_seq == n + 1

            await wait_for(history_has_all, "every update stored in the history stream")
            info = await js.stream_info(HISTORY)
            assert sorted(info.config.subjects or []) == sorted(STATE_STREAM_SUBJECTS)
            assert info.config.max_bytes == max_bytes and info.config.max_age == max_age_s
            assert info.config.discard == nats.js.api.DiscardPolicy.OLD
            assert info.config.duplicate_window == 120.0
            # Bounded by bytes: the oldest updates were discarded, the newest kept.
            assert info.state.bytes <= max_bytes and 10 < info.state.messages < n
            kept, first_seq = info.state.messages, info.state.first_seq

            # A replay consumer over the history stream: the kept updates, in order, ending with the newest.
            sub = await js.subscribe(BTC, stream=HISTORY, ordered_consumer=True,
                                     deliver_policy=nats.js.api.DeliverPolicy.ALL)
            try:
                replayed = [orjson.loads((await sub.next_msg(timeout=5)).data)["book_seq"] for _ in range(kept)]
            finally:
                await sub.unsubscribe()
            assert replayed == list(range(n - kept + 1, n + 1))
            assert first_seq == n + 1 - kept + 1  # the status (stream seq 1) went first: discarded with the oldest

            # The state stream sources the history stream (no subjects of its own) and keeps one per subject.
            async def state_caught_up() -> bool:
                try:
                    msg = await js.get_last_msg(STREAM, BTC)
                except nats.js.errors.NotFoundError:
                    return False
                return bool(orjson.loads(msg.data)["book_seq"] == n)

            await wait_for(state_caught_up, "the newest update copied into the state stream")
            state = await js.stream_info(STREAM, subjects_filter=">")
            assert not state.config.subjects and [src.name for src in state.config.sources or []] == [HISTORY]
            assert state.config.max_msgs_per_subject == 1
            assert state.state.subjects == {BTC: 1, ETH: 1, BTC_STATUS: 1}
            assert orjson.loads((await js.get_last_msg(STREAM, ETH)).data)["bid_px"] == 3000.0  # kept from before
            assert orjson.loads((await js.get_last_msg(STREAM, BTC_STATUS)).data)["state"] == "VALID"

            # Replica B sends its copy of update n (its own seq): de-duplicated by the history stream.
            replica_b.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", n, seq=9999, bid=-1.0))
            replica_b.publish(BTC, _book("BTCUSDT", "BTC/USDT:USDT", n + 1, seq=10000, bid=float(n + 1)))
            await wait_for(lambda: replica_b.published == 2, "replica B handing both messages to nats-py")
            await wait_for(history_has_all_plus_one := _last_seq_is(js, HISTORY, n + 2), "update n+1 stored once")
            await commands_handled(_client(replica_b), "replica B's messages")
            assert await history_has_all_plus_one()
            last = await js.get_last_msg(HISTORY, BTC)
            assert orjson.loads(last.data)["book_seq"] == n + 1
        finally:
            await replica_a.close()
            await replica_b.close()
            await nc.close()


def _last_seq_is(js: Any, stream: str, seq: int) -> Any:
    async def check() -> bool:
        return bool((await js.stream_info(stream)).state.last_seq == seq)

    return check


async def test_two_replica_daemons_store_each_update_once(tmp_path: Path) -> None:
    """Two daemons with `bus.nats.replica` run the same instruments against one simulator (a shared market: both
    see the same frames with the same venue sequence ids) and publish to one JetStream with the history stream.
    A core subscriber sees both copies of the book updates; the history stream stores each update once (by
    subject and venue sequence id), and exactly one message per distinct message id plus one per message without
    an id (status, not-VALID books); the state stream, which copies the history stream, counts the same."""
    sim_port = free_port()
    with nats_server(tmp_path, jetstream=True) as server:
        url = f"nats://127.0.0.1:{server.port}"
        configs = []
        for name in ("a", "b"):
            config = write_config(tmp_path / f"{name}.yaml", sim_port, free_port(), free_port())
            data = yaml.safe_load(config.read_text())
            data["bus"]["nats"] = {"url": url, "jetstream": True, "stream": STREAM, "history": True,
                                   "history_stream": HISTORY, "replica": True}
            data["publish"] = {"conflate": "off", "min_interval_ms": 0}  # what check-config demands of replicas
            config.write_text(yaml.safe_dump(data))
            configs.append(config)

        nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
        seen: list[tuple[str, str | None, int | None]] = []  # (subject, Nats-Msg-Id, book_seq of a book payload)

        async def on_msg(msg: Any) -> None:
            payload = orjson.loads(msg.data)
            book_seq = payload.get("book_seq") if payload.get("trigger") == "book" else None
            seen.append((msg.subject, (msg.headers or {}).get("Nats-Msg-Id"), book_seq))

        await subscribe_live(nc, "flowgauge.v1.>", on_msg)
        js = nc.jetstream()
        sim_args = ["simulate", "--venue", "bybit", "--recording", str(BYBIT_RECORDING), "--port", str(sim_port),
                    "--speed", "4"]
        try:
            with (
                flowgauge(sim_args, tmp_path / "sim.log"),
                flowgauge(["run", "-c", str(configs[0])], tmp_path / "a.log") as daemon_a,
                flowgauge(["run", "-c", str(configs[1])], tmp_path / "b.log") as daemon_b,
            ):
                def published_by_both() -> int:
                    counts = Counter((subject, book_seq) for subject, _, book_seq in seen if book_seq is not None)
                    return sum(1 for n in counts.values() if n == 2)

                await wait_for(lambda: published_by_both() >= 200, "200 book updates published by both replicas", 60)
                for daemon in (daemon_a, daemon_b):
                    daemon.send_signal(signal.SIGTERM)
                for daemon in (daemon_a, daemon_b):
                    assert await asyncio.to_thread(daemon.wait, 10) == 0

            # Trades and clock bars (five-token subjects) are in neither stream (publish/nats.py's module doc).
            streamed = ("flowgauge.v1.trades.", "flowgauge.v1.bars.")
            captured = [entry for entry in seen if not entry[0].startswith(streamed)]
            ids = [msg_id for _, msg_id, _ in captured if msg_id is not None]
            expected = len(set(ids)) + sum(1 for _, msg_id, _ in captured if msg_id is None)
            updates = {(subject, book_seq) for subject, _, book_seq in captured if book_seq is not None}

            async def history_settled() -> bool:
                await nc.flush()
                try:
                    info = await js.stream_info(HISTORY)
                except nats.js.errors.NotFoundError:
                    return False
                return info.state.first_seq == 1 and info.state.last_seq == info.state.messages == expected

            await wait_for(history_settled, "one stored message per distinct update in the history stream")
            # Every stored message: each book update (subject, venue sequence id) and each message id once.
            stored_updates: Counter[tuple[str, int]] = Counter()
            stored_ids: Counter[str] = Counter()
            sub = await js.subscribe(">", stream=HISTORY, ordered_consumer=True,
                                     deliver_policy=nats.js.api.DeliverPolicy.ALL)
            try:
                for _ in range(expected):
                    msg = await sub.next_msg(timeout=5)
                    payload = orjson.loads(msg.data)
                    if payload.get("trigger") == "book" and payload.get("book_seq") is not None:
                        stored_updates[(msg.subject, payload["book_seq"])] += 1
                    if (msg_id := (msg.headers or {}).get("Nats-Msg-Id")) is not None:
                        stored_ids[msg_id] += 1
            finally:
                await sub.unsubscribe()
            assert set(stored_updates) == updates and set(stored_updates.values()) == {1}
            assert set(stored_ids) == set(ids) and set(stored_ids.values()) == {1}

            # The state stream copied each stored message once (its sequence counts them) and keeps one per subject.
            async def state_settled() -> bool:
                return bool((await js.stream_info(STREAM)).state.last_seq == expected)

            await wait_for(state_settled, "the state stream's copy of every stored update")
            state = await js.stream_info(STREAM, subjects_filter=">")
            assert set((state.state.subjects or {}).values()) == {1}
            assert state.state.messages == len({subject for subject, _, _ in captured})
        finally:
            await nc.close()
