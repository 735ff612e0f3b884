"""Import direction (DESIGN.md "Layout"): lower layers never import higher ones.

Every module under service/flowgauge is parsed with `ast` (imports at any depth, inside functions and
`TYPE_CHECKING` blocks too) and each import of a flowgauge module is checked against one rank table. The pure
layers (venue parsers, books, the core, metric math) also must not import the I/O stack, neither themselves nor
through the flowgauge modules they import when loaded; `recording`, `simulate` and `config` may import only the
few flowgauge modules named for them. A failure lists every offending `module -> import`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "service" / "flowgauge"

# Lowest first. A module may import modules of its own layer and of the layers below it, never above.
# An entry names a module and everything under it; the longest matching entry decides (so publish.codec is
# ranked apart from the rest of publish). "flowgauge" alone is the package's own __init__ (the public API).
# Where this order differs from DESIGN.md's chain (types <- connectors <- book/core <- metrics <- engine <-
# publish <- telemetry <- app <- cli), the code's dependency is the sound one:
# - book sits below connectors: a venue's parser names its sequence rule (book.sequencing, typed by
#   book.sync.SequenceRule), and the book knows nothing of venues. core stays above connectors (it may hand
#   the parsers' level validation a compiled loop) and below metrics, which run on its books.
# - publish.codec and publish.topics (pure payload encoding and topic naming) sit below engine, which builds
#   each payload once; the publishers themselves (publish.base, publish.embedded) stay above it.
# - logs (structured log lines) and recording (the frame file format) are leaves beside types.
# - The commands beside app (replay, simulate, bench, soak) sit with it, just below cli.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("flowgauge.types", "flowgauge.logs", "flowgauge.recording", "flowgauge.heap"),  # heap: the C allocator
    ("flowgauge.book",),
    ("flowgauge.connectors",),
    ("flowgauge.core",),
    ("flowgauge.metrics",),
    ("flowgauge.publish.codec", "flowgauge.publish.topics"),
    ("flowgauge.engine",),
    ("flowgauge.publish", "flowgauge.client", "flowgauge.sdk", "flowgauge.signals", "flowgauge"),
    ("flowgauge.telemetry",),
    ("flowgauge.config", "flowgauge.feeds", "flowgauge.conflation"),  # feeds and conflation drive the engine
    ("flowgauge.app", "flowgauge.replay", "flowgauge.simulate", "flowgauge.bench", "flowgauge.tail", "flowgauge.soak"),
    ("flowgauge.cli", "flowgauge.__main__"),
)

# The pure layers: no event loop, sockets, network clients or metrics registry.
PURE = (
    "flowgauge.connectors.base",
    "flowgauge.connectors.levels",
    *(f"flowgauge.connectors.{venue}" for venue in ("binance", "bybit", "okx", "deribit", "hyperliquid")),
    "flowgauge.book",
    "flowgauge.core",
    "flowgauge.metrics",
)
IO_MODULES = ("asyncio", "socket", "ssl", "websockets", "aiohttp", "uvloop", "prometheus_client")

# Modules that may import only these parts of flowgauge (besides themselves).
ONLY = {
    "flowgauge.recording": (),  # the file format: read by record, replay and simulate, knows nothing of them
    "flowgauge.simulate": ("flowgauge.types", "flowgauge.recording"),
    "flowgauge.config": ("flowgauge.types",),  # beside the pipeline: cli loads it, app hands out its structs
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py")) if "__pycache__" not in p.parts}


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def rank(name: str) -> int:
    best, best_len = -1, -1
    for index, layer in enumerate(LAYERS):
        for entry in layer:
            matches = name == entry if entry == "flowgauge" else under(name, entry)
            if matches and len(entry) > best_len:
                best, best_len = index, len(entry)
    assert best >= 0, f"{name} is in no layer of LAYERS: give it a place in the table"
    return best


def is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def imports(name: str, *, module_level_only: bool = False) -> Iterator[str]:
    """Absolute names `name` imports; `from pkg import sub` yields pkg.sub when sub is a module of ours."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    nodes = tree.body if module_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                package = name if is_package(name) else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in MODULES else base


def flowgauge_imports(name: str, *, module_level_only: bool = False) -> set[str]:
    return {target for target in imports(name, module_level_only=module_level_only) if under(target, "flowgauge")}


def loaded_with(name: str) -> set[str]:
    """The flowgauge modules Python runs when `name` is imported: its packages and module-level imports."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        if current in seen or current not in MODULES:
            continue
        seen.add(current)
        parts = current.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += flowgauge_imports(current, module_level_only=True)
    return seen


def test_the_package_is_found_and_every_module_has_a_layer() -> None:
    assert {"flowgauge.types", "flowgauge.engine", "flowgauge.cli", "flowgauge.connectors.bybit"} <= set(MODULES)
    for name in MODULES:
        rank(name)


def test_lower_layers_never_import_higher_ones() -> None:
    offences = [
        f"{name} (layer {rank(name)}) -> {target} (layer {rank(target)})"
        for name in MODULES
        for target in sorted(flowgauge_imports(name))
        if rank(target) > rank(name)
    ]
    assert not offences, "upward imports (see LAYERS in tests/unit/test_layers.py):\n" + "\n".join(offences)


def test_pure_layers_import_no_event_loop_sockets_or_metrics_registry() -> None:
    pure = [name for name in MODULES if any(under(name, prefix) for prefix in PURE)]
    assert "flowgauge.connectors.okx" in pure and "flowgauge.metrics.ofi" in pure
    offences = []
    for name in pure:
        for target in sorted(set(imports(name))):
            if any(under(target, io) for io in IO_MODULES):
                offences.append(f"{name} -> {target}")
        for loaded in sorted(loaded_with(name) - {name}):
            for target in sorted(set(imports(loaded, module_level_only=True))):
                if any(under(target, io) for io in IO_MODULES):
                    offences.append(f"{name} -> {loaded} (loaded with it) -> {target}")
    assert not offences, "I/O imports in pure layers:\n" + "\n".join(offences)


def test_recording_simulate_and_config_import_only_what_they_may() -> None:
    offences = []
    for owner, allowed in ONLY.items():
        for name in (n for n in MODULES if under(n, owner)):
            for target in sorted(flowgauge_imports(name)):
                if not any(under(target, ok) for ok in (owner, *allowed)):
                    offences.append(f"{name} -> {target}")
    assert not offences, "imports outside what these modules may use:\n" + "\n".join(offences)
