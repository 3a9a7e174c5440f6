"""Delivering into a local folder: copy as ``<name>.in_progress``, fsync, rename.

The folder (and a sub-folder per export type with ``sub_dirs``) is created as
needed; nothing below the folder is followed if it is a link (see
:mod:`exportmon.safe_open`). After the rename the folder itself is fsynced, so a delivered file
survives a power cut under its final name.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from exportmon.atomic import atomic_copy, sha256_stream
from exportmon.deliver import IN_PROGRESS, Outgoing, Placed, check_overwrite
from exportmon.errors import DeliveryError, UnsafePathError
from exportmon.progress import ProgressFactory, start_task
from exportmon.safe_open import folder, open_nofollow, parts_below

if TYPE_CHECKING:
    from exportmon.config.schema import DestinationConfig
    from exportmon.deliver.urls import DestinationURL


class LocalDestination:
    """A local folder files are delivered into.

    ``kind`` names it in the ledger: ``local`` for ``deliver.to``, ``archive`` for
    ``deliver.archive_dir``.
    """

    def __init__(self, directory: Path, *, overwrite: str = "replace", kind: str = "local"):
        self.directory = Path(directory).expanduser().resolve()
        self.overwrite = check_overwrite(overwrite)
        self.label = f"{kind}:{self.directory}"
        self.display = str(self.directory)

    def __enter__(self) -> LocalDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release; here for the common destination interface."""

    def path(self, target: str) -> Path:
        """The absolute path of ``target``; targets never leave the folder."""
        relative = PurePosixPath(target)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts or "\0" in target:
            raise DeliveryError(f"refusing target {target!r}: outside {self.directory}")
        return self.directory.joinpath(*relative.parts)

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
        """Copy ``item`` to ``target`` through ``target.in_progress``."""
        final = self.path(target)
        advance, done = start_task(progress, f"copy {final.name}", item.bytes)
        try:
            written = atomic_copy(
                item.source, final, suffix=IN_PROGRESS, progress=advance, within=self.directory
            )
        except FileNotFoundError:
            raise DeliveryError(f"cannot deliver {item.source}: it no longer exists") from None
        except OSError as exc:
            raise DeliveryError(
                f"cannot copy {item.source} to {final}: {exc.strerror or exc}",
                hint="check that the folder is writable and has free space",
            ) from None
        finally:
            done()
        if written != item.bytes:
            raise DeliveryError(
                f"{item.source} changed while it was copied ({written} bytes, expected "
                f"{item.bytes})"
            )
        return Placed(target=target, location=str(final), bytes=written)


def open_destination(config: DestinationConfig, url: DestinationURL) -> LocalDestination:
    """The local folder of a ``[[deliver]]`` entry (``archive = true``: a time-stamped
    copy, labelled ``archive:`` in the ledger)."""
    if config.archive:
        return LocalDestination(Path(url.path), overwrite="timestamp", kind="archive")
    return LocalDestination(Path(url.path), overwrite=config.overwrite)
