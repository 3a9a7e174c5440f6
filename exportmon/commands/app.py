"""The ``exportmon`` command line: the commands, the global options, error handling.

Each command is one line in :data:`COMMANDS`: its name, the module that
registers it (under :mod:`exportmon.commands`) and a one-line summary for
``exportmon --help``. The module is imported only when the command runs (see
:mod:`exportmon.commands.registry`), so starting the CLI costs little more than
starting Python.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from exportmon import __version__
from exportmon import log as logging_setup
from exportmon.commands.common import GlobalOptions
from exportmon.commands.registry import Command, LazyCommand, LazyGroup
from exportmon.errors import ExitCode, ExportmonError

#: Every command, in the order ``--help`` lists them.
COMMANDS = [
    LazyCommand("generate", "generate", "Write a monitor config for an export."),
    LazyCommand("fetch", "fetch", "Download new exports; print their paths."),
    LazyCommand("unzip", "unzip", "Unpack downloaded .zip exports safely."),
    LazyCommand("rewrite-csv", "rewrite_csv", "Rewrite CSV into another dialect."),
    LazyCommand("push-ftp", "push_ftp", "Deliver files to folders, FTP, SFTP, HTTPS."),
    LazyCommand("push", "push_ftp", "Same as push-ftp.", target="push-ftp"),
    LazyCommand("run", "run", "Fetch to archive: once (cron) or watching."),
    LazyCommand("serve", "serve", "Serve the status page, /metrics and the API."),
    LazyCommand("status", "status", "Each monitor's state (also JSON, Nagios)."),
    LazyCommand("report", "report", "The exports of a period, per file."),
    LazyCommand("login", "login", "Sign a mailbox in with OAuth2, once."),
    LazyCommand("explain", "explain", "Why a mail is (or is not) taken."),
    LazyCommand("prune", "prune", "Remove old downloads and records."),
    LazyCommand("demo", "demo", "Try it on a built-in mailbox."),
    LazyCommand("completion", "completion", "Shell completion for bash, zsh, fish."),
]
LazyGroup.lazy = {entry.name: entry for entry in COMMANDS}

app = typer.Typer(
    name="exportmon",
    cls=LazyGroup,
    help="Watch a mailbox for export-ready mails; download, unpack, rewrite and deliver the "
    "exports exactly once.",
    epilog="Examples:\n\n"
    "  exportmon generate 777 exports@example.com -\n"
    "  exportmon run --once\n"
    "  exportmon fetch | exportmon unzip | exportmon push-ftp --url ftps://host --dir in\n\n"
    "Global options go before or after the command. `exportmon COMMAND --help` for more.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


#: The -v count of this invocation: with -v, an error also shows its traceback.
_verbosity = 0


class LogFormat(str, Enum):
    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"exportmon {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        list[Path] | None,
        typer.Option(
            "--config",
            "-c",
            metavar="PATH",
            help="Monitor config file or directory of them (repeatable). "
            "Default: every monitor in the config directory.",
        ),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, help="More detail (repeat: -vv adds libraries)."
        ),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only errors; no progress display.")
    ] = False,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Log lines as text or JSON (one per line).")
    ] = LogFormat.text,
    strict: Annotated[
        bool,
        typer.Option("--strict", help="Refuse configs with a plain secret that others can read."),
    ] = False,
    version: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = None,
) -> None:
    """Watch a mailbox for export-ready mails; download, unpack, rewrite and deliver the exports
    exactly once."""
    ctx.obj = GlobalOptions(
        configs=list(config or []),
        verbosity=verbose,
        quiet=quiet,
        log_format=log_format.value,
        strict=strict,
    )
    _configure_logging(ctx.obj)


def _configure_logging(opts: GlobalOptions) -> None:
    global _verbosity
    _verbosity = opts.verbosity
    logging_setup.setup(verbosity=opts.verbosity, quiet=opts.quiet, fmt=opts.log_format)


def _apply_global_options(ctx: typer.Context, given: dict[str, Any]) -> None:
    """Add the global options given after the command to those given before it."""
    root = ctx.find_root()
    if not isinstance(root.obj, GlobalOptions):
        root.obj = GlobalOptions()
    opts: GlobalOptions = root.obj
    opts.configs += list(given.get("config") or [])
    opts.verbosity += given.get("verbose", 0)
    opts.quiet = opts.quiet or bool(given.get("quiet"))
    opts.strict = opts.strict or bool(given.get("strict"))
    if "log_format" in given:
        opts.log_format = LogFormat(given["log_format"]).value
    _configure_logging(opts)


Command.apply_global_options = staticmethod(_apply_global_options)  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn errors into one line and an exit code.

    Typer itself handles usage errors (exit 2), Ctrl-C (exit 130) and a closed
    output pipe; everything else that escapes a command ends here.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="exportmon", standalone_mode=True)
    except ExportmonError as exc:
        _fail(*exc.lines(), code=exc.exit_code)
    except Exception as exc:  # last line of defence: one line, never a traceback
        _fail(
            f"unexpected {type(exc).__name__}: {exc} "
            "(run with -v for details and please report it)",
            code=ExitCode.FAILED,
        )


def _fail(*messages: str, code: int) -> None:
    from exportmon.commands.console import print_error

    if _verbosity:
        import traceback

        traceback.print_exc()
    for message in messages:
        print_error(message)
    sys.exit(int(code))


if __name__ == "__main__":  # pragma: no cover
    main()
