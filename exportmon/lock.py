"""One process per monitor: an exclusive lock on the monitor's pid file.

The pid file is the gem's ``<root>/pids/export_monitor.<name>.pid``, so process
supervisors such as Monit keep working. The lock is an ``flock`` on that file:
the kernel drops it when the process dies, however it dies, so a stale pid file
left by a killed process never blocks the next run. The file is emptied rather
than deleted on exit, because deleting it would let two processes that opened it
at different moments each lock a different inode.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from exportmon.errors import LockedError


def pid_file(pids_dir: Path, name: str) -> Path:
    """The gem's pid file name for monitor ``name``."""
    return pids_dir / f"export_monitor.{name}.pid"


def running_pid(pids_dir: Path, name: str) -> int | None:
    """The pid of the process holding monitor ``name``'s lock, or None when it is free."""
    path = pid_file(pids_dir, name)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
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
    """Hold monitor ``name``'s lock for the duration of the block.

    Raises :class:`LockedError` (exit 2) naming the pid of the process that holds it.
    """
    pids_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = pid_file(pids_dir, name)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            who = f"pid {holder}" if holder else "another process"
            raise LockedError(
                f"monitor {name!r} is already running ({who})",
                hint=f"wait for it to finish or stop it; its pid file is {path}",
            ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)
