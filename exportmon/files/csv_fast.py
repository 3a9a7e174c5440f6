"""The compiled CSV rewrite engine: the reference's output, in one pass of C per block.

:func:`exportmon.files.csv_rewrite.rewrite_csv` uses this engine whenever the extension
``exportmon.files._csvengine`` (C, built against the Python Limited API when exportmon
is installed with a C compiler at hand) is importable and the environment variable
``EXPORTMON_CSV_ENGINE`` is not ``python``. Without it, the reference engines in
:mod:`~exportmon.files.csv_rewrite` do the same work more slowly; they stay the
definition of the right output, and the tests compare both engines byte for byte.

The C code reads UTF-8 as ``csv.reader(strict=True)`` does and writes every dialect,
quoting rule, newline replacement, column selection and formula-guard stripping the
reference writes. Other encodings are decoded and encoded here, at the edges. The file
is read in blocks of :data:`BLOCK` bytes (a block may end anywhere: the engine keeps
its state), so memory stays at a few blocks plus the longest value. The GIL is released
while a block is worked on (unless a value hook needs a Python call per value), so
hashing and writing the previous block's output on a second thread run alongside.

A malformed file (invalid UTF-8, an unterminated quote, text after a closing quote, a
line or value over the limits) makes :func:`rewrite` raise :class:`csv.Error`, and
:func:`~exportmon.files.csv_rewrite.rewrite_csv` then finds the line and words the
message with the reference reader, so both engines report a file alike.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import queue
import sys
import threading
from collections.abc import Callable
from functools import cache
from typing import Any, BinaryIO, Protocol

from exportmon.signals import checkpoint

#: Bytes read per block: large enough that the per-block Python work vanishes, small
#: enough to stay in the CPU caches and keep memory flat.
BLOCK = 1024 * 1024
#: The environment variable that turns this engine off (``python``).
ENGINE_VARIABLE = "EXPORTMON_CSV_ENGINE"

NAME = "c"
_BOM = codecs.BOM_UTF8
_UTF8 = {"utf-8", "utf-8-sig"}
#: Bytes read per block when a value hook runs Python for every value: small, so that a
#: stop request (``checkpoint``) is seen within a fraction of a second.
_HOOK_BLOCK = 8192
#: Bytes read at a time from input in other encodings, where the reference's line
#: limit check (``line_bound``) counts per read as the reference's reads do.
_LINE_CHUNK = 8192


class Reader(Protocol):
    """What the engine reads from: a binary file, or one wrapped by ``line_bound``."""

    def read(self, size: int = -1, /) -> bytes: ...


@cache
def _module() -> Any:
    try:
        from exportmon.files import _csvengine  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _csvengine


def built() -> bool:
    """Whether the extension was built and can be imported."""
    return _module() is not None


def available() -> bool:
    """Whether rewrites use this engine: built, and not turned off by
    ``EXPORTMON_CSV_ENGINE=python``."""
    return os.environ.get(ENGINE_VARIABLE, "").lower() != "python" and built()


class EngineFailed(Exception):
    """Raised by :func:`rewrite` for a value quoting ``none`` cannot write."""


def rewrite(
    source: BinaryIO,
    dialect: Any,
    row_sep: str,
    *,
    write_bytes: Callable[[bytes], None],
    write_text: Callable[[str], None],
    hook: Callable[[str], Any] | None,
    header_plan: Callable[[list[str]], tuple[list[int] | None, list[str]]] | None,
    is_number: Callable[[str], Any],
    field_limit: int,
    line_bound: Callable[[BinaryIO], Reader],
    advance: Callable[[int], None] | None = None,
) -> int:
    """Rewrite the CSV records read from ``source`` (a
    :class:`~exportmon.files.csv_rewrite.Dialect` says how) and return their number.

    The output goes to ``write_bytes`` when the output encoding is UTF-8 (after
    ``write_text("")``, which writes a byte-order mark where the encoding has one), else
    as text to ``write_text``. ``header_plan`` maps the first record to the columns
    written and the header (see ``csv_rewrite.plan_columns``). Raises :class:`csv.Error`
    for a malformed file, :class:`EngineFailed` for an unwritable value, and whatever
    ``hook``, ``header_plan`` or the encoders raise.
    """
    engine_module = _module()
    quoting = getattr(engine_module, dialect.quoting.upper())
    in_codec = codecs.lookup(dialect.encoding).name
    out_codec = codecs.lookup(dialect.output_encoding).name
    utf8_in = in_codec in _UTF8
    engine = engine_module.Engine(
        dialect.col_sep,
        row_sep,
        dialect.quote_char,
        quoting,
        dialect.replace_newlines,
        hook,
        is_number,
        header_plan,
        dialect.strip_formula_guard,
        field_limit,
        # Bytes without a line break: counted here for UTF-8, on the raw bytes otherwise.
        field_limit if utf8_in else sys.maxsize,
        sys.version_info < (3, 11),  # csv.reader refused NUL before 3.11
    )
    if out_codec in _UTF8:
        write_text("")
        write = write_bytes
    else:
        from_utf8 = codecs.getincrementaldecoder("utf-8")()

        def write(data: bytes) -> None:
            write_text(from_utf8.decode(data))

    reader: Reader
    if utf8_in:
        reader = source
        decoder = None
    else:
        reader = line_bound(source)
        decoder = codecs.getincrementaldecoder(dialect.encoding)(errors="strict")
    head: bytes | None = b"" if in_codec == "utf-8-sig" else None  # until the BOM is known
    writer = _Writer(write)
    block = _HOOK_BLOCK if hook is not None else BLOCK
    # UTF-8 input is read into one buffer, again and again (no new object per block)
    readinto = getattr(reader, "readinto", None) if decoder is None else None
    buffer = bytearray(block) if readinto is not None else None
    if decoder is None:
        _read_ahead(reader)
    try:
        while True:
            if readinto is not None and buffer is not None and head is None:
                size = readinto(buffer)
                checkpoint()
                if not size:
                    break
                if advance is not None:
                    advance(size)
                writer.put(engine.feed(buffer, size))
                continue
            raw = reader.read(block if decoder is None else _LINE_CHUNK)
            checkpoint()
            if advance is not None and raw:
                advance(len(raw))
            if decoder is not None:
                data = decoder.decode(raw, final=not raw).encode("utf-8", "surrogatepass")
            elif head is not None:
                head += raw
                if len(head) < len(_BOM) and raw:
                    continue
                # (the utf-8-sig decoder also reads a file of part of a BOM as empty)
                data = b"" if _BOM.startswith(head) else head
                if head.startswith(_BOM):
                    data = head[len(_BOM) :]
                    engine.skip(len(_BOM))
                head = None
            else:
                data = raw
            if data:
                writer.put(engine.feed(data))
            if not raw:
                break
        writer.put(engine.finish())
    except engine_module.Error as exc:
        if str(exc) == "unwritable":
            raise EngineFailed(str(exc)) from None
        raise csv.Error(f"malformed CSV ({exc})") from None
    finally:
        writer.close()
    return int(engine.records)


def _read_ahead(source: Reader) -> None:
    """Tell the kernel that ``source`` is read from start to end (larger read-ahead)."""
    # not a file, or no such advice here: only slower
    with contextlib.suppress(AttributeError, OSError, ValueError, io.UnsupportedOperation):
        os.posix_fadvise(source.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # type: ignore[attr-defined]


class _Writer:
    """Hands output blocks to ``write`` on a thread of its own (hashing and writing them
    while the next block is worked on), at most two blocks behind; the first block is
    written at once, so a small file starts no thread."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._blocks = 0

    def put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if not data:
            return
        self._blocks += 1
        if self._blocks == 1:
            self._write(data)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="csv-write", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def close(self) -> None:
        """Wait until everything is written; raise what writing raised."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._write(data)
                except BaseException as exc:  # re-raised in the reading thread
                    self._error = exc
