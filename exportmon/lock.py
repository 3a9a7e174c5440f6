"""One owner per state folder: an exclusive lock held while a monitor works.

The lock belongs to the state folder, not to the monitor's name: it is an
``flock`` on ``<root>/pids/exportmon.lock``, so two configs that name the same
``root`` (even under different names or through different paths) never work on
one ledger and one download folder at once. The same process also locks the
gem's pid file ``<root>/pids/export_monitor.<name>.pid`` and writes its pid
there, so process supervisors such as Monit keep working.

The kernel drops an ``flock`` when the process dies, however it dies, so a stale
file left by a killed process never blocks the next run. The files are emptied
rather than deleted on exit, because deleting them would let two processes that
opened them at different moments each lock a different inode. Both are opened
without following links (:mod:`exportmon.safe_open`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from exportmon.errors import LockedError, UnsafePathError
from exportmon.log import get_logger
from exportmon.safe_open import is_link, open_nofollow, refuse_link

log = get_logger(__name__)

#: The file in ``<root>/pids/`` whose lock is the state folder's.
STATE_LOCK = "exportmon.lock"


def pid_file(pids_dir: Path, name: str) -> Path:
    """The gem's pid file name for monitor ``name``."""
    return pids_dir / f"export_monitor.{name}.pid"


def running_pid(pids_dir: Path, name: str) -> int | None:
    """The pid of the process holding monitor ``name``'s lock, or None when it is free."""
    path = pid_file(pids_dir, name)
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except (FileNotFoundError, UnsafePathError):
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def monitor_lock(pids_dir: Path, name: str) -> Iterator[Path]:
    """Hold the lock of the state folder ``pids_dir`` is in, for monitor ``name``.

    Raises :class:`LockedError` (exit 2) naming the monitor and pid that hold it.
    Yields the pid file.
    """
    pids_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    refuse_link(pids_dir)
    with _locked(pids_dir / STATE_LOCK, f"{os.getpid()} {name}", _held_by(pids_dir, name)):
        path = pid_file(pids_dir, name)
        with _locked(path, str(os.getpid()), _held_by(pids_dir, name)):
            yield path


def _held_by(pids_dir: Path, name: str) -> Callable[[str], LockedError]:
    def error(content: str) -> LockedError:
        pid, _, holder = content.partition(" ")
        who = f"pid {pid}" if pid.isdigit() else "another process"
        if holder and holder != name:
            return LockedError(
                f"monitor {name!r} shares its state folder {pids_dir.parent} with monitor "
                f"{holder!r}, which is running ({who})",
                hint="give each config its own root",
            )
        return LockedError(
            f"monitor {name!r} is already running ({who})",
            hint=f"wait for it to finish or stop it; its pid file is {pid_file(pids_dir, name)}",
        )

    return error


@contextlib.contextmanager
def _locked(path: Path, content: str, refused: Callable[[str], LockedError]) -> Iterator[None]:
    """Hold an ``flock`` on ``path`` (created, never through a link) holding ``content``.

    A link found at ``path`` holds nothing of exportmon's: it is removed (with a
    warning) and a real file made in its place.
    """
    if is_link(path):
        log.warning("removing the link %s planted at exportmon's lock file", path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.lseek(fd, 0, os.SEEK_SET)
            raise refused(os.read(fd, 200).decode("utf-8", "replace").strip()) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{content}\n".encode())
        os.fsync(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
