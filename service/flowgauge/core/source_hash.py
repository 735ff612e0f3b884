"""The hash that ties a built extension to its sources (stdlib only: setup.py loads this file by path).

sha256 over each compiled source's name and bytes, in a fixed order: the core's `_core.*` files and
`metrics/book_families.py` (compiled as `_families`, see setup.py). setup.py embeds it in the `_core` extension at
build time (`_core.SOURCE_HASH`) and builds both extensions together; comparing it with the hash of the sources in
the checkout tells a stale build from a current one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_NAMES = ("_core.pxd", "_core.pyx", "../metrics/book_families.py")
"""Relative to the core's directory."""


def source_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in SOURCE_NAMES:
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update((directory / name).read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
