"""Disk faults: a full disk (during download, rewrite, delivery), a read-only destination,
permission denied. Each gives one clear error line, leaves nothing half-written under a
final name, and the export is retried by itself (after ``retry_after``) and delivered
once the cause is gone.

Real file systems, not injected errors, wherever possible: the tests run as root (as
CI does) and mount small tmpfs file systems, grow them, remount them read-only, and
unmount them cleanly at the end; the permission test drops the capabilities that let
root ignore file modes (``setpriv``). Where no tmpfs can be mounted (not root, no
CAP_SYS_ADMIN), the same tests run with the errors injected into exportmon's writes
(``tests/diskfault/sitecustomize.py``: ENOSPC after the same number of bytes, EROFS)
and each says so with a warning, so a CI without mount rights is never silently
weaker.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from fetchkit import config_data, export_mail, imap_table, write_config
from watching import wait_for

from cli import CliResult, run_cli
from exportmon.config.load import load_monitor
from exportmon.ledger import Ledger, now

DISK_FAULT = Path(__file__).parent / "diskfault"
#: The size a small disk grows to when "space is freed".
ROOMY = "20m"


@functools.cache
def why_no_mount() -> str | None:
    """None when a tmpfs can be mounted here, else why it cannot.

    ``EXPORTMON_TEST_NO_MOUNT=1`` pretends it cannot, to run the fallback here too.
    """
    if os.environ.get("EXPORTMON_TEST_NO_MOUNT"):
        return "EXPORTMON_TEST_NO_MOUNT is set"
    probe = Path(tempfile.mkdtemp(prefix="exportmon-mount-probe-"))
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            return mounted.stderr.strip() or f"mount exited with {mounted.returncode}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    except OSError as exc:
        return str(exc)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _bytes(size: str) -> int:
    return int(size[:-1]) * 1024 * 1024 if size.endswith("m") else int(size)


class SmallDisk:
    """``path`` as a small file system of ``size``: a tmpfs mounted there, or, where no
    tmpfs can be mounted, a plain folder under which exportmon's writes fail as on a
    full (ENOSPC) or read-only (EROFS) file system (see the module docs)."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        self.size = size
        self.injected = why_no_mount()
        self.fault: str | None = None
        self.mounted = False

    def mount(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        if self.injected is None:
            command = ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)]
            subprocess.run(command, check=True)
            self.mounted = True
        else:
            self.fault = f"ENOSPC:{_bytes(self.size)}"
        return self.path

    def grow(self) -> None:
        """Space was freed: the disk is large enough from now on."""
        self._remount(f"size={ROOMY}", None)

    def read_only(self) -> None:
        self._remount("ro", "EROFS:0")

    def writable(self) -> None:
        self._remount("rw", None)

    def _remount(self, options: str, fault: str | None) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)
        else:
            self.fault = fault

    def env(self) -> dict[str, str]:
        """The environment a child process must run with to meet this disk."""
        if self.fault is None:
            return {}
        path = os.pathsep.join(filter(None, [str(DISK_FAULT), os.environ.get("PYTHONPATH")]))
        return {"PYTHONPATH": path, "EXPORTMON_TEST_DISK_FAULT": f"{self.fault}:{self.path}"}

    def unmount(self) -> None:
        """Unmount cleanly: a busy file system (a process still writing) fails the test."""
        if self.mounted:
            subprocess.run(["umount", str(self.path)], check=True)
            self.mounted = False


@pytest.fixture
def small_disk():
    """``small_disk(path, size) -> SmallDisk``, mounted; unmounted after the test."""
    disks: list[SmallDisk] = []

    def mount(path: Path, size: str = "10m") -> SmallDisk:
        disk = SmallDisk(path, size)
        if disk.injected is not None:
            warnings.warn(
                f"no tmpfs can be mounted here ({disk.injected}): disk faults are injected "
                "into exportmon's writes instead (tests/diskfault)",
                stacklevel=2,
            )
        disk.mount()
        disks.append(disk)
        return disk

    yield mount
    for disk in disks:
        disk.unmount()


def body(size: int) -> bytes:
    lines, total, number = [b"id,name,amount"], 15, 0
    while total < size:
        number += 1
        line = b"%d,name %d,%d.%02d" % (number, number % 977, number % 10_000, number % 100)
        lines.append(line)
        total += len(line) + 1
    return b"\n".join(lines) + b"\n"


@pytest.fixture
def monitor_for(tmp_path, mail_user, https_server, tls_ca):
    """Writes a monitor config delivering to ``to``; returns its path."""

    def write(to: Path, **top) -> Path:
        data = config_data(
            tmp_path / "state",
            imap_table(mail_user),
            ca_file=tls_ca.ca_file,
            retry_after="1s",
            deliver={"to": str(to)},
            **top,
        )
        return write_config(tmp_path / "monitors", data)

    return write


def mail_export(mail_user, https_server, name: str, data: bytes) -> None:
    mail_user.append(export_mail(https_server.add(f"/e/{name}", data), token=f"tok-{name}"))


def errors(result: CliResult) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("ERROR")]


def final_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def failing_run(config: Path, disk: SmallDisk) -> str:
    """A `run --once` meeting the fault: exit code 1 and exactly one ERROR line (returned)."""
    result = run_cli("-c", config, "run", "--once", env=disk.env())
    assert result.code == 1, result.stderr
    (line,) = errors(result)
    return line


def wait_until_due(config: Path) -> None:
    """Wait until every failed export of the monitor is due for its automatic retry."""
    with Ledger.open(load_monitor(config).dirs.ledger) as ledger:
        wait_for(
            lambda: all(
                export.retry_at is None or export.retry_at <= now()
                for export in ledger.unfinished_exports()
            )
        )


def retried(config: Path, **kwargs) -> CliResult:
    """The next `run --once` once retry_after (1 s) has passed: the automatic retry."""
    wait_until_due(config)
    return run_cli("-c", config, "run", "--once", **kwargs)


def test_disk_full_while_downloading(tmp_path, mail_user, https_server, monitor_for, small_disk):
    out = tmp_path / "out"
    config = monitor_for(out)
    data = body(3_000_000)
    mail_export(mail_user, https_server, "big.csv", data)
    disk = small_disk(tmp_path / "state" / "downloads", "1m")
    line = failing_run(config, disk)
    assert re.search(r"failed at download: disk full while writing .*big\.csv\.part", line)
    assert "free some space in" in line
    assert not out.exists() and len(mail_user.list_uids("INBOX")) == 1
    disk.grow()
    again = retried(config, env=disk.env())
    assert again.code == 0, again.stderr
    assert (out / "big.csv").read_bytes() == data
    assert mail_user.list_uids("INBOX") == [] and len(mail_user.list_uids("Archive")) == 1


def test_disk_full_while_rewriting(tmp_path, mail_user, https_server, monitor_for, small_disk):
    out = tmp_path / "out"
    config = monitor_for(out, csv={"col_sep": ";"})
    data = body(1_200_000)
    mail_export(mail_user, https_server, "wide.csv", data)
    disk = small_disk(tmp_path / "state" / "downloads", "2m")
    line = failing_run(config, disk)
    assert "failed at unpack: cannot rewrite" in line
    assert "No space left on device" in line
    assert not out.exists()
    # The download is kept: the retry starts from it, it is not downloaded again.
    assert (disk.path / "777" / "1-tok-wide.csv" / "wide.csv").read_bytes() == data
    disk.grow()
    again = retried(config, env=disk.env())
    assert again.code == 0, again.stderr
    assert (out / "wide.csv").read_bytes() == data.replace(b",", b";")
    assert len(https_server.requests_for("/e/wide.csv")) == 1


def test_disk_full_at_the_destination(tmp_path, mail_user, https_server, monitor_for, small_disk):
    disk = small_disk(tmp_path / "out", "1m")
    out = disk.path
    config = monitor_for(out)
    data = body(1_500_000)
    mail_export(mail_user, https_server, "large.csv", data)
    line = failing_run(config, disk)
    assert "failed at deliver: cannot copy" in line and "No space left on device" in line
    assert final_files(out) == []  # no partial file, not even the .in_progress one
    assert len(mail_user.list_uids("INBOX")) == 1
    disk.grow()
    again = retried(config, env=disk.env())
    assert again.code == 0, again.stderr
    assert final_files(out) == ["large.csv"]
    assert (out / "large.csv").read_bytes() == data
    assert len(mail_user.list_uids("Archive")) == 1


def test_read_only_destination(tmp_path, mail_user, https_server, monitor_for, small_disk):
    disk = small_disk(tmp_path / "out")
    out = disk.path
    disk.read_only()
    config = monitor_for(out, sub_dirs=True)
    data = body(50_000)
    mail_export(mail_user, https_server, "777-1-people.csv", data)
    line = failing_run(config, disk)
    assert "failed at deliver" in line and "Read-only file system" in line
    assert len(mail_user.list_uids("INBOX")) == 1
    disk.writable()
    again = retried(config, env=disk.env())
    assert again.code == 0, again.stderr
    assert final_files(out) == ["people/777-1-people.csv"]
    assert (out / "people" / "777-1-people.csv").read_bytes() == data
    assert len(mail_user.list_uids("Archive")) == 1


def test_permission_denied_at_the_destination(tmp_path, mail_user, https_server, monitor_for):
    out = tmp_path / "out"
    out.mkdir(mode=0o555)
    out.chmod(0o555)
    config = monitor_for(out)
    data = body(50_000)
    mail_export(mail_user, https_server, "p.csv", data)
    # Root ignores file modes; without CAP_DAC_OVERRIDE it is an ordinary user here.
    drop = "-dac_override,-dac_read_search"
    command = ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"]
    command += [sys.executable, "-m", "exportmon", "-c", str(config), "run", "--once"]
    denied = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    assert denied.returncode == 1, denied.stderr
    assert "Traceback" not in denied.stderr
    (line,) = [x for x in denied.stderr.splitlines() if x.startswith("ERROR")]
    assert "failed at deliver" in line and "Permission denied" in line
    assert final_files(out) == []
    out.chmod(0o755)
    wait_until_due(config)
    again = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
    assert again.returncode == 0, again.stderr
    assert (out / "p.csv").read_bytes() == data
    assert len(mail_user.list_uids("Archive")) == 1


def test_disk_full_while_saving_an_attachment(tmp_path, mail_user, monitor_for, small_disk):
    out = tmp_path / "out"
    config = monitor_for(out)
    data = body(1_500_000)
    mail_user.append(export_mail(None, token="tok-att", attachments=[("777-1-cis.csv", data)]))
    disk = small_disk(tmp_path / "state" / "downloads", "1m")
    line = failing_run(config, disk)
    assert "cannot save attachment 777-1-cis.csv" in line
    assert "No space left on device" in line
    assert [p for p in disk.path.rglob("*") if p.is_file()] == []
    disk.grow()
    again = retried(config, env=disk.env())
    assert again.code == 0, again.stderr
    assert (out / "777-1-cis.csv").read_bytes() == data
    assert len(mail_user.list_uids("Archive")) == 1


FULL = """
import errno, os, sys
folder, outside = sys.argv[1:]
with open(os.path.join(folder, "a"), "wb") as f:
    f.write(b"x" * 1000)
def text():
    with open(os.path.join(folder, "d"), "w") as handle:
        handle.write("z")
for write in (
    lambda: open(os.path.join(folder, "b"), "wb", buffering=0).write(b"x" * 100),
    lambda: os.write(os.open(os.path.join(folder, "c"), os.O_WRONLY | os.O_CREAT), b"y"),
    text,
):
    try:
        write()
        print("written")
    except OSError as exc:
        print(errno.errorcode[exc.errno])
with open(outside, "wb") as f:
    f.write(b"o" * 5000)
"""

READ_ONLY = """
import errno, os, sys
folder, outside = sys.argv[1:]
for change in (
    lambda: open(os.path.join(folder, "a"), "ab"),
    lambda: os.open(os.path.join(folder, "b"), os.O_WRONLY | os.O_CREAT),
    lambda: os.mkdir(os.path.join(folder, "sub")),
    lambda: os.replace(outside, os.path.join(folder, "c")),
):
    try:
        change()
        print("changed")
    except OSError as exc:
        print(errno.errorcode[exc.errno])
print(open(os.path.join(folder, "a"), "rb").read())
"""


@pytest.mark.parametrize(
    ("fault", "script", "expected"),
    [
        ("ENOSPC:1050", FULL, ["ENOSPC", "ENOSPC", "ENOSPC"]),
        ("EROFS:0", READ_ONLY, ["EROFS", "EROFS", "EROFS", "EROFS", "b'old'"]),
    ],
)
def test_the_injected_fallback_fails_like_a_full_or_read_only_disk(
    tmp_path, fault, script, expected
):
    # The fallback for machines without mount rights must itself fail as a disk does:
    # 1050 bytes in all fit on that full disk: after 1000, 100 more do not, and then
    # the disk is full (a buffered text write fails when it is flushed).
    folder, outside = tmp_path / "disk", tmp_path / "outside"
    folder.mkdir()
    (folder / "a").write_bytes(b"old")
    outside.write_bytes(b"o")
    env = {**os.environ, "PYTHONPATH": str(DISK_FAULT)}
    env["EXPORTMON_TEST_DISK_FAULT"] = f"{fault}:{folder}"
    command = [sys.executable, "-c", script, str(folder), str(outside)]
    child = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == expected
    assert outside.exists()  # writes elsewhere are not affected
