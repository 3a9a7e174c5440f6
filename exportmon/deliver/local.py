"""Delivering into a local folder: copy under a temporary name, fsync, rename.

The temporary name is ``<name>.in_progress`` by default, or what the destination's
:class:`~exportmon.deliver.signals.TempNaming` says (a prefix, or a ``temp_dir`` on
the same file system that the file is moved out of). The folder (and a sub-folder
per export type with ``sub_dirs``) is created as needed; nothing below the folder
is followed if it is a link (see :mod:`exportmon.safe_open`). After the rename the
folder itself is fsynced, so a delivered file survives a power cut under its final
name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from exportmon.atomic import COPY_BUFFER, sha256_stream
from exportmon.crashpoints import crash_point
from exportmon.deliver import Outgoing, Placed, check_overwrite
from exportmon.deliver.signals import TempNaming
from exportmon.deliver.signals import describe as describe_signals
from exportmon.errors import DeliveryError, UnsafePathError
from exportmon.progress import ProgressFactory, start_task
from exportmon.safe_open import EXCLUSIVE, folder, open_nofollow, parts_below
from exportmon.signals import checkpoint

if TYPE_CHECKING:
    from exportmon.config.schema import DestinationConfig
    from exportmon.deliver.urls import DestinationURL


class LocalDestination:
    """A local folder files are delivered into.

    ``kind`` names it in the ledger: ``local`` for a folder, ``archive`` for the
    time-stamped copy (``archive = true``, the old ``deliver.archive_dir``).
    """

    def __init__(
        self,
        directory: Path,
        *,
        overwrite: str = "replace",
        kind: str = "local",
        temp: TempNaming | None = None,
        config: DestinationConfig | None = None,
    ):
        self.directory = Path(directory).expanduser().resolve()
        self.overwrite = check_overwrite(overwrite)
        self.temp = temp or TempNaming()
        #: The ``[[deliver]]`` entry it was opened from, if any (for :meth:`describe`).
        self.config = config
        self.label = f"{kind}:{self.directory}"
        self.display = str(self.directory)

    def __enter__(self) -> LocalDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release; here for the common destination interface."""

    def describe(self) -> str:
        """What delivering here does, for dry runs."""
        parts = [self.temp.describe()] + (describe_signals(self.config) if self.config else [])
        return f"would deliver to {self.display} ({'; '.join(parts)})"

    def path(self, target: str) -> Path:
        """The absolute path of ``target``; targets never leave the folder."""
        relative = PurePosixPath(target)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts or "\0" in target:
            raise DeliveryError(f"refusing target {target!r}: outside {self.directory}")
        return self.directory.joinpath(*relative.parts)

    def temporary_path(self, target: str) -> tuple[Path, Path]:
        """The folder that holds the temporary files (the destination's, or an absolute
        ``temp_dir``) and the temporary path of ``target`` in it."""
        self.path(target)  # refuses targets outside the folder
        temporary = self.temp.temporary(target)
        if temporary.startswith("/"):
            root = Path(self.temp.dir or "/").expanduser()
            return root, Path(temporary)
        return self.directory, self.directory.joinpath(*PurePosixPath(temporary).parts)

    def location(self, target: str) -> str:
        return str(self.path(target))

    def exists(self, target: str) -> bool:
        return os.path.lexists(self.path(target))

    def holds(self, target: str, size: int, sha256: str | None) -> bool:
        """Whether ``target`` is a complete copy: same size and, when known, same SHA-256.

        Only a regular file reached without following a link counts.
        """
        path = self.path(target)
        try:
            with folder(self.directory, parts_below(self.directory, path)) as dir_fd:
                fd = open_nofollow(path.name, os.O_RDONLY, dir_fd=dir_fd)
            with os.fdopen(fd, "rb") as handle:
                info = os.fstat(handle.fileno())
                if not stat.S_ISREG(info.st_mode) or info.st_size != size:
                    return False
                return sha256 is None or sha256_stream(handle) == sha256
        except (OSError, UnsafePathError):
            return False

    def put(
        self, item: Outgoing, target: str, *, progress: ProgressFactory | None = None
    ) -> Placed:
        """Copy ``item`` to its temporary name, fsync it, rename it to ``target``."""
        final = self.path(target)
        advance, done = start_task(progress, f"copy {final.name}", item.bytes)
        try:
            written = self._copy(item, final, target, advance)
        except FileNotFoundError:
            raise DeliveryError(f"cannot deliver {item.source}: it no longer exists") from None
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise DeliveryError(
                    f"cannot move {target} out of {self.temp.dir} into {self.directory}: "
                    "they are on different file systems",
                    hint="put temp_dir on the destination's file system",
                    retryable=False,
                ) from None
            raise DeliveryError(
                f"cannot copy {target} to {self.directory}: {exc.strerror or exc}",
                hint="check that the folder is writable and has free space",
            ) from None
        finally:
            done()
        return Placed(target=target, location=str(final), bytes=written)

    def _copy(self, item: Outgoing, final: Path, target: str, advance: object) -> int:
        """Write ``item`` under its temporary name and rename it to ``final``; the
        temporary file is removed on any failure, and the size checked before the
        rename, so a partial file never carries the final name."""
        self.directory.mkdir(parents=True, exist_ok=True)
        temp_root, temporary = self.temporary_path(target)
        temp_root.mkdir(parents=True, exist_ok=True)
        with (
            open(item.source, "rb") as reader,
            folder(self.directory, parts_below(self.directory, final), create=True) as final_fd,
            folder(temp_root, parts_below(temp_root, temporary), create=True) as temp_fd,
        ):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary.name, dir_fd=temp_fd)
            fd = open_nofollow(temporary.name, EXCLUSIVE, 0o666, dir_fd=temp_fd)
            try:
                with os.fdopen(fd, "wb") as writer:
                    while block := reader.read(COPY_BUFFER):
                        checkpoint()
                        writer.write(block)
                        if callable(advance):
                            advance(len(block))
                    writer.flush()
                    os.fsync(writer.fileno())
                    written = writer.tell()
                if written != item.bytes:
                    raise DeliveryError(
                        f"{item.source} changed while it was copied ({written} bytes, "
                        f"expected {item.bytes})"
                    )
                crash_point("atomic.rename")
                os.replace(temporary.name, final.name, src_dir_fd=temp_fd, dst_dir_fd=final_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary.name, dir_fd=temp_fd)
                raise
            os.fsync(final_fd)
        return written


def open_destination(config: DestinationConfig, url: DestinationURL) -> LocalDestination:
    """The local folder of a ``[[deliver]]`` entry (``archive = true``: a time-stamped
    copy, labelled ``archive:`` in the ledger)."""
    temp = TempNaming.of(config)
    if config.archive:
        return LocalDestination(
            Path(url.path), overwrite="timestamp", kind="archive", temp=temp, config=config
        )
    return LocalDestination(Path(url.path), overwrite=config.overwrite, temp=temp, config=config)
