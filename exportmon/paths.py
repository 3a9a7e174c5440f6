"""Where exportmon keeps configs and state.

Configs live in the user config directory (``.../exportmon/monitors/<name>.toml``)
and each monitor's state in the user state directory (``.../exportmon/<name>/``),
as platformdirs defines them for the platform. ``EXPORTMON_HOME=/some/dir`` puts
both under that one directory instead (``monitors/`` and ``state/<name>/``), which
is what tests and containers use.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import datetime
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

    #: What exportmon keeps directly in ``root``; any other name there is free for a
    #: destination folder of the user's (the gem-style ``<root>/delivered``).
    OWN_NAMES = (
        "downloads",
        "log",
        "pids",
        "tmp",
        "ledger.sqlite",
        "ledger.sqlite-wal",
        "ledger.sqlite-shm",
        "ledger.sqlite-journal",
        "oauth-token.json",
    )

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


#: Longest readable hint in a download folder's name (after the row id).
HINT_CHARS = 40
_HINT_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def export_dir(downloads: Path, row_id: int, export_id: int | None, hint: str | None) -> Path:
    """The folder the export with ledger row ``row_id`` is downloaded into.

    ``downloads/<export id>/<row id>-<hint>``: the row id is the export's identity in
    the ledger, so no two exports ever share a folder, whatever their tokens or mails
    say; ``hint`` (the token, or the mail's date) only makes the name readable. It
    is cut to :data:`HINT_CHARS` of ``[A-Za-z0-9._-]`` (the rest becomes ``_``) and may
    be lossy: it carries no identity.
    """
    label = str(int(row_id))
    readable = _HINT_UNSAFE.sub("_", hint or "").strip("._-")[:HINT_CHARS].rstrip("._-")
    if readable:
        label += f"-{readable}"
    return Path(downloads) / str(export_id if export_id is not None else "other") / label


def download_hint(token: str | None, sent_at: str | None) -> str | None:
    """The readable part of an export's download folder: its token, else the mail's
    date as ``YYYYmmdd-HHMMSS`` (``sent_at`` as the ledger stores it)."""
    if token:
        return token
    if sent_at:
        with contextlib.suppress(ValueError):
            return f"{datetime.strptime(sent_at, '%Y-%m-%dT%H:%M:%S.%fZ'):%Y%m%d-%H%M%S}"
    return None


def find_monitor_root(path: Path) -> Path | None:
    """The monitor state directory that contains ``path``, if any.

    Pipeline steps given bare file paths use this to find the ledger to record
    their work in.
    """
    for parent in Path(path).resolve().parents:
        if (parent / "ledger.sqlite").is_file():
            return parent
    return None
