"""Logging: human lines or JSON on stderr, and a rotating log file per monitor.

Everything that leaves a handler passes :func:`exportmon.redact.redact`, so a
secret that slips into a message or an exception text is masked on the way out,
then :func:`printable`: text from senders (a display name, a subject, a file name)
can carry terminal escape sequences (ESC, BEL) or bidi overrides (U+202E), which
are shown escaped (``\x1b``, ``\u202e``) so they never act on a terminal or a
viewer, and a message is one line of at most :data:`MAX_MESSAGE_CHARS` characters,
shortened in the middle (a long path keeps its start and its end).
Records carry the name of the monitor being worked on (a context variable set by
:func:`monitor_context`), and each monitor's file receives only its own lines.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import json
import logging
import logging.handlers
import os
import sys
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from exportmon.errors import UnsafePathError
from exportmon.redact import redact
from exportmon.safe_open import open_nofollow, refuse_link

LOGGER_NAME = "exportmon"
#: Size at which a monitor's log file is rotated, and how many old files are kept.
LOG_FILE_BYTES = 10 * 1000 * 1000
LOG_FILE_BACKUPS = 5

#: The longest message a log line carries; longer ones are shortened in the middle.
MAX_MESSAGE_CHARS = 600
_SHORTENED = " … "
#: Unicode categories shown as ``\uXXXX`` (besides Cc, shown as ``\xXX``).
_ESCAPED = frozenset({"Cf", "Cs", "Cn", "Zl", "Zp"})

current_monitor: contextvars.ContextVar[str] = contextvars.ContextVar("monitor", default="")

_console_handler: logging.Handler | None = None


def printable(text: str, limit: int | None = None) -> str:
    """``text`` safe to show a person: control characters (Unicode Cc: ESC, BEL, NUL,
    newlines), format and separator characters (Cf, Zl, Zp: bidi overrides,
    zero-width spaces), lone surrogates and unassigned code points written as
    escapes, then shortened to ``limit`` characters."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cc":
            out.append(f"\\x{ord(char):02x}")
        elif category in _ESCAPED:
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    shown = "".join(out)
    return shortened(shown, limit) if limit is not None else shown


def shortened(text: str, limit: int) -> str:
    """``text`` of at most ``limit`` characters: its start and end, `` … `` between."""
    if len(text) <= limit:
        return text
    room = max(limit - len(_SHORTENED), 2)
    head = room * 2 // 3
    return text[:head] + _SHORTENED + text[len(text) - (room - head) :]


def _message(record: logging.LogRecord) -> str:
    """The record's message as it is shown: secrets masked, printable, one bounded line."""
    return printable(redact(record.getMessage()), MAX_MESSAGE_CHARS)


def log_file_name(monitor_name: str) -> str:
    """The gem's log file name, kept so existing log watchers keep working."""
    return f"export_monitor.{monitor_name}.log"


class _MonitorField(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "monitor"):
            record.monitor = current_monitor.get()
        return True


class _OnlyMonitor(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name_ = name

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "monitor", "") == self.name_


class TextFormatter(logging.Formatter):
    """``2026-11-23 08:40:00 WARNING [777] message``, secrets masked."""

    def __init__(self, *, with_time: bool = True) -> None:
        super().__init__()
        self.with_time = with_time

    def format(self, record: logging.LogRecord) -> str:
        monitor = getattr(record, "monitor", "")
        parts = []
        if self.with_time:
            parts.append(datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S"))
        parts.append(record.levelname)
        if monitor:
            parts.append(f"[{printable(monitor)}]")
        parts.append(_message(record))
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, monitor, logger, message."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname.lower(),
            "monitor": getattr(record, "monitor", "") or None,
            "logger": record.name,
            "message": _message(record),
        }
        if record.exc_info:
            entry["traceback"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def setup(*, verbosity: int = 0, quiet: bool = False, fmt: str = "text") -> None:
    """Configure the console handler on stderr (call once, from the CLI).

    Default level INFO; ``-v`` DEBUG for exportmon; ``-vv`` DEBUG for libraries
    too; ``--quiet`` errors only.
    """
    global _console_handler, _quiet
    _quiet = quiet
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    if _console_handler is not None:
        logger.removeHandler(_console_handler)
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif sys.stderr.isatty():
        from rich.logging import RichHandler

        from exportmon.commands.console import stderr_console

        handler = RichHandler(
            console=stderr_console(),
            show_path=False,
            markup=False,
            rich_tracebacks=False,
            log_time_format="%Y-%m-%dT%H:%M:%S",  # ISO 8601, not the locale's date
        )
        handler.setFormatter(_RichMessage())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(TextFormatter(with_time=verbosity > 0))
    level = logging.ERROR if quiet else logging.DEBUG if verbosity else logging.INFO
    handler.setLevel(level)
    handler.addFilter(_MonitorField())
    logger.addHandler(handler)
    _console_handler = handler
    if verbosity > 1:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)


_quiet = False


def quiet() -> bool:
    """Whether ``--quiet`` was given: notes meant for a person at a terminal (once-per-run
    security warnings) are left out then, as everything but errors."""
    return _quiet


class _RichMessage(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        monitor = printable(getattr(record, "monitor", ""))
        text = _message(record)
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        return f"[{monitor}] {text}" if monitor else text


class _LogFile(logging.handlers.RotatingFileHandler):
    """A rotating log file opened without following a link (created 0600)."""

    def _open(self) -> io.TextIOWrapper:
        fd = open_nofollow(self.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


def _file_handler(path: Path, fmt: str, monitor: str) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    refuse_link(path.parent)
    handler = _LogFile(
        path, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.setLevel(logging.DEBUG)
    handler.addFilter(_MonitorField())
    handler.addFilter(_OnlyMonitor(monitor))
    return handler


@contextlib.contextmanager
def monitor_context(name: str, log_dir: Path | None, fmt: str = "text") -> Iterator[None]:
    """Tag log records with monitor ``name`` and copy them to its log file in ``log_dir``."""
    token = current_monitor.set(name)
    handler = None
    logger = logging.getLogger(LOGGER_NAME)
    if log_dir is not None:
        try:
            handler = _file_handler(log_dir / log_file_name(name), fmt, name)
            logger.addHandler(handler)
        except OSError as exc:
            logger.warning("cannot write log file in %s: %s", log_dir, exc.strerror)
        except UnsafePathError as exc:
            logger.warning("not writing the log file: %s", exc.one_line())
    try:
        yield
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
        current_monitor.reset(token)


def get_logger(name: str) -> logging.Logger:
    """The logger for module ``name`` (a child of the ``exportmon`` logger)."""
    if name == LOGGER_NAME or name.startswith(LOGGER_NAME + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def is_interactive() -> bool:
    """True when stderr is a terminal and progress displays make sense."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
