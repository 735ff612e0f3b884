"""Build steps pyproject.toml cannot express; metadata, dependencies and the package list stay there.

Kept small on purpose. Issue 8 adds a Cython extension: pass `ext_modules=[...]` to the `setup()` call at
the bottom and leave the rest as it is.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.errors import FileError

ROOT = Path(__file__).resolve().parent
CONFIG_SOURCES = ROOT / "config"  # the one copy of default.yaml and offline-demo.yaml users and docs refer to
CONFIG_IN_PACKAGE = ("flowgauge", "config_files")  # where a wheel carries them; flowgauge.config reads it


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


setup(cmdclass={"build_py": BuildPyWithConfigs})
