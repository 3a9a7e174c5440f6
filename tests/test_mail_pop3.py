"""The POP3 source against the real Dovecot: POP3S and STLS, UIDL polls, delete only when told."""

from __future__ import annotations

import base64

import pytest
from fetchkit import (
    config_data,
    export_mail,
    grant_token,
    monitor,
    oauth_dovecot_server,
    plain_mail,
    pop3_table,
)

from exportmon.errors import AuthError, TLSError
from exportmon.ledger import Ledger
from exportmon.mail.pop3 import Pop3Source, xoauth2_initial_response
from exportmon.mail.source import open_source


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as opened:
        yield opened


def make_monitor(tmp_path, user, security="ssl", **source):
    return monitor(config_data(tmp_path / "state", pop3_table(user, security, **source)), tmp_path)


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_poll_by_uidl_takes_each_mail_once(tmp_path, mail_user, ledger, security):
    mail_user.append(export_mail("https://files.example/a.zip", token="tok-a"))
    mail_user.append(plain_mail())
    config = make_monitor(tmp_path, mail_user, security)
    with open_source(config) as source:
        assert isinstance(source, Pop3Source)
        polled = source.poll(ledger)
        assert [p.outcome for p in polled] == ["export", "ignored"]
        assert polled[0].exports[0].token == "tok-a"
        assert source.key.startswith("pop3s://" if security == "ssl" else "pop3://")
        assert source.poll(ledger) == []
        mail_user.append(export_mail("https://files.example/b.zip", token="tok-b"))
        assert [p.exports[0].token for p in source.poll(ledger)] == ["tok-b"]
    assert len(mail_user.list_uids("INBOX")) == 3


def test_nothing_is_deleted_without_delete_after(tmp_path, mail_user, ledger):
    mail_user.append(export_mail("https://files.example/a.zip"))
    config = make_monitor(tmp_path, mail_user)
    with open_source(config) as source:
        (polled,) = source.poll(ledger)
        assert not source.moves_mail
        assert source.archive(polled.mail) == "kept"
    assert len(mail_user.list_uids("INBOX")) == 1


def test_delete_after_removes_exactly_the_delivered_mail(tmp_path, mail_user, ledger):
    mail_user.append(export_mail("https://files.example/a.zip"))
    mail_user.append(plain_mail())
    config = make_monitor(tmp_path, mail_user, delete_after=True)
    with open_source(config) as source:
        polled = source.poll(ledger)
        assert source.archive(polled[0].mail) == "archived"
        assert source.archive(polled[0].mail) == "gone"
    (left,) = mail_user.fetch_all("INBOX").values()
    assert b"Lunch on Friday" in left


def test_a_wrong_password_and_an_untrusted_certificate(tmp_path, mail_user, ledger, tls_ca):
    config = make_monitor(tmp_path, mail_user, password="not-the-password")
    with pytest.raises(AuthError, match="refused the login") as raised:
        open_source(config).poll(ledger)
    assert "not-the-password" not in raised.value.one_line()
    config = make_monitor(tmp_path, mail_user, ca_file=str(tls_ca.wrong_ca_file))
    with pytest.raises(TLSError, match="certificate not trusted") as raised:
        open_source(config).poll(ledger)
    assert "source.ca_file" in raised.value.one_line()


def test_the_xoauth2_response_format():
    decoded = base64.b64decode(xoauth2_initial_response("me@example.com", "tok"))
    assert decoded == b"user=me@example.com\x01auth=Bearer tok\x01\x01"


def test_xoauth2_login_against_a_real_server(tmp_path, tls_ca, http_server, ledger):
    with oauth_dovecot_server(tls_ca, http_server) as server:
        user = server.add_user()
        token = grant_token(http_server, user)
        user.append(export_mail("https://files.example/a.zip"))
        table = pop3_table(user, auth="xoauth2", token_command=f"echo {token}")
        del table["password"]
        config = monitor(config_data(tmp_path / "state", table), tmp_path)
        assert [p.outcome for p in open_source(config).poll(ledger)] == ["export"]
        table["token_command"] = "echo not-a-valid-token"
        config = monitor(config_data(tmp_path / "state", table), tmp_path)
        with pytest.raises(AuthError) as raised:
            open_source(config).poll(ledger)
        assert "check source.user and the xoauth2 token" in raised.value.one_line()
