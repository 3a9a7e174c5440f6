"""Crash-safe file writes: write under a temporary name, fsync, then rename.

A reader never sees a half-written file under its final name, and after a crash
the final name holds either the old complete file or the new complete file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from exportmon.crashpoints import crash_point
from exportmon.signals import checkpoint

#: Copy buffer size; large enough that syscalls do not dominate.
COPY_BUFFER = 1024 * 1024


def fsync_dir(directory: Path) -> None:
    """Make a rename or file creation inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_name(final: Path, suffix: str) -> Path:
    """The temporary sibling of ``final`` used while it is being written."""
    return final.with_name(final.name + suffix)


@contextlib.contextmanager
def atomic_write(final: Path, *, suffix: str = ".part") -> Iterator[BinaryIO]:
    """Open ``final + suffix`` for binary writing; on success fsync and rename it.

    On any exception the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(final, suffix)
    try:
        with open(temp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        crash_point("atomic.rename")
        os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    fsync_dir(final.parent)


def atomic_copy(
    source: Path,
    final: Path,
    *,
    suffix: str = ".in_progress",
    progress: Callable[[int], None] | None = None,
) -> int:
    """Copy ``source`` to ``final`` through ``final + suffix``; return the bytes copied.

    ``progress`` is called with the size of each block copied.
    """
    with open(source, "rb") as reader, atomic_write(final, suffix=suffix) as writer:
        while block := reader.read(COPY_BUFFER):
            checkpoint()
            writer.write(block)
            if progress is not None:
                progress(len(block))
        return writer.tell()


@contextlib.contextmanager
def atomic_directory(final: Path, *, suffix: str = ".partial") -> Iterator[Path]:
    """Fill a hidden sibling folder, then put it in place of ``final`` in one rename.

    Yields the empty staging folder (``.<name><suffix>``; one left by a killed run
    is removed first). On success its sub-folders are fsynced and it replaces
    ``final`` (an earlier ``final`` is moved aside and removed); on any exception
    it is removed and ``final`` is untouched. Files written into it should be
    fsynced by the writer.
    """
    final = Path(final)
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    stage = parent / f".{final.name}{suffix}"
    previous = parent / f".{final.name}.old"
    for leftover in (stage, previous):
        if leftover.exists():
            shutil.rmtree(leftover)
    stage.mkdir()
    try:
        yield stage
        for directory, _subdirs, _files in os.walk(stage, topdown=False):
            fsync_dir(Path(directory))
        if final.exists():
            os.rename(final, previous)
        os.rename(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if previous.exists() and not final.exists():
            os.rename(previous, final)
        raise
    fsync_dir(parent)
    shutil.rmtree(previous, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """The SHA-256 hex digest of the file at ``path``, read in large blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(COPY_BUFFER):
            digest.update(block)
    return digest.hexdigest()
