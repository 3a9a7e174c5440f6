"""Working on export files: names, unzipping, CSV rewriting.

Long operations here, in :mod:`exportmon.deliver` and in the actions report
progress through a :data:`ProgressFactory`: called with a description and a total
(bytes, or ``None`` when unknown), it returns a callback advancing that task by n
bytes (or ``None`` to skip counting) and a callback ending the task. The CLI makes
one from a Rich progress display with
``lambda text, total: task_advancer(progress, text, total)``; library users pass
``None``.
"""

from __future__ import annotations

from collections.abc import Callable

Advance = Callable[[int], None]
ProgressFactory = Callable[[str, "int | None"], "tuple[Advance | None, Callable[[], None]]"]


def _nothing() -> None:
    return None


def start_task(
    progress: ProgressFactory | None, description: str, total: int | None
) -> tuple[Advance | None, Callable[[], None]]:
    """A task from ``progress``, or no-op callbacks when there is no progress display."""
    if progress is None:
        return None, _nothing
    return progress(description, total)
