"""The rules for ``csv.value_hook``, a ``module:function`` that exportmon imports
and calls on every CSV value: it runs code, with exportmon's rights.

* A hook comes from a module outside the Python standard library: ``os:system``,
  ``subprocess:run`` or ``builtins:exec`` would turn a CSV value into a command,
  so a standard-library module (and ``builtins``) is refused, always.
* The module file, each package folder on its way and the folder it is found in
  must be writable by its owner only: a file someone else can change is code
  someone else can run. Otherwise a loud warning (``--strict`` refuses).

Nothing is imported to check this: the module is located the way the import
will find it (the Python path, then the config file's folder).
"""

from __future__ import annotations

import importlib.machinery
import os
import stat
import sys
from pathlib import Path

#: Top-level modules a hook may never come from, besides the standard library's.
REFUSED_MODULES = frozenset({"builtins", "__main__", "__future__"})


def refused_reason(spec: str) -> str | None:
    """Why the hook ``spec`` (``module:function``) is refused outright, or ``None``."""
    module = spec.partition(":")[0]
    top = module.split(".")[0]
    if top in REFUSED_MODULES or top in sys.stdlib_module_names:
        return (
            f"{module!r} is a standard-library module; a value hook runs code, so it "
            "must come from a module of your own"
        )
    return None


def module_files(spec: str, search_path: Path | None = None) -> list[Path]:
    """The files and folders the import of ``spec``'s module reads, without importing:
    the folder it is found in, each package folder and ``__init__.py``, and the
    module file. Empty when it cannot be found (the import then says so)."""
    parts = spec.partition(":")[0].split(".")
    search = list(sys.path) + ([str(search_path)] if search_path is not None else [])
    found: list[Path] = []
    locations: list[str] | None = [p or os.getcwd() for p in search]
    for depth in range(len(parts)):
        name = ".".join(parts[: depth + 1])
        try:
            module_spec = importlib.machinery.PathFinder.find_spec(name, locations)
        except (ImportError, ValueError):
            return found
        if module_spec is None:
            return found
        if module_spec.origin and module_spec.has_location:
            origin = Path(module_spec.origin)
            if depth == 0:
                holder = (
                    origin.parent.parent
                    if module_spec.submodule_search_locations
                    else origin.parent
                )
                found.append(holder)
            if module_spec.submodule_search_locations:
                found.append(origin.parent)
            found.append(origin)
        locations = list(module_spec.submodule_search_locations or [])
        if module_spec.submodule_search_locations and not module_spec.origin:
            found += [Path(p) for p in locations]
    return list(dict.fromkeys(found))


def writable_by_others(spec: str, search_path: Path | None = None) -> list[tuple[Path, int]]:
    """``(path, mode)`` of each file or folder of the hook's module that group or
    others can write."""
    if os.name != "posix":
        return []
    unsafe = []
    for path in module_files(spec, search_path):
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except OSError:
            continue
        if mode & 0o022:
            unsafe.append((path, mode))
    return unsafe
