"""One process per monitor: the pid-file lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from exportmon.errors import LockedError
from exportmon.lock import monitor_lock, pid_file, running_pid

HOLDER = """
import sys, time
from pathlib import Path
from exportmon.lock import monitor_lock
with monitor_lock(Path(sys.argv[1]), "777"):
    print("locked", flush=True)
    time.sleep(60)
"""


def start_holder(pids):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(pids)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_lock_writes_the_gems_pid_file_and_empties_it_after(tmp_path):
    with monitor_lock(tmp_path, "777") as path:
        assert path == tmp_path / "export_monitor.777.pid"
        assert path.read_text() == f"{os.getpid()}\n"
    assert path.read_text() == ""
    assert running_pid(tmp_path, "777") is None


def test_second_process_is_refused_with_the_holders_pid(tmp_path):
    holder = start_holder(tmp_path)
    try:
        assert running_pid(tmp_path, "777") == holder.pid
        with pytest.raises(LockedError) as info, monitor_lock(tmp_path, "777"):
            pass
        assert f"already running (pid {holder.pid})" in info.value.one_line()
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    # The dead process's pid is still in the file, but the kernel released its lock.
    assert pid_file(tmp_path, "777").read_text().strip() == str(holder.pid)
    deadline = time.monotonic() + 5
    while running_pid(tmp_path, "777") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    with monitor_lock(tmp_path, "777") as path:
        assert path.read_text() == f"{os.getpid()}\n"


def test_other_monitors_are_independent(tmp_path):
    with monitor_lock(tmp_path, "777"), monitor_lock(tmp_path, "778"):
        assert running_pid(tmp_path, "777") == os.getpid()
        assert running_pid(tmp_path, "778") == os.getpid()
        assert running_pid(tmp_path, "779") is None
