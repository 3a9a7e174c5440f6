"""Rewriting CSV files into another dialect, in constant memory, never half-written.

The input is RFC 4180 CSV (``,`` separated, ``"`` quoted, as exports come) in
``Dialect.encoding``; the output uses the dialect's separators, quote character,
quoting rule and encoding. :func:`rewrite_csv` is the one entry point: it picks an
*engine* for the dialect, streams the records through it in batches, writes the
result under a temporary name (fsynced) and renames it into place, so the target
is either the old file or the complete new one. A malformed input (unterminated
quote, text after a closing quote, undecodable bytes) raises :class:`CsvError`
naming the file and the line where the bad record starts; the target is untouched.

Quoting rules (``Dialect.quoting``):

``minimal``
    A value is quoted when it holds the column separator, the quote character,
    ``\\r``, ``\\n`` or any character of the row separator; a record of one empty
    value is written as two quote characters (so it does not read as a blank line).
    This is what Python 3.13's ``csv`` module writes.
``all``
    Every value is quoted.
``nonnumeric``
    Values that look like numbers (``-12``, ``3.5``, ``1e6``) are not quoted,
    everything else is, as with ``minimal`` for numbers that need it.
``none``
    Nothing is quoted; a value that would need quoting is an error (use
    ``replace_newlines`` or another separator).
``gem``
    What itrp-export-monitor (Ruby's CSV writer) wrote: every empty value as two
    quote characters, a value quoted when it holds the quote character (doubled
    inside), any character of the column separator, ``\\r`` or ``\\n``. Characters
    of the row separator are not special.

``row_sep = None`` means the line ending of the input's first record (``\\r\\n``,
``\\n`` or ``\\r``; ``\\n`` for a file without one), written after every record.

Columns by name (``columns``, ``rename``, ``missing``): the first record is the
header. :func:`plan_columns` maps it to the columns written; every later record is cut
to those columns (a value a short record lacks is empty; a blank line stays blank), and
the header is written with the new names. Then, value by value: the formula guard is
stripped (``strip_formula_guard``), the value hook is called, newlines are replaced and
the value is quoted.

Engines: ``c`` (:mod:`exportmon.files.csv_fast`, a compiled extension built when
exportmon is installed with a C compiler) does everything in one pass of C per block,
many times faster; it is used whenever it is built (``EXPORTMON_CSV_ENGINE=python``
turns it off) and writes the same bytes as the reference engines. The reference
engines: ``stdlib`` hands the records to :func:`csv.writer` (used when the dialect is
one the ``csv`` module writes identically: a one-character column separator,
``minimal`` or ``all`` quoting, no value hook, no newline replacement); ``python``
formats each value in Python and handles every dialect.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import csv
import hashlib
import importlib
import io
import itertools
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from exportmon.atomic import atomic_write
from exportmon.errors import ConfigError, CsvError, UsageError
from exportmon.files import csv_fast
from exportmon.progress import ProgressFactory, start_task
from exportmon.signals import checkpoint

if TYPE_CHECKING:  # the config schema is not needed to rewrite a file (fast start)
    from exportmon.config.schema import CsvConfig

QUOTINGS = ("minimal", "all", "nonnumeric", "none", "gem")
#: What a column named in ``columns`` but missing from a file's header gives.
MISSING = ("error", "empty")
#: Characters an exporting system's formula guard (a leading tab or apostrophe) protects.
FORMULA_STARTS = "=+-@"
#: Records handed to an engine at a time: large enough that per-batch work vanishes,
#: small enough that the batch stays in the CPU caches (measured: 256-1024 is best).
BATCH_ROWS = 512
#: Longest value accepted. Bounds memory on a file with an unterminated quote.
FIELD_LIMIT = 64 * 1024 * 1024
#: How much of a file is read to find its line ending.
SNIFF_CHARS = 1024 * 1024
#: Suffix of the temporary file a rewrite is written to.
TEMP_SUFFIX = ".rewriting"
#: Written bytes after which their write-out to disk is started in the background.
SYNC_EVERY = 16 * 1024 * 1024
_DATASYNC = getattr(os, "fdatasync", os.fsync)

if csv.field_size_limit() < FIELD_LIMIT:
    csv.field_size_limit(FIELD_LIMIT)

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_ESCAPE = re.compile(r"\\(\\|n|r|t|0|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")
_ESCAPES = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t", "0": "\0"}


@dataclass(frozen=True)
class Dialect:
    """How the rewritten file is written (the ``[csv]`` table)."""

    #: ``None``: the line ending of the input's first record.
    row_sep: str | None = None
    col_sep: str = ","
    quote_char: str = '"'
    quoting: str = "minimal"
    encoding: str = "utf-8-sig"
    output_encoding: str = "utf-8"
    #: Replaces ``\r\n`` and ``\n`` inside values (after the value hook).
    replace_newlines: str | None = None
    #: ``module:function`` called on every value.
    value_hook: str | None = None
    #: The header names of the columns written, in this order; others are dropped.
    columns: tuple[str, ...] | None = None
    #: Header names replaced in the output: ``{old: new}``.
    rename: dict[str, str] | None = None
    #: A column of ``columns`` missing from the header: ``error`` fails the file,
    #: ``empty`` writes it empty.
    missing: str = "error"
    #: Drop the tab or apostrophe put before values starting with ``=``, ``+``, ``-``, ``@``.
    strip_formula_guard: bool = False

    @classmethod
    def from_config(cls, config: CsvConfig) -> Dialect:
        values: dict[str, Any] = {f.name: getattr(config, f.name, f.default) for f in fields(cls)}
        if values["columns"] is not None:
            values["columns"] = tuple(values["columns"])
        if values["rename"] is not None:
            values["rename"] = dict(values["rename"])
        return cls(**values)

    @property
    def shapes_columns(self) -> bool:
        """Whether the header decides what is written (``columns`` or ``rename``)."""
        return self.columns is not None or bool(self.rename)

    def with_options(self, **options: Any) -> Dialect:
        """A copy with the options that are not ``None`` replaced."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def check(self) -> None:
        """Raise :class:`UsageError` when this dialect cannot be written."""
        if self.quoting not in QUOTINGS:
            raise UsageError(
                f"unknown quoting {self.quoting!r}", hint="use one of " + ", ".join(QUOTINGS)
            )
        if len(self.quote_char) != 1:
            raise UsageError(
                f"the quote character must be exactly one character, got {self.quote_char!r}"
            )
        if not self.col_sep:
            raise UsageError("the column separator must not be empty")
        if self.row_sep == "":
            raise UsageError("the row separator must not be empty", hint="leave it out for auto")
        if self.quote_char in self.col_sep or self.quote_char in (self.row_sep or ""):
            raise UsageError("the quote character must differ from the separators")
        if self.missing not in MISSING:
            raise UsageError(
                f"unknown missing-column rule {self.missing!r}", hint="use error or empty"
            )
        if self.columns is not None and not all(isinstance(c, str) for c in self.columns):
            raise UsageError("columns must be a list of header names")
        if self.rename and not all(
            isinstance(name, str) for name in (*self.rename, *self.rename.values())
        ):
            raise UsageError("rename must map header names to header names")
        for what, name in (("encoding", self.encoding), ("output encoding", self.output_encoding)):
            try:
                codecs.lookup(name)
            except LookupError:
                raise UsageError(
                    f"unknown {what} {name!r}", hint="e.g. utf-8, utf-8-sig, cp1252, latin-1"
                ) from None


#: Named sets of options (``--preset``). ``itrp-gem`` writes what the gem wrote with
#: its defaults; add ``--col-sep`` etc. as in the gem's config.
PRESETS: dict[str, dict[str, Any]] = {
    "itrp-gem": {"quoting": "gem", "encoding": "utf-8-sig", "output_encoding": "utf-8"},
}


@dataclass(frozen=True)
class RewriteResult:
    """What :func:`rewrite_csv` did."""

    source: Path
    target: Path
    #: Records read, the header included.
    records: int
    #: Bytes written.
    bytes: int
    sha256: str
    #: The row separator written (what ``row_sep = None`` resolved to).
    row_sep: str
    #: The engine that did the work (``c``, ``stdlib`` or ``python``).
    engine: str

    @property
    def rows(self) -> int:
        """Data records: every record but the header."""
        return max(self.records - 1, 0)


def rewrite_csv(
    source: Path,
    target: Path,
    dialect: Dialect,
    *,
    progress: ProgressFactory | None = None,
    hook_path: Path | None = None,
) -> RewriteResult:
    """Rewrite the CSV file ``source`` into ``target`` (the same path rewrites in place).

    ``hook_path`` is a folder searched for the value hook's module when it is not
    importable otherwise (the config file's folder, or the current one).
    Raises :class:`CsvError` (file and line named; ``target`` untouched) for a
    malformed input or a value the dialect cannot write, and :class:`UsageError` /
    :class:`ConfigError` for an unusable dialect or value hook.
    """
    source, target = Path(source), Path(target)
    dialect.check()
    hook = load_value_hook(dialect.value_hook, hook_path) if dialect.value_hook else None
    row_sep = dialect.row_sep if dialect.row_sep is not None else detect_row_sep(source, dialect)
    engine = _select_engine(dialect, row_sep, hook)
    try:
        size = source.stat().st_size
    except OSError as exc:
        raise CsvError(f"cannot read {source}: {exc.strerror}") from None
    advance, done = start_task(progress, f"rewrite {source.name}", size)
    try:
        with open(source, "rb") as raw_in, atomic_write(target, suffix=TEMP_SUFFIX) as raw_out:
            if csv_fast.available():
                records, sink, engine_name = _rewrite_compiled(
                    raw_in, raw_out, dialect, row_sep, hook, advance
                )
            else:
                records, sink, engine_name = _rewrite_reference(
                    raw_in, raw_out, dialect, engine, advance
                )
    except (csv.Error, UnicodeError, _Unwritable, _HookFailed, MissingColumn) as exc:
        # The reference reads the file again to name the line: what it meets first is
        # what both engines report.
        raise _locate(source, dialect, row_sep, hook, exc) from None
    except OSError as exc:
        raise CsvError(
            f"cannot rewrite {source}: {exc.strerror or exc}", hint="check free space and rights"
        ) from None
    finally:
        done()
    return RewriteResult(
        source=source,
        target=target,
        records=records,
        bytes=sink.bytes,
        sha256=sink.digest.hexdigest(),
        row_sep=row_sep,
        engine=engine_name,
    )


def _rewrite_compiled(
    raw_in: BinaryIO,
    raw_out: BinaryIO,
    dialect: Dialect,
    row_sep: str,
    hook: Callable[[str], Any] | None,
    advance: Callable[[int], None] | None,
) -> tuple[int, _Sink, str]:
    sink = _Sink(raw_out, dialect.output_encoding)
    try:
        records = csv_fast.rewrite(
            raw_in,
            dialect,
            row_sep,
            write_bytes=sink.write_bytes,
            write_text=sink.write,
            hook=_guarded_hook(hook) if hook is not None else None,
            header_plan=_header_planner(dialect) if dialect.shapes_columns else None,
            is_number=_NUMBER.fullmatch,
            field_limit=FIELD_LIMIT,
            line_bound=_LineBound,
            advance=advance,
        )
        sink.finish()
    except csv_fast.EngineFailed as exc:
        raise _Unwritable(str(exc)) from None
    finally:
        sink.close()
    return records, sink, csv_fast.NAME


def _guarded_hook(hook: Callable[[str], Any]) -> Callable[[str], Any]:
    def call(value: str) -> Any:
        try:
            return hook(value)
        except Exception as exc:  # the user's code: reported with its line, not a traceback
            raise _HookFailed(f"value hook failed: {type(exc).__name__}: {exc}") from None

    return call


def _rewrite_reference(
    raw_in: BinaryIO,
    raw_out: BinaryIO,
    dialect: Dialect,
    engine: _StdlibEngine | _PythonEngine,
    advance: Callable[[int], None] | None,
) -> tuple[int, _Sink, str]:
    text_in = _text_reader(raw_in, dialect.encoding)
    sink = _Sink(raw_out, dialect.output_encoding)
    try:
        records = read = 0
        for batch in _batches(shaped_records(csv.reader(text_in, strict=True), dialect)):
            checkpoint()
            records += len(batch)
            sink.write(engine.format(batch))
            if advance is not None and raw_in.tell() > read:
                advance(raw_in.tell() - read)
                read = raw_in.tell()
        sink.finish()
    finally:
        sink.close()
    return records, sink, engine.name


# --- columns by name --------------------------------------------------------------------


class MissingColumn(Exception):
    """A column the dialect names is not in a file's header."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def plan_columns(header: list[str], dialect: Dialect) -> tuple[list[int] | None, list[str]]:
    """The input column of every output column (``-1``: written empty; ``None``: all
    columns as they are) and the header written, for a file whose first record is
    ``header``.

    A name in ``columns`` is a header name, or else the new name ``rename`` gives one.
    Raises :class:`MissingColumn` for a name of ``columns`` or ``rename`` the header
    lacks, unless ``missing = "empty"``.
    """
    rename = dialect.rename or {}
    index: dict[str, int] = {}
    for position, name in enumerate(header):
        index.setdefault(name, position)
    renamed_from = {new: old for old, new in rename.items() if old in index}
    problems = [old for old in rename if old not in index]
    if dialect.columns is None:
        select = None
        names = [rename.get(name, name) for name in header]
    else:
        select = []
        names = []
        for name in dialect.columns:
            source = name if name in index else renamed_from.get(name)
            if source is None:
                problems.append(name)
                select.append(-1)
                names.append(rename.get(name, name))
            else:
                select.append(index[source])
                names.append(rename.get(source, source))
    if problems and dialect.missing == "error":
        have = ", ".join(map(repr, header[:8])) + (", ..." if len(header) > 8 else "")
        raise MissingColumn(
            f"column {problems[0]!r} is not in the header",
            hint=f'the header has {have or "no names"}; or set missing = "empty" to write it empty',
        )
    return select, names


def _header_planner(dialect: Dialect) -> Callable[[list[str]], tuple[list[int] | None, list[str]]]:
    return lambda header: plan_columns(header, dialect)


def strip_formula_guard(value: str) -> str:
    """``value`` without the tab or apostrophe an exporting system put before its leading
    ``=``, ``+``, ``-`` or ``@``."""
    if len(value) > 1 and value[0] in "\t'" and value[1] in FORMULA_STARTS:
        return value[1:]
    return value


def shaped_records(records: Iterator[list[str]], dialect: Dialect) -> Iterator[list[str]]:
    """``records`` cut to the dialect's columns, the header renamed, formula guards
    stripped (the reference for what the compiled engine does in C)."""
    if dialect.shapes_columns:
        records = _by_name(records, dialect)
    if dialect.strip_formula_guard:
        records = ([strip_formula_guard(value) for value in row] for row in records)
    return records


def _by_name(records: Iterator[list[str]], dialect: Dialect) -> Iterator[list[str]]:
    header = next(records, None)
    if header is None:
        return
    select, names = plan_columns(header, dialect)
    yield names
    if select is None:
        yield from records
        return
    for row in records:
        if not row:
            yield row
        else:
            width = len(row)
            yield [row[i] if 0 <= i < width else "" for i in select]


def count_records(path: Path, *, encoding: str = "utf-8-sig") -> int:
    """The number of CSV records in ``path`` (header included), not lines: values may
    hold newlines. Raises :class:`CsvError` for a malformed file."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            reader = csv.reader(_text_reader(raw, encoding), strict=True)
            counter = itertools.count()
            # Consumed in C: no Python code runs per record.
            collections.deque(zip(reader, counter, strict=False), maxlen=0)
            return next(counter)
    except (csv.Error, UnicodeError) as exc:
        raise _locate(path, Dialect(encoding=encoding), "\n", None, exc) from None
    except OSError as exc:
        raise CsvError(f"cannot read {path}: {exc.strerror}") from None


def count_rows(path: Path, *, encoding: str = "utf-8-sig") -> int:
    """Data records in ``path``: every record but the header."""
    return max(count_records(path, encoding=encoding) - 1, 0)


def is_csv(path: Path) -> bool:
    """Whether ``path`` is named like a CSV file."""
    return Path(path).suffix.lower() == ".csv"


def unescape(text: str) -> str:
    """``text`` with ``\\n``, ``\\r``, ``\\t``, ``\\0``, ``\\\\``, ``\\xNN`` and ``\\uNNNN`` decoded
    (separators given on a command line)."""

    def decode(match: re.Match[str]) -> str:
        code = match.group(1)
        if code in _ESCAPES:
            return _ESCAPES[code]
        return chr(int(code[1:], 16))

    return _ESCAPE.sub(decode, text)


def load_value_hook(spec: str, search_path: Path | None = None) -> Callable[[str], Any]:
    """The function named by ``module:function``.

    The module is imported normally, or else from ``search_path``. Raises
    :class:`ConfigError` when it cannot be imported or is not callable.
    """
    from exportmon.config.value_hook import refused_reason

    module_name, _, function_name = spec.partition(":")
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module_name) or not function_name.isidentifier():
        raise ConfigError(
            f"value hook {spec!r} must look like module:function", hint='e.g. "myhooks:clean"'
        )
    reason = refused_reason(spec)
    if reason:
        raise ConfigError(f"value hook {spec!r}: {reason}")
    try:
        module = _import(module_name, search_path)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import the value hook module {module_name!r}: {exc}",
            hint="put it on PYTHONPATH or next to the config file",
        ) from None
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(
            f"value hook module {module_name!r} failed to import: {type(exc).__name__}: {exc}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"value hook {spec!r}: {module_name} has no function {function_name}")
    return function  # type: ignore[no-any-return]


def _import(module_name: str, search_path: Path | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        if search_path is None:
            raise
    sys.path.insert(0, str(search_path))
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(str(search_path))


def detect_row_sep(path: Path, dialect: Dialect | None = None) -> str:
    """The line ending of the first record of ``path``: ``\\r\\n``, ``\\n`` or ``\\r``.

    Line breaks inside quoted values are skipped; ``\\n`` when there is none.
    """
    encoding = dialect.encoding if dialect else "utf-8-sig"
    quote = '"'
    try:
        with open(path, encoding=encoding, errors="replace", newline="") as handle:
            text = handle.read(SNIFF_CHARS)
    except OSError as exc:
        raise CsvError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeError as exc:  # not a decoding error "replace" can help with (no BOM)
        raise _undecodable(path, encoding, exc) from None
    quoted = False
    for match in re.finditer(r'["\r\n]', text):
        char = match.group()
        if char == quote:
            quoted = not quoted
        elif not quoted:
            if char == "\r":
                return "\r\n" if text[match.end() : match.end() + 1] == "\n" else "\r"
            return "\n"
    return "\n"


# --- engines ----------------------------------------------------------------------------


class _Unwritable(Exception):
    """A value that quoting ``none`` cannot write."""


class _HookFailed(Exception):
    """The value hook raised."""


class _StdlibEngine:
    """Records to text with :func:`csv.writer`: the reference for ``minimal`` and ``all``.

    Before Python 3.13, csv.writer quotes ``\\r`` and ``\\n`` only when they are in
    the line terminator; a batch whose output holds one that is not is formatted
    again by the python engine, so the output is the same on every version.
    """

    name = "stdlib"

    def __init__(self, dialect: Dialect, row_sep: str) -> None:
        self._parts: list[str] = []
        collector = _Collector(self._parts.append)
        self._writer = csv.writer(
            collector,
            delimiter=dialect.col_sep,
            quotechar=dialect.quote_char,
            lineterminator=row_sep,
            quoting=csv.QUOTE_ALL if dialect.quoting == "all" else csv.QUOTE_MINIMAL,
            doublequote=True,
        )
        unquoted = (
            ""
            if sys.version_info >= (3, 13)
            else "".join(char for char in "\r\n" if char not in row_sep)
        )
        self._suspects = unquoted if dialect.quoting == "minimal" else ""
        self._fallback = _PythonEngine(dialect, row_sep, None) if self._suspects else None

    def format(self, rows: list[list[str]]) -> str:
        self._writer.writerows(rows)
        text = "".join(self._parts)
        self._parts.clear()
        if self._fallback is not None and any(char in text for char in self._suspects):
            return self._fallback.format(rows)
        return text


class _Collector:
    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write


class _PythonEngine:
    """Records to text value by value: every quoting, value hooks, newline replacement."""

    name = "python"

    def __init__(self, dialect: Dialect, row_sep: str, hook: Callable[[str], Any] | None) -> None:
        self._format_row = _row_formatter(dialect, row_sep, hook)

    def format(self, rows: list[list[str]]) -> str:
        return "".join(map(self._format_row, rows))


def _select_engine(
    dialect: Dialect, row_sep: str, hook: Callable[[str], Any] | None
) -> _StdlibEngine | _PythonEngine:
    plain = hook is None and dialect.replace_newlines is None and len(dialect.col_sep) == 1
    if plain and dialect.quoting in ("minimal", "all"):
        return _StdlibEngine(dialect, row_sep)
    return _PythonEngine(dialect, row_sep, hook)


def _row_formatter(
    dialect: Dialect, row_sep: str, hook: Callable[[str], Any] | None
) -> Callable[[list[str]], str]:
    doubled = dialect.quote_char * 2
    replacement = dialect.replace_newlines
    join_values = _values_joiner(dialect, row_sep)
    lone_empty = "" if dialect.quoting == "none" else doubled

    def format_row(row: list[str]) -> str:
        if hook is not None:
            row = _call_hook(hook, row)
            if replacement is not None or (len(row) == 1 and not row[0]):
                row = _as_text(row)
        if replacement is not None:
            row = [value.replace("\r\n", replacement).replace("\n", replacement) for value in row]
        if len(row) == 1 and not row[0]:
            return lone_empty + row_sep
        try:
            return join_values(row) + row_sep
        except (TypeError, AttributeError):  # a value hook returned something else than text
            return join_values(_as_text(row)) + row_sep

    return format_row


def _values_joiner(dialect: Dialect, row_sep: str) -> Callable[[list[str]], str]:
    """Quotes the values of a record as the dialect wants and joins them.

    ``minimal`` and ``gem`` (the common cases) look for special characters in the whole
    record first, and per value only in a record that has some, without a function call
    per value: this engine also serves files with a value hook, whose speed matters.
    """
    col_sep = dialect.col_sep
    if dialect.quoting not in ("minimal", "gem"):
        quote_field = _field_formatter(dialect, row_sep)
        return lambda row: col_sep.join(map(quote_field, row))
    quote = dialect.quote_char
    doubled = quote + quote
    needs_quotes = _special_characters(dialect, row_sep).search

    def minimal(row: list[str]) -> str:
        if not needs_quotes("".join(row)):
            return col_sep.join(row)
        return col_sep.join(
            [quote + v.replace(quote, doubled) + quote if needs_quotes(v) else v for v in row]
        )

    def gem(row: list[str]) -> str:
        if not needs_quotes("".join(row)):
            return col_sep.join([value or doubled for value in row])
        return col_sep.join(
            [
                quote + v.replace(quote, doubled) + quote if not v or needs_quotes(v) else v
                for v in row
            ]
        )

    return gem if dialect.quoting == "gem" else minimal


def _call_hook(hook: Callable[[str], Any], row: list[str]) -> list[Any]:
    """``hook`` applied to every value of ``row``: one comprehension per row, so the hook
    is the only Python call made per value. Results that are not text are made text by
    :func:`_as_text` when joining them fails."""
    checkpoint()  # a slow hook must not hold up a stop for a whole block
    try:
        return [hook(value) for value in row]
    except Exception as exc:  # the user's code: any failure is reported, not a traceback
        raise _HookFailed(f"value hook failed: {type(exc).__name__}: {exc}") from None


def _as_text(values: list[Any]) -> list[str]:
    """A value hook's results as text: ``None`` is empty, anything else ``str()``."""
    return ["" if value is None else str(value) for value in values]


def _special_set(dialect: Dialect, row_sep: str) -> set[str]:
    """The characters that make a value quoted (see the module docstring)."""
    special = set(dialect.col_sep) | {dialect.quote_char, "\r", "\n"}
    if dialect.quoting != "gem":
        special |= set(row_sep)
    return special


def _special_characters(dialect: Dialect, row_sep: str) -> re.Pattern[str]:
    return re.compile("[" + "".join(map(re.escape, sorted(_special_set(dialect, row_sep)))) + "]")


def _field_formatter(dialect: Dialect, row_sep: str) -> Callable[[str], str]:
    """Quotes one value for ``all``, ``nonnumeric`` or ``none`` (see :func:`_values_joiner`)."""
    quote = dialect.quote_char
    doubled = quote + quote
    special = _special_set(dialect, row_sep)
    needs_quotes = _special_characters(dialect, row_sep).search

    def quoted(value: str) -> str:
        return quote + value.replace(quote, doubled) + quote

    def nonnumeric(value: str) -> str:
        if _NUMBER.fullmatch(value) and not needs_quotes(value):
            return value
        return quoted(value)

    unquotable = re.compile("[" + "".join(map(re.escape, sorted(special - {quote}))) + "]").search

    def unquoted(value: str) -> str:
        if unquotable(value):
            raise _Unwritable(
                f"value {_preview(value)} holds a separator or newline and quoting is none"
            )
        return value

    if dialect.quoting == "all":
        return quoted
    return nonnumeric if dialect.quoting == "nonnumeric" else unquoted


def _preview(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")


# --- reading and writing ----------------------------------------------------------------


def _text_reader(raw: BinaryIO, encoding: str) -> IO[str]:
    """The text of ``raw`` decoded, for ``csv.reader``; closing it leaves ``raw`` open.

    A line longer than :data:`FIELD_LIMIT` bytes (a whole file without line breaks,
    say) raises :class:`csv.Error` instead of being read into memory whole. The check
    is made on the blocks read, so the lines are still split and iterated in C.
    """
    return io.TextIOWrapper(_LineBound(raw), encoding=encoding, errors="strict", newline="")


class _LineBound(io.BufferedIOBase):
    """``raw`` read through, raising :class:`csv.Error` once more than
    :data:`FIELD_LIMIT` bytes have come without a line break."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._since_break = 0

    @property
    def name(self) -> Any:
        """The wrapped file's name, as :class:`io.TextIOWrapper` shows it."""
        return getattr(self._raw, "name", None)

    def readable(self) -> bool:
        return True

    def read1(self, size: int = -1) -> bytes:
        return self._checked(self._raw.read1(size if size > 0 else 1024 * 1024))  # type: ignore[attr-defined]

    def read(self, size: int | None = -1) -> bytes:
        return self._checked(self._raw.read(-1 if size is None else size))

    def _checked(self, data: bytes) -> bytes:
        last_break = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if last_break < 0:
            self._since_break += len(data)
        else:
            self._since_break = len(data) - last_break - 1
        if self._since_break > FIELD_LIMIT:
            raise csv.Error(f"line longer than {FIELD_LIMIT // (1024 * 1024)} MiB")
        return data


def _batches(reader: Iterator[list[str]]) -> Iterator[list[list[str]]]:
    while batch := list(itertools.islice(reader, BATCH_ROWS)):
        yield batch


class _Sink:
    """Encodes text, hashes and writes it, counting bytes.

    Every :data:`SYNC_EVERY` bytes a background thread asks the kernel to write the
    file's dirty pages out, so that disk writes overlap with the CPU work and the
    final fsync (which makes the rename safe) has little left to do.
    """

    def __init__(self, raw: BinaryIO, encoding: str) -> None:
        self._raw = raw
        self._encoder = codecs.getincrementalencoder(encoding)(errors="strict")
        self.digest = hashlib.sha256()
        self.bytes = 0
        self._unsynced = 0
        self._syncer: threading.Thread | None = None

    def write(self, text: str) -> None:
        self._put(self._encoder.encode(text))

    def write_bytes(self, data: bytes) -> None:
        """Bytes already in the output encoding."""
        self._put(data)

    def finish(self) -> None:
        self._put(self._encoder.encode("", final=True))
        self.close()

    def close(self) -> None:
        """Wait for a background sync; call before the file is closed."""
        if self._syncer is not None:
            self._syncer.join()
            self._syncer = None

    def _put(self, data: bytes) -> None:
        if data:
            self._raw.write(data)
            self.digest.update(data)
            self.bytes += len(data)
            self._unsynced += len(data)
            if self._unsynced >= SYNC_EVERY:
                self._sync_in_background()

    def _sync_in_background(self) -> None:
        if self._syncer is not None and self._syncer.is_alive():
            return
        self._unsynced = 0
        self._raw.flush()
        self._syncer = threading.Thread(
            target=_sync_quietly, args=(self._raw.fileno(),), name="csv-sync", daemon=True
        )
        self._syncer.start()


def _sync_quietly(fd: int) -> None:
    # Only an early start: the final fsync in atomic_write reports real errors.
    with contextlib.suppress(OSError):
        _DATASYNC(fd)


# --- finding where it went wrong --------------------------------------------------------


def _locate(
    path: Path,
    dialect: Dialect,
    row_sep: str,
    hook: Callable[[str], Any] | None,
    error: BaseException,
) -> CsvError:
    """A :class:`CsvError` naming the line where ``error`` happened.

    Only runs after a failure: the file is read again slowly, record by record.
    """
    hint = "the file was left unchanged"
    if isinstance(error, UnicodeDecodeError):
        line, detail = _find_undecodable(path, dialect.encoding)
        return CsvError(
            f"{path}: line {line}: not valid {dialect.encoding} ({detail})",
            hint=f"{hint}; set the input encoding (e.g. --encoding cp1252)",
        )
    format_row = _row_formatter(dialect, row_sep, hook)
    encoder = codecs.getincrementalencoder(dialect.output_encoding)(errors="strict")
    start = 1
    try:
        with open(path, "rb") as raw:
            reader = csv.reader(_text_reader(raw, dialect.encoding), strict=True)
            for row in shaped_records(reader, dialect):
                encoder.encode(format_row(row))
                start = reader.line_num + 1
    except csv.Error as exc:
        return CsvError(f"{path}: line {start}: {_describe_csv_error(exc)}", hint=hint)
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start : exc.end]
        return CsvError(
            f"{path}: line {start}: {bad!r} cannot be written in {dialect.output_encoding}",
            hint=f"{hint}; choose another output encoding",
        )
    except (_Unwritable, _HookFailed) as exc:
        return CsvError(f"{path}: line {start}: {exc}", hint=hint)
    except MissingColumn as exc:
        return CsvError(f"{path}: line 1: {exc}", hint=exc.hint)
    except UnicodeDecodeError:
        line, detail = _find_undecodable(path, dialect.encoding)
        return CsvError(
            f"{path}: line {line}: not valid {dialect.encoding} ({detail})",
            hint=f"{hint}; set the input encoding (e.g. --encoding cp1252)",
        )
    except UnicodeError as exc:
        return _undecodable(path, dialect.encoding, exc)
    return CsvError(f"{path}: {error}", hint=hint)


def _undecodable(path: Path, encoding: str, error: UnicodeError) -> CsvError:
    """A file the codec refuses as a whole (``utf-16`` without a byte-order mark)."""
    return CsvError(
        f"{path}: cannot be read as {encoding} ({error})",
        hint="the file was left unchanged; set csv.encoding to the file's encoding "
        "(e.g. utf-16-le)",
    )


def _describe_csv_error(error: csv.Error) -> str:
    text = str(error)
    if "unexpected end of data" in text:
        return "unterminated quoted value (the file ends inside quotes)"
    if "field larger than field limit" in text:
        return (
            f"value longer than {FIELD_LIMIT // (1024 * 1024)} MiB (probably an unterminated quote)"
        )
    if "expected after" in text:
        return f"text after a closing quote ({text})"
    return text


def _find_undecodable(path: Path, encoding: str) -> tuple[int, str]:
    """The line of the first byte sequence ``encoding`` cannot decode, and a description."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    lines_before = 0
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                # exc.object may start with bytes held back from the previous block,
                # whose newlines are already counted.
                data = exc.object
                held_back = max(len(data) - len(block), 0)
                newlines = data[: exc.start].count(b"\n") - data[:held_back].count(b"\n")
                bad = data[exc.start : exc.end]
                return lines_before + newlines + 1, f"byte {bad.hex(' ')}"
            lines_before += block.count(b"\n")
    return lines_before + 1, "undecodable"
