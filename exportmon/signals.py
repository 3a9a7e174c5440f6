"""Stopping and reloading cleanly on SIGTERM, SIGINT and SIGHUP.

The first SIGTERM or SIGINT (Ctrl-C) asks the work to stop at the next safe
point: the loops of long steps (downloading, unpacking, rewriting CSV, copying
and uploading) call :func:`checkpoint` for every block, which then raises
:class:`Interrupted`. That unwinds to the command, removing temporary files on
the way, and leaves every export in the state it had reached, so the next run
redoes the unfinished step; between steps, :class:`Shutdown` says to go no
further. A second SIGINT (an impatient Ctrl-C) ends the process at once. SIGHUP
asks for the configs to be reloaded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from exportmon.log import get_logger

log = get_logger(__name__)

#: Set by the first SIGTERM or SIGINT; every :func:`checkpoint` raises once it is.
_stop = threading.Event()
#: The signal that asked to stop, for the exit code (130 after Ctrl-C).
_stopped_by: list[int] = []


class Interrupted(BaseException):
    """The work was stopped at a safe point because the process was asked to stop.

    Like :class:`KeyboardInterrupt` it is no failure of the work and no
    :class:`~exportmon.errors.ExportmonError`, so nothing records it as one or
    goes on with the next file: it unwinds to the command, and the next run
    resumes what was left.
    """

    def __init__(self, message: str = "stopped before finishing") -> None:
        super().__init__(message)
        self.message = message


def request_stop(signum: int = signal.SIGTERM) -> None:
    """Ask the work to stop at its next :func:`checkpoint`."""
    if not _stop.is_set():
        _stopped_by[:] = [signum]
    _stop.set()


def clear_stop() -> None:
    """Forget an earlier :func:`request_stop` (when signal handling ends, and in tests)."""
    _stop.clear()
    _stopped_by.clear()


def stop_requested() -> bool:
    """Whether the process was asked to stop."""
    return _stop.is_set()


def stop_event() -> threading.Event:
    """The event a stop request sets, for code that waits on it itself."""
    return _stop


def checkpoint() -> None:
    """Raise :class:`Interrupted` when the process was asked to stop; else return at once.

    Call it between blocks of any loop that can take longer than a second.
    """
    if _stop.is_set():
        raise Interrupted()


def interrupted_by_ctrl_c() -> bool:
    """Whether the stop came from SIGINT (exit code 130)."""
    return _stopped_by == [signal.SIGINT]


class Shutdown:
    """Flags set by signals and read by the work loop; safe to share between threads."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._reload = threading.Event()
        #: Wakes sleepers (poll intervals, reconnect back-off) on any signal.
        self.wakeup = threading.Event()

    @property
    def requested(self) -> bool:
        return self._stop.is_set()

    def request(self) -> None:
        self._stop.set()
        self.wakeup.set()

    def take_reload(self) -> bool:
        """True once after each SIGHUP."""
        if self._reload.is_set():
            self._reload.clear()
            return True
        return False

    def request_reload(self) -> None:
        self._reload.set()
        self.wakeup.set()

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; return True when woken early by a signal."""
        woken = self.wakeup.wait(max(0.0, seconds))
        self.wakeup.clear()
        return woken


@contextlib.contextmanager
def handle_signals(shutdown: Shutdown) -> Iterator[Shutdown]:
    """Route SIGTERM/SIGINT/SIGHUP to ``shutdown`` within the block (main thread only)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        if shutdown.requested and signum == signal.SIGINT:
            _stop_at_once()
        if shutdown.requested:
            return
        again = " (Ctrl-C again stops at once)" if signum == signal.SIGINT else ""
        log.warning(
            "%s received: stopping at the next safe point%s", signal.Signals(signum).name, again
        )
        request_stop(signum)
        shutdown.request()

    def reload(signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP received: reloading the configuration")
        shutdown.request_reload()

    if threading.current_thread() is not threading.main_thread():
        yield shutdown
        return
    clear_stop()
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, stop),
        signal.SIGINT: signal.signal(signal.SIGINT, stop),
        signal.SIGHUP: signal.signal(signal.SIGHUP, reload),
    }
    try:
        yield shutdown
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_at_once() -> None:
    """End the process now (a second Ctrl-C): unfinished work is redone by the next run.

    Temporary files may stay behind; the next run replaces them. The ledger is
    consistent, since every change to it is a committed transaction.
    """
    if sys.stderr.isatty():
        sys.stderr.write("\x1b[?25h\n")  # the live display hid the cursor
    sys.stderr.write("exportmon: stopped at once; the next run redoes the unfinished work\n")
    sys.stderr.flush()
    os._exit(130)
