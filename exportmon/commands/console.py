"""Terminal output: Rich consoles, progress bars, tables and JSON.

Results go to stdout, everything meant for the person at the terminal (logs,
progress) to stderr. Text shown to a person passes :func:`exportmon.log.printable`
(control and bidi characters escaped). Progress bars appear only when stderr is a terminal and
``--quiet`` is not given.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from exportmon.log import MAX_MESSAGE_CHARS, printable
from exportmon.redact import redact

if TYPE_CHECKING:  # Rich is imported when something is drawn, not when the CLI starts
    from rich.console import Console
    from rich.progress import Progress, TaskID


@functools.cache
def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@functools.cache
def stdout_console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal that can show colour and live displays."""
    from exportmon.log import is_interactive

    return is_interactive()


def progress_wanted(quiet: bool) -> bool:
    """Whether to draw progress bars: stderr is a terminal and not ``--quiet``."""
    return not quiet and stderr_is_terminal() and stderr_console().is_terminal


@contextlib.contextmanager
def transfer_progress(enabled: bool) -> Iterator[Progress | None]:
    """A Rich progress display for byte transfers, or ``None`` when not wanted."""
    if not enabled:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
    )
    with progress:
        yield progress


class RunDisplay:
    """What ``run`` shows on a terminal: one status line per monitor and transfer bars."""

    def __init__(self, transfers: Progress, statuses: Progress) -> None:
        self.transfers = transfers
        self.statuses = statuses
        self._tasks: dict[str, TaskID] = {}

    def activity(self, monitor: str, text: str) -> None:
        """Show what ``monitor`` is doing now."""
        description = printable(f"{monitor}: {text}", MAX_MESSAGE_CHARS)
        if monitor in self._tasks:
            self.statuses.update(self._tasks[monitor], description=description)
        else:
            self._tasks[monitor] = self.statuses.add_task(description, total=None)


@contextlib.contextmanager
def run_display(enabled: bool) -> Iterator[RunDisplay | None]:
    """A live display for ``run`` on stderr, or ``None`` when not wanted."""
    if not enabled:
        yield None
        return
    from rich.console import Group
    from rich.live import Live
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    statuses = Progress(
        SpinnerColumn(), TextColumn("{task.description}", markup=False), console=stderr_console()
    )
    transfers = Progress(
        TextColumn("  {task.description}", markup=False),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
    )
    with Live(
        Group(statuses, transfers), console=stderr_console(), transient=True, refresh_per_second=8
    ):
        yield RunDisplay(transfers, statuses)


def task_advancer(
    progress: Progress | None, description: str, total: int | None
) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A callback advancing a new progress task by n bytes, and one removing the task.

    Library code takes the plain callback and knows nothing of Rich.
    """
    if progress is None:
        return None, lambda: None
    task: TaskID = progress.add_task(description, total=total)
    return (lambda n: progress.advance(task, n)), (lambda: progress.remove_task(task))


def print_json(data: Any) -> None:
    """Write ``data`` as indented JSON to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    styles: dict[str, str] | None = None,
) -> None:
    """Write a Rich table to stdout (plain text when stdout is not a terminal)."""
    from rich.table import Table

    table = Table(title=title, header_style="bold", show_lines=False)
    for column in columns:
        table.add_column(column, style=(styles or {}).get(column), overflow="fold")
    for row in rows:
        table.add_row(*("" if v is None else printable(str(v)) for v in row))
    stdout_console().print(table)


def print_error(message: str) -> None:
    """Write one error line to stderr, secrets masked."""
    text = f"exportmon: error: {printable(redact(message), MAX_MESSAGE_CHARS)}"
    if not stderr_is_terminal():
        _write_line(text)
        return
    stderr_console().print(
        text,
        markup=False,
        highlight=False,
        style="red" if stderr_console().is_terminal else None,
        soft_wrap=True,
    )


def print_note(message: str) -> None:
    """Write an informational line for the person at the terminal (stderr)."""
    text = printable(redact(message), MAX_MESSAGE_CHARS)
    if not stderr_is_terminal():
        _write_line(text)
        return
    stderr_console().print(text, markup=False, highlight=False, soft_wrap=True)


def _write_line(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()
