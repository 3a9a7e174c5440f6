"""The step downloaded → unpacked: extract a zip (or take the CSV), rewrite, count rows.

:func:`unpack` works on a file alone; :func:`unpack_export` does it for an export
of the ledger and records every deliverable file. Unpacking is all or nothing: a
zip is extracted, and its CSV files rewritten, in a hidden staging folder that
replaces ``downloads/<name>/`` in one rename, so a run killed half-way leaves no
partial file to deliver and the next run simply starts again from the download.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from exportmon.atomic import atomic_directory, sha256_file
from exportmon.config.schema import MonitorConfig
from exportmon.crashpoints import crash_point
from exportmon.errors import CsvError, ExtractError
from exportmon.files.csv_rewrite import Dialect, count_rows, is_csv, rewrite_csv
from exportmon.files.names import export_type, relative_target
from exportmon.files.unzip import ZipLimits, extract_into, extraction_dir, is_zip
from exportmon.ledger import Export, Ledger
from exportmon.log import get_logger
from exportmon.progress import ProgressFactory
from exportmon.units import plural

log = get_logger(__name__)


@dataclass(frozen=True)
class UnpackedFile:
    """A deliverable file that unpacking produced (or passed through)."""

    path: Path
    #: Relative target at a destination, sub-folder included: ``sites/5-1-sites.csv``.
    name: str
    export_type: str | None
    bytes: int
    sha256: str
    #: Data records (header excluded) of a CSV file; ``None`` for other files or
    #: when a CSV delivered unchanged could not be parsed.
    rows: int | None
    rewritten: bool = False


def unpack(
    download: Path,
    *,
    unzip: bool = True,
    sub_dirs: bool = False,
    limits: ZipLimits | None = None,
    dialect: Dialect | None = None,
    hook_path: Path | None = None,
    output_dir: Path | None = None,
    progress: ProgressFactory | None = None,
    kind: str | None = None,
) -> list[UnpackedFile]:
    """The deliverable files of ``download``.

    ``kind`` is the export type recorded for it (a drop folder's ``[[types]]`` rule):
    it wins over the type the file names give, and a plain file of a recorded type
    has its rows counted whatever its suffix (``users.txt``).

    A ``.zip`` (with ``unzip``) is extracted into :func:`extraction_dir`; with a
    ``dialect`` its CSV files are rewritten there too, before the folder appears.
    A ``.csv`` passes through unchanged, or with a ``dialect`` is rewritten into
    that folder (the download itself is never modified). Rows are counted for every
    CSV file. Raises :class:`ExtractError` or :class:`CsvError`; nothing is left
    half-done.
    """
    download = Path(download).absolute()
    if not download.is_file():
        raise ExtractError(f"{download} does not exist", retryable=False)
    if unzip and is_zip(download):
        folder = extraction_dir(download, output_dir)
        with atomic_directory(folder) as stage:
            extracted = extract_into(
                download, stage, sub_dirs=sub_dirs, limits=limits, progress=progress, kind=kind
            )
            files = [
                _prepared(e.path, e.name, e.bytes, e.sha256, dialect, hook_path, progress, kind)
                for e in extracted
            ]
            crash_point("unpack.staged")
        return [replace(f, path=folder / f.name) for f in files]
    name = relative_target(download.name, sub_dirs=sub_dirs and unzip, kind=kind)
    if dialect is not None and unzip and is_csv(download):
        folder = extraction_dir(download, output_dir)
        with atomic_directory(folder) as stage:
            result = rewrite_csv(
                download, stage / name, dialect, progress=progress, hook_path=hook_path
            )
            crash_point("unpack.staged")
        return [
            UnpackedFile(
                path=folder / name,
                name=name,
                export_type=kind or export_type(name),
                bytes=result.bytes,
                sha256=result.sha256,
                rows=result.rows,
                rewritten=True,
            )
        ]
    size = download.stat().st_size
    sha256 = sha256_file(download)
    typed = kind is not None
    return [_prepared(download, name, size, sha256, None, hook_path, progress, kind, typed=typed)]


def _prepared(
    path: Path,
    name: str,
    size: int,
    sha256: str,
    dialect: Dialect | None,
    hook_path: Path | None,
    progress: ProgressFactory | None,
    kind: str | None = None,
    *,
    typed: bool = False,
) -> UnpackedFile:
    """A file rewritten in place (CSV with a dialect) or counted, described.

    ``typed``: a plain file whose ``kind`` was recorded from its header row is
    counted as CSV whatever its suffix."""
    kind = kind or export_type(name)
    if is_csv(path) and dialect is not None:
        result = rewrite_csv(path, path, dialect, progress=progress, hook_path=hook_path)
        return UnpackedFile(path, name, kind, result.bytes, result.sha256, result.rows, True)
    rows = None
    if is_csv(path) or (typed and kind is not None and not is_zip(path)):
        try:
            rows = count_rows(path)
        except CsvError as exc:
            # Delivered unchanged, so it need not parse; only the row count is lost.
            log.warning("cannot count the rows of %s: %s", path, exc.message)
    return UnpackedFile(path, name, kind, size, sha256, rows)


def unpack_export(
    monitor: MonitorConfig,
    ledger: Ledger,
    export: Export,
    *,
    progress: ProgressFactory | None = None,
) -> Export:
    """Unpack a downloaded export as ``monitor`` says and record its files; return it unpacked.

    Extracts (``unzip``), rewrites (``[csv]``), counts rows, records each file with
    :meth:`Ledger.add_file` and advances the export to ``unpacked``. An export
    already unpacked or delivered is returned unchanged. Safe to run again after a
    crash: it starts over from the download. Raises :class:`ExtractError` /
    :class:`CsvError` (for :func:`exportmon.actions.steps.attempt` to record).
    """
    if export.state in ("unpacked", "delivered"):
        return export
    if not export.download_path:
        raise ExtractError(f"export {export.id} has not been downloaded yet", retryable=False)
    dialect = Dialect.from_config(monitor.csv) if monitor.csv is not None else None
    files = unpack(
        Path(export.download_path),
        unzip=monitor.unzip,
        sub_dirs=monitor.sub_dirs,
        limits=ZipLimits.from_config(monitor.zip),
        dialect=dialect,
        hook_path=monitor.path.parent if monitor.path else None,
        progress=progress,
        kind=export.export_type,
    )
    crash_point("unpack.placed")
    return record_unpacked(ledger, export, files)


def record_unpacked(ledger: Ledger, export: Export, files: list[UnpackedFile]) -> Export:
    """Record ``files`` as the deliverables of ``export`` and advance it to ``unpacked``."""
    for unpacked in files:
        record = ledger.add_file(
            path=unpacked.path,
            name=unpacked.name,
            export_row=export.id,
            export_type=unpacked.export_type,
            bytes=unpacked.bytes,
            rows=unpacked.rows,
            sha256=unpacked.sha256,
        )
        ledger.update_file(record.id, rewritten=int(unpacked.rewritten))
    counted = [f.rows for f in files if f.rows is not None]
    rows = sum(counted) if counted else None
    size = f" ({plural(rows, 'row')})" if rows is not None else ""
    download = str(export.download_path or "")
    if download.lower().endswith(".zip"):
        log.info("Unpacked %s from '%s'%s", plural(len(files), "file"), download, size)
    else:  # a plain file passes through unpacking as it is
        log.info("Took '%s' (not an archive)%s", download, size)
    return ledger.advance_export(export.id, "unpacked", files=len(files), rows=rows)
