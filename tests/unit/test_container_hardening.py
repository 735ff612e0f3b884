"""The container runs as a non-root user with a read-only root filesystem (issue 10, item 8), structurally:

* compose's flowgauge service: `read_only: true`, a tmpfs on /tmp (the one place the daemon may write besides
  `record.dir`), `no-new-privileges`, every capability dropped and none added, not privileged, no root `user:`.
* the Dockerfile's final stage switches to a user that is not root (created with a non-zero uid) before the
  entrypoint, and tells Python not to write bytecode (site-packages is read-only at run time).

That the daemon itself writes nothing in its working directory or HOME is checked by running it:
tests/integration/test_broker_credentials.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _service() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service: dict[str, Any] = compose["services"]["flowgauge"]
    return service


def test_compose_runs_the_daemon_read_only_without_privileges() -> None:
    service = _service()
    assert service.get("read_only") is True
    tmpfs = service.get("tmpfs")
    mounts = [tmpfs] if isinstance(tmpfs, str) else list(tmpfs or [])
    assert any(mount.split(":", 1)[0] == "/tmp" for mount in mounts), mounts
    options = [option.replace("=", ":") for option in service.get("security_opt", [])]
    assert "no-new-privileges:true" in options or "no-new-privileges" in options, options
    assert [cap.upper() for cap in service.get("cap_drop", [])] == ["ALL"]
    assert not service.get("cap_add") and not service.get("privileged")
    assert str(service.get("user", "10001")).split(":")[0] not in ("0", "root")


def test_the_image_runs_as_a_non_root_user_and_writes_no_bytecode() -> None:
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rfind("\nFROM ") :]  # the runtime stage
    users = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    name = users[-1].split(":")[0]
    if not name.isdigit():  # a named user: created in this stage with a non-zero uid
        created = re.search(rf"useradd\b[^\n]*--uid (\d+)[^\n]*\b{re.escape(name)}\b", final)
        assert created is not None and int(created.group(1)) > 0, final
    assert final.index("USER ") < final.index("ENTRYPOINT")
    env = " ".join(re.findall(r"^ENV (.+(?:\\\n.+)*)", final.replace("\\\n", " "), re.M))
    assert "PYTHONDONTWRITEBYTECODE=1" in env.split(), env
