"""Unpacking export zips safely, in constant memory, and all or nothing.

An archive arrives from the network and is treated as hostile. Before a byte is
written every entry is checked: its name (no absolute paths, no ``..``, no NUL),
its kind (symbolic links and encrypted entries are refused), duplicates (also
names that differ only by case, or by ``/`` against ``\\``), the entry count, and
the sizes and compression ratios the archive declares. While extracting, the
bytes actually inflated are counted against the same limits, so an entry whose
header lies about its size is stopped at the limit; every entry's CRC is checked.

Extraction goes into a hidden staging folder that takes the place of the final
folder (``downloads/<zip name without .zip>/``, as the gem did) in one rename:
a refused or corrupt archive leaves nothing behind, and a killed run leaves only
the staging folder, which the next run removes. Nested archives are extracted as
plain files, never opened.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from exportmon.atomic import atomic_directory
from exportmon.config.schema import ZipConfig
from exportmon.errors import ExtractError
from exportmon.files.names import UnsafeName, entry_target
from exportmon.progress import Advance, ProgressFactory, start_task
from exportmon.signals import checkpoint

#: Read and write size while extracting; memory use does not depend on entry sizes.
BLOCK = 1024 * 1024
#: The compression ratio limit applies only to entries, and archives, that inflate to
#: more than this: small files of repeated text (an empty-ish CSV) legitimately
#: compress very well. The ratio of the archive as a whole (all entries against the
#: archive's size) is checked too, so many entries each under the floor cannot add
#: up to a bomb.
RATIO_FLOOR = 1024 * 1024

_ENCRYPTED = 0x1
_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"


@dataclass(frozen=True)
class ZipLimits:
    """Limits beyond which an archive is refused as a zip bomb (``None``: no limit)."""

    max_entry_bytes: int | None = 20 * 1000**3
    max_total_bytes: int | None = 50 * 1000**3
    max_ratio: float = 250.0
    max_entries: int = 10_000

    @classmethod
    def from_config(cls, config: ZipConfig) -> ZipLimits:
        return cls(
            max_entry_bytes=config.max_entry_bytes,
            max_total_bytes=config.max_total_bytes,
            max_ratio=config.max_ratio,
            max_entries=config.max_entries,
        )


@dataclass(frozen=True)
class ExtractedFile:
    """One file taken out of an archive."""

    #: Where it is now.
    path: Path
    #: Its path relative to the extraction folder, which is also its relative target
    #: at a destination (``organizations/5-1-organizations.csv`` with sub_dirs).
    name: str
    #: The entry's name in the archive, as the archive spells it.
    entry: str
    bytes: int
    sha256: str


def is_zip(path: Path) -> bool:
    """Whether ``path`` is named like a zip archive."""
    return Path(path).suffix.lower() == ".zip"


def extraction_dir(archive: Path, output_dir: Path | None = None) -> Path:
    """The folder a download is unpacked into: its name without ``.zip`` (or ``.csv``),
    beside it or in ``output_dir``."""
    archive = Path(archive)
    stem = archive.stem if archive.suffix and archive.stem else archive.name + ".d"
    return (Path(output_dir) if output_dir is not None else archive.parent) / stem


def unzip(
    archive: Path,
    *,
    sub_dirs: bool = False,
    limits: ZipLimits | None = None,
    output_dir: Path | None = None,
    progress: ProgressFactory | None = None,
) -> list[ExtractedFile]:
    """Extract ``archive`` into :func:`extraction_dir`, replacing an earlier extraction.

    All or nothing: raises :class:`ExtractError` naming the archive and the entry
    when the archive is hostile or corrupt, and then nothing is left behind.
    """
    folder = extraction_dir(archive, output_dir)
    with atomic_directory(folder) as stage:
        files = extract_into(archive, stage, sub_dirs=sub_dirs, limits=limits, progress=progress)
    return [replace(f, path=folder / f.name) for f in files]


def extract_into(
    archive: Path,
    folder: Path,
    *,
    sub_dirs: bool = False,
    limits: ZipLimits | None = None,
    progress: ProgressFactory | None = None,
    kind: str | None = None,
) -> list[ExtractedFile]:
    """Check every entry of ``archive``, then extract them into the empty ``folder``.

    The caller owns ``folder`` and removes it on failure (:func:`unzip` does).
    Files are fsynced; their order is the archive's. ``kind`` is the export type
    recorded for the archive, which wins over the entries' names for ``sub_dirs``.
    """
    archive = Path(archive)
    limits = limits or ZipLimits()
    declared = _declared_entry_count(archive)
    if declared is not None and declared > limits.max_entries:
        raise _refused(archive, None, f"has {declared} entries, more than max_entries")
    try:
        zip_file = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ExtractError(
            f"{archive}: not a readable zip archive ({exc})",
            hint="the download may be truncated or not a zip; it is retried only on request",
        ) from None
    except OSError as exc:
        raise ExtractError(f"cannot open {archive}: {exc.strerror}", retryable=True) from None
    with zip_file:
        plan = _plan(archive, zip_file.infolist(), sub_dirs=sub_dirs, limits=limits, kind=kind)
        total = sum(info.file_size for info, _ in plan)
        advance, done = start_task(progress, f"unzip {archive.name}", total)
        try:
            extracted = []
            budget = _Budget(archive, limits)
            for info, target in plan:
                extracted.append(_extract_one(zip_file, info, target, folder, budget, advance))
        finally:
            done()
    return extracted


def _refused(archive: Path, entry: str | None, reason: str) -> ExtractError:
    where = f"{archive}: entry {entry!r}" if entry is not None else str(archive)
    return ExtractError(
        f"refusing {where}: {reason}",
        hint="the archive is unsafe or damaged; nothing was extracted",
    )


def _plan(
    archive: Path,
    infos: list[zipfile.ZipInfo],
    *,
    sub_dirs: bool,
    limits: ZipLimits,
    kind: str | None = None,
) -> list[tuple[zipfile.ZipInfo, str]]:
    """Every file entry with its target, after checking all of them."""
    if len(infos) > limits.max_entries:
        raise _refused(archive, None, f"has {len(infos)} entries, more than max_entries")
    plan: list[tuple[zipfile.ZipInfo, str]] = []
    seen: dict[str, str] = {}
    folders: dict[str, str] = {}
    declared_total = 0
    archive_size = _archive_size(archive)
    for info in infos:
        entry = info.orig_filename
        if entry.endswith(("/", "\\")):
            continue  # folders are created as their files need them
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _refused(archive, entry, "is a symbolic link")
        if info.flag_bits & _ENCRYPTED:
            raise _refused(archive, entry, "is encrypted")
        try:
            target = entry_target(entry, sub_dirs=sub_dirs, kind=kind)
        except UnsafeName as exc:
            raise _refused(archive, entry, f"unsafe name: {exc}") from None
        key = unicodedata.normalize("NFC", target).casefold()
        if key in seen:
            raise _refused(archive, entry, f"duplicate name (same as {seen[key]!r})")
        seen[key] = entry
        parts = key.split("/")
        for depth in range(1, len(parts)):
            folders.setdefault("/".join(parts[:depth]), entry)
        _check_sizes(archive, entry, info.file_size, info.compress_size, limits)
        declared_total += info.file_size
        if limits.max_total_bytes is not None and declared_total > limits.max_total_bytes:
            raise _refused(archive, entry, "uncompressed total exceeds max_total_bytes")
        _check_archive_ratio(archive, declared_total, archive_size, limits)
        plan.append((info, target))
    for key, entry in seen.items():
        if key in folders:
            raise _refused(archive, entry, f"is also a folder of {folders[key]!r}")
    return plan


def _check_sizes(archive: Path, entry: str, size: int, compressed: int, limits: ZipLimits) -> None:
    if limits.max_entry_bytes is not None and size > limits.max_entry_bytes:
        raise _refused(archive, entry, f"uncompressed size {size} exceeds max_entry_bytes")
    if size > RATIO_FLOOR and size / max(compressed, 1) > limits.max_ratio:
        ratio = size / max(compressed, 1)
        raise _refused(
            archive, entry, f"compression ratio {ratio:.0f} exceeds max_ratio {limits.max_ratio:g}"
        )


def _archive_size(archive: Path) -> int:
    try:
        return max(archive.stat().st_size, 1)
    except OSError:
        return 1


def _check_archive_ratio(archive: Path, total: int, size: int, limits: ZipLimits) -> None:
    """Refuse an archive whose entries together inflate beyond ``max_ratio`` times its size."""
    if total > RATIO_FLOOR and total / size > limits.max_ratio:
        raise _refused(
            archive,
            None,
            f"its entries inflate to {total / size:.0f} times its size, more than "
            f"max_ratio {limits.max_ratio:g}",
        )


class _Budget:
    """The bytes really inflated so far, checked against the limits while streaming."""

    def __init__(self, archive: Path, limits: ZipLimits) -> None:
        self.archive = archive
        self.limits = limits
        self.total = 0
        self.size = _archive_size(archive)

    def spend(self, entry: str, written: int, compressed: int, block: int) -> None:
        self.total += block
        _check_sizes(self.archive, entry, written, compressed, self.limits)
        _check_archive_ratio(self.archive, self.total, self.size, self.limits)
        limit = self.limits.max_total_bytes
        if limit is not None and self.total > limit:
            raise _refused(self.archive, entry, "uncompressed total exceeds max_total_bytes")


def _extract_one(
    zip_file: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: str,
    folder: Path,
    budget: _Budget,
    advance: Advance | None,
) -> ExtractedFile:
    entry = info.orig_filename
    destination = folder / target
    digest = hashlib.sha256()
    written = 0
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with zip_file.open(info) as source, open(destination, "xb") as out:
            while block := source.read(BLOCK):
                checkpoint()
                written += len(block)
                budget.spend(entry, written, info.compress_size, len(block))
                out.write(block)
                digest.update(block)
                if advance is not None:
                    advance(len(block))
            out.flush()
            os.fsync(out.fileno())
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise _refused(budget.archive, entry, f"corrupt data ({_reason(exc)})") from None
    except NotImplementedError as exc:
        raise _refused(budget.archive, entry, f"unsupported ({exc})") from None
    except RuntimeError as exc:  # zipfile's "encrypted, password required"
        raise _refused(budget.archive, entry, str(exc)) from None
    except OSError as exc:
        raise ExtractError(
            f"cannot write {destination}: {exc.strerror or exc}",
            hint="check free space and permissions",
            retryable=True,
        ) from None
    return ExtractedFile(
        path=destination, name=target, entry=entry, bytes=written, sha256=digest.hexdigest()
    )


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if "CRC" in text:
        return "CRC mismatch"
    if isinstance(exc, EOFError):
        return "archive ends too early"
    return text


def _declared_entry_count(archive: Path) -> int | None:
    """The entry count in the archive's end record, read before zipfile loads them all.

    ``None`` when there is no end record (zipfile then reports the archive as
    unreadable).
    """
    try:
        with open(archive, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            tail_size = min(size, 22 + 65535 + 20)
            handle.seek(size - tail_size)
            tail = handle.read(tail_size)
            position = tail.rfind(_EOCD)
            if position < 0 or position + 22 > len(tail):
                return None
            count = int(struct.unpack("<H", tail[position + 10 : position + 12])[0])
            locator = position - 20
            if count == 0xFFFF and locator >= 0 and tail[locator : locator + 4] == _ZIP64_LOCATOR:
                (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
                handle.seek(offset)
                record = handle.read(56)
                if len(record) == 56 and record[:4] == _ZIP64_EOCD:
                    count = int(struct.unpack("<Q", record[32:40])[0])
            return count
    except OSError:
        return None
