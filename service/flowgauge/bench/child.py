"""A loopback websocket server in a spawned child process, for the bench's feeders and frame servers.

Sits under `flowgauge.bench`. The server runs in its own process so the measured side has a core of its own.
Protocol with `target(pipe, *args)`: the child sends its listening port on the pipe once it serves, and stops
when the parent sends anything ("stop") or goes away.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
from collections.abc import Callable
from typing import Any, Self

__all__ = ["SPAWN", "ChildServer"]

SPAWN = multiprocessing.get_context("spawn")  # children start clean: no inherited loop, threads or frames
_START_TIMEOUT_S = 120.0


class ChildServer:
    """Context manager: starts `target` in a child process; `url` is valid inside the `with` block."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], name: str) -> None:
        self._target, self._args, self._name = target, args, name
        self.url = ""
        self._pipe: multiprocessing.connection.Connection | None = None
        self._process: Any = None

    def __enter__(self) -> Self:
        parent, child = SPAWN.Pipe()
        process = SPAWN.Process(target=self._target, args=(child, *self._args), name=self._name, daemon=True)
        process.start()
        child.close()
        self._pipe, self._process = parent, process
        if not parent.poll(_START_TIMEOUT_S):
            self.__exit__(None, None, None)
            raise RuntimeError(f"{self._name} did not start")
        self.url = f"ws://127.0.0.1:{parent.recv()}/"
        return self

    def __exit__(self, *exc: object) -> None:
        pipe, process = self._pipe, self._process
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.send("stop")
            pipe.close()
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.terminate()  # our own child, by its handle
                process.join(5)
