"""`exportmon status`: every monitor's state as a table, JSON, Nagios line or Prometheus text."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from exportmon.actions.status import (
    MONITOR_SCOPE,
    MonitorStatus,
    mask_configured_secrets,
    nagios_line,
    overall,
    prometheus_text,
    status_of,
)
from exportmon.atomic import atomic_write
from exportmon.commands.common import options, select_monitors
from exportmon.commands.console import print_json, stdout_console
from exportmon.config.load import load_monitors
from exportmon.config.schema import MonitorConfig
from exportmon.errors import ConfigError, LedgerError, UsageError
from exportmon.ledger import Ledger, from_text
from exportmon.redact import redact
from exportmon.units import format_duration

EPILOG = """\
Examples:

  exportmon status                          # a table of every monitor and export id

  exportmon -c ~/.config/exportmon/monitors/777.toml status --json

  exportmon status --nagios                 # one line; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN

  exportmon status --prometheus -o /var/lib/node_exporter/textfile/exportmon.prom
"""

STATE_STYLES = {"ok": "green", "warning": "yellow", "error": "bold red", "unknown": "magenta"}


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
    """
    if sum((as_json, nagios, prometheus)) > 1:
        raise UsageError("choose one of --json, --nagios and --prometheus")
    now = datetime.now(timezone.utc)
    if nagios:
        statuses, problems = _statuses_for_nagios(ctx, now)
        line, code = nagios_line(statuses, problems)
        _emit(line + "\n", output)
        raise typer.Exit(code)

    monitors = select_monitors(ctx)
    statuses = [monitor_status(monitor, now) for monitor in monitors]
    if as_json:
        state, reason = overall(statuses)
        data = {
            "state": state,
            "reason": reason,
            "checked_at": statuses[0].checked_at if statuses else None,
            "monitors": [status.to_dict() for status in statuses],
        }
        if output:
            _emit(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n", output)
        else:
            print_json(data)
    elif prometheus:
        _emit(prometheus_text(statuses), output)
    else:
        if output:
            raise UsageError("--output goes with --json, --nagios or --prometheus")
        print_status_table(statuses, now)
    raise typer.Exit(options(ctx).exit_code(work_failed=False))


def monitor_status(monitor: MonitorConfig, now: datetime) -> MonitorStatus:
    """The status of one monitor; a ledger that cannot be read makes it ``error``."""
    mask_configured_secrets(monitor)
    path = monitor.dirs.ledger
    if not path.exists():
        return status_of(monitor, None, now=now)
    try:
        with Ledger.open(path) as ledger:
            return status_of(monitor, ledger, now=now)
    except LedgerError as exc:
        broken = status_of(monitor, None, now=now)
        broken.state = "error"
        broken.reason = redact(exc.one_line())
        return broken


def _statuses_for_nagios(
    ctx: typer.Context, now: datetime
) -> tuple[list[MonitorStatus], list[tuple[str, str]]]:
    """Statuses, plus broken configs as UNKNOWN items: a check must print a line, not fail."""
    opts = options(ctx)
    try:
        monitors, errors = load_monitors(opts.configs or None, strict=opts.strict)
    except ConfigError as exc:
        return [], [("unknown", f"config error: {exc.one_line()}")]
    extra = [("unknown", f"config error: {error.one_line()}") for error in errors]
    return [monitor_status(monitor, now) for monitor in monitors], extra


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    with atomic_write(output) as handle:
        os.fchmod(handle.fileno(), 0o644)
        handle.write(text.encode("utf-8"))


def _when(text: str | None, now: datetime) -> str:
    """``2h ago`` / ``in 5h`` for people."""
    if not text:
        return "-"
    seconds = (from_text(text) - now).total_seconds()
    if seconds >= 0:
        return f"in {format_duration(seconds)}"
    return f"{format_duration(-seconds)} ago"


def print_status_table(statuses: list[MonitorStatus], now: datetime) -> None:
    """The status table as `exportmon status` shows it.

    A narrow terminal gets the columns that matter most; --json has everything.
    """
    wide = stdout_console().width >= 120
    table = Table(header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    # Only the reason wraps: it carries the error; the other columns stay one line.
    for column in ("monitor", "export", "state"):
        table.add_column(column, no_wrap=True)
    table.add_column("reason", overflow="fold", ratio=1, min_width=20)
    table.add_column("last success", no_wrap=True)
    if wide:
        table.add_column("last failure", no_wrap=True)
        table.add_column("pending", no_wrap=True, justify="right")
    table.add_column("files", no_wrap=True, justify="right")
    table.add_column("rows", no_wrap=True, justify="right")
    if wide:
        table.add_column("next expected", no_wrap=True)
    for status in statuses:
        for row in status.exports:
            cells: list[str | Text] = [
                status.monitor,
                str(row.export_id) if row.export_id is not None else "-",
                Text(row.state, style=STATE_STYLES[row.state]),
                Text(redact(row.reason)),
                _when(row.last_success, now),
            ]
            if wide:
                cells += [_when(row.last_failure, now), str(row.pending)]
            cells += [str(row.files_delivered), str(row.rows_delivered)]
            if wide:
                cells.append(_when(row.next_expected, now))
            table.add_row(*cells)
        for problem in status.problems:
            if problem.scope != MONITOR_SCOPE:
                continue
            table.add_row(
                status.monitor,
                "(monitor)",
                Text(problem.state, style=STATE_STYLES[problem.state]),
                Text(redact(problem.summary)),
                *[""] * (len(table.columns) - 4),
            )
    console = stdout_console()
    console.print(table)
    state, reason = overall(statuses)
    summary = Text("Overall: ")
    summary.append(state, style=STATE_STYLES[state])
    summary.append(f" - {redact(reason)}")
    console.print(summary, soft_wrap=True)
