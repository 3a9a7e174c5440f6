"""The IMAP source against the real Dovecot: TLS, STARTTLS, incremental polls, archiving, IDLE."""

from __future__ import annotations

import threading
import time

import pytest
from fetchkit import (
    config_data,
    export_mail,
    grant_token,
    imap_table,
    monitor,
    oauth_dovecot_server,
    plain_mail,
)
from watching import wait_for

from exportmon.errors import AuthError, ConfigError, ConnectionFailed, MailError, TLSError
from exportmon.ledger import Ledger
from exportmon.mail.imap import ImapSource
from exportmon.mail.source import open_source


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as opened:
        yield opened


def make_monitor(tmp_path, user, security="ssl", **source):
    data = config_data(tmp_path / "state", imap_table(user, security, **source))
    return monitor(data, tmp_path / "777.toml")


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_poll_records_new_export_mails_and_then_nothing(tmp_path, mail_user, ledger, security):
    mail_user.append(export_mail("https://files.example/a.zip", token="tok-a"))
    mail_user.append(plain_mail())
    config = make_monitor(tmp_path, mail_user, security)
    with open_source(config) as source:
        assert isinstance(source, ImapSource)
        polled = source.poll(ledger)
        assert [p.outcome for p in polled] == ["export"]
        (export,) = polled[0].exports
        assert (export.export_id, export.token, export.file_name) == (777, "tok-a", "a.zip")
        assert polled[0].mail.source == source.key and source.key.startswith(
            "imaps://" if security == "ssl" else "imap://"
        )
        assert source.poll(ledger) == []
        mail_user.append(export_mail("https://files.example/b.zip", token="tok-b"))
        assert [p.exports[0].token for p in source.poll(ledger)] == ["tok-b"]
        assert source.poll(ledger) == []
    state = ledger.mailbox_state(source.key, "INBOX")
    assert state.last_uid == 3 and state.uidvalidity


def test_reading_never_sets_seen_and_non_exports_are_untouched(tmp_path, mail_user, ledger):
    mail_user.append(export_mail("https://files.example/a.zip"))
    mail_user.append(plain_mail())
    mail_user.append(export_mail("https://files.example/c.zip", export_id=5, token="tok-5"))
    config = make_monitor(tmp_path, mail_user)
    with open_source(config) as source:
        polled = source.poll(ledger)
    assert [(p.outcome, p.reason) for p in polled] == [
        ("export", None),
        ("ignored", "export id 5 is not monitored"),
    ]
    assert all(b"\\Seen" not in flags for flags in mail_user.flags("INBOX").values())
    assert ledger.notice_count("unmonitored:5") == 1


def test_the_gem_search_finds_the_gem_mails(tmp_path, mail_user, ledger, gem_fixtures):
    for name in ("export_finished_1.eml", "non_export.eml", "on_premise_export.eml"):
        mail_user.append(gem_fixtures / name)
    config = make_monitor(tmp_path, mail_user)
    config.ids = [2]
    with open_source(config) as source:
        polled = source.poll(ledger, dry_run=True)
    # non_export.eml does not match the search; the on-premise copy has the same Message-ID.
    assert [(p.location.uid, p.outcome) for p in polled] == [("1", "export"), ("3", "duplicate")]
    assert polled[0].found[0].file_name == "20130911-195545-affected_slas.csv"
    assert ledger.mails() == [] and ledger.mailbox_state(source.key, "INBOX") is None


def test_a_changed_uidvalidity_rereads_without_duplicates(tmp_path, mail_user, ledger):
    mail_user.create_mailbox("Exports")
    first = export_mail("https://files.example/a.zip", token="tok-a")
    second = export_mail("https://files.example/b.zip", token="tok-b")
    mail_user.append(first, mailbox="Exports")
    mail_user.append(second, mailbox="Exports")
    config = make_monitor(tmp_path, mail_user, mailbox="Exports")
    with open_source(config) as source:
        assert len(source.poll(ledger)) == 2
        before = ledger.mailbox_state(source.key, "Exports").uidvalidity
    # Dovecot derives UIDVALIDITY from the clock (seconds): the folder made again must
    # be made in a later second to get a new one.
    wait_for(lambda: time.time() >= before + 1, timeout=5)
    with mail_user.imap() as client:
        client.delete_folder("Exports")
        client.create_folder("Exports")
    for raw in (first, second, export_mail("https://files.example/c.zip", token="tok-c")):
        mail_user.append(raw, mailbox="Exports")
    with open_source(config) as source:
        polled = source.poll(ledger)
    assert [p.outcome for p in polled] == ["duplicate", "duplicate", "export"]
    assert polled[2].exports[0].token == "tok-c"
    assert ledger.mailbox_state(source.key, "Exports").uidvalidity != before
    assert len(ledger.exports()) == 3


def test_archive_moves_one_delivered_mail_with_move(tmp_path, mail_user, ledger):
    uid = mail_user.append(export_mail("https://files.example/a.zip"))
    other = mail_user.append(plain_mail())
    config = make_monitor(tmp_path, mail_user)
    with open_source(config) as source:
        (polled,) = source.poll(ledger)
        assert source.archive(polled.mail) == "archived"
    assert mail_user.list_uids("INBOX") == [other]
    (archived,) = mail_user.fetch_all("Archive").values()
    assert b"files.example/a.zip" in archived
    assert uid not in mail_user.list_uids("INBOX")


def test_archive_without_move_copies_and_expunges_only_that_mail(tmp_path, mail_user, ledger):
    mail_user.append(export_mail("https://files.example/a.zip"))
    flagged = mail_user.append(plain_mail(), flags=["\\Deleted"])
    config = make_monitor(tmp_path, mail_user)
    with ImapSource(config, use_move=False) as source:
        (polled,) = source.poll(ledger)
        assert source.archive(polled.mail) == "archived"
    assert mail_user.list_uids("INBOX") == [flagged]
    assert b"\\Deleted" in mail_user.flags("INBOX")[flagged]
    assert len(mail_user.list_uids("Archive")) == 1


def test_a_mail_a_killed_run_copied_is_not_copied_again(tmp_path, mail_user, ledger):
    mail_user.append(export_mail("https://files.example/a.zip", message_id="<a@itrp.example>"))
    config = make_monitor(tmp_path, mail_user)
    with ImapSource(config, use_move=False) as source:
        (polled,) = source.poll(ledger)
    # A process killed between COPY and EXPUNGE (crash point imap.copied) left this.
    mail_user.create_mailbox("Archive")
    with mail_user.imap() as client:
        client.select_folder("INBOX")
        client.copy([1], "Archive")
    with ImapSource(config, use_move=False) as source:
        assert source.archive(polled.mail) == "archived"
    assert mail_user.list_uids("INBOX") == []
    assert len(mail_user.list_uids("Archive")) == 1


def test_another_mail_reusing_an_archived_message_id_is_still_copied(tmp_path, mail_user, ledger):
    # Last month's export mail, archived, and a different mail that reuses its Message-ID:
    # without MOVE the new one must be copied before its original is deleted.
    mail_user.create_mailbox("Archive")
    old = export_mail("https://files.example/old.zip", message_id="<same@itrp.example>")
    mail_user.append(old, mailbox="Archive")
    mail_user.append(export_mail("https://files.example/new.zip", message_id="<same@itrp.example>"))
    config = make_monitor(tmp_path, mail_user)
    with ImapSource(config, use_move=False) as source:
        (polled,) = source.poll(ledger)
        assert source.archive(polled.mail) == "archived"
    assert mail_user.list_uids("INBOX") == []
    archived = list(mail_user.fetch_all("Archive").values())
    assert len(archived) == 2
    assert any(b"files.example/new.zip" in raw for raw in archived)


def test_archive_finds_a_mail_by_message_id_when_its_uid_changed(tmp_path, mail_user, ledger):
    mail_user.append(export_mail("https://files.example/a.zip", message_id="<a@itrp.example>"))
    config = make_monitor(tmp_path, mail_user)
    with open_source(config) as source:
        (polled,) = source.poll(ledger)
    # Someone moves the mail around: its UID in INBOX changes.
    with mail_user.imap() as client:
        client.create_folder("Elsewhere")
        client.select_folder("INBOX")
        client.move([1], "Elsewhere")
        client.select_folder("Elsewhere")
        client.move([1], "INBOX")
    assert mail_user.list_uids("INBOX") == [2]
    with open_source(config) as source:
        assert source.archive(polled.mail) == "archived"
        # Asked again (a process killed before recording the move): found where it went.
        assert source.archive(polled.mail) == "archived"
    assert mail_user.list_uids("INBOX") == []
    assert len(mail_user.list_uids("Archive")) == 1


def test_wait_for_change_returns_when_a_mail_arrives(tmp_path, mail_user, ledger):
    config = make_monitor(tmp_path, mail_user)
    with open_source(config) as source:
        source.poll(ledger)
        started = time.monotonic()
        assert source.wait_for_change(0.3) is False
        assert time.monotonic() - started >= 0.3
        timer = threading.Timer(0.5, mail_user.append, args=(export_mail("https://x/a.zip"),))
        timer.start()
        try:
            assert source.wait_for_change(30) is True
        finally:
            timer.join()
        assert [p.outcome for p in source.poll(ledger)] == ["export"]


def test_mail_that_arrived_between_poll_and_wait_is_reported(tmp_path, mail_user, ledger):
    # Dovecot pushes only what changes during IDLE; a mail appended after the poll
    # but before IDLE begins must still wake the waiter.
    config = make_monitor(tmp_path, mail_user)
    with open_source(config) as source:
        source.poll(ledger)
        mail_user.append(export_mail("https://x/a.zip"))
        assert source.wait_for_change(3) is True
        assert [p.outcome for p in source.poll(ledger)] == ["export"]


def test_a_mail_reported_only_with_done_is_not_missed(tmp_path, mail_user, ledger):
    config = make_monitor(tmp_path, mail_user)
    with open_source(config) as source:
        source.poll(ledger)
        assert source.wait_for_change(0.2) is False
        # Appended so late in a short wait that only DONE's answer can carry it.
        timer = threading.Timer(0.25, mail_user.append, args=(export_mail("https://x/b.zip"),))
        timer.start()
        try:
            changed = source.wait_for_change(0.4) or source.wait_for_change(3)
        finally:
            timer.join()
        assert changed is True


def test_idle_is_renewed_and_still_reports_mail(tmp_path, mail_user, ledger):
    config = make_monitor(tmp_path, mail_user)
    with ImapSource(config, idle_renew=0.2) as source:
        source.poll(ledger)
        timer = threading.Timer(0.7, mail_user.append, args=(export_mail("https://x/a.zip"),))
        timer.start()
        try:
            assert source.wait_for_change(30) is True
        finally:
            timer.join()


def test_without_idle_waiting_checks_uidnext(tmp_path, mail_user, ledger):
    config = make_monitor(tmp_path, mail_user)
    config.poll_interval = 0.2
    with ImapSource(config, use_idle=False) as source:
        source.poll(ledger)
        assert source.wait_for_change(0.5) is False
        mail_user.append(export_mail("https://x/a.zip"))
        assert source.wait_for_change(30) is True


def test_a_wrong_password_is_an_auth_error(tmp_path, mail_user, ledger):
    config = make_monitor(tmp_path, mail_user, password="wrong-password")
    with pytest.raises(AuthError, match="refused the login") as raised, open_source(config) as s:
        s.poll(ledger)
    assert "wrong-password" not in raised.value.one_line()
    assert "check source.user and the password" in raised.value.one_line()


def test_an_untrusted_server_certificate_is_refused(tmp_path, mail_user, ledger, tls_ca):
    for security in ("ssl", "starttls"):
        config = make_monitor(tmp_path, mail_user, security, ca_file=str(tls_ca.wrong_ca_file))
        with pytest.raises(TLSError) as raised, open_source(config) as source:
            source.poll(ledger)
        line = raised.value.one_line()
        assert f"127.0.0.1:{config.source.port}" in line
        assert "certificate not trusted" in line and "set source.ca_file" in line


def test_an_unreachable_server_and_a_missing_mailbox(tmp_path, mail_user, ledger):
    config = make_monitor(tmp_path, mail_user, port=1)
    with pytest.raises(ConnectionFailed, match=r"cannot connect to IMAP server 127\.0\.0\.1:1"):
        open_source(config).poll(ledger)
    config = make_monitor(tmp_path, mail_user, mailbox="NoSuchBox")
    with (
        pytest.raises(MailError, match="cannot open mailbox 'NoSuchBox'"),
        open_source(config) as s,
    ):
        s.poll(ledger)


def test_plain_imap_works_when_configured(tmp_path, mail_user, ledger):
    mail_user.append(export_mail("https://files.example/a.zip"))
    config = make_monitor(tmp_path, mail_user, "plain")
    with open_source(config) as source:
        assert [p.outcome for p in source.poll(ledger)] == ["export"]


# --- OAuth2, against a Dovecot that checks tokens with a token-info endpoint -------------


@pytest.fixture
def oauth_dovecot(tls_ca, http_server):
    with oauth_dovecot_server(tls_ca, http_server) as server:
        yield server


@pytest.mark.parametrize("auth", ["xoauth2", "oauthbearer"])
def test_oauth2_login_with_a_token_command(tmp_path, oauth_dovecot, http_server, ledger, auth):
    user = oauth_dovecot.add_user()
    token = grant_token(http_server, user)
    user.append(export_mail("https://files.example/a.zip"))
    table = imap_table(user, auth=auth, token_command=f"echo {token}")
    del table["password"]
    config = monitor(config_data(tmp_path / "state", table), tmp_path / "777.toml")
    with open_source(config) as source:
        assert [p.outcome for p in source.poll(ledger)] == ["export"]
    assert http_server.requests_for(f"/tokeninfo/{token}")
    table["token_command"] = "echo expired-token"
    config = monitor(config_data(tmp_path / "state", table), tmp_path / "777.toml")
    with pytest.raises(AuthError) as raised, open_source(config) as source:
        source.poll(ledger)
    assert f"check source.user and the {auth} token" in raised.value.one_line()


def test_a_multi_line_search_is_a_config_error(tmp_path, mail_user):
    data = config_data(tmp_path / "state", imap_table(mail_user, search="ALL\r\nA1 LOGOUT"))
    with pytest.raises(ConfigError, match="must be one line"):
        monitor(data, tmp_path / "777.toml")
