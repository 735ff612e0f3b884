"""Broker backends without a broker: config keys, the outbox policy, message ids, and which /metrics series exist."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from flowgauge.app import Daemon, configured_backends
from flowgauge.config import ConfigError, check_config_main, load_settings, parse_settings, redacted
from flowgauge.publish.codec import encode
from flowgauge.publish.nats import message_id
from flowgauge.publish.outbox import Outbox, describe_error, report_crash
from flowgauge.telemetry.instruments import Telemetry


def _backends_in_metrics(registry: CollectorRegistry) -> set[str]:
    text = generate_latest(registry).decode()
    return {
        line.split('backend="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("flowgauge_publ") and 'backend="' in line
    }


def test_brokers_are_off_by_default_and_absent_from_metrics() -> None:
    settings = load_settings(None, {})
    assert settings.bus.nats.url is None and settings.bus.redis.url is None
    assert not settings.bus.nats.enabled and not settings.bus.redis.enabled
    assert configured_backends(settings) == ("embedded",)
    daemon = Daemon(settings)
    # No nats or redis series for backends that are not running (the old /metrics showed all four).
    assert _backends_in_metrics(daemon.registry) == {"embedded"}


def test_enabled_brokers_get_their_series_from_the_start() -> None:
    # A backend is on exactly when its URL is set.
    env = {"FLOWGAUGE_BUS__NATS__URL": "nats://127.0.0.1:4222", "FLOWGAUGE_BUS__REDIS__URL": "redis://127.0.0.1/0"}
    settings = load_settings(None, env)
    assert configured_backends(settings) == ("embedded", "nats", "redis")
    daemon = Daemon(settings)
    assert _backends_in_metrics(daemon.registry) == {"embedded", "nats", "redis"}
    value = daemon.registry.get_sample_value
    assert value("flowgauge_publish_dropped_total", {"backend": "nats", "reason": "queue_full"}) == 0
    assert value("flowgauge_publish_dropped_total", {"backend": "redis", "reason": "send_failed"}) == 0


def test_drop_reason_outside_the_vocabulary_is_a_programming_error() -> None:
    telemetry = Telemetry(CollectorRegistry(), backends=("nats",))
    with pytest.raises(ValueError, match="unknown drop reason"):
        telemetry.count_publish_dropped("nats", reason="because")


def test_broker_config_keys_are_validated_together() -> None:
    env = {
        "FLOWGAUGE_BUS__NATS__URL": "http://x",
        "FLOWGAUGE_BUS__NATS__QUEUE_SIZE": "0",
        "FLOWGAUGE_BUS__NATS__STREAM": "a.b",
        "FLOWGAUGE_BUS__REDIS__URL": "nats://x",
        "FLOWGAUGE_BUS__REDIS__LAST_TTL_S": "0",
        "FLOWGAUGE_BUS__REDIS__STREAM_MAXLEN": "0",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(None, env)
    keys = [problem.split(":", 1)[0] for problem in info.value.problems]
    assert keys == [
        "bus.nats.url", "bus.nats.queue_size", "bus.nats.stream",
        "bus.redis.url", "bus.redis.last_ttl_s", "bus.redis.stream_maxlen",
    ]


def test_broker_urls_from_the_environment_and_their_passwords_redacted() -> None:
    env = {
        "FLOWGAUGE_BUS__NATS__URL": "nats://app:s3cret@10.0.0.1:4222,nats://10.0.0.2:4222",
        "FLOWGAUGE_BUS__NATS__JETSTREAM": "true",
        "FLOWGAUGE_BUS__REDIS__URL": "redis://:pw0rd@cache:6379/2",
    }
    settings = load_settings(None, env)
    assert settings.bus.nats.jetstream is True
    assert settings.bus.redis.url == "redis://:pw0rd@cache:6379/2"
    data = redacted(settings)
    assert data["bus"]["nats"]["url"] == "nats://app:***@10.0.0.1:4222,nats://10.0.0.2:4222"
    assert data["bus"]["redis"]["url"] == "redis://:***@cache:6379/2"
    assert "s3cret" not in repr(data) and "pw0rd" not in repr(data)


def test_an_empty_url_from_the_environment_turns_a_backend_off() -> None:
    data = {"bus": {"nats": {"url": "nats://a:4222"}, "redis": {"url": "redis://b/0"}}}
    on = parse_settings({**data, "venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}}})
    assert configured_backends(on) == ("embedded", "nats", "redis")
    off = parse_settings({**data, "venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}}},
                         {"FLOWGAUGE_BUS__NATS__URL": "", "FLOWGAUGE_BUS__REDIS__URL": "null"})
    assert configured_backends(off) == ("embedded",)
    assert redacted(off)["bus"]["nats"]["url"] is None


def test_the_retired_enabled_keys_name_the_new_rule() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"FLOWGAUGE_BUS__NATS__ENABLED": "true"})
    assert info.value.problems == [
        "bus.nats.enabled: no longer a key: NATS publishing is on exactly when bus.nats.url is set (remove it; "
        "url null or unset = off) (set by FLOWGAUGE_BUS__NATS__ENABLED)"
    ]
    with pytest.raises(ConfigError) as info:
        parse_settings({"venues": {"bybit": {"symbols": ["BTC/USDT:USDT"]}},
                        "bus": {"redis": {"enabled": True, "url": "redis://b/0"}}})
    assert info.value.problems == [
        "bus.redis.enabled: no longer a key: Redis publishing is on exactly when bus.redis.url is set (remove it; "
        "url null or unset = off)"
    ]


def test_history_and_replica_keys_are_validated() -> None:
    env = {
        "FLOWGAUGE_BUS__NATS__URL": "nats://127.0.0.1:4222",
        "FLOWGAUGE_BUS__NATS__HISTORY": "true",
        "FLOWGAUGE_BUS__NATS__REPLICA": "true",
        "FLOWGAUGE_BUS__NATS__HISTORY_STREAM": "bad name",
        "FLOWGAUGE_BUS__NATS__HISTORY_MAX_AGE_S": "0",
        "FLOWGAUGE_BUS__NATS__HISTORY_MAX_BYTES": "0",
        "FLOWGAUGE_PUBLISH__CONFLATE": "off",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(None, env)
    assert [problem.split(":", 1)[0] for problem in info.value.problems] == [
        "bus.nats.history_max_age_s", "bus.nats.history_max_bytes", "bus.nats.history_stream",
        "bus.nats.history", "bus.nats.replica",
    ]
    assert "bus.nats.history: needs bus.nats.jetstream: true" in info.value.problems[3]
    settings = load_settings(None, {**env, "FLOWGAUGE_BUS__NATS__HISTORY_STREAM": "HIST",
                                    "FLOWGAUGE_BUS__NATS__HISTORY_MAX_AGE_S": "600",
                                    "FLOWGAUGE_BUS__NATS__HISTORY_MAX_BYTES": "1048576",
                                    "FLOWGAUGE_BUS__NATS__JETSTREAM": "true"})
    nats_settings = settings.bus.nats
    assert (nats_settings.history, nats_settings.history_stream, nats_settings.history_max_age_s,
            nats_settings.history_max_bytes, nats_settings.replica) == (True, "HIST", 600.0, 1048576, True)
    with pytest.raises(ConfigError) as info:
        load_settings(None, {**env, "FLOWGAUGE_BUS__NATS__JETSTREAM": "true", "FLOWGAUGE_BUS__NATS__HISTORY_STREAM":
                             "FLOWGAUGE_STATE", "FLOWGAUGE_BUS__NATS__HISTORY_MAX_AGE_S": "600",
                             "FLOWGAUGE_BUS__NATS__HISTORY_MAX_BYTES": "1048576"})
    assert [problem.split(":", 1)[0] for problem in info.value.problems] == ["bus.nats.history_stream"]
    # What nats-server would refuse: a duplicate window under 100 ms, a history younger than the window.
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"FLOWGAUGE_BUS__NATS__DUPLICATE_WINDOW_S": "0.05"})
    assert info.value.problems == ["bus.nats.duplicate_window_s: must be >= 0.1 (NATS's minimum) (got 0.05) "
                                   "(set by FLOWGAUGE_BUS__NATS__DUPLICATE_WINDOW_S)"]
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"FLOWGAUGE_BUS__NATS__JETSTREAM": "true", "FLOWGAUGE_BUS__NATS__HISTORY": "true",
                             "FLOWGAUGE_BUS__NATS__HISTORY_MAX_AGE_S": "60"})
    assert info.value.problems == ["bus.nats.history_max_age_s: must be >= duplicate_window_s (120) (NATS's rule) "
                                   "(got 60) (set by FLOWGAUGE_BUS__NATS__HISTORY_MAX_AGE_S)"]


def test_replicas_refuse_conflation_and_throttling(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Both would make two replicas publish different subsets of the book updates: one line each, exit 2."""
    config = tmp_path / "replica.yaml"
    config.write_text(
        "bus:\n  nats:\n    url: nats://127.0.0.1:4222\n    jetstream: true\n    replica: true\n"
        "publish:\n  conflate: auto\n  min_interval_ms: 100\n"
    )
    assert check_config_main(str(config), False, {}) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":", 1)[0] for line in err] == ["publish.conflate", "publish.min_interval_ms"]
    assert err[0].startswith("publish.conflate: must be off when bus.nats.replica is true (got auto): ")
    assert err[1].startswith("publish.min_interval_ms: must be 0 when bus.nats.replica is true (got 100): ")
    assert all("which de-duplication cannot fix" in line for line in err)
    # The default conflate (auto) is refused too; off and no throttle pass, from the file or the environment.
    assert check_config_main(str(config), False, {"FLOWGAUGE_PUBLISH__MIN_INTERVAL_MS": "0"}) == 2
    assert capsys.readouterr().err.startswith("publish.conflate: ")
    env = {"FLOWGAUGE_PUBLISH__MIN_INTERVAL_MS": "0", "FLOWGAUGE_PUBLISH__CONFLATE": "off"}
    assert check_config_main(str(config), False, env) == 0
    # Without replica the same publish settings are fine.
    assert check_config_main(str(config), False, {"FLOWGAUGE_BUS__NATS__REPLICA": "false"}) == 0


def test_outbox_drops_the_oldest_and_counts() -> None:
    drops: list[int] = []
    outbox = Outbox(3, drops.append)
    for i in range(5):
        outbox.put("t", bytes([i]))
    assert outbox.dropped == 2 and drops == [1, 1]
    assert [payload for _, payload in outbox.take(10)] == [b"\x02", b"\x03", b"\x04"]
    outbox.close()
    outbox.put("t", b"late")
    assert len(outbox) == 0


def _payload(**fields: object) -> bytes:
    base = {"schema": "flowgauge.v1", "venue": "bybit", "symbol": "BTC/USDT:USDT", "instrument": "BTCUSDT",
            "seq": 7, "book_seq": None, "ts_exchange": 1_700_000_000_123_000_000, "bid_px": 1.0}
    return encode({**base, **fields})


def test_message_ids_come_from_what_replicas_see_identically() -> None:
    # The replica-local `seq` and receive times never enter the id.
    book = message_id(_payload(trigger="book", book_seq=991, seq=1, ts_recv=5))
    assert book == message_id(_payload(trigger="book", book_seq=991, seq=9000, ts_recv=6)) == "bybit:BTCUSDT:book:991"
    assert message_id(_payload(trigger="open_interest")) == "bybit:BTCUSDT:open_interest:1700000000123000000"
    assert message_id(_payload(trigger="funding")) == "bybit:BTCUSDT:funding:1700000000123000000"
    # Not de-duplicated: a book that is not VALID (no book_seq), liquidations, status payloads, garbage.
    assert message_id(_payload(trigger="book", book_seq=None)) is None
    assert message_id(_payload(trigger="liquidation")) is None
    assert message_id(encode({"schema": "flowgauge.v1", "venue": "bybit", "instrument": "BTCUSDT",
                              "state": "VALID", "ts_exchange": 1})) is None
    assert message_id(b"not json") is None


async def test_a_crashed_publisher_task_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("bug")

    task = asyncio.get_running_loop().create_task(broken(), name="publish:test")
    task.add_done_callback(report_crash)
    with caplog.at_level(logging.ERROR, logger="flowgauge.publish.outbox"):
        await asyncio.wait([task])  # its callbacks run in the order added: report_crash before wait's own
    assert any("publisher_task_crashed: task=publish:test" in r.getMessage() for r in caplog.records)
    assert describe_error(RuntimeError("bug")) == "RuntimeError: bug"
    assert describe_error(TimeoutError()) == "TimeoutError"
