"""`exportmon fetch` run as a user runs it, against the real Dovecot and HTTPS server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fetchkit import config_data, deliver_everything, export_mail, imap_table, write_config

from cli import run_cli
from exportmon.ledger import Ledger
from exportmon.lock import monitor_lock


@pytest.fixture
def config(tmp_path, mail_user, tls_ca):
    def write(**top):
        source = {**imap_table(mail_user), **top.pop("source", {})}
        source = {k: v for k, v in source.items() if v is not None}  # None: leave the key out
        data = config_data(tmp_path / "state", source, ca_file=tls_ca.ca_file, **top)
        return write_config(tmp_path / "monitors", data)

    return write


def test_fetch_prints_each_downloaded_path_once(config, mail_user, https_server, tmp_path):
    mail_user.append(export_mail(https_server.add("/e/a.zip", b"zip-a"), token="tok-a"))
    mail_user.append(export_mail(https_server.add("/e/b.csv", b"csv-b"), token="tok-b"))
    path = config()
    result = run_cli("-c", path, "fetch")
    assert result.code == 0, result.stderr
    printed = result.stdout.splitlines()
    downloads = tmp_path / "state" / "downloads" / "777"
    assert printed == [str(downloads / "1-tok-a" / "a.zip"), str(downloads / "2-tok-b" / "b.csv")]
    assert Path(printed[0]).read_bytes() == b"zip-a"
    again = run_cli("-c", path, "fetch")
    assert again.code == 0 and again.stdout == ""
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as ledger:
        runs = ledger.runs()
        assert [r.command for r in runs] == ["fetch", "fetch"] and runs[0].status == "ok"
    assert (tmp_path / "state" / "log" / "export_monitor.777.log").read_text()


def test_json_and_null_output(config, mail_user, https_server):
    mail_user.append(export_mail(https_server.add("/e/a.zip", b"zip-a"), token="tok-a"))
    path = config()
    result = run_cli("-c", path, "fetch", "--json")
    assert result.code == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["path"].endswith("/777/1-tok-a/a.zip")
    assert {k: record[k] for k in ("monitor", "export_id", "token", "file", "bytes")} == {
        "monitor": "777",
        "export_id": 777,
        "token": "tok-a",
        "file": "a.zip",
        "bytes": 5,
    }
    assert len(record["sha256"]) == 64 and record["source"].startswith("imaps://")
    mail_user.append(export_mail(https_server.add("/e/b.zip", b"b"), token="tok-b"))
    result = run_cli("-c", path, "fetch", "-0")
    assert result.stdout.endswith("/777/2-tok-b/b.zip\0") and result.stdout.count("\0") == 1
    assert run_cli("-c", path, "fetch", "-0", "--json").code == 2


def test_a_failure_is_one_line_and_exit_1_while_the_rest_is_done(config, mail_user, https_server):
    mail_user.append(export_mail(https_server.add("/e/gone.zip", b"", status=404), token="t1"))
    mail_user.append(export_mail(https_server.add("/e/ok.zip", b"ok"), token="t2"))
    path = config()
    result = run_cli("-c", path, "fetch")
    assert result.code == 1
    assert result.stdout.strip().endswith("/777/2-t2/ok.zip")
    errors = [line for line in result.stderr.splitlines() if "404" in line]
    assert len(errors) == 1 and "re-run the export" in errors[0]
    again = run_cli("-c", path, "fetch")
    assert again.code == 0 and "404" not in again.stderr
    retried = run_cli("-c", path, "fetch", "--retry-failed")
    assert retried.code == 1 and "404" in retried.stderr


def test_dry_run_tells_and_changes_nothing(config, mail_user, https_server, tmp_path):
    uid = mail_user.append(export_mail(https_server.add("/e/a.zip", b"a"), token="tok-a"))
    path = config()
    result = run_cli("-c", path, "fetch", "--dry-run")
    assert result.code == 0 and result.stdout == ""
    assert "[777] would download a.zip for export 777 from https://127.0.0.1" in result.stderr
    assert not (tmp_path / "state").exists() and https_server.requests == []
    assert mail_user.list_uids("INBOX") == [uid]


def test_archive_after_delivery_through_the_cli(config, mail_user, https_server, tmp_path):
    uid = mail_user.append(export_mail(https_server.add("/e/a.zip", b"a"), token="tok-a"))
    path = config()
    assert run_cli("-c", path, "fetch").code == 0
    assert run_cli("-c", path, "fetch").code == 0
    assert mail_user.list_uids("INBOX") == [uid]
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as ledger:
        deliver_everything(ledger)
    dry = run_cli("-c", path, "fetch", "--dry-run")
    assert "would move mail 'Export finished - Scheduled export'" in dry.stderr
    assert run_cli("-c", path, "fetch", "--no-archive").code == 0
    assert mail_user.list_uids("INBOX") == [uid]
    assert run_cli("-c", path, "fetch").code == 0
    assert mail_user.list_uids("INBOX") == [] and len(mail_user.list_uids("Archive")) == 1


def test_eml_files_are_processed_as_if_they_had_arrived(
    config, https_server, tmp_path, gem_fixtures
):
    saved = tmp_path / "saved.eml"
    saved.write_bytes(export_mail(https_server.add("/e/s.zip", b"s"), token="tok-s"))
    path = config()
    result = run_cli("-c", path, "fetch", "--eml", saved)
    assert result.code == 0 and result.stdout.strip().endswith("/777/1-tok-s/s.zip")
    assert run_cli("-c", path, "fetch", "--eml", saved).stdout == ""
    gem = run_cli("-c", path, "fetch", "--eml", gem_fixtures / "export_finished_1.eml")
    # The gem's mail is for export 2, not monitored here: left alone, nothing fails.
    assert gem.code == 0 and gem.stdout == ""
    assert run_cli("-c", path, "fetch", "--eml", tmp_path / "missing.eml").code == 2


def test_the_gem_export_mail_reports_its_expired_link(config, gem_fixtures):
    path = config(ids=[2])
    result = run_cli("-c", path, "fetch", "--eml", gem_fixtures / "export_finished_1.eml")
    assert result.code == 1
    (line,) = [line for line in result.stderr.splitlines() if "expired" in line]
    assert "download link expired on 2013-09-13" in line
    assert "ask the sender to re-run the export" in line
    assert "du%2B23ZUsrLng" not in result.stderr


def test_connection_problems_are_one_line(config, mail_user, tls_ca):
    path = config(source={"ca_file": str(tls_ca.wrong_ca_file)})
    result = run_cli("-c", path, "fetch")
    assert result.code == 1
    assert f"127.0.0.1:{mail_user.ports.imaps}: certificate not trusted" in result.stderr
    assert "set source.ca_file" in result.stderr
    path = config(source={"password": "wrong-password-123"})
    result = run_cli("-c", path, "fetch")
    assert result.code == 1 and "refused the login" in result.stderr
    assert "wrong-password-123" not in result.output


def test_plain_imap_warns(config, mail_user, https_server):
    mail_user.append(export_mail(https_server.add("/e/a.zip", b"a"), token="tok-a"))
    path = config(source={"security": "plain", "port": mail_user.ports.imap})
    result = run_cli("-c", path, "fetch")
    assert result.code == 0 and result.stdout.strip().endswith("a.zip")
    assert "unencrypted" in result.stderr


def test_a_config_error_is_exit_2(tmp_path):
    path = write_config(tmp_path, {"ids": [777], "source": {"kind": "imap"}})
    result = run_cli("-c", path, "fetch")
    assert result.code == 2 and "source.host" in result.stderr


def test_a_password_that_cannot_be_had_is_a_config_error(config):
    path = config(source={"password": None, "password_env": "EXPORTMON_TEST_UNSET_PASSWORD"})
    result = run_cli("-c", path, "fetch")
    assert result.code == 2
    assert "environment variable EXPORTMON_TEST_UNSET_PASSWORD is not set" in result.stderr


def test_fetch_refuses_while_another_process_holds_the_monitor(config, tmp_path):
    path = config()
    with monitor_lock(tmp_path / "state" / "pids", "777"):
        result = run_cli("-c", path, "fetch")
        assert run_cli("-c", path, "fetch", "--dry-run").code == 0
    assert result.code == 2 and f"monitor '777' is already running (pid {os.getpid()})" in (
        result.stderr
    )
    assert run_cli("-c", path, "fetch").code == 0
