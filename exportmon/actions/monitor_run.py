"""One piece of work on a monitor, wrapped once: log context, lock, ledger and run record.

Every command that works on a monitor (``fetch``, ``run --once``, ``run``
watching, ``prune``) goes through :func:`monitor_run`; a library function given
an open ledger (``actions.fetch.fetch``) goes through :func:`recorded_run`, so
that it is recorded as a run too when nobody else records one. Work nested in a
run (the fetch inside ``run --once``) joins that run instead of starting another.

A run ends ``ok``, ``failed`` (the work reported a failure or raised) or
``interrupted`` (a stop was requested, or Ctrl-C), with the counts the work left
in :attr:`Run.counts`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from exportmon.actions.steps import monitor_ledger
from exportmon.lock import monitor_lock
from exportmon.log import monitor_context
from exportmon.signals import Interrupted, Shutdown

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig
    from exportmon.ledger import Ledger


class Outcome(Protocol):
    """What a piece of work returns: whether something failed, and its counts."""

    @property
    def failed(self) -> bool: ...

    def counts(self) -> dict[str, Any]: ...


@dataclass
class Run:
    """The run being recorded: its ledger, and what the work reports about itself."""

    monitor: MonitorConfig
    ledger: Ledger
    command: str
    dry_run: bool = False
    #: The ledger's id of the run; None in a dry run, which records nothing.
    run_id: int | None = None
    failed: bool = False
    counts: dict[str, Any] | None = None
    shutdown: Shutdown | None = field(default=None, repr=False)

    def record(self, outcome: Outcome) -> None:
        """Take the failure flag and counts of ``outcome`` for the run record."""
        self.failed = outcome.failed
        self.counts = outcome.counts()

    def status(self) -> str:
        if self.shutdown is not None and self.shutdown.requested:
            return "interrupted"
        return "failed" if self.failed else "ok"


_current: contextvars.ContextVar[Run | None] = contextvars.ContextVar("run", default=None)


def current_run() -> Run | None:
    """The run the calling code is part of, if any."""
    return _current.get()


@contextlib.contextmanager
def recorded_run(
    monitor: MonitorConfig,
    ledger: Ledger,
    command: str,
    *,
    dry_run: bool = False,
    shutdown: Shutdown | None = None,
) -> Iterator[Run]:
    """Record the work in the block as a run in ``ledger`` (joining a run already going on)."""
    active = _current.get()
    if active is not None and active.ledger is ledger:
        yield active
        return
    run = Run(monitor, ledger, command, dry_run, shutdown=shutdown)
    if not dry_run:
        run.run_id = ledger.start_run(command)
    token = _current.set(run)
    status = "failed"
    try:
        yield run
        status = run.status()
    except (KeyboardInterrupt, Interrupted):
        status = "interrupted"
        raise
    finally:
        _current.reset(token)
        if run.run_id is not None:
            ledger.finish_run(run.run_id, status, run.counts)


@contextlib.contextmanager
def monitor_run(
    monitor: MonitorConfig,
    command: str,
    *,
    dry_run: bool = False,
    log_format: str = "text",
    shutdown: Shutdown | None = None,
) -> Iterator[Run]:
    """Work on ``monitor`` as one run: its state folder, log file, lock, ledger and record.

    A dry run creates nothing, takes no lock (so it may look beside a running
    watcher) and records nothing. Raises :class:`~exportmon.errors.LockedError`
    when another process works on the monitor, and
    :class:`~exportmon.errors.ConfigError` when its folders cannot be made.
    """
    if not dry_run:
        monitor.dirs.create()
    log_dir = None if dry_run and not monitor.dirs.root.exists() else monitor.dirs.log
    # One process per monitor: two processes could take the same mail twice.
    lock = contextlib.nullcontext() if dry_run else monitor_lock(monitor.dirs.pids, monitor.name)
    with (
        monitor_context(monitor.name, log_dir, log_format),
        lock,
        monitor_ledger(monitor, dry_run=dry_run) as ledger,
        recorded_run(monitor, ledger, command, dry_run=dry_run, shutdown=shutdown) as run,
    ):
        yield run
