"""Local mail stores: Maildir, mbox, a directory of .eml files, and --eml files."""

from __future__ import annotations

import mailbox
import os
import threading

import pytest
from fetchkit import config_data, export_mail, monitor, plain_mail

from exportmon.errors import MailError
from exportmon.ledger import Ledger
from exportmon.mail.local import DirSource, EmlFiles, MaildirSource, MboxSource
from exportmon.mail.source import open_source


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as opened:
        yield opened


def make_monitor(tmp_path, kind, path, **source):
    table = {"kind": kind, "path": str(path), "archive": "Archive", **source}
    return monitor(config_data(tmp_path / "state", table), tmp_path / "777.toml")


def test_maildir_reads_new_mails_once_and_archives_into_a_subfolder(tmp_path, ledger):
    box = mailbox.Maildir(tmp_path / "Maildir")
    first = box.add(export_mail("https://files.example/a.zip", token="tok-a"))
    box.add(plain_mail())
    config = make_monitor(tmp_path, "maildir", tmp_path / "Maildir")
    before = sorted(os.listdir(tmp_path / "Maildir" / "new"))
    with open_source(config) as source:
        assert isinstance(source, MaildirSource)
        polled = source.poll(ledger)
        assert [p.outcome for p in polled if p.outcome == "export"] == ["export"]
        assert sorted(os.listdir(tmp_path / "Maildir" / "new")) == before  # nothing renamed
        assert source.poll(ledger) == []
        box.add(export_mail("https://files.example/b.zip", token="tok-b"))
        assert [p.exports[0].token for p in source.poll(ledger)] == ["tok-b"]
        export_mail_record = next(p.mail for p in polled if p.outcome == "export")
        assert export_mail_record.uid == first
        assert source.archive(export_mail_record) == "archived"
        assert source.archive(export_mail_record) == "gone"
    archive = mailbox.Maildir(tmp_path / "Maildir").get_folder("Archive")
    assert len(archive) == 1 and len(mailbox.Maildir(tmp_path / "Maildir")) == 2


def test_maildir_waiting_notices_a_new_mail(tmp_path):
    box = mailbox.Maildir(tmp_path / "Maildir")
    config = make_monitor(tmp_path, "maildir", tmp_path / "Maildir")
    source = MaildirSource(config)
    assert source.wait_for_change(0.2) is False
    timer = threading.Timer(0.3, box.add, args=(plain_mail(),))
    timer.start()
    try:
        assert source.wait_for_change(20) is True
    finally:
        timer.join()


def test_mbox_is_read_incrementally_and_never_changed(tmp_path, ledger):
    path = tmp_path / "exports.mbox"
    box = mailbox.mbox(path)
    box.add(export_mail("https://files.example/a.zip", token="tok-a", text="From here on:\n"))
    box.add(export_mail("https://files.example/b.zip", token="tok-b"))
    box.flush()
    config = make_monitor(tmp_path, "mbox", path)
    with open_source(config) as source:
        assert isinstance(source, MboxSource) and not source.moves_mail
        polled = source.poll(ledger)
        assert [p.outcome for p in polled] == ["export", "export"]
        assert source.poll(ledger) == []
        content = path.read_bytes()
        # A mail being appended (no final blank line yet) waits for the next poll.
        partial = export_mail("https://files.example/c.zip", token="tok-c")
        with open(path, "ab") as handle:
            handle.write(b"From MAILER-DAEMON Mon Nov 23 08:40:00 2026\n" + partial[:200])
        assert source.poll(ledger) == []
        with open(path, "wb") as handle:
            handle.write(content)
        box = mailbox.mbox(path)
        box.add(export_mail("https://files.example/c.zip", token="tok-c"))
        box.flush()
        assert [p.exports[0].token for p in source.poll(ledger)] == ["tok-c"]
        assert source.archive(polled[0].mail) == "kept"


def test_a_replaced_mbox_is_read_again_without_duplicates(tmp_path, ledger):
    path = tmp_path / "exports.mbox"
    mails = [export_mail(f"https://files.example/{n}.zip", token=f"tok-{n}") for n in "ab"]
    box = mailbox.mbox(path)
    box.add(mails[0])
    box.flush()
    config = make_monitor(tmp_path, "mbox", path)
    assert len(MboxSource(config).poll(ledger)) == 1
    path.unlink()
    box = mailbox.mbox(path)
    for raw in (plain_mail(), mails[0], mails[1]):
        box.add(raw)
    box.flush()
    polled = MboxSource(config).poll(ledger)
    assert [p.outcome for p in polled] == ["ignored", "duplicate", "export"]


def test_a_directory_of_eml_files(tmp_path, ledger, gem_fixtures):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.eml").write_bytes(export_mail("https://files.example/a.zip"))
    (inbox / "b.eml").write_bytes((gem_fixtures / "non_export.eml").read_bytes())
    (inbox / "notes.txt").write_text("not a mail")
    config = make_monitor(tmp_path, "dir", inbox)
    with open_source(config) as source:
        assert isinstance(source, DirSource)
        polled = source.poll(ledger)
        assert [(p.location.uid, p.outcome) for p in polled] == [
            ("a.eml", "export"),
            ("b.eml", "ignored"),
        ]
        assert source.poll(ledger) == []
        assert source.archive(polled[0].mail) == "archived"
    assert sorted(os.listdir(inbox)) == ["Archive", "b.eml", "notes.txt"]
    assert os.listdir(inbox / "Archive") == ["a.eml"]


def test_a_missing_store_is_a_clear_error(tmp_path, ledger):
    config = make_monitor(tmp_path, "maildir", tmp_path / "nowhere")
    with pytest.raises(MailError, match="not found"):
        open_source(config).poll(ledger)
    config = make_monitor(tmp_path, "mbox", tmp_path / "nowhere.mbox")
    with pytest.raises(MailError, match="cannot be read"):
        open_source(config).poll(ledger)


def test_eml_files_are_taken_once_and_never_moved(tmp_path, ledger):
    path = tmp_path / "saved.eml"
    path.write_bytes(export_mail("https://files.example/a.zip"))
    config = make_monitor(tmp_path, "dir", tmp_path)
    source = EmlFiles(config, [path, path])
    polled = source.poll(ledger)
    assert [p.outcome for p in polled] == ["export"]
    assert source.poll(ledger) == []
    assert EmlFiles(config, [path]).poll(ledger) == []
    assert source.archive(polled[0].mail) == "kept" and path.exists()
