"""The soak's simulator process: every venue simulator the soak asks for, in one process of their own.

Run by `flowgauge soak` as `python -m flowgauge.soak.sims PLAN.json`, so the simulators' CPU and memory never
count as the daemon's. The plan is a JSON list of `{"venue", "recording", "speed", "gap_every", "garbage_every",
"faults": ["KIND:key=value,..."], "truth_capacity"}`; each simulator listens on a free loopback port, and one
JSON line on stdout, `{"ready": {venue: port}}`, says where once all of them listen. SIGTERM or SIGINT stops
them; the last line is `{"faults": {venue: {kind: firings}}, "frames_sent": {venue: n},
"truth_repeated": {venue: n}, ...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

from flowgauge.simulate import SIMULATORS
from flowgauge.simulate.faults import parse_fault

__all__ = ["main"]


async def _serve(plan: list[dict[str, Any]]) -> None:
    from flowgauge.simulate.base import SimulatorServer

    started: dict[str, SimulatorServer[Any]] = {}
    all_ready = asyncio.Event()
    out = sys.stdout.buffer

    def ready(venue: str) -> Any:
        def on_ready(sim: SimulatorServer[Any]) -> None:
            started[venue] = sim
            if len(started) == len(plan):
                all_ready.set()

        return on_ready

    async def announce() -> None:
        await all_ready.wait()
        out.write(orjson.dumps({"ready": {venue: sim.bound_port for venue, sim in started.items()}}) + b"\n")
        out.flush()

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(announce())
            for item in plan:
                venue = item["venue"]
                module = importlib.import_module(SIMULATORS[venue].module)
                options: dict[str, Any] = {}
                if item.get("faults"):
                    options["faults"] = [parse_fault(text) for text in item["faults"]]
                if item.get("truth_capacity") is not None:
                    options["truth_capacity"] = int(item["truth_capacity"])
                tasks.create_task(
                    module.run_simulator(
                        str(Path(item["recording"])),
                        host="127.0.0.1",
                        port=0,
                        speed=float(item.get("speed", 1.0)),
                        loop=True,
                        garbage_every=item.get("garbage_every"),
                        gap_every=item.get("gap_every"),
                        on_ready=ready(venue),
                        **options,
                    ),
                    name=f"sim:{venue}",
                )
    except asyncio.CancelledError:
        pass
    finally:
        report = {
            "faults": {venue: dict(sim.faults.fired) for venue, sim in started.items()},
            "frames_sent": {venue: sim.frames_sent for venue, sim in started.items()},
            "gaps_injected": {venue: sim.gaps_injected for venue, sim in started.items()},
            "garbage_sent": {venue: sim.garbage_sent for venue, sim in started.items()},
            "truth_repeated": {
                venue: sum(ring["repeated"] for ring in sim.truth.stats()["instruments"].values())
                for venue, sim in started.items()
            },
        }
        with contextlib.suppress(OSError):
            out.write(orjson.dumps(report) + b"\n")
            out.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m flowgauge.soak.sims PLAN.json", file=sys.stderr)
        return 2
    from flowgauge import logs

    logs.configure("WARNING")
    import logging

    for handler in logging.getLogger().handlers:  # log lines to stderr: stdout carries the ready/report lines
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    plan = orjson.loads(Path(args[0]).read_bytes())
    asyncio.run(_serve(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())
