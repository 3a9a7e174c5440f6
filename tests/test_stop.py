"""SIGTERM during a download's back-off, a Retry-After wait or a stalled transfer ends
`exportmon run --once` within about two seconds, and the next run finishes the work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest
from fetchkit import config_data, export_mail, imap_table, write_config
from watching import wait_for

from cli import run_cli

#: How soon after SIGTERM the work must have stopped (its last log line).
STOP_WITHIN = 1.0
#: How soon after SIGTERM the process must have ended: well under two seconds on an
#: idle machine; the margin is for a heavily loaded one, where Python's own exit
#: (freeing every module) waits for CPU time.
EXIT_WITHIN = 10.0


class RunOnce:
    """``exportmon --log-format json -c CONFIG run --once`` as a child process."""

    def __init__(self, config: Path) -> None:
        handle, name = tempfile.mkstemp(prefix="exportmon-stop-", suffix=".log")
        self.log = Path(name)
        command = [sys.executable, "-m", "exportmon", "--log-format", "json", "-c", str(config)]
        with os.fdopen(handle, "wb") as stderr:
            self.process = subprocess.Popen(
                [*command, "run", "--once"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    def stop(self) -> tuple[float, float, str]:
        """SIGTERM; (seconds until the work said it stopped, until the exit, stderr)."""
        sent = time.time()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError("did not stop: " + self.output()) from None
        ended = time.time()
        text = self.output()
        self.log.unlink()
        assert "Traceback" not in text, text
        # The last line the process logged: it had stopped working by then.
        stamps = [
            datetime.fromisoformat(r["time"]).timestamp()
            for r in (json.loads(line) for line in text.splitlines() if line.startswith("{"))
        ]
        stopped = [stamps[-1]]
        return stopped[0] - sent, ended - sent, text

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.unlink(missing_ok=True)


@pytest.fixture
def run_once():
    started: list[RunOnce] = []

    def start(config: Path) -> RunOnce:
        started.append(RunOnce(config))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def assert_stopped_soon(what: str, timing: tuple[float, float, str]) -> str:
    stopped, ended, err = timing
    print(f"SIGTERM {what}: work stopped after {stopped:.2f} s, process ended after {ended:.2f} s")
    assert stopped < STOP_WITHIN, err
    assert ended < EXIT_WITHIN, err
    assert "failed at download" not in err  # a stop is not a failure
    return err


@pytest.fixture
def monitor_config(tmp_path, mail_user, tls_ca):
    """A monitor config for the fixture mailbox delivering to ``tmp_path/delivered``."""
    data = config_data(
        tmp_path / "state",
        imap_table(mail_user),
        ca_file=tls_ca.ca_file,
        deliver={"to": str(tmp_path / "delivered")},
        download={"retries": 5},
    )
    return write_config(tmp_path / "monitors", data)


def part_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


def csv_body(rows: int) -> bytes:
    return b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * 7919 % 100003) for i in range(rows))


def test_sigterm_during_a_retry_after_wait_stops_at_once_and_the_next_run_delivers(
    run_once, monitor_config, mail_user, https_server, tmp_path
):
    url = https_server.add(
        "/e/late.csv",
        b"id\n1\n",
        fail_times=1,
        fail_status=503,
        fail_headers={"Retry-After": "60"},
    )
    mail_user.append(export_mail(url, token="tok-late"))
    process = run_once(monitor_config)
    wait_for(lambda: "trying again in 60.0s" in process.output(), timeout=60)
    err = assert_stopped_soon("during a 60 s Retry-After wait", process.stop())
    assert "SIGTERM received" in err
    assert not (tmp_path / "delivered" / "late.csv").exists()

    again = run_cli("-c", monitor_config, "run", "--once")
    assert again.code == 0, again.stderr
    assert (tmp_path / "delivered" / "late.csv").read_bytes() == b"id\n1\n"
    assert len(mail_user.list_uids("Archive")) == 1


def test_sigterm_during_a_back_off_after_a_broken_transfer_keeps_the_part_for_the_next_run(
    run_once, monitor_config, mail_user, https_server, tmp_path
):
    body = csv_body(300_000)
    # Cut after 1 MB, then 503s: the back-off grows 1, 2, 4, 8 s; SIGTERM comes in the 8 s.
    url = https_server.add(
        "/e/big.csv", body, drop_after=1_000_000, fail_times=10, fail_after_drops=True
    )
    mail_user.append(export_mail(url, token="tok-big"))
    process = run_once(monitor_config)
    wait_for(lambda: "(attempt 5 of 6)" in process.output(), timeout=60)
    assert_stopped_soon("during a download back-off", process.stop())
    (part,) = part_files(tmp_path / "state")
    assert part.stat().st_size == 1_000_000

    https_server.add("/e/big.csv", body)
    again = run_cli("-c", monitor_config, "run", "--once")
    assert again.code == 0, again.stderr
    requests = https_server.requests_for("/e/big.csv")
    assert requests[-1].range == "bytes=1000000-"
    assert len(mail_user.list_uids("Archive")) == 1
    assert part_files(tmp_path / "state") == []


def test_sigterm_during_a_stalled_transfer_stops_at_once(
    run_once, monitor_config, mail_user, https_server, tmp_path
):
    body = csv_body(200_000)
    url = https_server.add("/e/stall.csv", body, stall=True, stall_after=500_000)
    mail_user.append(export_mail(url, token="tok-stall"))
    process = run_once(monitor_config)
    wait_for(lambda: https_server.requests_for("/e/stall.csv"), timeout=60)
    wait_for(lambda: part_files(tmp_path / "state"), timeout=30)
    assert_stopped_soon("during a stalled transfer", process.stop())
    assert part_files(tmp_path / "state")

    https_server.add("/e/stall.csv", body)
    again = run_cli("-c", monitor_config, "run", "--once")
    assert again.code == 0, again.stderr
    assert (tmp_path / "delivered" / "stall.csv").read_bytes() == body
    assert len(mail_user.list_uids("Archive")) == 1
