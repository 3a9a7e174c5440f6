"""One owner per state folder: the state-folder lock and the gem's pid file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from exportmon.errors import LockedError, UnsafePathError
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


def test_monitors_with_their_own_state_folders_are_independent(tmp_path):
    with monitor_lock(tmp_path / "a" / "pids", "777"), monitor_lock(tmp_path / "b" / "pids", "778"):
        assert running_pid(tmp_path / "a" / "pids", "777") == os.getpid()
        assert running_pid(tmp_path / "b" / "pids", "778") == os.getpid()
        assert running_pid(tmp_path / "a" / "pids", "779") is None


def test_two_monitors_never_share_one_state_folder_at_once(tmp_path):
    pids = tmp_path / "state" / "pids"
    (tmp_path / "alias").symlink_to(tmp_path / "state")
    with monitor_lock(pids, "777"):
        for other in (pids, tmp_path / "alias" / "pids"):
            with pytest.raises(LockedError) as info, monitor_lock(other, "778"):
                pass
            assert "shares its state folder" in info.value.one_line()
            assert "'777'" in info.value.one_line()
    with monitor_lock(pids, "778"):
        pass


def test_a_second_process_on_the_same_state_folder_is_refused(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(LockedError) as info, monitor_lock(tmp_path, "other"):
            pass
        assert f"monitor '777', which is running (pid {holder.pid})" in info.value.one_line()
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("name", ["export_monitor.777.pid", "exportmon.lock"])
def test_a_link_planted_at_a_lock_file_is_never_followed(tmp_path, name):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / name).symlink_to(victim)
    with monitor_lock(pids, "777"):
        assert not (pids / name).is_symlink()
    assert victim.read_text() == "precious\n"


def test_a_linked_pids_folder_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "pids").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafePathError), monitor_lock(tmp_path / "state" / "pids", "777"):
        pass
    assert list((tmp_path / "elsewhere").iterdir()) == []
