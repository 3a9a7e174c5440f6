"""The fast CSV rewrite engine: blocks of whole records through polars, checked to stay exact.

:func:`exportmon.files.csv_rewrite.rewrite_csv` uses this engine when :func:`supports` says
the dialect allows it and polars is importable. The ``csv`` module engines stay the
definition of the right output: this one writes the same bytes or raises :class:`Refused`,
and the caller then starts the file again with the reference engine (which also writes
the error message when the file is malformed). Output is byte for byte what the reference
writes; the tests compare the two on generated files.

How it stays exact:

* The file is read in blocks cut after a ``\\n`` preceded by an even number of quote
  characters, which in a well-formed file is the end of a record.
* Before polars sees a block, one linear-time regular expression checks that the block
  is strict RFC 4180 with exactly as many fields in every record as in the first one:
  quoted values only as whole values, no quote inside an unquoted value, ``\\n`` or
  ``\\r\\n`` line endings. ``csv.reader(strict=True)`` reads such a block into the same
  values polars does; polars is more lenient elsewhere (it pads short rows and reads a
  blank line as a row of empty values), so anything the pattern does not accept (a
  malformed file, ragged rows, blank lines, a bare ``\\r``) refuses the file.
* polars' writer quotes a value when it holds the separator, the quote character,
  ``\\r`` or ``\\n``, and an empty string (but not a null): the ``gem`` rule as it is,
  and the ``minimal`` rule once empty values are made nulls. ``minimal`` also quotes
  values holding other characters of the row separator (``#`` of ``##\\n``): a block
  that contains one is formatted by the reference for that block alone.
* Files of one column (where an empty value is written as two quote characters, and a
  blank line is an empty record) and a byte-order mark anywhere but at the start go to
  the reference.

Memory stays at a few blocks whatever the file size; a record longer than
:data:`MAX_BLOCK` refuses the file.
"""

from __future__ import annotations

import codecs
import collections
import csv
import io
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any, BinaryIO

from exportmon.signals import checkpoint

if TYPE_CHECKING:
    import polars

#: Bytes read per block. Measured on 2 cores: 2 MiB is about 5% faster than 1 MiB but
#: costs about 40 MB more peak RSS (polars' allocations grow with the block).
BLOCK = 1024 * 1024
#: A record longer than this (with the block it starts in) refuses the file.
MAX_BLOCK = 32 * 1024 * 1024
#: Most fields per record handled here; the checking pattern grows with it.
MAX_FIELDS = 1000

NAME = "polars"
_BOM = codecs.BOM_UTF8
_QUOTED = r'"(?:[^"]|"")*"'
_FIELD = rf'(?:{_QUOTED}|[^",\r\n]*)'


class Refused(Exception):
    """This engine cannot write this file exactly; use the reference engine."""


@cache
def available() -> bool:
    """Whether polars is installed (imported only when a file is rewritten: it is not
    needed by the other commands, whose start-up it would slow down)."""
    try:
        return find_spec("polars") is not None
    except (ImportError, ValueError):  # ValueError: blocked with sys.modules["polars"] = None
        return False


def supports(dialect: Any, row_sep: str, hook: object) -> bool:
    """Whether ``dialect`` (a :class:`~exportmon.files.csv_rewrite.Dialect`) can be written
    by this engine. A file may still be refused while it is read."""
    if hook is not None or not available():
        return False
    if dialect.quoting not in ("minimal", "gem", "all"):
        return False
    single_bytes = all(len(c) == 1 and ord(c) < 128 for c in (dialect.col_sep, dialect.quote_char))
    if not single_bytes or dialect.col_sep in "\r\n" or dialect.quote_char in "\r\n":
        return False
    encodings = {codecs.lookup(dialect.encoding).name, codecs.lookup(dialect.output_encoding).name}
    return encodings <= {"utf-8", "utf-8-sig"}


def rewrite(
    source: BinaryIO,
    dialect: Any,
    row_sep: str,
    write: Callable[[bytes], None],
    *,
    format_block: Callable[[str], tuple[str, int]],
    advance: Callable[[int], None] | None = None,
) -> int:
    """Rewrite the CSV records read from ``source`` and pass the output bytes to ``write``;
    return the number of records.

    ``format_block`` formats a block of whole records with the reference engine and
    counts them (used for the few blocks this engine cannot write exactly). Raises
    :class:`Refused` before or after writing anything: the caller must then discard what
    ``write`` received.

    The work on consecutive blocks overlaps (polars, hashing and file writes release the
    GIL): while this thread formats a block, one thread checks the next block, another
    parses it, and a third hands the previous output to ``write``.
    """
    global polars
    # jemalloc (polars' allocator) keeps freed pages per arena and per thread cache; with
    # one arena and no thread caches the peak RSS of a run is 12-15 MB lower at no
    # measurable cost in speed. Read once, when polars is first loaded; a value the user
    # set wins.
    os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,tcache:false")
    try:
        import polars
    except ImportError as exc:  # installed but broken
        raise Refused(f"polars cannot be imported: {exc}") from None

    _skip_bom(source, codecs.lookup(dialect.encoding).name == "utf-8-sig")
    formatter = _Formatter(dialect, row_sep, format_block)
    checker: _Checker | None = None
    records = 0
    written: Future[None] | None = None

    def emit(block: _Block) -> None:
        nonlocal records, written
        output, count = formatter.format(block)
        records += count
        if written is not None:
            written.result()
        written = writing.submit(write, output)
        if advance is not None:
            advance(block.consumed)

    with (
        ThreadPoolExecutor(1, thread_name_prefix="csv-check") as checking,
        ThreadPoolExecutor(1, thread_name_prefix="csv-parse") as parsing,
        ThreadPoolExecutor(1, thread_name_prefix="csv-write") as writing,
    ):
        ahead: collections.deque[_Block] = collections.deque()
        for data, is_last, consumed in _blocks(source):
            if checker is None:
                checker = _Checker(_field_count(data))
            checked = checking.submit(checker.check, data, is_last)
            parsed = parsing.submit(_parse, data, formatter.empty_as_null)
            ahead.append(_Block(data, consumed, checked, parsed))
            if len(ahead) > 1:
                emit(ahead.popleft())
        while ahead:
            emit(ahead.popleft())
        if written is not None:
            written.result()
    if not records:
        raise Refused("empty file")
    return records


@dataclass
class _Block:
    """Whole records as read, with their check and their parsing under way."""

    data: bytes
    consumed: int
    checked: Future[None]
    parsed: Future[Any]

    def frame(self) -> Any:
        """The parsed records, once the block passed its check."""
        self.checked.result()
        return self.parsed.result()


class _Checker:
    """Refuses a block that is not strict CSV with ``fields`` fields in every record."""

    def __init__(self, fields: int) -> None:
        self.patterns = (_pattern(fields, last=False), _pattern(fields, last=True))

    def check(self, data: bytes, is_last: bool) -> None:
        if data.startswith(_BOM):
            raise Refused("a byte-order mark inside the file")
        try:
            text = polars.Series([data], dtype=polars.Binary).cast(polars.String)
            valid = text.str.contains(self.patterns[is_last]).item()
        except polars.exceptions.PolarsError as exc:  # e.g. invalid UTF-8
            raise Refused(f"polars: {str(exc).splitlines()[0]}") from None
        if not valid:
            raise Refused("not strict CSV with the same number of fields in every record")


def _parse(data: bytes, empty_as_null: bool) -> Any:
    """The block's records, every value a string; with ``empty_as_null`` unquoted empty
    values are nulls (quoted ones stay empty strings)."""
    try:
        return polars.read_csv(
            data, has_header=False, infer_schema=False, empty_string_is_null=empty_as_null
        )
    except polars.exceptions.PolarsError as exc:
        raise Refused(f"polars: {str(exc).splitlines()[0]}") from None


def _skip_bom(source: BinaryIO, drop: bool) -> None:
    start = source.read(len(_BOM))
    if start != _BOM:
        source.seek(0)
    elif not drop:
        raise Refused("a byte-order mark the input encoding keeps")


def _blocks(source: BinaryIO) -> Iterator[tuple[bytes, bool, int]]:
    """``(block, is_last, bytes read for it)``: whole lines, cut where the quotes are even."""
    carry = b""
    unreported = 0
    while True:
        data = source.read(BLOCK)
        checkpoint()
        unreported += len(data)
        buffer = carry + data if carry else data
        if not data:
            if buffer:
                yield buffer, True, unreported
            return
        cut = buffer.rfind(b"\n") + 1
        quotes = buffer.count(b'"', 0, cut)
        while cut and quotes % 2:
            previous = buffer.rfind(b"\n", 0, cut - 1) + 1
            quotes -= buffer.count(b'"', previous, cut)
            cut = previous
        block, carry = buffer[:cut], buffer[cut:]
        if len(carry) > MAX_BLOCK:
            raise Refused("a record longer than the block limit")
        if block:
            yield block, False, unreported
            unreported = 0


def _field_count(block: bytes) -> int:
    try:
        record = next(csv.reader(io.StringIO(block.decode("utf-8", "replace"), newline="")))
    except (csv.Error, StopIteration):
        raise Refused("the first record cannot be read") from None
    if len(record) < 2:
        raise Refused("one column: empty values and blank lines need the reference")
    if len(record) > MAX_FIELDS:
        raise Refused(f"more than {MAX_FIELDS} fields")
    return len(record)


def _pattern(fields: int, *, last: bool) -> str:
    record = rf"{_FIELD}(?:,{_FIELD}){{{fields - 1}}}"
    if last:  # the file's last record may lack its line ending
        return rf"\A(?:{record}\r?\n)*(?:{record})?\z"
    return rf"\A(?:{record}\r?\n)*\z"


class _Formatter:
    """Formats parsed blocks with polars' CSV writer."""

    def __init__(
        self, dialect: Any, row_sep: str, format_block: Callable[[str], tuple[str, int]]
    ) -> None:
        self.options = {
            "include_header": False,
            "separator": dialect.col_sep,
            "quote_char": dialect.quote_char,
            "line_terminator": row_sep,
            "quote_style": "always" if dialect.quoting == "all" else "necessary",
            "null_value": "",
        }
        self.replacement = dialect.replace_newlines
        #: ``minimal`` writes empty values unquoted: as nulls (see :func:`_parse`).
        self.empty_as_null = dialect.quoting == "minimal"
        #: Characters the minimal rule quotes that polars does not know about.
        minimal = self.empty_as_null
        self.also_special = {c.encode() for c in row_sep if c not in "\r\n"} if minimal else set()
        self.format_block = format_block

    def format(self, block: _Block) -> tuple[bytes | memoryview, int]:
        """The block's output and its number of records."""
        frame = block.frame()
        if any(char in block.data for char in self.also_special):
            formatted, records = self.format_block(block.data.decode("utf-8"))
            return formatted.encode("utf-8"), records
        replaced: list[str] = []
        if self.replacement is not None and _line_breaks_in_values(block.data, frame.height):
            replaced = _columns_holding(frame, "\n")
            column = polars.col(replaced).str.replace_all("\r\n", self.replacement, literal=True)
            frame = frame.with_columns(column.str.replace_all("\n", self.replacement, literal=True))
        if self.empty_as_null and (b'""' in block.data or (replaced and self.replacement == "")):
            # Quoted empty values ("") are parsed as empty strings, not nulls, and so is
            # a value that the replacement emptied. Finding the columns that have some
            # reads only the value lengths.
            empty = frame.select((polars.all().str.len_bytes() == 0).any()).row(0)
            emptied = [name for name, has in zip(frame.columns, empty, strict=True) if has]
            if emptied:
                column = polars.col(emptied)
                frame = frame.with_columns(polars.when(column != "").then(column).name.keep())
        out = io.BytesIO()
        frame.write_csv(out, **self.options)
        return out.getbuffer(), frame.height


def _line_breaks_in_values(data: bytes, records: int) -> bool:
    """Whether the block's values hold ``\\n``: more of them than record ends."""
    return data.count(b"\n") > records - (not data.endswith(b"\n"))


def _columns_holding(frame: Any, text: str) -> list[str]:
    """The columns with a value holding ``text`` (finding them is cheaper than replacing
    in every column)."""
    holding = frame.select(polars.all().str.contains(text, literal=True).any()).row(0)
    return [name for name, holds in zip(frame.columns, holding, strict=True) if holds]
