"""`exportmon run`: fetch, unpack, rewrite, deliver and archive — once, or watching."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from exportmon.actions.run import CycleResult, RunOptions, run_once, watch
from exportmon.actions.steps import as_exportmon_error
from exportmon.commands.common import options, select_monitors
from exportmon.commands.console import (
    print_json,
    print_note,
    print_table,
    progress_wanted,
    run_display,
    stdout_console,
    task_advancer,
)
from exportmon.config.load import load_monitors
from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExitCode, UsageError
from exportmon.log import get_logger, monitor_context
from exportmon.signals import Interrupted, Shutdown, handle_signals, interrupted_by_ctrl_c

log = get_logger(__name__)

EPILOG = """\
Examples:

  exportmon run --once                 # every monitor, one cycle: for cron or a systemd timer

  exportmon -q run --once              # the same, quiet unless something is wrong

  exportmon run                        # keep watching (IMAP IDLE); Ctrl-C or SIGTERM stops

  exportmon -c ~/.config/exportmon/monitors/777.toml run --once --retry-failed

  exportmon run --once --json          # a JSON summary per monitor on stdout
"""


def register(app: typer.Typer) -> None:
    app.command("run", epilog=EPILOG)(run_command)


def run_command(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="One cycle per monitor, then exit (cron, timers).")
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Retry failed exports now, not after retry_after."),
    ] = False,
    no_archive: Annotated[
        bool, typer.Option("--no-archive", help="Leave delivered mails where they are this time.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="With --once: show what would be done, change nothing."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --once: print a JSON summary per monitor.")
    ] = False,
    serve: Annotated[
        str | None,
        typer.Option(
            "--serve",
            metavar="HOST:PORT",
            help="While watching, serve the status page there (as `exportmon serve`).",
        ),
    ] = None,
) -> None:
    """Fetch, unpack, rewrite, deliver and archive: once, or watching the mailbox.

    With --once every monitor does one cycle: unfinished work from an earlier run
    is picked up first, then new export mails are fetched and each export is
    delivered, then the delivered mails are archived and alerts are sent.
    Without it, exportmon keeps watching (IMAP IDLE, else every poll_interval)
    and reconnects on its own after network errors. SIGTERM or Ctrl-C stop at the
    next safe point within a second (the next run redoes what was cut short); a
    second Ctrl-C stops at once. SIGHUP reloads the configs.
    Exit codes: 0 all done, 1 something failed, 2 config error or already running,
    130 stopped by Ctrl-C.
    """
    opts = options(ctx)
    if dry_run and not once:
        raise UsageError("--dry-run goes with --once")
    if as_json and not once:
        raise UsageError("--json goes with --once")
    if serve and once:
        raise UsageError("--serve goes with watching, not --once", hint="or run `exportmon serve`")
    monitors = select_monitors(ctx)
    shutdown = Shutdown()
    summaries: list[dict[str, object]] = []
    with (
        handle_signals(shutdown),
        run_display(progress_wanted(opts.quiet) and not as_json) as display,
    ):
        run_options = RunOptions(
            retry_failed=retry_failed,
            archive=not no_archive,
            dry_run=dry_run,
            progress=functools.partial(task_advancer, display.transfers) if display else None,
            on_activity=display.activity if display else None,
            log_format=opts.log_format,
        )
        if once:
            code = _run_once(monitors, run_options, shutdown, summaries, opts.config_failed)
        else:
            with _status_server(ctx, serve):
                code = _watch(ctx, monitors, run_options, shutdown)
    # The live display is gone by now, so the table starts on a clean line.
    if as_json:
        print_json(summaries)
    elif once and sys.stdout.isatty() and not dry_run:
        _print_summary(summaries)
    raise typer.Exit(code)


def _stopped_code(code: int) -> int:
    """The exit code after a stop request: 130 after Ctrl-C, else at least 1 (work left)."""
    return ExitCode.INTERRUPTED if interrupted_by_ctrl_c() else max(code, ExitCode.FAILED)


@contextlib.contextmanager
def _status_server(ctx: typer.Context, listen: str | None) -> Iterator[None]:
    """``--serve``: the status page beside the watchers (a token from EXPORTMON_SERVE_TOKEN)."""
    if not listen:
        yield
        return
    from exportmon.commands.serve import TOKEN_ENV, build_access, start_server

    opts = options(ctx)
    access = build_access(os.environ.get(TOKEN_ENV) or None, None, None, None)
    server = start_server(opts.configs, listen, access, strict=opts.strict)
    log.info("status page: %s", server.url)
    try:
        yield
    finally:
        server.stop()


def _run_once(
    monitors: list[MonitorConfig],
    run_options: RunOptions,
    shutdown: Shutdown,
    summaries: list[dict[str, object]],
    config_failed: bool,
) -> int:
    code = ExitCode.USAGE if config_failed else ExitCode.OK
    for monitor in monitors:
        if shutdown.requested:
            break
        try:
            result = run_once(monitor, run_options, shutdown)
        except Interrupted:
            break
        except Exception as raised:  # this monitor's failure; the others still run
            exc = as_exportmon_error(raised)
            with monitor_context(monitor.name, None):
                log.error("%s", exc.one_line())
            code = max(code, exc.exit_code)
            summaries.append({"monitor": monitor.name, "error": exc.one_line()})
            continue
        if result.failed:
            code = max(code, ExitCode.FAILED)
        summaries.append(_summary(monitor, result))
        for line in result.planned:
            print_note(f"[{monitor.name}] {line}")
    if shutdown.requested:
        print_note("exportmon: stopped; the next run resumes the unfinished work")
        return _stopped_code(code)
    return code


def _summary(monitor: MonitorConfig, result: CycleResult) -> dict[str, object]:
    return {
        "monitor": monitor.name,
        **result.counts(),
        "delivered_exports": [
            {"export_id": e.export_id, "file": e.file_name, "files": e.files, "rows": e.rows}
            for e in result.delivered
        ],
        "failures": result.failures,
        "error": None,
    }


def _print_summary(summaries: list[dict[str, object]]) -> None:
    rows = [
        [
            s["monitor"],
            s.get("new_mails", ""),
            s.get("downloaded", ""),
            s.get("delivered", ""),
            s.get("archived", ""),
            s.get("failed", "") if not s.get("error") else f"error: {s['error']}",
        ]
        for s in summaries
    ]
    print_table(["monitor", "new mails", "downloaded", "delivered", "archived", "failed"], rows)
    stdout_console().file.flush()


def _watch(
    ctx: typer.Context, monitors: list[MonitorConfig], run_options: RunOptions, shutdown: Shutdown
) -> int:
    opts = options(ctx)
    first = [monitors]

    def load() -> list[MonitorConfig]:
        if first:
            return first.pop()
        reloaded, errors = load_monitors(opts.configs or None, strict=opts.strict)
        for error in errors:
            log.error("reload: %s", error.one_line())
        return reloaded

    outcomes = watch(load, run_options, shutdown)
    if any(o.reason in ("locked", "config") for o in outcomes) or opts.config_failed:
        return ExitCode.USAGE
    if any(o.reason == "failed" for o in outcomes):
        return ExitCode.FAILED
    # Ctrl-C ends watching with 130 as it ends any command; SIGTERM is a service's stop.
    return ExitCode.INTERRUPTED if interrupted_by_ctrl_c() else ExitCode.OK
