"""`exportmon run` watching, as a long-running child process the tests can stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def wait_for(condition, timeout: float = 20.0, interval: float = 0.05):
    """Poll ``condition`` until it returns something true (returned); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {condition}")


def log_count(path: Path, text: str) -> int:
    """How many lines of the log file ``path`` contain ``text`` (0 before it exists)."""
    try:
        return sum(text in line for line in path.read_text(errors="replace").splitlines())
    except FileNotFoundError:
        return 0


def wait_for_cycles(path: Path, more: int = 1, timeout: float = 30.0) -> None:
    """Wait until the watcher logging to ``path`` has finished ``more`` further cycles."""
    seen = log_count(path, CYCLE_DONE)
    wait_for(lambda: log_count(path, CYCLE_DONE) >= seen + more, timeout=timeout)


#: What the watcher writes to the monitor's log file at the end of each cycle.
CYCLE_DONE = "waiting for new mail"


class Watcher:
    """`exportmon run` as a long-running child process.

    Its stderr goes to a file (``stderr_path``), not a pipe, so a chatty watcher
    can never block on a full pipe; :meth:`output` reads what it wrote so far.
    """

    def __init__(
        self, *configs: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
    ) -> None:
        options = [a for c in configs for a in ("-c", str(c))]
        handle, name = tempfile.mkstemp(prefix="exportmon-watch-", suffix=".log")
        self.stderr_path = Path(name)
        with os.fdopen(handle, "wb") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "exportmon", *options, "run", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**os.environ, **(env or {})},
            )

    def output(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> tuple[int, str]:
        """Send ``sig`` (0: none, just wait), wait for the end; return (exit code, stderr)."""
        if self.process.poll() is None and sig:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("exportmon run did not stop: " + self.output()) from None
        text = self.output()
        self.stderr_path.unlink(missing_ok=True)
        assert "Traceback" not in text, text
        return self.process.returncode, text

    def kill(self) -> None:
        """SIGKILL it if it still runs (test teardown)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr_path.unlink(missing_ok=True)
