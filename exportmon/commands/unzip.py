"""`exportmon unzip`: unpack downloaded .zip exports safely (a .csv passes through)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from exportmon.actions.tracking import export_of_download
from exportmon.actions.unzip import record_unpacked, unpack
from exportmon.commands.pipeio import Emitter, output_format, read_inputs
from exportmon.commands.steps import (
    JsonOption,
    NullOption,
    SubDirsOption,
    paths_argument,
    step_run,
)
from exportmon.errors import ExportmonError, UsageError
from exportmon.files.unzip import ZipLimits
from exportmon.log import get_logger
from exportmon.units import parse_size

log = get_logger(__name__)

EPILOG = """\
Examples:

  exportmon unzip ~/.local/state/exportmon/777/downloads/20130923-072313-export.zip

  exportmon fetch | exportmon unzip --sub-dirs | exportmon push-ftp --to /srv/in

  exportmon unzip --max-ratio 100 --max-entry-bytes 2GB --json export.zip

Each .zip is extracted into a folder beside it named after it (without .zip), all
or nothing: archives with unsafe names (../, absolute paths), symbolic links,
encrypted entries, duplicate names, bad CRCs or bomb-like sizes are refused and
leave nothing behind. Prints the path of every file produced.
"""


def register(app: typer.Typer) -> None:
    app.command("unzip", epilog=EPILOG)(unzip_command)


def unzip_command(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, paths_argument("Downloads to unpack")] = None,
    null: NullOption = False,
    as_json: JsonOption = False,
    sub_dirs: SubDirsOption = None,
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir", metavar="DIR", help="Create the extraction folders in DIR instead."
        ),
    ] = None,
    max_entry_bytes: Annotated[
        str | None,
        typer.Option(metavar="SIZE", help="Refuse entries larger than this (e.g. 2GB)."),
    ] = None,
    max_total_bytes: Annotated[
        str | None,
        typer.Option(metavar="SIZE", help="Refuse archives larger than this uncompressed."),
    ] = None,
    max_ratio: Annotated[
        float | None, typer.Option(metavar="RATIO", help="Refuse higher compression ratios.")
    ] = None,
    max_entries: Annotated[
        int | None, typer.Option(metavar="N", help="Refuse archives with more entries.")
    ] = None,
) -> None:
    """Unpack downloaded .zip exports into a folder beside each (a .csv passes through).

    Limits default to the monitor's \\[zip] table (the one the download belongs to,
    or the one chosen with --config), else 20GB per entry, 50GB in all, ratio 250,
    10000 entries. Inside a monitor's state folder the export is recorded as
    unpacked in its ledger.
    """
    emitter = Emitter(output_format(null, as_json))
    entry_bytes = _size(max_entry_bytes, "--max-entry-bytes")
    total_bytes = _size(max_total_bytes, "--max-total-bytes")

    def with_options(limits: ZipLimits) -> ZipLimits:
        """``limits`` with the limits given as options in place of their own."""
        return ZipLimits(
            max_entry_bytes=limits.max_entry_bytes if entry_bytes is None else entry_bytes,
            max_total_bytes=limits.max_total_bytes if total_bytes is None else total_bytes,
            max_ratio=limits.max_ratio if max_ratio is None else max_ratio,
            max_entries=limits.max_entries if max_entries is None else max_entries,
        )

    with step_run(ctx) as step:
        for item in read_inputs(paths, null=null):
            try:
                owner, monitor = step.locate(item.path)
                limits = ZipLimits.from_config(monitor.zip) if monitor else ZipLimits()
                split = sub_dirs if sub_dirs is not None else bool(monitor and monitor.sub_dirs)
                files = unpack(
                    item.path,
                    sub_dirs=split,
                    limits=with_options(limits),
                    output_dir=output_dir,
                    progress=step.progress,
                )
                export = export_of_download(owner.ledger, item.path) if owner else None
                if owner and export and export.state in ("new", "downloaded"):
                    record_unpacked(owner.ledger, export, files)
                for produced in files:
                    emitter.emit(
                        produced.path,
                        name=produced.name,
                        source=str(item.path),
                        export_type=produced.export_type,
                        bytes=produced.bytes,
                        rows=produced.rows,
                        sha256=produced.sha256,
                    )
            except ExportmonError as exc:
                step.report(exc)


def _size(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
