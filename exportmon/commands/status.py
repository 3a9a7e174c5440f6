"""`exportmon status`: every monitor's state as a table, JSON, Nagios line or Prometheus text."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from exportmon.actions.status import StatusReport, load_status
from exportmon.atomic import atomic_write
from exportmon.commands.common import options
from exportmon.commands.console import print_json, stdout_console
from exportmon.errors import UsageError
from exportmon.log import get_logger
from exportmon.render.json import json_text
from exportmon.render.nagios import nagios_line
from exportmon.render.prometheus import prometheus_text
from exportmon.render.table import status_table

log = get_logger(__name__)

EPILOG = """\
Examples:

  exportmon status                          # a table of every monitor and export id

  exportmon status --wide                   # every column, whole reasons

  exportmon -c ~/.config/exportmon/monitors/777.toml status --json

  exportmon status --nagios                 # one line; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN

  exportmon status --prometheus -o /var/lib/node_exporter/textfile/exportmon.prom
"""


def register(app: typer.Typer) -> None:
    app.command("status", epilog=EPILOG)(status_command)


def status_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    nagios: Annotated[
        bool,
        typer.Option(
            "--nagios",
            help="One Nagios/Icinga plugin line; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        ),
    ] = False,
    prometheus: Annotated[
        bool,
        typer.Option(
            "--prometheus", help="Prometheus text format (node_exporter textfile collector)."
        ),
    ] = False,
    wide: Annotated[
        bool,
        typer.Option("--wide", help="Every column and the whole reason, however wide."),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write to FILE (atomically replaced) instead of stdout.",
        ),
    ] = None,
) -> None:
    """Show every monitor and export id: last success, last failure, pending work, delivered
    files and rows, next expected export, and a state (ok, warning, error, unknown) with its
    reason.

    The state comes from the ledger and the \\[exports.<id>] expectations: error when an export
    is failing or missing (late past its grace), warning when it is late within grace, has
    odd row counts, has waited over an hour, or alerts cannot be sent; unknown before any data.
    A config that does not load is a monitor in error, named by its file.
    """
    if sum((as_json, nagios, prometheus)) > 1:
        raise UsageError("choose one of --json, --nagios and --prometheus")
    if output and not (as_json or nagios or prometheus):
        raise UsageError("--output goes with --json, --nagios or --prometheus")
    opts = options(ctx)
    now = datetime.now(timezone.utc)
    report = load_status(opts.configs or None, strict=opts.strict, now=now)
    for status in report.monitors:
        if status.config_error is not None:
            for line in status.config_errors or [status.config_error]:
                log.error("%s", line)
            opts.config_failed = True
    if nagios:
        line, code = nagios_line(report)
        _emit(line + "\n", output)
        raise typer.Exit(code)
    if as_json:
        if output:
            _emit(json_text(report.to_dict()), output)
        else:
            print_json(report.to_dict())
    elif prometheus:
        _emit(prometheus_text(report), output)
    else:
        print_status(report, now, wide=wide)
    raise typer.Exit(opts.exit_code(work_failed=False))


def print_status(report: StatusReport, now: datetime, *, wide: bool = False) -> None:
    """The status table on stdout, laid out for its width (80 columns in a pipe)."""
    console = stdout_console()
    for line in status_table(report, console.width, now=now, wide=wide):
        console.print(line, soft_wrap=True)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    with atomic_write(output) as handle:
        os.fchmod(handle.fileno(), 0o644)
        handle.write(text.encode("utf-8"))
