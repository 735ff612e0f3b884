"""Start-up failures end with a clear message and exit 2, never a traceback."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.procs import free_port, write_config

pytestmark = pytest.mark.integration


async def test_taken_http_port_is_reported_with_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # The venue points at a closed port: the daemon must fail on the HTTP port before that matters.
        config = write_config(tmp_path / "cfg.yaml", free_port(), free_port(), port)
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "flowgauge", "run", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"cannot listen for http on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def test_unparseable_url_in_the_environment_is_a_config_error(tmp_path: Path) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flowgauge", "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "FLOWGAUGE_VENUES__BYBIT__WS_URL": "wss://[::1"},
    )
    assert result.returncode == 2
    assert "venues.bybit.ws_url: not a valid URL" in result.stderr
    assert "Traceback" not in result.stderr
