"""Ctrl-C and SIGTERM, as a user at a terminal gives them to `exportmon run`.

A first Ctrl-C stops at the next safe point within about a second, even in the
middle of a long CSV rewrite, exits 130 and leaves the export where it was, so
the next run redoes the step; a second Ctrl-C stops at once. Real Dovecot and
HTTPS servers; the rewrite is made long with a value hook that sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fetchkit import config_data, export_mail, imap_table, write_config
from watching import Watcher, wait_for

from cli import run_cli
from exportmon.config.load import load_monitor
from exportmon.ledger import Ledger

ROWS = 20_000
HOOK = """\
import os, time
from pathlib import Path

def hook(value):
    delay = float(os.environ.get("SLOW_HOOK", "0"))
    if delay:
        Path(os.environ["HOOK_STARTED"]).touch()
        time.sleep(delay)
    return value
"""


@pytest.fixture
def slow_monitor(tmp_path, mail_user, https_server, tls_ca):
    """A monitor whose one export is a CSV rewritten through a value hook."""
    body = "id,name\n" + "".join(f"{i},name {i}\n" for i in range(ROWS))
    link = https_server.add("/e/big.csv", body.encode())
    mail_user.append(export_mail(link, token="big"))
    delivered = tmp_path / "delivered"
    data = config_data(
        tmp_path / "state",
        imap_table(mail_user),
        ca_file=tls_ca.ca_file,
        deliver={"to": str(delivered)},
        unzip=True,
        csv={"col_sep": "|", "value_hook": "slowhook:hook"},
    )
    config = write_config(tmp_path / "monitors", data)
    (config.parent / "slowhook.py").write_text(HOOK)
    return config, delivered


def _start(config: Path, marker: Path, delay: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SLOW_HOOK": str(delay), "HOOK_STARTED": str(marker)}
    return subprocess.Popen(
        [sys.executable, "-m", "exportmon", "-c", str(config), "run", "--once"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def _export(config: Path):
    with Ledger.open(load_monitor(config).dirs.ledger) as ledger:
        (export,) = ledger.exports()
        return export


def test_ctrl_c_stops_a_long_rewrite_within_a_second_and_the_next_run_redoes_it(
    slow_monitor, mail_user, tmp_path
):
    config, delivered = slow_monitor
    marker = tmp_path / "hook-started"
    process = _start(config, marker, 0.0005)  # about 20 s of rewriting
    wait_for(marker.exists, timeout=60)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    took = time.monotonic() - sent
    stderr = err.decode()
    assert process.returncode == 130, stderr
    assert took < 3.0, f"{took:.1f} s to stop; {stderr}"
    assert "SIGINT received: stopping at the next safe point" in stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr
    export = _export(config)
    assert export.state == "downloaded" and export.error is None
    assert not delivered.exists() or not any(delivered.rglob("*.csv"))
    assert len(mail_user.list_uids("INBOX")) == 1  # nothing archived

    again = run_cli("-c", config, "run", "--once")
    assert again.code == 0, again.output
    assert _export(config).state == "delivered"
    (output,) = delivered.rglob("*.csv")
    assert output.read_text().count("\n") == ROWS + 1
    assert mail_user.list_uids("INBOX") == [] and len(mail_user.list_uids("Archive")) == 1


def test_a_second_ctrl_c_stops_at_once(slow_monitor, tmp_path):
    config, _ = slow_monitor
    marker = tmp_path / "hook-started"
    process = _start(config, marker, 30)  # each value takes 30 s: no safe point soon
    wait_for(marker.exists, timeout=60)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    assert time.monotonic() - sent < 2.0
    assert "stopped at once" in err.decode()
    assert _export(config).state == "downloaded"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_watching_ends_130_on_ctrl_c_and_0_on_sigterm(slow_monitor, sig, code):
    config, _ = slow_monitor
    watcher = Watcher(config)
    wait_for(lambda: "waiting for new mail" in _log(config), timeout=60)
    exit_code, err = watcher.stop(sig)
    assert exit_code == code, err


def _log(config: Path) -> str:
    logs = list(load_monitor(config).dirs.log.glob("*.log"))
    return logs[0].read_text() if logs else ""
