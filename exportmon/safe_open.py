"""Opening files and folders without following a link exportmon did not create.

exportmon is given a few folders (a destination, the monitor's state folder) and
resolves each once; that choice is the user's. Below it, nothing is followed:

* every folder on the way to a file is opened relative to its parent's descriptor
  with ``O_NOFOLLOW | O_DIRECTORY`` (:func:`open_folder`), so a symbolic link
  planted as a sub-folder (an export type's folder, an archive's folder) is
  refused and cannot redirect a write outside, however it races;
* temporary files are created exclusively (``O_CREAT | O_EXCL | O_NOFOLLOW``),
  so a link planted at the temporary name is never written through;
* state files that are opened in place (pid file, log file, ledger, resume
  metadata) are opened with ``O_NOFOLLOW`` (:func:`open_nofollow`), or checked
  with :func:`refuse_link` where a library opens them (SQLite).

A refusal is an :class:`~exportmon.errors.UnsafePathError` naming the link.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from exportmon.errors import UnsafePathError

NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW
#: Flags of a temporary file: created here, now, never an existing file or link.
EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW


def _link_error(path: Path | str) -> UnsafePathError:
    return UnsafePathError(
        f"{path} is a symbolic link; exportmon does not write through links it did not create",
        hint="remove the link (or put the real folder or file there)",
    )


def is_link(path: Path | str, dir_fd: int | None = None) -> bool:
    """Whether ``path`` (relative to ``dir_fd`` if given) is a symbolic link."""
    try:
        return stat.S_ISLNK(os.lstat(path, dir_fd=dir_fd).st_mode)
    except OSError:
        return False


def refuse_link(path: Path | str) -> None:
    """Raise :class:`UnsafePathError` when ``path`` is a symbolic link."""
    if is_link(path):
        raise _link_error(path)


def open_nofollow(
    path: Path | str, flags: int, mode: int = 0o600, *, dir_fd: int | None = None
) -> int:
    """``os.open`` that refuses a symbolic link at ``path``'s last component."""
    try:
        return os.open(path, flags | NOFOLLOW, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and is_link(path, dir_fd)):
            raise _link_error(path) from None
        raise


def open_folder(
    root: Path, parts: Sequence[str] = (), *, create: bool = False, mode: int = 0o777
) -> int:
    """A descriptor of the folder ``root/parts...``, none of ``parts`` a link.

    ``root`` is opened as given (it may be a link the user made); each of ``parts``
    is opened relative to the one before with ``O_NOFOLLOW`` and, with ``create``,
    made first when missing. ``parts`` are single names (never ``..``).
    Raises :class:`UnsafePathError` for a link, :class:`OSError` otherwise.
    """
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    where = Path(root)
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part or "\0" in part:
                raise UnsafePathError(f"refusing the folder name {part!r} below {root}")
            where = where / part
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, mode, dir_fd=fd)
            try:
                child = os.open(part, _FOLDER, dir_fd=fd)
            except OSError as exc:
                if exc.errno == errno.ELOOP or is_link(part, fd):
                    raise _link_error(where) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def folder(root: Path, parts: Sequence[str] = (), *, create: bool = False) -> Iterator[int]:
    """:func:`open_folder` as a context manager that closes the descriptor."""
    fd = open_folder(root, parts, create=create)
    try:
        yield fd
    finally:
        os.close(fd)


def parts_below(root: Path, path: Path) -> tuple[str, ...]:
    """The folder names from ``root`` down to ``path``'s parent (``path`` inside ``root``)."""
    relative = Path(path).relative_to(root)
    if ".." in relative.parts:
        raise UnsafePathError(f"refusing {path}: outside {root}")
    return relative.parent.parts if relative.parent != Path(".") else ()
