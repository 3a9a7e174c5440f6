"""Hatchling build hook: compile the CSV engine (exportmon/files/_csvengine.c).

The extension is optional: without a C compiler (or Python headers) the build goes on
and exportmon uses its pure-Python CSV engines, as markupsafe, PyYAML and msgpack do.
``EXPORTMON_BUILD_EXTENSION=required`` makes a failed compile fail the build (CI);
``EXPORTMON_BUILD_EXTENSION=no`` skips it.

The module is built against the Python Limited API, so one file (``*.abi3.so``) serves
every Python from 3.10 on. A wheel gets it at ``exportmon/files/``; an editable install
gets it next to the source, where the editable import finds it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("exportmon") / "files" / "_csvengine.c"
MODULE = "_csvengine.abi3.so" if os.name != "nt" else "_csvengine.pyd"
LIMITED_API = "0x030A0000"  # Python 3.10
ENV = "EXPORTMON_BUILD_EXTENSION"


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict) -> None:  # type: ignore[type-arg]
        if self.target_name != "wheel" or os.environ.get(ENV, "").lower() in ("no", "0"):
            return
        root = Path(self.root)
        editable = version == "editable"
        if editable:
            target = root / SOURCE.parent / MODULE
        else:
            target = Path(tempfile.mkdtemp(prefix="exportmon-build-")) / MODULE
        try:
            compile_extension(root / SOURCE, target)
        except (OSError, subprocess.CalledProcessError, ValueError) as exc:
            if os.environ.get(ENV, "").lower() == "required":
                raise RuntimeError(f"building the CSV engine failed: {exc}") from exc
            self.app.display_warning(
                f"exportmon: the compiled CSV engine was not built ({exc}); "
                "the pure-Python engine will be used"
            )
            return
        build_data["pure_python"] = False
        build_data["tag"] = f"cp310-abi3-{platform_tag()}"
        if not editable:
            build_data["force_include"][str(target)] = str(SOURCE.parent / MODULE)


def platform_tag() -> str:
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def compile_extension(source: Path, target: Path) -> None:
    """``source`` compiled and linked into the shared object ``target``."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        raise ValueError(f"no Python.h in {include} (install python3-dev)")
    flags = ["-O2", "-fPIC", "-shared", "-fvisibility=hidden", f"-DPy_LIMITED_API={LIMITED_API}"]
    if sys.platform == "darwin":
        flags += ["-undefined", "dynamic_lookup"]
    partial = target.with_name(target.name + ".part")
    command = [*compiler, *flags, f"-I{include}", str(source), "-o", str(partial)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or "").strip().splitlines()
        raise ValueError(f"{compiler[0]} failed: {lines[0] if lines else exc}") from None
    partial.replace(target)
