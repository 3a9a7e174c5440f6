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
from exportmon.safe_open import EXCLUSIVE, folder, is_link, open_nofollow, parts_below
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


def temporary_name(final: Path, suffix: str, *, hidden: bool = True) -> Path:
    """The temporary sibling of ``final`` used while it is being written.

    ``.<name><suffix>`` by default: a name made safe never starts with a dot
    (:func:`exportmon.files.names.safe_file_name`), so no file exportmon is given can
    take the name of a temporary one. ``hidden=False`` gives ``<name><suffix>``, the
    convention readers of a destination know (``.in_progress``).
    """
    prefix = "." if hidden else ""
    return final.with_name(f"{prefix}{final.name}{suffix}")


@contextlib.contextmanager
def atomic_write(
    final: Path, *, suffix: str = ".part", within: Path | None = None, hidden: bool = True
) -> Iterator[BinaryIO]:
    """Open :func:`temporary_name` of ``final`` for binary writing; on success fsync
    and rename it to ``final``.

    On any exception the temporary file is removed and ``final`` is untouched.
    Nothing is written through a link: the temporary file is created exclusively
    (a leftover of a killed run, or a link planted at its name, is removed first,
    never followed), and the rename replaces whatever is at ``final`` itself. The
    folders from ``within`` (default: ``final``'s folder) down to ``final`` are
    created as needed and none of them may be a link
    (:func:`exportmon.safe_open.open_folder`).
    """
    final = Path(final)
    root = Path(within) if within is not None else final.parent
    root.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(final, suffix, hidden=hidden)
    with folder(root, parts_below(root, final), create=True) as dir_fd:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp.name, dir_fd=dir_fd)
        fd = open_nofollow(temp.name, EXCLUSIVE, 0o666, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            crash_point("atomic.rename")
            os.replace(temp.name, final.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp.name, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)


def atomic_copy(
    source: Path,
    final: Path,
    *,
    suffix: str = ".in_progress",
    progress: Callable[[int], None] | None = None,
    within: Path | None = None,
) -> int:
    """Copy ``source`` to ``final`` through ``<final><suffix>`` (visible, as readers
    of a destination expect); return the bytes copied.

    ``progress`` is called with the size of each block copied; ``within`` is as for
    :func:`atomic_write`.
    """
    with (
        open(source, "rb") as reader,
        atomic_write(final, suffix=suffix, within=within, hidden=False) as writer,
    ):
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
        if is_link(leftover):
            leftover.unlink()
        elif leftover.exists():
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
    with open(path, "rb") as handle:
        return sha256_stream(handle)


def sha256_stream(handle: BinaryIO) -> str:
    """The SHA-256 hex digest of what is left to read from ``handle``."""
    digest = hashlib.sha256()
    while block := handle.read(COPY_BUFFER):
        digest.update(block)
    return digest.hexdigest()
