"""Server faults: exportmon recovers from servers that go away, stall or lie, loses
nothing, delivers nothing twice, and reports each outage once."""

from __future__ import annotations

import subprocess
import sys
import time

from fetchkit import export_mail
from test_crash_safety import ftp_monitor

from cli import run_cli


def wait_for(condition, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not within {timeout} s: {condition}")


def test_an_upload_cut_by_a_server_stop_is_finished_under_the_same_name(
    tmp_path, mail_user, https_server, ftps_server, tls_ca
):
    config, env = ftp_monitor(tmp_path, mail_user, ftps_server, tls_ca, overwrite="timestamp")
    body = b"id\n" + b"".join(b"%d\n" % n for n in range(40_000))
    mail_user.append(export_mail(https_server.add("/e/daily.csv", body), token="t1"))
    ftps_server.slow_uploads(50_000)
    first = subprocess.Popen(
        [sys.executable, "-m", "exportmon", "-c", str(config), "run", "--once"],
        env={**__import__("os").environ, **env},
        stderr=subprocess.PIPE,
    )
    folder = ftps_server.home / "in"
    wait_for(lambda: any(p.stat().st_size for p in folder.glob("*.in_progress")))
    ftps_server.stop()
    _, err = first.communicate(timeout=60)
    assert first.returncode == 1, err.decode()
    (partial,) = folder.glob("*.in_progress")
    ftps_server.slow_uploads(None)
    ftps_server.start()
    again = run_cli("-c", config, "run", "--once", "--retry-failed", env=env)
    assert again.code == 0, again.stderr
    # Before: the retry chose a new time-stamped name and the partial file stayed.
    assert sorted(p.name for p in folder.iterdir()) == [partial.name.removesuffix(".in_progress")]
    assert (folder / partial.name.removesuffix(".in_progress")).read_bytes() == body
    renames = ftps_server.commands_named("RNTO")
    assert [c.code for c in renames] == [250]
