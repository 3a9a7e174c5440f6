"""How long operations report progress without knowing about Rich.

Downloads, unzipping, rewriting and uploads take a :data:`ProgressFactory`:
called with a description and a total (bytes, or ``None`` when unknown), it
returns a callback advancing that task by n bytes (or ``None`` to skip counting)
and a callback ending the task. The CLI makes one from a Rich progress display
with ``functools.partial(console.task_advancer, progress)``; library users pass
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
