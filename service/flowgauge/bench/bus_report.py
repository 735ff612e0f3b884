"""The bus benchmark's table: the summary of `bench.bus` as text (what the README's "Bus benchmark" shows).

Sits under `flowgauge.bench`; pure formatting, no measurement.
"""

from __future__ import annotations

from typing import Any

__all__ = ["table"]


def _fmt(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _cell(spread: dict[str, Any], digits: int = 0) -> str:
    if spread["median"] is None:
        return "n/a"
    return f"{_fmt(spread['median'], digits)} ({_fmt(spread['min'], digits)}-{_fmt(spread['max'], digits)})"


def table(summary: dict[str, Any]) -> str:
    """The human-readable table of a summary (what the README's "Bus benchmark" shows)."""
    env, payloads = summary["environment"], summary["payloads"]
    lines = [
        f"flowgauge bench-bus: {summary['mode']}, {summary['rounds']} interleaved round(s), median (min-max); "
        f"{payloads['distinct']} real payloads, mean {payloads['mean_bytes']:,.0f} bytes; "
        f"Python {env['python']}, {env['event_loop']}, {env['cpus']} CPU(s), load {env['load_average']}",
        f"brokers: {summary['brokers'].get('nats-server')}; {summary['brokers'].get('redis-server')}",
        f"rate: {summary['rate_method']['messages_per_round']:,} messages per round, at most "
        f"{summary['rate_method']['window']:,} in flight; latency: {summary['latency_method']['rate']:,.0f} msgs/s "
        f"for {summary['latency_method']['seconds']:g} s per round; one SDK subscriber per backend in its own "
        f"process",
        "",
        f"{'rate':<32}{'offered msgs/s':>26}{'delivered msgs/s':>26}{'dropped':>9}"
        f"{'publisher CPU us/msg':>24}{'broker CPU us/msg':>24}{'subscriber CPU us/msg':>24}",
    ]
    for backend in summary["backends"].values():
        rate = backend["rate"]
        dropped = rate["publisher_dropped"] + rate["sdk_dropped"]
        lines.append(
            f"{backend['label']:<32}{_cell(rate['offered_msgs_per_s']):>26}{_cell(rate['delivered_msgs_per_s']):>26}"
            f"{dropped:>9}{_cell(rate['publisher_cpu_us_per_msg'], 1):>24}"
            f"{_cell(rate['broker_cpu_us_per_msg'], 1):>24}{_cell(rate['subscriber_cpu_us_per_msg'], 1):>24}"
        )
    lines += ["", f"{'latency publish -> SDK':<32}{'p50 us':>26}{'p99 us':>26}{'dropped':>9}{'max us':>24}"]
    for backend in summary["backends"].values():
        latency = backend["latency"]
        dropped = latency["publisher_dropped"] + latency["sdk_dropped"]
        lines.append(
            f"{backend['label']:<32}{_cell(latency['p50_us']):>26}{_cell(latency['p99_us']):>26}{dropped:>9}"
            f"{_cell(latency['max_us']):>24}"
        )
    for gap in summary["gaps"]:
        lines.append(f"gap: {gap}")
    return "\n".join(lines)
