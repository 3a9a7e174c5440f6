"""`exportmon rewrite-csv`: rewrite CSV files into another dialect, in place and atomically."""

from __future__ import annotations

import csv
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from exportmon.actions.rewrite_csv import rewrite_file
from exportmon.commands.pipeio import Emitter, output_format, read_inputs
from exportmon.commands.steps import JsonOption, NullOption, paths_argument, step_run
from exportmon.errors import ExportmonError, UsageError
from exportmon.files.csv_rewrite import (
    MISSING,
    PRESETS,
    QUOTINGS,
    Dialect,
    is_csv,
    load_value_hook,
    unescape,
)
from exportmon.log import get_logger

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig

log = get_logger(__name__)

EPILOG = """\
Examples:

  exportmon rewrite-csv --col-sep ';' --row-sep '\\r\\n' export/*.csv

  exportmon rewrite-csv --quoting gem --col-sep '|' --row-sep '##\\n' --quote-char : \\
      --replace-newlines '<newline>' export/*.csv       # what itrp-export-monitor wrote

  exportmon unzip x.zip | exportmon rewrite-csv --encoding cp1252 --output-dir out

  exportmon rewrite-csv --columns 'id,name,email' --rename 'ITRP ID=id' \
      --missing empty --strip-formula-guard export/*.csv

Files are rewritten in place through a temporary file and a rename (or written
to --output-dir); a malformed file is reported with its line and left untouched.
Separators accept \\n, \\r, \\t, \\xNN escapes. Files not ending in .csv pass through.
"""

Quoting = Enum("Quoting", {name: name for name in QUOTINGS}, type=str)  # type: ignore[misc]
Missing = Enum("Missing", {name: name for name in MISSING}, type=str)  # type: ignore[misc]
Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)  # type: ignore[misc]


def register(app: typer.Typer) -> None:
    app.command("rewrite-csv", epilog=EPILOG)(rewrite_csv_command)


def rewrite_csv_command(
    ctx: typer.Context,
    paths: Annotated[list[Path] | None, paths_argument("CSV files")] = None,
    row_sep: Annotated[
        str | None,
        typer.Option(
            metavar="SEP",
            help="Row separator, e.g. '\\r\\n'; 'auto' keeps the input's line ending.",
        ),
    ] = None,
    col_sep: Annotated[str | None, typer.Option(metavar="SEP", help="Column separator.")] = None,
    quote_char: Annotated[
        str | None, typer.Option(metavar="CHAR", help="Quote character (exactly one).")
    ] = None,
    quoting: Annotated[
        Quoting | None,
        typer.Option(
            help="minimal, all, nonnumeric, none, or gem (itrp-export-monitor's output).",
            show_default=False,
        ),
    ] = None,
    replace_newlines: Annotated[
        str | None,
        typer.Option(metavar="TEXT", help="Replace \\r\\n and \\n inside values with TEXT."),
    ] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Input encoding (default utf-8-sig: a BOM is dropped).")
    ] = None,
    output_encoding: Annotated[
        str | None, typer.Option(help="Output encoding (default utf-8).")
    ] = None,
    value_hook: Annotated[
        str | None,
        typer.Option(metavar="MODULE:FUNCTION", help="Python function called on every value."),
    ] = None,
    columns: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAMES",
            help="Write these columns (header names, comma-separated), in this order.",
        ),
    ] = None,
    rename: Annotated[
        list[str] | None,
        typer.Option(metavar="OLD=NEW", help="Rename a column in the header (repeatable)."),
    ] = None,
    missing: Annotated[
        Missing | None,
        typer.Option(
            help="A --columns name missing from a header: error (the file fails) or empty.",
            show_default=False,
        ),
    ] = None,
    strip_formula_guard: Annotated[
        bool | None,
        typer.Option(
            "--strip-formula-guard/--keep-formula-guard",
            help="Drop the tab or ' put before values starting with = + - @.",
            show_default=False,
        ),
    ] = None,
    output_dir: Annotated[
        Path | None,
        typer.Option("--output-dir", metavar="DIR", help="Write here instead of in place."),
    ] = None,
    preset: Annotated[
        Preset | None,
        typer.Option(
            help="itrp-gem: short for --quoting gem, UTF-8 in and out.", show_default=False
        ),
    ] = None,
    null: NullOption = False,
    as_json: JsonOption = False,
) -> None:
    """Rewrite CSV files into another dialect (separators, quoting, encoding, values).

    Options not given come from the \\[csv] table of the monitor a file belongs to
    (or the one chosen with --config), else the defaults: ',' '"' minimal quoting,
    UTF-8, each file's own line ending. Prints the path of every file written.
    """
    emitter = Emitter(output_format(null, as_json))
    given: dict[str, Any] = {
        "row_sep": None if row_sep in (None, "auto") else unescape(row_sep),
        "col_sep": unescape(col_sep) if col_sep is not None else None,
        "quote_char": unescape(quote_char) if quote_char is not None else None,
        "quoting": quoting.value if quoting is not None else None,
        "replace_newlines": unescape(replace_newlines) if replace_newlines is not None else None,
        "encoding": encoding,
        "output_encoding": output_encoding,
        "value_hook": value_hook,
        "columns": _column_names(columns) if columns else None,
        "rename": _renames(rename) if rename else None,
        "missing": missing.value if missing is not None else None,
        "strip_formula_guard": strip_formula_guard,
    }
    # Bad options are a usage error before any file is touched.
    Dialect().with_options(**given).check()
    if value_hook is not None:
        load_value_hook(value_hook, Path.cwd())
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    with step_run(ctx) as step:
        for item in read_inputs(paths, null=null):
            try:
                if not is_csv(item.path):
                    log.debug("%s is not a .csv file: passed on unchanged", item.path)
                    emitter.emit(item.path, **item.info)
                    continue
                owner, monitor = step.locate(item.path)
                dialect = _dialect(monitor, preset, given, row_sep == "auto")
                hook_path = Path.cwd()
                if value_hook is None and monitor is not None and monitor.path is not None:
                    hook_path = monitor.path.parent
                result = rewrite_file(
                    item.path,
                    dialect,
                    output_dir=output_dir,
                    ledger=owner.ledger if owner else None,
                    hook_path=hook_path,
                    progress=step.progress,
                )
                info = {k: v for k, v in item.info.items() if k not in ("path", "source")}
                info.update(
                    source=str(item.path),
                    bytes=result.bytes,
                    rows=result.rows,
                    sha256=result.sha256,
                )
                emitter.emit(result.target, **info)
            except ExportmonError as exc:
                step.report(exc)


def _dialect(
    monitor: MonitorConfig | None, preset: Preset | None, given: dict[str, Any], auto: bool
) -> Dialect:
    """Defaults ← the monitor's [csv] ← the preset ← the options given."""
    dialect = Dialect.from_config(monitor.csv) if monitor and monitor.csv else Dialect()
    if preset is not None:
        dialect = dialect.with_options(**PRESETS[preset.value])
    dialect = dialect.with_options(**given)
    if auto:
        dialect = Dialect(**{**dialect.__dict__, "row_sep": None})
    return dialect


def _column_names(options: list[str]) -> tuple[str, ...]:
    """``--columns`` values as names: each is a CSV record (``'id,"Name, full"'``)."""
    names: list[str] = []
    for option in options:
        names.extend(next(csv.reader([option]), []))
    return tuple(names)


def _renames(options: list[str]) -> dict[str, str]:
    renames = {}
    for option in options:
        old, equals, new = option.partition("=")
        if not equals or not old:
            raise UsageError(
                f"--rename {option!r} is not OLD=NEW", hint="e.g. --rename 'ITRP ID=id'"
            )
        renames[old] = new
    return renames
