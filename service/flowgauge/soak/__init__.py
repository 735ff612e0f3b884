"""`flowgauge soak`: the daemon for a long run at a high synthetic rate under faults, checked against ground truth.

Three processes on loopback, so that what is measured is the daemon alone:
* the simulators (`soak.sims`): all five venues, Bybit's recording replicated under new coin names (`soak.tapes`)
  so it serves many instruments, faults every few seconds (Bybit: the fault framework's kinds on a schedule;
  the others: sequence gaps and malformed frames), every book message's truth kept;
* the daemon (`soak.child`): the real `app.Daemon` with its production config shape, plus a sampler of its
  RSS and event-loop lag;
* this process (`soak.run`): starts both, subscribes to the daemon's bus like a strategy and checks every
  payload against the truth (`soak.check`), then prints the figures: messages processed, wrong payloads (must
  be 0), resyncs, crashes (must be 0), RSS at start, after the warm-up and at the end (growth after the warm-up
  must stay under 2%), the event loop's lag, and the machine's load.

Not part of the default test suite: a run takes `--minutes` (default 15: 5 of warm-up, 10 measured).
"""

from __future__ import annotations

from flowgauge.soak.run import add_arguments, execute

__all__ = ["add_arguments", "execute"]
