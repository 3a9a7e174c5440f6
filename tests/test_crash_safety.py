"""Crash safety: exportmon killed (SIGKILL) at named crash points, then restarted, loses
nothing and does nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from fetchkit import config_data, export_mail, imap_table, write_config

from cli import run_cli
from exportmon.crashpoints import ENVIRONMENT
from exportmon.ledger import Ledger

POLL = """
import sys
from exportmon.config.load import load_monitor
from exportmon.ledger import Ledger
from exportmon.mail.source import open_source

monitor = load_monitor(sys.argv[1])
monitor.dirs.create()
with Ledger.open(monitor.dirs.ledger) as ledger, open_source(monitor) as source:
    source.poll(ledger)
"""


def poll_in_child(config, kill_at: str | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != ENVIRONMENT}
    if kill_at:
        env[ENVIRONMENT] = kill_at
    command = [sys.executable, "-c", POLL, str(config)]
    return subprocess.run(command, env=env, check=False).returncode


def test_a_mail_is_never_recorded_with_only_some_of_its_exports(tmp_path, mail_user):
    attachments = [("777-1-cis.csv", b"id\n1\n"), ("777-1-slas.csv", b"id\n2\n")]
    mail_user.append(export_mail(None, token="tok-two", attachments=attachments))
    # Kill the poll at every ledger commit in turn; a second poll must then record both
    # exports (before the fix, a kill between the two left the second one out for good).
    for commit in range(1, 40):
        root = tmp_path / f"state-{commit}"
        config = write_config(tmp_path, config_data(root, imap_table(mail_user)), f"m{commit}")
        code = poll_in_child(config, f"ledger.commit:{commit}")
        if code == 0:
            break
        assert code == -signal.SIGKILL
        with Ledger.open(root / "ledger.sqlite") as ledger:
            assert {len(ledger.exports(mail_id=m.id)) for m in ledger.mails()} <= {0, 2}
        assert poll_in_child(config) == 0
        with Ledger.open(root / "ledger.sqlite") as ledger:
            assert sorted(e.file_name for e in ledger.exports()) == [n for n, _ in attachments]
    else:
        raise AssertionError("the poll was killed at every one of 39 commits")
    assert commit > 3  # the loop did reach the commits of the intake


def ftp_monitor(tmp_path, mail_user, ftps_server, tls_ca, **deliver):
    """A monitor delivering to the FTPS fixture only; returns (config, env)."""
    data = config_data(
        tmp_path / "state",
        imap_table(mail_user),
        ca_file=tls_ca.ca_file,
        retry_after="1s",
        deliver={
            "ftp_url": f"ftps://127.0.0.1:{ftps_server.port}",
            "ftp_dir": "in",
            "ftp_user": ftps_server.user,
            "ftp_password_env": "FTP_PASS",
            "ftp_ca_file": str(tls_ca.ca_file),
            "ftp_retries": 0,
            **deliver,
        },
    )
    return write_config(tmp_path / "monitors", data), {"FTP_PASS": ftps_server.password}


def test_an_interrupted_ftp_delivery_is_checked_by_its_bytes_not_only_its_size(
    tmp_path, mail_user, https_server, ftps_server, tls_ca
):
    config, env = ftp_monitor(tmp_path, mail_user, ftps_server, tls_ca)
    mail_user.append(export_mail(https_server.add("/1/daily.csv", b"id\n111\n"), token="t1"))
    assert run_cli("-c", config, "run", "--once", env=env).code == 0
    # The next day's file has the same name and the same size, other bytes.
    mail_user.append(export_mail(https_server.add("/2/daily.csv", b"id\n222\n"), token="t2"))
    killed = run_cli("-c", config, "run", "--once", env={**env, ENVIRONMENT: "deliver.started"})
    assert killed.code == -signal.SIGKILL
    finished = run_cli("-c", config, "run", "--once", env=env)
    assert finished.code == 0, finished.stderr
    # Before: the old file's size matched, so the interrupted delivery counted as done.
    assert (ftps_server.home / "in" / "daily.csv").read_bytes() == b"id\n222\n"
    assert len(mail_user.list_uids("Archive")) == 2
