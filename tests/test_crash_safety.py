"""Crash safety: `exportmon run --once` killed (SIGKILL) at random moments and at named
crash points, then restarted, delivers every export exactly once.

The quick version of the full-size run (``python -m tests.stress crash --runs 200
--mails 36``; the world and its invariants are described in tests/stress/crash.py),
plus one test for each moment at which a kill once did harm.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from fetchkit import config_data, export_mail, ftp_monitor, imap_table, write_config
from stress.crash import CrashWorld, Figures, crash_loop

from cli import run_cli
from exportmon.crashpoints import ENVIRONMENT
from exportmon.ledger import Ledger


@pytest.fixture
def world(tmp_path, mail_user, https_server, ftps_server, tls_ca):
    return CrashWorld(tmp_path / "world", mail_user, https_server, ftps_server, tls_ca, seed=7)


@pytest.mark.slow
def test_killed_runs_deliver_every_export_exactly_once(world):
    figures = crash_loop(world, kills=20, mails=8, seed=7, report=print)
    print(figures.table())
    print(figures.details())
    assert figures.problems == []
    assert figures.kills >= 20 and figures.mails >= 8
    assert figures.lost == figures.duplicated == figures.partial == 0
    assert figures.archived == figures.export_mails


def killed_then_finished(world: CrashWorld, kill_at: str, mails: int = 1) -> Figures:
    """Append ``mails`` mails, run once killed at ``kill_at``, run again to the end."""
    world.add_mails(mails)
    killed = world.run(kill_at=kill_at)
    assert killed.killed == "point", killed.log
    finished = world.run()
    assert finished.code == 0, finished.log
    figures = Figures()
    assert world.check(figures, final=True) == []
    return figures


def test_a_kill_right_after_the_last_delivery_still_archives_the_mail(world):
    # The export was recorded delivered, its mail not yet: it stayed "new" for ever.
    killed_then_finished(world, "export.delivered")
    with Ledger.open(world.state / "ledger.sqlite") as ledger:
        assert [m.state for m in ledger.mails()] == ["archived"]


def test_a_kill_right_after_the_archive_move_records_the_mail_archived(world):
    # The mail was gone from the inbox, so it was recorded as "kept", not "archived".
    killed_then_finished(world, "archive.moved")
    with Ledger.open(world.state / "ledger.sqlite") as ledger:
        assert [m.state for m in ledger.mails()] == ["archived"]
    assert "already in Archive (moved before an interruption)" in world.run_logs()[-1]


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


@pytest.fixture
def sftp_world(tmp_path, mail_user, https_server, ftps_server, tls_ca, sshd):
    return CrashWorld(
        tmp_path / "world", mail_user, https_server, ftps_server, tls_ca, seed=13, sftp=sshd
    )


@pytest.mark.parametrize("point", ["sftp.uploaded:1", "deliver.placed:4", "deliver.started:4"])
def test_a_kill_during_an_sftp_upload_or_rename_loses_nothing_and_repeats_nothing(
    sftp_world, point
):
    # The folder, FTPS and the archive copy come first: the fourth deliver.* point of
    # the first file is its SFTP delivery.
    killed_then_finished(sftp_world, point, mails=2)


@pytest.mark.slow
def test_killed_runs_with_an_sftp_destination_deliver_every_file_once(sftp_world):
    figures = crash_loop(sftp_world, kills=12, mails=5, seed=13, report=print)
    print(figures.table())
    assert figures.problems == []
    assert figures.lost == figures.duplicated == figures.partial == 0
    assert figures.archived == figures.export_mails
