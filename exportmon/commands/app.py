"""The ``exportmon`` Typer application: global options, subcommands, error handling."""

from __future__ import annotations

import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from exportmon import __version__
from exportmon import log as logging_setup
from exportmon.commands import (
    completion,
    demo,
    fetch,
    generate,
    prune,
    push_ftp,
    report,
    rewrite_csv,
    run,
    serve,
    status,
    unzip,
)
from exportmon.commands.common import GlobalOptions
from exportmon.commands.console import print_error
from exportmon.errors import ExitCode, ExportmonError

app = typer.Typer(
    name="exportmon",
    help="Watch a mailbox for export-ready mails; download, unpack, rewrite and deliver the "
    "exports exactly once.",
    epilog="Examples:  exportmon generate 777 exports@example.com -  ·  exportmon run --once  ·  "
    "exportmon fetch | exportmon unzip | exportmon push-ftp --url ftps://host --dir in",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

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
        int, typer.Option("--verbose", "-v", count=True, help="More detail; -vv adds libraries.")
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Only warnings and errors; no progress bars.")
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
    global _verbosity
    _verbosity = verbose
    ctx.obj = GlobalOptions(
        configs=list(config or []),
        verbosity=verbose,
        quiet=quiet,
        log_format=log_format.value,
        strict=strict,
    )
    logging_setup.setup(verbosity=verbose, quiet=quiet, fmt=log_format.value)


for module in (
    generate,
    fetch,
    unzip,
    rewrite_csv,
    push_ftp,
    run,
    serve,
    status,
    report,
    prune,
    demo,
    completion,
):
    module.register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and turn errors into one line and an exit code.

    Typer itself handles usage errors (exit 2), Ctrl-C (exit 130) and a closed
    output pipe; everything else that escapes a command ends here.
    """
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="exportmon", standalone_mode=True)
    except ExportmonError as exc:
        if _verbosity:
            traceback.print_exc()
        print_error(exc.one_line())
        sys.exit(int(exc.exit_code))
    except Exception as exc:  # last line of defence: one line, never a traceback
        if _verbosity:
            traceback.print_exc()
        print_error(
            f"unexpected {type(exc).__name__}: {exc} (run with -v for details and please report it)"
        )
        sys.exit(int(ExitCode.FAILED))


if __name__ == "__main__":  # pragma: no cover
    main()
