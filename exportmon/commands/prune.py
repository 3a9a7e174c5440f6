"""`exportmon prune`: remove old downloads and old ledger records."""

from __future__ import annotations

from typing import Annotated

import typer

from exportmon.actions.monitor_run import monitor_run
from exportmon.actions.prune import PruneResult, prune
from exportmon.commands.common import options, select_monitors
from exportmon.commands.console import print_json, print_note
from exportmon.errors import UsageError
from exportmon.units import format_size, parse_duration, plural

EPILOG = """\
Examples:

  exportmon prune --older-than 90d --dry-run     # list what would go, change nothing

  exportmon prune --older-than 90d               # remove it; prints each removed path

  exportmon -c ~/.config/exportmon/monitors/777.toml prune --older-than 30d --downloads-only --json
"""


def register(app: typer.Typer) -> None:
    app.command("prune", epilog=EPILOG)(prune_command)


def prune_command(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Age past which to remove, e.g. 90d. Default: the monitor's keep_downloads.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-n", help="Show what would be removed; change nothing.")
    ] = False,
    downloads_only: Annotated[
        bool, typer.Option("--downloads-only", help="Keep every ledger record.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Remove downloads of exports delivered longer ago than --older-than (and files no export
    refers to that are as old), and ledger records of that age.

    Only the monitor's downloads folder is touched, and never a file of an export that is
    not delivered yet. Prints each removed path; the totals go to stderr.
    """
    age = None
    if older_than is not None:
        try:
            age = parse_duration(older_than)
        except ValueError as exc:
            raise UsageError(f"--older-than: {exc}") from None
    opts = options(ctx)
    results: list[PruneResult] = []
    for monitor in select_monitors(ctx):
        monitor_age = age if age is not None else monitor.keep_downloads
        if monitor_age is None:
            raise UsageError(
                f"how old must downloads of {monitor.name} be to go?",
                hint="give --older-than (e.g. 90d) or set keep_downloads in the config",
            )
        if not monitor.dirs.ledger.exists():
            results.append(PruneResult(monitor.name, dry_run, cutoff=""))
            continue
        with monitor_run(monitor, "prune", dry_run=dry_run, log_format=opts.log_format) as run:
            result = prune(
                monitor, run.ledger, monitor_age, dry_run=dry_run, records=not downloads_only
            )
            run.failed = bool(result.errors)
            run.counts = {"removed": len(result.removed), "bytes_freed": result.bytes_freed}
        results.append(result)
        if not as_json:
            for removed in result.removed:
                typer.echo(removed.path)
    if as_json:
        print_json([result.to_dict() for result in results])
    elif not opts.quiet:
        for result in results:
            print_note(_summary(result))
    failed = any(result.errors for result in results)
    raise typer.Exit(opts.exit_code(work_failed=failed))


def _summary(result: PruneResult) -> str:
    files = sum(1 for p in result.removed if p.kind == "file")
    folders = len(result.removed) - files
    records = sum(result.ledger_rows.values())
    verb = "Would remove" if result.dry_run else "Removed"
    text = (
        f"{result.monitor}: {verb} {plural(files, 'file')} and {plural(folders, 'folder')}"
        f" ({format_size(result.bytes_freed)}) and {plural(records, 'ledger record')}"
    )
    if result.kept:
        text += f"; kept {plural(result.kept, 'file')} of exports not delivered or delivered since"
    if result.errors:
        text += f"; {len(result.errors)} could not be removed"
    return text + "."
