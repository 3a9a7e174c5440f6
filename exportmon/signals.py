"""Stopping and reloading cleanly on SIGTERM, SIGINT and SIGHUP.

Long-running work checks :class:`Shutdown` between files instead of being torn
down mid-write: the first SIGTERM or SIGINT asks it to finish the current file and
stop; a second SIGINT (an impatient Ctrl-C) stops at once. SIGHUP asks for the
configs to be reloaded.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from exportmon.log import get_logger

log = get_logger(__name__)


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
            raise KeyboardInterrupt
        log.info(
            "%s received: finishing the current file, then stopping", signal.Signals(signum).name
        )
        shutdown.request()

    def reload(signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP received: reloading the configuration")
        shutdown.request_reload()

    if threading.current_thread() is not threading.main_thread():
        yield shutdown
        return
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
