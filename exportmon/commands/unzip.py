"""`exportmon unzip`: unpack downloaded .zip exports safely (a .csv passes through)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from exportmon.actions.tracking import Owners, export_of_download
from exportmon.actions.unzip import record_unpacked, unpack
from exportmon.commands.common import monitors_for_paths, options
from exportmon.commands.console import progress_wanted, task_advancer, transfer_progress
from exportmon.commands.pipeio import Emitter, output_format, read_inputs
from exportmon.config.schema import MonitorConfig
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
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Downloads to unpack (default: paths read from stdin).", show_default=False
        ),
    ] = None,
    null: Annotated[
        bool, typer.Option("-0", "--null", help="Read and write NUL-separated paths.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Write JSON Lines.")] = False,
    sub_dirs: Annotated[
        bool | None,
        typer.Option(
            "--sub-dirs/--no-sub-dirs",
            help="Put each file in a folder named after its export type "
            "(default: the monitor's sub_dirs, else no).",
            show_default=False,
        ),
    ] = None,
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

    Limits default to the monitor's [zip] table (the one the download belongs to,
    or the one chosen with --config), else 20GB per entry, 50GB in all, ratio 250,
    10000 entries. Inside a monitor's state folder the export is recorded as
    unpacked in its ledger.
    """
    opts = options(ctx)
    emitter = Emitter(output_format(null, as_json))
    overrides = {
        "max_entry_bytes": _size(max_entry_bytes, "--max-entry-bytes"),
        "max_total_bytes": _size(max_total_bytes, "--max-total-bytes"),
        "max_ratio": max_ratio,
        "max_entries": max_entries,
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    monitors = monitors_for_paths(ctx)
    chosen = monitors[0] if opts.configs and len(monitors) == 1 else None
    failed = False
    with Owners(monitors) as owners, transfer_progress(progress_wanted(opts.quiet)) as bar:
        progress = (lambda text, total: task_advancer(bar, text, total)) if bar else None
        for item in read_inputs(paths, null=null):
            try:
                owner = owners.of(item.path)
                monitor: MonitorConfig | None = (owner.monitor if owner else None) or chosen
                limits = ZipLimits.from_config(monitor.zip) if monitor else ZipLimits()
                files = unpack(
                    item.path,
                    sub_dirs=sub_dirs
                    if sub_dirs is not None
                    else bool(monitor and monitor.sub_dirs),
                    limits=replace(limits, **overrides),
                    output_dir=output_dir,
                    progress=progress,
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
                log.error("%s", exc.one_line())
                failed = True
    raise typer.Exit(opts.exit_code(failed))


def _size(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_size(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
