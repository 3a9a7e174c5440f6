"""Injected file-system errors for exportmon child processes: the fallback of the disk
fault tests (tests/test_disk_faults.py) where no small file system can be mounted.

With this folder on ``PYTHONPATH``, Python imports this module at start-up; it does
nothing unless the environment sets::

    EXPORTMON_TEST_DISK_FAULT=ENOSPC:<bytes>:<folder>   # a full disk after <bytes>
    EXPORTMON_TEST_DISK_FAULT=EROFS:0:<folder>          # a read-only file system

Then every write under ``<folder>`` made through ``open()``/``io.open()`` or
``os.open()``/``os.write()`` counts against ``<bytes>`` (for all files together,
like the size of a file system) and fails with ENOSPC once they are used up, as a
real full disk does; with EROFS, opening a file for writing, creating a folder or
renaming into ``<folder>`` fails at once. This is what exportmon meets on a real
tmpfs, minus the kernel: the tests use a real tmpfs whenever they can mount one.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import threading

_VARIABLE = "EXPORTMON_TEST_DISK_FAULT"
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class _Disk:
    def __init__(self, code: int, budget: int, folder: str) -> None:
        self.code = code
        self.budget = budget
        self.folder = os.path.realpath(folder)
        self.lock = threading.Lock()
        self.fds: set[int] = set()

    def covers(self, path: object) -> bool:
        if isinstance(path, int):
            return False
        try:
            real = os.path.realpath(os.fsdecode(os.fspath(path)))  # type: ignore[arg-type]
        except TypeError:
            return False
        return real == self.folder or real.startswith(self.folder + os.sep)

    def refuse(self, path: object = None) -> OSError:
        name = None if path is None else os.fsdecode(os.fspath(path))  # type: ignore[arg-type]
        return OSError(self.code, os.strerror(self.code), name)

    def spend(self, count: int, path: object = None) -> None:
        with self.lock:
            if self.code != errno.ENOSPC or count <= self.budget:
                self.budget -= count
                if self.code == errno.ENOSPC:
                    return
            self.budget = 0
        raise self.refuse(path)


def _install(disk: _Disk) -> None:
    real_open, real_os_open, real_write, real_close = builtins.open, os.open, os.write, os.close
    real_mkdir, real_replace, real_rename = os.mkdir, os.replace, os.rename

    class LimitedFileIO(io.FileIO):
        def write(self, data):  # type: ignore[no-untyped-def]
            disk.spend(len(memoryview(data).cast("B")), self.name)
            return super().write(data)

    def fault_open(  # type: ignore[no-untyped-def]
        file,
        mode="r",
        buffering=-1,
        encoding=None,
        errors=None,
        newline=None,
        closefd=True,
        opener=None,
    ):
        writing = any(flag in mode for flag in "wax+")
        if not writing or not disk.covers(file):
            return real_open(file, mode, buffering, encoding, errors, newline, closefd, opener)
        if disk.code != errno.ENOSPC:
            raise disk.refuse(file)
        raw_mode = "".join(c for c in mode if c in "rwax+")
        raw = LimitedFileIO(file, raw_mode, closefd=closefd, opener=opener)
        if buffering == 0:
            return raw
        size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
        buffered = io.BufferedRandom(raw, size) if "+" in mode else io.BufferedWriter(raw, size)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding, errors, newline, line_buffering=buffering == 1)

    def fault_os_open(path, flags, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        covered = flags & _WRITE_FLAGS and disk.covers(path)
        if covered and disk.code != errno.ENOSPC:
            raise disk.refuse(path)
        fd = real_os_open(path, flags, mode, dir_fd=dir_fd)
        if covered:
            disk.fds.add(fd)
        return fd

    def fault_write(fd, data):  # type: ignore[no-untyped-def]
        if fd in disk.fds:
            disk.spend(len(memoryview(data).cast("B")))
        return real_write(fd, data)

    def fault_close(fd):  # type: ignore[no-untyped-def]
        disk.fds.discard(fd)
        return real_close(fd)

    def fault_mkdir(path, mode=0o777, *, dir_fd=None):  # type: ignore[no-untyped-def]
        if disk.code != errno.ENOSPC and disk.covers(path):
            raise disk.refuse(path)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    def guarded(real):  # type: ignore[no-untyped-def]
        def move(src, dst, *, src_dir_fd=None, dst_dir_fd=None):  # type: ignore[no-untyped-def]
            if disk.code != errno.ENOSPC and (disk.covers(dst) or disk.covers(src)):
                raise disk.refuse(dst)
            return real(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

        return move

    builtins.open = io.open = fault_open  # type: ignore[assignment]
    os.open, os.write, os.close, os.mkdir = fault_os_open, fault_write, fault_close, fault_mkdir
    os.replace, os.rename = guarded(real_replace), guarded(real_rename)


def _from_environment() -> None:
    value = os.environ.get(_VARIABLE)
    if not value:
        return
    name, budget, folder = value.split(":", 2)
    _install(_Disk(getattr(errno, name), int(budget), folder))


_from_environment()
