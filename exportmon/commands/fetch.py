"""`exportmon fetch`: find new export mails, download each export, print the paths."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from exportmon.actions.fetch import FetchResult, fetch
from exportmon.actions.monitor_run import monitor_run
from exportmon.commands.common import options, select_monitors
from exportmon.commands.console import print_note, progress_wanted, task_advancer, transfer_progress
from exportmon.commands.pipeio import Emitter, output_format
from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExitCode, ExportmonError
from exportmon.ledger import Export
from exportmon.log import get_logger, monitor_context
from exportmon.mail.local import EmlFiles
from exportmon.mail.source import MailSource
from exportmon.signals import Shutdown, handle_signals
from exportmon.units import plural

log = get_logger(__name__)

EPILOG = """\
Examples:

  exportmon fetch                                   # every monitor; prints the downloaded paths

  exportmon fetch | exportmon unzip | exportmon push-ftp --url ftps://ftp.example.com --dir in

  exportmon -c ~/.config/exportmon/monitors/777.toml fetch --dry-run

  exportmon fetch --eml saved-export-mail.eml --json

  exportmon fetch --retry-failed                    # retry failed downloads now
"""


def register(app: typer.Typer) -> None:
    app.command("fetch", epilog=EPILOG)(fetch_command)


def fetch_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Show what would be downloaded and archived; change nothing."
        ),
    ] = False,
    no_archive: Annotated[
        bool,
        typer.Option(
            "--no-archive", help="Leave delivered mails in the mailbox this time (no moves)."
        ),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed", help="Retry failed downloads now, not only after retry_after."
        ),
    ] = False,
    eml: Annotated[
        list[Path] | None,
        typer.Option(
            "--eml",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            readable=True,
            help="Process this .eml file as if it had arrived, instead of reading the mailbox "
            "(repeatable).",
        ),
    ] = None,
    null: Annotated[
        bool, typer.Option("-0", "--null", help="Separate the printed paths with NUL.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per downloaded file.")
    ] = False,
) -> None:
    """Find new export mails, download each export and print the downloaded paths.

    Works on every monitor, or on those chosen with --config.
    Mails whose exports are delivered are archived first; mails are archived no earlier.
    New export mails are recorded in the ledger; each export goes to downloads/.
    Exit code 1 when anything failed (the rest is still done), 2 for a config error.
    """
    opts = options(ctx)
    emitter = Emitter(output_format(null, as_json))
    monitors = select_monitors(ctx)
    failed = False
    with handle_signals(Shutdown()), transfer_progress(progress_wanted(opts.quiet)) as bar:
        progress = functools.partial(task_advancer, bar) if bar is not None else None
        for monitor in monitors:
            try:
                result = _fetch_monitor(
                    monitor,
                    emitter,
                    dry_run=dry_run,
                    retry_failed=retry_failed,
                    archive=not no_archive,
                    eml=list(eml or []),
                    progress=progress,
                    log_format=opts.log_format,
                )
            except ExportmonError as exc:
                with monitor_context(monitor.name, None):
                    log.error("%s", exc.one_line())
                if exc.exit_code == ExitCode.USAGE:  # a config error, or locked by a run
                    opts.config_failed = True
                failed = True
                continue
            failed = failed or result.failed
    raise typer.Exit(opts.exit_code(failed))


def _fetch_monitor(
    monitor: MonitorConfig,
    emitter: Emitter,
    *,
    dry_run: bool,
    retry_failed: bool,
    archive: bool,
    eml: list[Path],
    progress: object,
    log_format: str,
) -> FetchResult:
    with monitor_run(monitor, "fetch", dry_run=dry_run, log_format=log_format) as run:
        ledger = run.ledger
        source: MailSource | None = EmlFiles(monitor, eml) if eml else None

        def emit(export: Export) -> None:
            mail = ledger.mail(export.mail_id) if export.mail_id is not None else None
            emitter.emit(
                export.download_path or "",
                monitor=monitor.name,
                export_id=export.export_id,
                token=export.token,
                file=export.file_name,
                bytes=export.bytes,
                sha256=export.sha256,
                source=mail.source if mail else None,
            )

        result = fetch(
            monitor,
            ledger,
            source=source,
            dry_run=dry_run,
            retry_failed=retry_failed,
            archive=archive,
            progress=progress,  # type: ignore[arg-type]
            on_downloaded=emit,
        )
        run.record(result)
        if dry_run:
            for line in result.planned or (["nothing to do"] if not result.failures else []):
                print_note(f"[{monitor.name}] {line}")
        elif result.failures:
            counts = result.counts()
            log.warning(
                "%s; %s downloaded",
                plural(counts["failed"], "failure"),
                plural(counts["downloaded"], "file"),
            )
        return result
