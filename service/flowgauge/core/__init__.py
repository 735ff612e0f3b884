"""Which hot core runs: the compiled extension (`_core`, C-array books and per-event fields) or the pure-Python
reference (`book/` + `metrics/`), which stays the readable definition and the fallback.

The default is the compiled core when it is importable and built from the sources beside it; `select()` (the CLI
passes `FLOWGAUGE_CORE`) forces one. Both publish identical payloads (tests/conformance/test_core_equivalence.py).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from flowgauge.book.l2 import DEFAULT_MAX_LEVELS, L2Book
from flowgauge.book.sync import BookSync, SequenceRule
from flowgauge.connectors import levels
from flowgauge.core.source_hash import source_hash

__all__ = [
    "COMPILED",
    "CORES",
    "PYTHON",
    "CoreUnavailable",
    "active_core",
    "compiled_families",
    "compiled_module",
    "fallback_reason",
    "new_book",
    "new_sync",
    "select",
]

PYTHON = "python"
COMPILED = "compiled"
CORES = (PYTHON, COMPILED)


class CoreUnavailable(Exception):
    """The requested core cannot run (a user setting: reported in one line, exit 2)."""


def _load_compiled() -> tuple[ModuleType | None, str | None]:
    try:
        from flowgauge.core import _core  # type: ignore[attr-defined]  # a Cython extension: no stub for mypy
    except ImportError as exc:
        return None, f"the compiled core is not built ({exc})"
    here = Path(__file__).parent
    if (here / "_core.pyx").exists():
        # A source checkout (editable install): a build older than the sources would publish old logic.
        expected = source_hash(here)
        if expected != _core.SOURCE_HASH:
            return None, "the compiled core is older than its sources (rebuild: pip install -e .)"
    try:
        # The per-book-event metric families (metrics/book_families.py compiled as is): built with _core, and
        # _core's SOURCE_HASH covers their source too.
        from flowgauge.core import _families  # type: ignore[attr-defined]  # a Cython extension: no stub
    except ImportError as exc:
        return None, f"the compiled metric families are not built ({exc})"
    global _compiled_families
    _compiled_families = _families
    return _core, None


_compiled_families: ModuleType | None = None
_compiled, _unavailable = _load_compiled()
_active = PYTHON


def _activate(name: str) -> str:
    """Make `name` the active core, including the parsers' level validation (C loop or the reference)."""
    global _active
    _active = name
    levels.install_compiled(_compiled if name == COMPILED else None)
    return name


_activate(COMPILED if _compiled is not None else PYTHON)


def select(name: str | None) -> str:
    """Force a core by name (None or "" = the default); returns the one that will run.

    Raises:
        CoreUnavailable: an unknown name, or "compiled" when the extension cannot be used.
    """
    if not name:
        return _activate(COMPILED if _compiled is not None else PYTHON)
    if name == PYTHON:
        return _activate(PYTHON)
    if name == COMPILED:
        if _compiled is None:
            raise CoreUnavailable(f"FLOWGAUGE_CORE=compiled but {_unavailable}")
        return _activate(COMPILED)
    raise CoreUnavailable(f"FLOWGAUGE_CORE must be one of {', '.join(CORES)}, got {name!r}")


def active_core() -> str:
    """The core new engines use: "compiled" or "python"."""
    return _active


def fallback_reason() -> str | None:
    """Why the compiled core is not available (None when it is)."""
    return _unavailable


def compiled_module() -> ModuleType:
    if _compiled is None:
        raise CoreUnavailable(f"the compiled core is unavailable: {_unavailable}")
    return _compiled


def compiled_families() -> ModuleType:
    """The compiled `metrics.book_families` (flowgauge.core._families)."""
    if _compiled is None or _compiled_families is None:
        raise CoreUnavailable(f"the compiled core is unavailable: {_unavailable}")
    return _compiled_families


def new_sync(
    core: str, rule: SequenceRule, buffer_deltas: bool = False, max_levels: int = DEFAULT_MAX_LEVELS
) -> BookSync:
    """A `BookSync` for one instrument over `core`'s book (the compiled one applies a next delta in one call)."""
    if core == COMPILED:
        from flowgauge.core.sync import CompiledBookSync

        module = compiled_module()
        return CompiledBookSync(module, rule, buffer_deltas, module.CBook(max_levels))
    return BookSync(rule, buffer_deltas=buffer_deltas, book=L2Book(max_levels))


def new_book(core: str, max_levels: int = DEFAULT_MAX_LEVELS) -> Any:
    """An empty book of `core` holding at most `max_levels` levels per side (L2Book's interface)."""
    if core == COMPILED:
        return compiled_module().CBook(max_levels)
    return L2Book(max_levels)
