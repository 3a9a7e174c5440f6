"""`exportmon report`: exports, files and deliveries over a period, in several formats."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from exportmon.actions.report import (
    DESTINATION_COLUMNS,
    EXPORT_COLUMNS,
    Report,
    build_report,
    destination_cells,
    export_cells,
    mail_report,
    render_csv,
    render_html,
    render_markdown,
    title,
)
from exportmon.actions.status import mask_configured_secrets
from exportmon.commands.common import options, select_monitors
from exportmon.commands.console import print_json, print_note, stdout_console
from exportmon.config.schema import MonitorConfig
from exportmon.errors import UsageError
from exportmon.ledger import Ledger
from exportmon.units import parse_duration

EPILOG = """\
Examples:

  exportmon report                              # the last 7 days, as a table

  exportmon report --since 30d --csv > month.csv

  exportmon report --from 2026-11-01 --to 2026-11-30 --markdown

  exportmon report --html > week.html

  exportmon report --since 7d --mail-to ops@example.com   # weekly from cron
"""

_OUTCOME_STYLES = {"delivered": "green", "failed": "bold red", "pending": "yellow"}


def register(app: typer.Typer) -> None:
    app.command("report", epilog=EPILOG)(report_command)


def report_command(
    ctx: typer.Context,
    since: Annotated[
        str,
        typer.Option("--since", metavar="DURATION", help="Period ending now, e.g. 24h, 7d, 4w."),
    ] = "7d",
    from_: Annotated[
        str | None,
        typer.Option("--from", metavar="WHEN", help="Start: ISO date or date-time (local time)."),
    ] = None,
    to: Annotated[
        str | None,
        typer.Option(
            "--to", metavar="WHEN", help="End: ISO date (inclusive) or date-time. Default: now."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV, one row per export.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown tables.")] = False,
    as_html: Annotated[
        bool, typer.Option("--html", help="A self-contained HTML page with a chart.")
    ] = False,
    mail_to: Annotated[
        list[str] | None,
        typer.Option(
            "--mail-to",
            metavar="ADDR",
            help="Mail the report (text + HTML) through the \\[alerts] SMTP settings (repeatable).",
        ),
    ] = None,
) -> None:
    """Report the exports received in a period: per export, per file and per destination,
    with counts, sizes, durations and errors, and a summary line."""
    if sum((as_json, as_csv, markdown, as_html)) > 1:
        raise UsageError("choose one of --json, --csv, --markdown and --html")
    if mail_to and (as_json or as_csv or markdown or as_html):
        raise UsageError("--mail-to sends text and HTML; leave out the output format")
    now = datetime.now(timezone.utc)
    start, end = period(since, from_, to, now)
    monitors = select_monitors(ctx)
    report = _build(monitors, start, end, now)

    if mail_to:
        used = mail_report(monitors, report, mail_to)
        if not options(ctx).quiet:
            print_note(
                f"Report mailed to {', '.join(mail_to)} through the SMTP settings of {used}."
            )
    elif as_json:
        print_json(report.to_dict())
    elif as_csv:
        typer.echo(render_csv(report), nl=False)
    elif markdown:
        typer.echo(render_markdown(report), nl=False)
    elif as_html:
        typer.echo(render_html(report), nl=False)
    else:
        _print_table(report)
    raise typer.Exit(options(ctx).exit_code(work_failed=False))


def _build(monitors: list[MonitorConfig], start: datetime, end: datetime, now: datetime) -> Report:
    opened: list[Ledger] = []
    try:
        sources: list[tuple[MonitorConfig, Ledger | None]] = []
        for monitor in monitors:
            mask_configured_secrets(monitor)
            ledger = None
            if monitor.dirs.ledger.exists():
                ledger = Ledger.open(monitor.dirs.ledger)
                opened.append(ledger)
            sources.append((monitor, ledger))
        return build_report(sources, start, end, now=now)
    finally:
        for ledger in opened:
            ledger.close()


_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_when(text: str, *, end: bool = False) -> datetime:
    """An ISO date or date-time; local time unless it carries an offset or ``Z``.

    A bare date as the end of a period means the end of that day.
    """
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise UsageError(
            f"{text!r} is not a date or date-time",
            hint="use e.g. 2026-11-01 or 2026-11-01T08:00",
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    if end and _DATE_ONLY.fullmatch(value):
        moment += timedelta(days=1)
    return moment.astimezone(timezone.utc)


def period(
    since: str, from_: str | None, to: str | None, now: datetime
) -> tuple[datetime, datetime]:
    """The ``[start, end)`` of the report from ``--since``/``--from``/``--to``."""
    end = parse_when(to, end=True) if to else now
    if from_:
        start = parse_when(from_)
    else:
        try:
            start = end - timedelta(seconds=parse_duration(since))
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    if start >= end:
        raise UsageError("the period is empty: --from must be before --to")
    return start, end


def _print_table(report: Report) -> None:
    console = stdout_console()
    console.print(Text(title(report), style="bold"))
    if report.exports:
        table = Table(header_style="bold")
        for column in EXPORT_COLUMNS:
            numeric = column in ("files", "rows", "size", "duration")
            table.add_column(column, overflow="fold", justify="right" if numeric else "left")
        for export in report.exports:
            cells = export_cells(export)
            cells_text = [Text(cell) for cell in cells]
            cells_text[EXPORT_COLUMNS.index("outcome")].stylize(_OUTCOME_STYLES[export.outcome])
            table.add_row(*cells_text)
        console.print(table)
    else:
        console.print("No exports were received in this period.")
    if report.destinations:
        table = Table(header_style="bold", title="Per destination")
        for column in DESTINATION_COLUMNS:
            table.add_column(column, overflow="fold")
        for total in report.destinations:
            table.add_row(*(Text(cell) for cell in destination_cells(total)))
        console.print(table)
    console.print(Text(report.summary.line(), style="bold"), soft_wrap=True)
