"""The pipeline protocol shared by fetch, unzip, rewrite-csv and push-ftp.

Each step takes file paths as arguments or, when none are given, reads them from
stdin: one per line, NUL-separated with ``-0``, or JSON Lines (the ``--json``
output of the previous step; its ``path`` is used). Each step prints the paths it
produced the same way, one at a time as they are done, so a pipeline streams.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any

from exportmon import json_answers
from exportmon.errors import UsageError


class OutputFormat(str, Enum):
    lines = "lines"
    null = "null"
    json = "json"


@dataclass
class InputItem:
    """A path handed to a step, with what the previous step said about it."""

    path: Path
    info: dict[str, Any] = field(default_factory=dict)


def read_inputs(
    args: list[Path] | None, *, null: bool = False, stdin: IO[str] | None = None
) -> Iterator[InputItem]:
    """The paths given as ``args``, or else those arriving on stdin.

    Raises :class:`UsageError` when there are no arguments and stdin is a terminal.
    """
    if args:
        for arg in args:
            yield InputItem(Path(arg))
        return
    stream = stdin if stdin is not None else sys.stdin
    if stream.isatty():
        raise UsageError(
            "no files given", hint="pass paths as arguments or pipe them in, one per line"
        )
    if null:
        pending = ""
        while chunk := stream.read(65536):
            pending += chunk
            *complete, pending = pending.split("\0")
            for entry in complete:
                if entry:
                    yield InputItem(Path(entry))
        if pending:
            yield InputItem(Path(pending))
        return
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json_answers.loads(line)
            except ValueError:
                raise UsageError(f"stdin line {number} is not valid JSON") from None
            path = record.get("path") if isinstance(record, dict) else None
            if not isinstance(path, str):
                raise UsageError(f'stdin line {number}: JSON record has no "path"')
            yield InputItem(Path(path), record)
        else:
            yield InputItem(Path(line))


class Emitter:
    """Writes produced paths to stdout in the chosen format, flushing each one."""

    def __init__(self, fmt: OutputFormat = OutputFormat.lines, stream: IO[str] | None = None):
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stdout
        self.count = 0

    def emit(self, path: Path | str, **info: Any) -> None:
        if self.fmt is OutputFormat.json:
            record = {"path": str(path), **info}
            self.stream.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
        elif self.fmt is OutputFormat.null:
            self.stream.write(f"{path}\0")
        else:
            self.stream.write(f"{path}\n")
        self.stream.flush()
        self.count += 1


def output_format(null: bool, as_json: bool) -> OutputFormat:
    """The format chosen by the ``-0`` and ``--json`` flags."""
    if null and as_json:
        raise UsageError("choose either -0 or --json, not both")
    return OutputFormat.json if as_json else OutputFormat.null if null else OutputFormat.lines
