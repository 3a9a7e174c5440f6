"""fetch() end to end against the real Dovecot and HTTPS server: the "done means" list."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fetchkit import config_data, deliver_everything, export_mail, imap_table, monitor, plain_mail

from exportmon.actions.fetch import archive_mails, download_export, fetch
from exportmon.ledger import Ledger
from exportmon.mail.imap import ImapSource
from exportmon.mail.source import open_source


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as opened:
        yield opened


@pytest.fixture
def make(tmp_path, mail_user, tls_ca):
    def make_monitor(**top):
        source = {**imap_table(mail_user), **top.pop("source", {})}
        data = config_data(tmp_path / "state", source, ca_file=tls_ca.ca_file, **top)
        return monitor(data, tmp_path / "777.toml")

    return make_monitor


def test_a_new_export_is_downloaded_once(make, mail_user, https_server, ledger):
    body = os.urandom(300_000)
    url = https_server.add("/exports/777/20261123-people.zip", body)
    mail_user.append(export_mail(url, token="tok-1"))
    config = make()
    announced = []
    result = fetch(config, ledger, on_downloaded=announced.append)
    assert not result.failed
    (export,) = result.downloaded
    assert announced == [export]
    path = config.dirs.downloads / "777" / "1-tok-1" / "20261123-people.zip"
    assert export.download_path == str(path) and path.read_bytes() == body
    assert export.state == "downloaded" and export.bytes == len(body) and export.sha256
    again = fetch(config, ledger)
    assert again.downloaded == [] and again.mails == [] and not again.failed
    assert len(https_server.requests_for("/exports/777/20261123-people.zip")) == 1


def test_the_same_file_name_from_two_exports_is_kept_twice(make, mail_user, https_server, ledger):
    first = https_server.add("/a/export.zip", b"first")
    second = https_server.add("/b/export.zip", b"second")
    mail_user.append(export_mail(first, token="tok-1"))
    mail_user.append(export_mail(second, token="tok-2"))
    result = fetch(make(), ledger)
    paths = [e.download_path for e in result.downloaded]
    assert len(set(paths)) == 2
    assert [Path(p).read_bytes() for p in paths] == [b"first", b"second"]


def test_failures_are_recorded_once_and_the_others_go_on(make, mail_user, https_server, ledger):
    expired = int((datetime.now(timezone.utc) - timedelta(days=3)).timestamp())
    gone = https_server.add("/gone.zip", b"", status=404)
    good = https_server.add("/good.zip", b"good")
    old = https_server.add(f"/old.zip?Signature=s&Expires={expired}", b"old")
    mail_user.append(export_mail(gone, token="tok-gone"))
    mail_user.append(export_mail(old, token="tok-old"))
    mail_user.append(export_mail(good, token="tok-good"))
    config = make()
    result = fetch(config, ledger)
    assert [e.token for e in result.downloaded] == ["tok-good"]
    failures = {f.export.token: f.message for f in result.failures}
    assert "404" in failures["tok-gone"]
    assert "expired" in failures["tok-old"] and "re-run the export" in failures["tok-old"]
    assert "Signature=s" not in failures["tok-old"]
    for token in ("tok-gone", "tok-old"):
        export = ledger.find_export(token)
        assert export.state == "new" and export.error and export.error_step == "download"
        assert export.retry_at is None  # permanent: only with --retry-failed
    # The failed mails stay in the mailbox; nothing is retried in a loop.
    assert len(mail_user.list_uids("INBOX")) == 3
    again = fetch(config, ledger)
    assert not again.failed and again.downloaded == []
    assert len(https_server.requests_for("/gone.zip")) == 1
    assert https_server.requests_for("/old.zip") == []
    retried = fetch(config, ledger, retry_failed=True)
    assert {f.export.token for f in retried.failures} == {"tok-gone", "tok-old"}
    assert len(https_server.requests_for("/gone.zip")) == 2
    assert ledger.find_export("tok-gone").attempts == 2


def test_a_retryable_failure_waits_for_retry_after(make, mail_user, https_server, ledger):
    url = https_server.add("/flaky.zip", b"data", fail_times=3, fail_status=503)
    mail_user.append(export_mail(url, token="tok-f"))
    config = make(retry_after="1h", download={"retries": 0})
    result = fetch(config, ledger)
    assert result.failed and "503" in result.failures[0].message
    export = ledger.find_export("tok-f")
    assert export.retry_at is not None and export.retry_at > export.error_at
    fetch(config, ledger)
    assert len(https_server.requests_for("/flaky.zip")) == 1
    config.retry_after = 0.0
    ledger.fail_export(export.id, "download", export.error, export.error_at)  # due now
    fetch(config, ledger)
    assert len(https_server.requests_for("/flaky.zip")) == 2


def test_a_broken_connection_is_resumed(make, mail_user, https_server, ledger):
    body = os.urandom(1_500_000)
    url = https_server.add("/big.zip", body, drop_after=600_000)
    mail_user.append(export_mail(url, token="tok-big"))
    config = make(download={"retries": 2})
    (export,) = fetch(config, ledger).downloaded
    assert Path(export.download_path).read_bytes() == body
    assert [r.range for r in https_server.requests_for("/big.zip")] == [None, "bytes=600000-"]


def test_a_link_to_a_private_address_is_refused(make, mail_user, https_server, ledger):
    url = https_server.add("/x.zip", b"x")
    mail_user.append(export_mail(url, token="tok-x"))
    mail_user.append(export_mail("http://169.254.169.254/latest/x.zip", token="tok-meta"))
    config = make(allow_hosts=[])
    result = fetch(config, ledger)
    messages = {f.export.token: f.message for f in result.failures}
    assert "loopback address" in messages["tok-x"] and "allow_hosts" in messages["tok-x"]
    assert "cloud metadata address" in messages["tok-meta"]
    assert https_server.requests == []


def test_non_export_mails_are_never_touched(make, mail_user, https_server, ledger):
    mail_user.append(plain_mail())
    mail_user.append(export_mail(https_server.add("/a.zip", b"a"), export_id=5, token="t5"))
    config = make(source={"search": "ALL"})
    result = fetch(config, ledger)
    assert result.downloaded == [] and not result.failed
    assert sorted(p.reason for p in result.mails) == [
        "export id 5 is not monitored",
        "not an export mail",
    ]
    deliver_everything(ledger)
    fetch(config, ledger)
    assert len(mail_user.list_uids("INBOX")) == 2
    assert all(b"\\Seen" not in f for f in mail_user.flags("INBOX").values())
    assert https_server.requests == []


def test_the_archive_move_happens_only_after_delivery(make, mail_user, https_server, ledger):
    uid = mail_user.append(export_mail(https_server.add("/a.zip", b"a"), token="tok-a"))
    config = make()
    fetch(config, ledger)
    (mail,) = ledger.mails("new")
    fetch(config, ledger)  # downloaded, not delivered: the mail stays
    assert mail_user.list_uids("INBOX") == [uid]
    deliver_everything(ledger)
    assert ledger.mail(mail.id).state == "delivered"
    result = fetch(config, ledger, archive=False)
    assert result.archived == [] and mail_user.list_uids("INBOX") == [uid]
    result = fetch(config, ledger)
    assert [m.state for m in result.archived] == ["archived"]
    assert mail_user.list_uids("INBOX") == [] and len(mail_user.list_uids("Archive")) == 1
    assert ledger.mail(mail.id).state == "archived" and ledger.mail(mail.id).archived_at


def test_archive_with_copy_and_expunge(make, mail_user, https_server, ledger):
    mail_user.append(export_mail(https_server.add("/a.zip", b"a"), token="tok-a"))
    keep = mail_user.append(plain_mail(), flags=["\\Deleted"])
    config = make()
    with ImapSource(config, use_move=False) as source:
        fetch(config, ledger, source=source)
        deliver_everything(ledger)
        assert [m.state for m in archive_mails(config, ledger, source)] == ["archived"]
    assert mail_user.list_uids("INBOX") == [keep]


def test_no_archive_folder_means_kept(make, mail_user, https_server, ledger):
    mail_user.append(export_mail(https_server.add("/a.zip", b"a"), token="tok-a"))
    config = make(source={"archive": ""})
    fetch(config, ledger)
    deliver_everything(ledger)
    assert [m.state for m in fetch(config, ledger).archived] == ["kept"]
    assert len(mail_user.list_uids("INBOX")) == 1


def test_attached_exports_are_saved_and_count_as_downloaded(make, mail_user, ledger):
    mail_user.append(
        export_mail(text="Attached.\n", token="tok-att", attachments=[("Überblick.csv", b"a,b\n")])
    )
    config = make()
    (export,) = fetch(config, ledger).downloaded
    assert export.kind == "attachment" and export.key == "tok-att/Überblick.csv"
    path = config.dirs.downloads / "777" / f"{export.id}-tok-att" / "Überblick.csv"
    assert export.download_path == str(path) and path.read_bytes() == b"a,b\n"
    assert export.bytes == 4 and export.sha256


def test_an_attachment_recorded_before_a_crash_is_finished_later(make, mail_user, ledger):
    mail_user.append(export_mail(text="x\n", token="tok-c", attachments=[("c.csv", b"1\n")]))
    config = make()
    with open_source(config) as source:
        (polled,) = source.poll(ledger)  # the process dies here, before any download step
    (export,) = polled.exports
    assert export.state == "new" and os.path.exists(export.download_path)
    (done,) = fetch(config, ledger).downloaded
    assert done.id == export.id and done.state == "downloaded"
    assert download_export(config, ledger, done) == done


def test_an_export_mail_without_a_link_is_a_recorded_failure(make, mail_user, ledger):
    mail_user.append(export_mail(text="The export failed.\n", token="tok-nolink"))
    result = fetch(make(), ledger)
    (failure,) = result.failures
    assert failure.export.token == "tok-nolink" and "neither a download link" in failure.message


def test_a_custom_recognizer_end_to_end(make, mail_user, https_server, ledger):
    url = https_server.add("/acme/41.csv", b"id\n1\n")
    raw = export_mail(
        f"Download: {url}", export_id=None, token=None, subject="ACME export 41 ready"
    )
    mail_user.append(raw)
    config = make(
        ids=[41],
        source={"search": 'SUBJECT "ACME export"'},
        recognizers=[{"name": "acme", "subject_pattern": r"ACME export (?P<id>\d+) ready"}],
    )
    (export,) = fetch(config, ledger).downloaded
    assert export.export_id == 41 and export.file_name == "41.csv"


def test_a_dry_run_changes_nothing(make, mail_user, https_server, ledger):
    uid = mail_user.append(export_mail(https_server.add("/a.zip", b"a"), token="tok-a"))
    config = make()
    result = fetch(config, ledger, dry_run=True)
    assert result.downloaded == [] and ledger.mails() == [] and ledger.exports() == []
    assert https_server.requests == []
    assert any("would download a.zip for export 777" in line for line in result.planned)
    fetch(config, ledger)
    deliver_everything(ledger)
    result = fetch(config, ledger, dry_run=True)
    assert result.planned == ["would move mail 'Export finished - Scheduled export'"]
    assert mail_user.list_uids("INBOX") == [uid] and ledger.mails("delivered")


def test_a_source_that_cannot_be_reached_still_downloads_recorded_exports(
    make, mail_user, https_server, ledger
):
    mail_user.append(export_mail(https_server.add("/a.zip", b"a", fail_times=1), token="tok-a"))
    config = make(download={"retries": 0}, retry_after=0)
    assert fetch(config, ledger).failed
    config.source.port = 1
    result = fetch(config, ledger)
    assert [f.stage for f in result.failures] == ["source"]
    assert [e.token for e in result.downloaded] == ["tok-a"]
    (failing,) = ledger.step_failures()
    assert failing.step == "fetch" and "cannot connect to IMAP server" in failing.error
    config.source.port = mail_user.ports.imaps
    assert not fetch(config, ledger).failed
    assert ledger.step_failures() == []


def test_mails_that_cannot_be_archived_are_a_failing_step(make, mail_user, https_server, ledger):
    mail_user.append(export_mail(https_server.add("/a.zip", b"a"), token="tok-a"))
    config = make(source={"archive": "~Archive"})  # Dovecot refuses names starting with ~
    fetch(config, ledger)
    deliver_everything(ledger)
    result = fetch(config, ledger)
    assert [f.stage for f in result.failures] == ["archive"]
    (failing,) = ledger.step_failures()
    assert failing.step == "archive" and "cannot be created" in failing.error
    assert ledger.mails("delivered") and len(mail_user.list_uids("INBOX")) == 1
    config.source.archive = "Archive"
    with ImapSource(config) as source:
        assert not fetch(config, ledger, source=source).failed
    assert ledger.step_failures() == [] and ledger.mails("archived")
