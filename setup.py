"""Build steps pyproject.toml cannot express; metadata, dependencies and the package list stay there.

Two steps, kept small and apart: build_py ships config/*.yaml inside the package, and the optional compiled
hot core (issue 8) is `ext_modules`: `_core` and the per-book-event metric families (`_families`).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py
from setuptools.errors import FileError

ROOT = Path(__file__).resolve().parent
CONFIG_SOURCES = ROOT / "config"  # the one copy of default.yaml and offline-demo.yaml users and docs refer to
CONFIG_IN_PACKAGE = ("flowgauge", "config_files")  # where a wheel carries them; flowgauge.config reads it
CORE_SOURCES = Path("service", "flowgauge", "core")  # relative: setuptools wants source paths relative to here
FAMILIES_SOURCE = Path("service", "flowgauge", "metrics", "book_families.py")


class BuildPyWithConfigs(build_py):
    """build_py that also copies config/*.yaml into the built package, so a non-editable install has the
    default and offline-demo configs. An editable install reads the checkout's config/ directly."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for source, target in self._config_files():
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        if not self.editable_mode:
            outputs += [str(target) for _, target in self._config_files()]
        return outputs

    def _config_files(self) -> list[tuple[Path, Path]]:
        sources = sorted(CONFIG_SOURCES.glob("*.yaml"))
        if not sources:  # e.g. an sdist built without MANIFEST.in: never ship a wheel without its defaults
            raise FileError(f"no config/*.yaml under {ROOT}: the package needs config/default.yaml")
        target_dir = Path(self.build_lib, *CONFIG_IN_PACKAGE)
        return [(source, target_dir / source.name) for source in sources]


class OptionalBuildExt(build_ext):
    """`optional=True` only covers compile errors setuptools recognises; a compiler that is not installed at all
    surfaces as other errors. Any failure to build the core leaves an install that runs the pure-Python core."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # whatever broke the build, the pure core still works
            _core_not_built(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _core_not_built(exc)


def _core_not_built(exc: Exception) -> None:
    print(f"WARNING: flowgauge's compiled core was not built ({exc}); the pure-Python core will run", file=sys.stderr)


def core_extensions() -> list[Extension]:
    """The compiled hot core, when Cython is available; without it (or without a C compiler: `optional`) the
    pure-Python reference core runs. The build embeds the sources' hash so a stale build is detected."""
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    # By path: flowgauge's own imports need its dependencies, which a build environment does not have.
    spec = importlib.util.spec_from_file_location("_flowgauge_source_hash", ROOT / CORE_SOURCES / "source_hash.py")
    assert spec is not None and spec.loader is not None
    hashing = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hashing)
    # No fused multiply-add and no fast-math: C must round each `a*b + c` as Python does, so both cores
    # publish identical bits.
    flags = ["-O2", "-ffp-contract=off", "-fno-fast-math"]
    # The hash covers the families' source too (source_hash.SOURCE_NAMES): `depends` makes a change there
    # rebuild _core, so the hash it embeds stays current.
    families = str(FAMILIES_SOURCE)
    extension = Extension(
        "flowgauge.core._core",
        [str(CORE_SOURCES / "_core.pyx")],
        define_macros=[("FLOWGAUGE_CORE_SOURCE_HASH", f'"{hashing.source_hash(ROOT / CORE_SOURCES)}"')],
        extra_compile_args=flags,
        depends=[families],
        optional=True,
    )
    # The per-book-event metric families: the pure-Python reference source compiled as is (Cython's pure-Python
    # mode), so the compiled core runs the very code the reference runs (metrics.extended).
    families_ext = Extension("flowgauge.core._families", [families], extra_compile_args=flags, optional=True)
    return cythonize([extension, families_ext], language_level=3)


setup(cmdclass={"build_py": BuildPyWithConfigs, "build_ext": OptionalBuildExt}, ext_modules=core_extensions())
