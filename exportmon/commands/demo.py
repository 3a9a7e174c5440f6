"""`exportmon demo`: the whole pipeline on a built-in mailbox and export server."""

from __future__ import annotations

import functools
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from exportmon.actions.run import RunOptions
from exportmon.actions.status import summarise
from exportmon.commands.common import options
from exportmon.commands.console import (
    print_json,
    progress_wanted,
    run_display,
    stdout_console,
    task_advancer,
)
from exportmon.commands.status import print_status
from exportmon.demo import run_demo
from exportmon.errors import UsageError

EPILOG = """\
Examples:

  exportmon demo                       # in a new folder under /tmp, kept for you to look at

  exportmon demo --dir ./demo          # in ./demo (must be empty or new)
"""


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=EPILOG)(demo_command)


def demo_command(
    ctx: typer.Context,
    directory: Annotated[
        Path | None,
        typer.Option("--dir", metavar="DIR", help="Where to put the demo (empty or new folder)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcome as JSON.")] = False,
) -> None:
    """Run fetch → unzip → rewrite → deliver on a built-in mailbox, with no account.

    A Maildir with four mails (a zip export, a CSV export, a broken link and a
    newsletter), a web server and an FTP server on 127.0.0.1 are set up, one
    `run` cycle delivers the exports to a folder and over FTP, and the status
    table shows the outcome. The servers stop at the end; the files stay.
    """
    opts = options(ctx)
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="exportmon-demo-"))
    elif directory.exists() and any(directory.iterdir()):
        raise UsageError(f"{directory} is not empty", hint="give a new or empty folder")
    directory = directory.resolve()
    with run_display(progress_wanted(opts.quiet) and not as_json) as display:
        run_options = RunOptions(
            progress=functools.partial(task_advancer, display.transfers) if display else None,
            on_activity=display.activity if display else None,
            log_format=opts.log_format,
        )
        result = run_demo(directory, run_options)
    if as_json:
        print_json(
            {
                "directory": str(result.directory),
                "config": str(result.config),
                "summary": result.cycle.counts(),
                "delivered": [str(p) for p in result.delivered],
                "uploaded": [str(p) for p in result.uploaded],
                "status": result.status.to_dict(),
                "notifications": result.notifications,
                "heartbeat_pings": result.pings,
            }
        )
        return
    out = stdout_console()
    now = datetime.now(timezone.utc)
    print_status(summarise([result.status], now=now), now)
    out.print(f"\nDelivered to the local folder {directory / 'delivered'}:", highlight=False)
    for path in result.delivered:
        out.print(f"  {path.relative_to(directory / 'delivered')}", highlight=False)
    out.print(f"Uploaded to the FTP server (home {directory / 'ftp'}):", highlight=False)
    for path in result.uploaded:
        out.print(f"  {path.relative_to(directory / 'ftp')}", highlight=False)
    if result.alerts_file.exists():
        out.print(
            f"Every alert and notice also went through a command: {result.alerts_file}",
            highlight=False,
        )
    if result.notifications:
        out.print("A local webhook (Apprise json://) received:", highlight=False)
        for payload in result.notifications:
            kind = {"info": "summary"}.get(str(payload.get("type")), payload.get("type"))
            line = f"  {kind}: {payload.get('message')}"
            out.print(line if len(line) <= 78 else line[:77] + "…", highlight=False, markup=False)
    elif not result.webhooks:
        out.print(
            "Chat and webhook channels (Slack, Teams, ntfy, json://, ...) need the notify"
            " extra: pip install 'exportmon[notify]'",
            highlight=False,
        )
    if result.pings:
        out.print(f"Heartbeat pings received: {', '.join(result.pings)}", highlight=False)
    out.print(
        f"\nEverything is in {directory}. Look around:\n"
        f"  exportmon -c {result.config} serve      # status page: http://127.0.0.1:8580/\n"
        f"  exportmon -c {result.config} status\n"
        f"  exportmon -c {result.config} report --since 1d\n"
        f"  exportmon generate <export-id> <your address> -     # set up a real monitor",
        highlight=False,
        soft_wrap=True,
    )
