"""Where exportmon keeps configs and state.

Configs live in the user config directory (``.../exportmon/monitors/<name>.toml``)
and each monitor's state in the user state directory (``.../exportmon/<name>/``),
as platformdirs defines them for the platform. ``EXPORTMON_HOME=/some/dir`` puts
both under that one directory instead (``monitors/`` and ``state/<name>/``), which
is what tests and containers use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from exportmon.errors import ConfigError
from exportmon.safe_open import refuse_link

APP_NAME = "exportmon"
HOME_ENV = "EXPORTMON_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def config_dir() -> Path:
    """The directory holding exportmon's configuration."""
    home = _home()
    return home if home else platformdirs.user_config_path(APP_NAME)


def monitors_dir() -> Path:
    """The directory holding one ``<name>.toml`` per monitor."""
    return config_dir() / "monitors"


def state_dir() -> Path:
    """The directory under which each monitor's state directory is created by default."""
    home = _home()
    return home / "state" if home else platformdirs.user_state_path(APP_NAME)


@dataclass(frozen=True)
class MonitorDirs:
    """The state directory of one monitor and the well-known paths inside it.

    The layout follows the gem's (``downloads/``, ``log/``, ``pids/``, ``tmp/``)
    plus the SQLite ledger.
    """

    root: Path

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def log(self) -> Path:
        return self.root / "log"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    def create(self) -> None:
        """Create the state directory and its sub-directories (owner-only access).

        A sub-directory that is a symbolic link is refused
        (:class:`~exportmon.errors.UnsafePathError`): exportmon writes its state only
        into folders it made.
        """
        for directory in (self.root, self.downloads, self.log, self.pids, self.tmp):
            try:
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                if directory != self.root:
                    refuse_link(directory)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the state folder {directory}: {exc.strerror}",
                    key="root",
                    hint="set root to a folder exportmon may create and write",
                ) from None


def find_monitor_root(path: Path) -> Path | None:
    """The monitor state directory that contains ``path``, if any.

    Pipeline steps given bare file paths use this to find the ledger to record
    their work in.
    """
    for parent in Path(path).resolve().parents:
        if (parent / "ledger.sqlite").is_file():
            return parent
    return None
