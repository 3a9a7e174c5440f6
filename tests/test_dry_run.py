"""Dry runs apply the real run's checks before the first byte and show the whole plan.

Against real Dovecot and HTTPS servers, as a user runs `fetch --dry-run` and
`run --once --dry-run`: a link the run would refuse (loopback host not allowed,
expired, untrusted certificate) is "would refuse ... because", never "would
download"; a mailbox that cannot be read is one plan line, not an ERROR followed
by "nothing to do"; the plan names the unpack, rewrite, each destination and the
archive move; nothing changes on disk or in the mailbox.
"""

from __future__ import annotations

from fetchkit import config_data, export_mail, imap_table, write_config

from cli import run_cli
from exportmon.config.load import load_monitor


def _config(tmp_path, user, *, ca_file=None, allow_hosts=("127.0.0.1",), **top):
    data = config_data(
        tmp_path / "state",
        imap_table(user),
        ca_file=ca_file,
        allow_hosts=allow_hosts,
        deliver={"to": str(tmp_path / "out"), "ftp_url": "ftps://ftp.example.com:21"},
        **top,
    )
    return write_config(tmp_path / "monitors", data)


def test_run_dry_run_shows_every_step_and_changes_nothing(
    tmp_path, mail_user, https_server, tls_ca
):
    link = https_server.add("/e/export.zip", b"PK\x05\x06" + b"\0" * 18)
    mail_user.append(export_mail(link, token="t1"))
    config = _config(tmp_path, mail_user, ca_file=tls_ca.ca_file, csv={"col_sep": "|"})
    result = run_cli("-c", config, "run", "--once", "--dry-run")
    assert result.code == 0, result.output
    text = result.stderr
    assert "would download export.zip for export 777" in text
    assert "then unpack the zip" in text
    assert "then rewrite its CSV files (col_sep '|'" in text
    assert str(tmp_path / "out") in text and "ftp.example.com" in text
    assert "then move the mail to 'Archive' once export 777 is delivered" in text
    assert "ERROR" not in text
    assert not load_monitor(config).dirs.root.exists()
    assert len(mail_user.list_uids("INBOX")) == 1


def test_dry_run_refuses_what_the_run_refuses(tmp_path, mail_user, https_server, tls_ca):
    loopback = https_server.add("/e/a.csv", b"a\n")  # 127.0.0.1, not in allow_hosts here
    mail_user.append(export_mail(loopback, token="loop"))
    expired = https_server.add("/e/b.csv", b"b\n") + "?X-Amz-Date=20200101T000000Z&X-Amz-Expires=60"
    mail_user.append(export_mail(expired, token="old", export_id=777))
    config = _config(tmp_path, mail_user, ca_file=tls_ca.ca_file, allow_hosts=())
    result = run_cli("-c", config, "fetch", "--dry-run")
    text = result.stderr
    assert "would refuse export 777: refused to download from 127.0.0.1" in text, text
    assert "allow_hosts" in text
    assert "would refuse export 777: download link expired" in text, text
    assert "would download" not in text
    assert "ERROR" not in text


def test_dry_run_checks_the_certificate(tmp_path, mail_user, https_server):
    link = https_server.add("/e/c.csv", b"c\n")
    mail_user.append(export_mail(link, token="tls"))
    config = _config(tmp_path, mail_user, ca_file=None)  # the test CA is not trusted
    result = run_cli("-c", config, "fetch", "--dry-run")
    assert "would refuse export 777" in result.stderr and "not trusted" in result.stderr
    assert "ERROR" not in result.stderr and "would download" not in result.stderr


def test_a_mailbox_that_cannot_be_read_is_in_the_plan_not_an_error(tmp_path, mail_user):
    data = config_data(
        tmp_path / "state",
        imap_table(mail_user, ca_file=""),  # the mail server's CA not trusted
        deliver={"to": str(tmp_path / "out")},
    )
    config = write_config(tmp_path / "monitors", data)
    result = run_cli("-c", config, "fetch", "--dry-run")
    assert result.code == 1
    assert "would stop:" in result.stderr and "not trusted" in result.stderr, result.stderr
    assert "ERROR" not in result.stderr and "nothing to do" not in result.stderr
