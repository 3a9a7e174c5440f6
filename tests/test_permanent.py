"""Permanent failures are recognised as permanent (one ERROR, not retried, not scheduled
again), and a failed export whose downloaded files were removed is downloaded again
by ``--retry-failed`` when its link may still work, or fails with one line saying
what to do. Through ``run --once`` against real Dovecot and HTTPS servers."""

from __future__ import annotations

import shutil
import time

import pytest
from fetchkit import config_data, export_mail, imap_table, write_config

from cli import run_cli
from exportmon.download import DownloadSettings, download
from exportmon.errors import LinkRefused


@pytest.fixture
def monitor_config(tmp_path, mail_user, tls_ca):
    def write(deliver_to=None):
        data = config_data(
            tmp_path / "state",
            imap_table(mail_user),
            ca_file=tls_ca.ca_file,
            deliver={"to": str(deliver_to or tmp_path / "delivered")},
            download={"retries": 3},
            retry_after="1s",
        )
        return write_config(tmp_path / "monitors", data)

    return write


@pytest.mark.parametrize(
    "link",
    [
        "https://127.0.0.1/exports/a\x01b.csv",
        "https://127.0.0.1/exports/a b.csv",
        "https://127.0.0.1/exports/\x1b[2Ja.csv",
        "https://[::1/x.csv",
        "https://127.0.0.1:99999/x.csv",
        "file:///etc/passwd",
        "https:///x.csv",
    ],
)
def test_links_that_can_never_work_are_refused_before_any_request(link, tmp_path):
    slept = []
    with pytest.raises(LinkRefused) as raised:
        download(link, tmp_path, settings=DownloadSettings(retries=3), sleep=slept.append)
    assert not raised.value.retryable and slept == []
    assert "\x01" not in raised.value.one_line() and "\x1b" not in raised.value.one_line()


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("ERROR")]


def test_a_404_is_one_error_and_never_retried_by_itself(
    monitor_config, mail_user, https_server, tmp_path
):
    config = monitor_config()
    url = https_server.url("/e/missing.csv")
    mail_user.append(export_mail(url, token="tok-404"))
    first = run_cli("-c", config, "run", "--once")
    assert first.code == 1
    (line,) = [line for line in error_lines(first.stderr) if "missing.csv" in line]
    assert "404" in line and "trying again" not in first.stderr
    assert len(https_server.requests_for("/e/missing.csv")) == 1

    time.sleep(1.2)  # past retry_after: a retryable failure would be tried again now
    second = run_cli("-c", config, "run", "--once")
    assert len(https_server.requests_for("/e/missing.csv")) == 1
    assert "missing.csv" not in second.stderr

    # Asked for, it is tried again: an ERROR again, never "still failing" at INFO.
    third = run_cli("-c", config, "run", "--once", "--retry-failed")
    assert len(https_server.requests_for("/e/missing.csv")) == 2
    assert [line for line in error_lines(third.stderr) if "404" in line]
    assert "still failing" not in third.stderr


def test_retry_failed_downloads_again_when_the_download_was_removed(
    monitor_config, mail_user, https_server, tmp_path
):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the destination folder should be")
    config = monitor_config(deliver_to=blocked)
    url = https_server.add("/e/again.csv", b"id\n1\n2\n")
    mail_user.append(export_mail(url, token="tok-again"))
    first = run_cli("-c", config, "run", "--once")
    assert first.code == 1 and "failed at deliver" in first.stderr

    shutil.rmtree(tmp_path / "state" / "downloads")
    blocked.unlink()
    again = run_cli("-c", config, "run", "--once", "--retry-failed")
    assert again.code == 0, again.stderr
    assert "downloading it again" in again.stderr
    assert (blocked / "again.csv").read_bytes() == b"id\n1\n2\n"
    assert len(https_server.requests_for("/e/again.csv")) == 2
    assert len(mail_user.list_uids("Archive")) == 1


def test_a_removed_attachment_is_one_error_saying_what_to_do(monitor_config, mail_user, tmp_path):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("x")
    config = monitor_config(deliver_to=blocked)
    mail_user.append(export_mail(None, token="tok-att", attachments=[("att.csv", b"id\n1\n")]))
    first = run_cli("-c", config, "run", "--once")
    assert first.code == 1 and "failed at deliver" in first.stderr

    shutil.rmtree(tmp_path / "state" / "downloads")
    for _ in range(2):
        retried = run_cli("-c", config, "run", "--once", "--retry-failed")
        assert retried.code == 1
        (line,) = error_lines(retried.stderr)
        assert "att.csv is gone" in line and "--eml" in line, retried.stderr
        assert "still failing" not in retried.stderr
