"""`exportmon report`: exports, files and deliveries over a period, in several formats."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Annotated

import typer

from exportmon.actions.mail_report import mail_report
from exportmon.actions.report import collect_report
from exportmon.commands.common import options, select_monitors
from exportmon.commands.console import print_json, print_note, stdout_console
from exportmon.errors import UsageError
from exportmon.render.csv import render_csv
from exportmon.render.html import render_html
from exportmon.render.markdown import render_markdown
from exportmon.render.table import report_table
from exportmon.units import parse_duration

EPILOG = """\
Examples:

  exportmon report                              # the last 7 days, as a table

  exportmon report --wide | less -S             # every column, nothing shortened

  exportmon report --since 30d --csv > month.csv

  exportmon report --from 2026-11-01 --to 2026-11-30 --markdown

  exportmon report --html > week.html

  exportmon report --since 7d --mail-to ops@example.com   # weekly from cron
"""


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
    wide: Annotated[
        bool,
        typer.Option("--wide", help="Every column and all of every text, however wide."),
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
    report = collect_report(monitors, start, end, now=now)

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
        console = stdout_console()
        for line in report_table(report, console.width, wide=wide):
            console.print(line, soft_wrap=True)
    raise typer.Exit(options(ctx).exit_code(work_failed=False))


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
