"""Prove that every test-server fixture works, using only ordinary clients.

These tests exercise the harness in tests/servers/, not exportmon: each one
talks to a real server on 127.0.0.1 with stdlib clients (or imapclient) and
checks a concrete result, so a broken fixture shows up here first.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import http.client
import imaplib
import io
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import imapclient
import pytest
from imapclient.exceptions import LoginError

from servers import ServerStartError
from servers.dovecot import DovecotServer, MailUser
from servers.ftp import FtpServer
from servers.smtp import SmtpServer
from servers.tlsca import LocalCA, ServerCert
from servers.web import WebServer

GEM_REFERENCE = Path("/work/shared/reference/itrp-gem")
EXPORT_MAIL = GEM_REFERENCE / "export_finished_1.eml"
NON_EXPORT_MAIL = GEM_REFERENCE / "non_export.eml"


def simple_mail(subject: str, body: str = "hello\r\n") -> bytes:
    return (
        f"From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.test>\r\n\r\n{body}"
    ).encode()


def get(url: str, context: ssl.SSLContext | None = None, **headers: str) -> tuple[int, bytes]:
    """GET *url* with urllib (redirects followed); return (status, body), also for 4xx/5xx."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


# -- TLS CA ---------------------------------------------------------------


def test_ca_files_are_pem_and_readable_by_everyone(tls_ca: LocalCA) -> None:
    for path in (tls_ca.ca_file, tls_ca.server.cert_file, tls_ca.server.key_file):
        assert path.read_bytes().startswith(b"-----BEGIN ")
        assert path.stat().st_mode & 0o004, f"{path} not world-readable"
    assert tls_ca.server.hostnames == ("127.0.0.1", "localhost", "::1")
    assert tls_ca.wrong_host.hostnames == ("wrong.example",)


@pytest.mark.parametrize("label", ["wrong_ca", "wrong_host", "expired"])
def test_bad_certificates_are_refused_by_a_verifying_client(
    tls_ca: LocalCA, start_server: Callable[[WebServer], WebServer], label: str
) -> None:
    cert: ServerCert = getattr(tls_ca, label)
    server = start_server(WebServer(cert))
    url = server.add("/file.csv", b"data")
    with pytest.raises(urllib.error.URLError) as excinfo:
        get(url, tls_ca.client_context())
    assert isinstance(excinfo.value.reason, ssl.SSLCertVerificationError)
    assert not server.requests_for("/file.csv")


# -- Dovecot: IMAP --------------------------------------------------------


def test_imap_login_over_implicit_tls_offers_required_capabilities(mail_user: MailUser) -> None:
    with mail_user.imap("ssl") as client:
        capabilities = set(client.capabilities())
        assert client._imap.sock.version() is not None  # TLS really negotiated
    for needed in (b"IDLE", b"MOVE", b"UIDPLUS", b"CONDSTORE"):
        assert needed in capabilities


def test_imap_starttls_verifies_the_certificate(mail_user: MailUser) -> None:
    with imapclient.IMAPClient(mail_user.host, port=mail_user.ports.imap, ssl=False) as client:
        assert b"STARTTLS" in client.capabilities()
        client.starttls(mail_user.ssl_context())
        client.login(mail_user.name, mail_user.password)
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    untrusting = imapclient.IMAPClient(mail_user.host, port=mail_user.ports.imap, ssl=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.starttls(ssl.create_default_context())
    with contextlib.suppress(OSError):
        untrusting.shutdown()


def test_imap_plain_login_is_allowed(mail_user: MailUser) -> None:
    with mail_user.imap("plain") as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0


def test_imap_wrong_password_is_rejected(dovecot: DovecotServer, mail_user: MailUser) -> None:
    client = imapclient.IMAPClient(
        dovecot.host, port=dovecot.imaps_port, ssl_context=mail_user.ssl_context()
    )
    with pytest.raises(LoginError):
        client.login(mail_user.name, mail_user.password + "x")
    client.shutdown()


def test_users_are_isolated_and_usable_at_once(dovecot: DovecotServer) -> None:
    first = dovecot.add_user()
    first.append(simple_mail("only for first"))
    second = dovecot.add_user("explicit-name", "explicit-pass")
    assert (second.name, second.password) == ("explicit-name", "explicit-pass")
    assert second.list_uids() == []
    assert len(first.list_uids()) == 1
    with pytest.raises(ValueError):
        dovecot.add_user("explicit-name")


def test_password_change_is_picked_up(dovecot: DovecotServer, mail_user: MailUser) -> None:
    old_password = mail_user.password
    dovecot.set_password(mail_user, "changed-" + old_password)
    with mail_user.imap() as client:
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
    client = imapclient.IMAPClient(
        dovecot.host, port=dovecot.imaps_port, ssl_context=mail_user.ssl_context()
    )
    with pytest.raises(LoginError):
        client.login(mail_user.name, old_password)
    client.shutdown()


def test_broken_dovecot_config_fails_with_its_error(tls_ca: LocalCA) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="exportmon-broken-"))
    server = DovecotServer(
        workdir, tls_ca.server, tls_ca.ca_file, extra_config="no_such_setting = 1"
    )
    try:
        with pytest.raises(ServerStartError, match="no_such_setting"):
            server.start()
        assert not server.running
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_missing_dovecot_binary_is_reported(tls_ca: LocalCA, tmp_path: Path) -> None:
    server = DovecotServer(tmp_path, tls_ca.server, tls_ca.ca_file, binary="no-such-dovecot")
    with pytest.raises(ServerStartError, match="not found"):
        server.start()


def test_append_returns_the_new_uid(mail_user: MailUser) -> None:
    first = mail_user.append(simple_mail("one"))
    second = mail_user.append(simple_mail("two"), flags=["\\Seen"])
    assert second == first + 1
    assert mail_user.list_uids() == [first, second]
    messages = mail_user.fetch_all()
    assert b"Subject: one" in messages[first]
    assert b"Subject: two" in messages[second]
    flags = mail_user.flags()
    assert b"\\Seen" not in flags[first]  # fetch_all used BODY.PEEK
    assert b"\\Seen" in flags[second]


def test_export_search_finds_only_the_export_mail(mail_user: MailUser) -> None:
    export_uid = mail_user.append(EXPORT_MAIL)
    other_uid = mail_user.append(NON_EXPORT_MAIL)
    with mail_user.imap() as client:
        client.select_folder("INBOX", readonly=True)
        # Both mails come from ...@itrp.com; only the header test tells them apart.
        assert set(client.search(["FROM", "ITRP"])) == {export_uid, other_uid}
        found = client.search(["FROM", "ITRP", "HEADER", "X-ITRP-ExportID", ""])
    assert found == [export_uid]


def test_mailboxes_move_and_idle(mail_user: MailUser) -> None:
    mail_user.create_mailbox("Archive")
    assert "Archive" in mail_user.mailboxes()
    uid = mail_user.append(simple_mail("to move"))
    with mail_user.imap() as client:
        client.select_folder("INBOX")
        client.move([uid], "Archive")
        client.idle()
        mail_user.append(simple_mail("arrives during idle"))
        responses = client.idle_check(timeout=10)
        client.idle_done()
    assert any(item[1] == b"EXISTS" for item in responses), responses
    assert len(mail_user.list_uids("Archive")) == 1
    assert len(mail_user.list_uids("INBOX")) == 1


def test_bulk_append_via_maildir_keeps_order_and_flags(mail_user: MailUser) -> None:
    count = 2000
    started = time.monotonic()
    uids = mail_user.bulk_append(simple_mail(f"bulk {i}", f"number {i}\n") for i in range(count))
    elapsed = time.monotonic() - started
    assert uids == list(range(uids[0], uids[0] + count))
    assert elapsed < 10, f"bulk_append of {count} took {elapsed:.1f}s"
    with mail_user.imap() as client:
        client.select_folder("INBOX", readonly=True)
        headers = client.fetch(
            [uids[0], uids[1000], uids[-1]], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"]
        )
    subjects = [
        headers[u][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip()
        for u in (uids[0], uids[1000], uids[-1])
    ]
    assert subjects == [b"Subject: bulk 0", b"Subject: bulk 1000", b"Subject: bulk 1999"]
    seen = mail_user.bulk_append([simple_mail("seen")], "Done", flags=["\\Seen"])
    assert b"\\Seen" in mail_user.flags("Done")[seen[0]]
    assert mail_user.fetch_all("Done")[seen[0]].endswith(b"hello\r\n")


def test_bulk_append_via_imap(mail_user: MailUser) -> None:
    uids = mail_user.bulk_append((simple_mail(f"m{i}") for i in range(120)), method="imap")
    assert uids == mail_user.list_uids()
    assert len(uids) == 120


# -- Dovecot: POP3 and restart --------------------------------------------


def test_pop3s_login_uidl_retr(mail_user: MailUser) -> None:
    mail_user.append(EXPORT_MAIL)
    mail_user.append(simple_mail("second"))
    client = poplib.POP3_SSL(mail_user.host, mail_user.ports.pop3s, context=mail_user.ssl_context())
    try:
        client.user(mail_user.name)
        client.pass_(mail_user.password)
        _, listing, _ = client.uidl()
        assert len(listing) == 2
        assert len({line.split()[1] for line in listing}) == 2  # distinct UIDLs
        _, lines, _ = client.retr(1)
        assert b"X-ITRP-ExportID: 2" in lines
    finally:
        client.quit()


def test_pop3_stls_and_plain(mail_user: MailUser) -> None:
    mail_user.append(simple_mail("pop"))
    for mode in ("stls", "plain"):
        client = mail_user.pop3(mode)  # type: ignore[arg-type]
        try:
            assert client.stat()[0] == 1
        finally:
            client.quit()


def test_restart_keeps_ports_users_and_mail(dovecot: DovecotServer, mail_user: MailUser) -> None:
    uid = mail_user.append(simple_mail("survives"))
    ports, old_pid = dovecot.ports, dovecot.pid
    dovecot.restart()
    assert dovecot.ports == ports
    assert dovecot.pid != old_pid
    assert mail_user.list_uids() == [uid]
    assert b"Subject: survives" in mail_user.fetch_all()[uid]


def test_stopped_dovecot_refuses_connections(dovecot: DovecotServer, mail_user: MailUser) -> None:
    dovecot.stop()
    try:
        with pytest.raises(OSError):
            socket.create_connection((dovecot.host, dovecot.imaps_port), timeout=2).close()
    finally:
        dovecot.start()
    assert mail_user.list_uids() == []


# -- Web ------------------------------------------------------------------


def test_https_download_verifies_against_the_ca(https_server: WebServer, tls_ca: LocalCA) -> None:
    url = https_server.add("/exports/a.csv?AWSAccessKeyId=AKIA&Expires=1", b"id,name\n1,x\n")
    assert url.startswith(f"https://127.0.0.1:{https_server.port}/exports/a.csv?")
    assert get(url, tls_ca.client_context()) == (200, b"id,name\n1,x\n")
    with pytest.raises(urllib.error.URLError) as excinfo:
        get(url, ssl.create_default_context())
    assert isinstance(excinfo.value.reason, ssl.SSLCertVerificationError)
    (request,) = https_server.requests
    assert (request.method, request.path, request.query, request.tls) == (
        "GET",
        "/exports/a.csv",
        "AWSAccessKeyId=AKIA&Expires=1",
        True,
    )


def test_http_404_and_request_headers(http_server: WebServer) -> None:
    assert get(http_server.url("/missing")) == (404, b"not found\n")
    http_server.add("/x", b"abc")
    assert get(http_server.url("/x"), **{"X-Test": "yes"}) == (200, b"abc")
    assert http_server.requests_for("/x")[0].headers["x-test"] == "yes"


def test_drop_then_range_resume(https_server: WebServer, tls_ca: LocalCA) -> None:
    body = os.urandom(200_000)
    https_server.add("/big.zip", body, drop_after=70_000, chunk_size=16_384)
    conn = http.client.HTTPSConnection(
        "127.0.0.1", https_server.port, context=tls_ca.client_context()
    )
    conn.request("GET", "/big.zip")
    response = conn.getresponse()
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(body))
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        response.read()
    partial = excinfo.value.partial
    conn.close()
    assert partial == body[:70_000]

    status, rest = get(
        https_server.url("/big.zip"), tls_ca.client_context(), Range=f"bytes={len(partial)}-"
    )
    assert status == 206
    assert partial + rest == body
    assert [r.range for r in https_server.requests_for("/big.zip")] == [None, "bytes=70000-"]
    assert https_server.routes["/big.zip"].dropped == 1


def test_drop_with_reset(http_server: WebServer) -> None:
    http_server.add("/reset", b"x" * 100_000, drop_after=1000, drop_reset=True)
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    conn.request("GET", "/reset")
    response = conn.getresponse()
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        response.read()
    conn.close()


def test_range_from_file_body_and_416(http_server: WebServer, tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    data = os.urandom(300_000)
    path.write_bytes(data)
    url = http_server.add("/file.bin", path)
    assert hashlib.sha256(get(url)[1]).digest() == hashlib.sha256(data).digest()
    status, middle = get(url, Range="bytes=1000-1999")
    assert (status, middle) == (206, data[1000:2000])
    assert get(url, Range=f"bytes={len(data)}-")[0] == 416


def test_fail_times_then_success(http_server: WebServer) -> None:
    url = http_server.add("/flaky", b"finally", fail_times=2, fail_status=503)
    assert get(url)[0] == 503
    assert get(url)[0] == 503
    assert get(url) == (200, b"finally")
    assert http_server.routes["/flaky"].hits == 3


def test_redirect_is_followed(https_server: WebServer, tls_ca: LocalCA) -> None:
    target = https_server.add("/real.csv", b"real")
    url = https_server.add("/link", redirect_to=target, redirect_status=302)
    assert get(url, tls_ca.client_context()) == (200, b"real")
    assert [r.path for r in https_server.requests] == ["/link", "/real.csv"]


@pytest.mark.parametrize("delta", [+50, -5])
def test_wrong_content_length(http_server: WebServer, delta: int) -> None:
    body = b"0123456789" * 10
    http_server.add("/lying", body, wrong_length=len(body) + delta)
    conn = http.client.HTTPConnection("127.0.0.1", http_server.port, timeout=10)
    conn.request("GET", "/lying")
    response = conn.getresponse()
    assert response.headers["Content-Length"] == str(len(body) + delta)
    if delta > 0:
        with pytest.raises(http.client.IncompleteRead) as excinfo:
            response.read()
        assert excinfo.value.partial == body
    else:
        assert response.read() == body[: len(body) + delta]
    conn.close()


def test_stall_times_out_client_and_stop_is_prompt(
    https_server: WebServer, tls_ca: LocalCA
) -> None:
    url = https_server.add("/stall", b"never sent", stall=True)
    request = urllib.request.Request(url)
    started = time.monotonic()
    with (
        urllib.request.urlopen(request, context=tls_ca.client_context(), timeout=0.5) as response,
        pytest.raises(TimeoutError),
    ):
        response.read()
    assert time.monotonic() - started < 5

    # A second client stays stalled until the server is stopped under it.
    conn = http.client.HTTPSConnection(
        "127.0.0.1", https_server.port, context=tls_ca.client_context(), timeout=30
    )
    conn.request("GET", "/stall")
    response = conn.getresponse()
    assert response.status == 200
    outcome: list[object] = []
    reader = threading.Thread(target=lambda: outcome.append(_read_or_error(response)))
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive()
    started = time.monotonic()
    https_server.stop()
    reader.join(5)
    assert time.monotonic() - started < 3
    assert not reader.is_alive()
    assert isinstance(outcome[0], Exception)
    conn.close()


def _read_or_error(response: http.client.HTTPResponse) -> object:
    try:
        return response.read()
    except Exception as exc:
        return exc


def test_slow_body(http_server: WebServer) -> None:
    url = http_server.add("/slow", b"x" * 4000, chunk_size=1000, delay_per_chunk=0.1)
    started = time.monotonic()
    assert get(url)[1] == b"x" * 4000
    # Three pauses between four chunks; the client has everything after the fourth.
    assert time.monotonic() - started >= 0.28


def test_web_server_restart_keeps_port(http_server: WebServer) -> None:
    url = http_server.add("/r", b"r")
    http_server.stop()
    with pytest.raises(urllib.error.URLError):
        get(url)
    http_server.start()
    assert get(url) == (200, b"r")


# -- FTP / FTPS -----------------------------------------------------------


@pytest.fixture(params=["ftp", "ftps"])
def any_ftp(request: pytest.FixtureRequest) -> FtpServer:
    return request.getfixturevalue(f"{request.param}_server")


def test_upload_and_rename(any_ftp: FtpServer) -> None:
    client = any_ftp.client()
    try:
        if any_ftp.tls:
            assert isinstance(client, ftplib.FTP_TLS)
            assert isinstance(client.sock, ssl.SSLSocket)
        client.mkd("incoming")
        client.cwd("incoming")
        client.storbinary("STOR export.csv.part", io.BytesIO(b"a,b\n1,2\n"))
        client.rename("export.csv.part", "export.csv")
        assert client.nlst() == ["export.csv"]
    finally:
        client.quit()
    assert (any_ftp.home / "incoming" / "export.csv").read_bytes() == b"a,b\n1,2\n"
    recorded = [
        (c.command, c.path) for c in any_ftp.commands_named("MKD", "CWD", "STOR", "RNFR", "RNTO")
    ]
    assert recorded == [
        ("MKD", "/incoming"),
        ("CWD", "/incoming"),
        ("STOR", "/incoming/export.csv.part"),
        ("RNFR", "/incoming/export.csv.part"),
        ("RNTO", "/incoming/export.csv"),
    ]
    assert any_ftp.commands_named("STOR")[0].code == 226


def test_ftps_requires_tls_and_a_trusted_certificate(ftps_server: FtpServer) -> None:
    plain = ftplib.FTP()
    plain.connect(ftps_server.host, ftps_server.port, timeout=10)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        plain.login(ftps_server.user, ftps_server.password)
    plain.close()

    untrusting = ftplib.FTP_TLS(context=ssl.create_default_context(), timeout=10)
    untrusting.connect(ftps_server.host, ftps_server.port)
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.auth()
    untrusting.close()

    no_prot = ftplib.FTP_TLS(context=ftps_server._client_context(), timeout=10)
    no_prot.connect(ftps_server.host, ftps_server.port)
    no_prot.login(ftps_server.user, ftps_server.password)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        no_prot.storbinary("STOR clear.txt", io.BytesIO(b"clear"))
    no_prot.quit()


def test_dropped_upload_really_aborts(any_ftp: FtpServer) -> None:
    any_ftp.drop_next_uploads(1, after_bytes=10_000)
    client = any_ftp.client()
    try:
        client.storbinary("STOR big.bin", io.BytesIO(b"x" * 2_000_000))
    except ftplib.error_temp as exc:
        reply = str(exc)
    except OSError:
        # Reset while still sending: the 426 is waiting on the control connection.
        with pytest.raises(ftplib.error_temp) as excinfo:
            client.getresp()
        reply = str(excinfo.value)
    else:
        pytest.fail("the upload was not aborted")
    client.close()
    assert reply.startswith("426")
    partial = any_ftp.home / "big.bin"
    assert partial.stat().st_size == 10_000
    assert any_ftp.incomplete == [partial]
    assert any_ftp.commands_named("STOR")[0].code == 426

    # Only the next upload was affected; the following one succeeds.
    client = any_ftp.client()
    client.storbinary("STOR big.bin", io.BytesIO(b"y" * 50_000))
    client.quit()
    assert partial.read_bytes() == b"y" * 50_000


def test_dropped_upload_fails_even_when_shorter_than_limit(ftp_server: FtpServer) -> None:
    ftp_server.drop_next_uploads(1, after_bytes=1_000_000)
    client = ftp_server.client()
    with pytest.raises(ftplib.error_temp, match=r"^426"):
        client.storbinary("STOR small.txt", io.BytesIO(b"small"))
    client.quit()
    assert ftp_server.received == []


def test_permissions(ftp_server: FtpServer) -> None:
    reader = ftp_server.client(ftp_server.readonly_user)
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        reader.storbinary("STOR nope.txt", io.BytesIO(b"no"))
    assert "readonly" in reader.nlst()
    reader.quit()
    writer = ftp_server.client()
    with pytest.raises(ftplib.error_perm, match=r"^550"):
        writer.storbinary("STOR readonly/nope.txt", io.BytesIO(b"no"))
    writer.quit()
    assert not (ftp_server.home / "nope.txt").exists()
    assert not (ftp_server.readonly_dir / "nope.txt").exists()


def test_slow_upload_is_visible_while_running(ftp_server: FtpServer) -> None:
    ftp_server.slow_uploads(100 * 1024)
    data = b"z" * (120 * 1024)
    errors: list[BaseException] = []

    def upload() -> None:
        try:
            client = ftp_server.client()
            client.storbinary("STOR slow.bin", io.BytesIO(data))
            client.quit()
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=upload)
    worker.start()
    time.sleep(0.4)
    observer = ftp_server.client()
    sizes = {name: facts.get("size") for name, facts in observer.mlsd(facts=["size"])}
    observer.quit()
    worker.join(30)
    assert not errors
    assert "slow.bin" in sizes
    assert 0 < int(sizes["slow.bin"] or 0) < len(data)
    assert (ftp_server.home / "slow.bin").read_bytes() == data


def test_ftp_stop_and_start_on_same_port(ftp_server: FtpServer) -> None:
    client = ftp_server.client()
    client.storbinary("STOR keep.txt", io.BytesIO(b"keep"))
    ftp_server.stop()
    with pytest.raises((EOFError, OSError)):
        client.pwd()
    client.close()
    with pytest.raises(OSError):
        socket.create_connection((ftp_server.host, ftp_server.port), timeout=2).close()
    ftp_server.start()
    client = ftp_server.client()
    assert sorted(client.nlst()) == ["keep.txt", "readonly"]
    client.quit()


# -- SMTP / SMTPS ---------------------------------------------------------


def _alert(subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "exportmon@example.test"
    message["To"] = "ops@example.test"
    message["Subject"] = subject
    message.set_content("Export failed.\n")
    return message


def test_smtp_starttls_with_auth(smtp_server: SmtpServer, tls_ca: LocalCA) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=tls_ca.client_context())
        client.ehlo()
        client.login(smtp_server.user or "", smtp_server.password or "")
        client.send_message(
            _alert("over starttls"), to_addrs=["ops@example.test", "dev@example.test"]
        )
    (mail,) = smtp_server.wait_for_messages(1)
    assert mail.mail_from == "exportmon@example.test"
    assert mail.rcpt_tos == ("ops@example.test", "dev@example.test")
    assert mail.tls is True
    assert mail.auth_user == smtp_server.user
    assert mail.message["Subject"] == "over starttls"
    assert mail.message.get_content() == "Export failed.\n"
    assert b"Subject: over starttls" in mail.data


def test_smtp_refuses_mail_without_auth_and_bad_passwords(smtp_server: SmtpServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as excinfo:
            client.send_message(_alert("no auth"))
        assert excinfo.value.smtp_code == 530
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(smtp_server.user or "", "wrong")
    assert smtp_server.messages == []


def test_smtp_plain_auth_without_tls_is_allowed(smtp_server: SmtpServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.login(smtp_server.user or "", smtp_server.password or "")
        client.send_message(_alert("plain"))
    (mail,) = smtp_server.wait_for_messages(1)
    assert mail.tls is False


def test_smtp_starttls_rejects_untrusting_client(smtp_server: SmtpServer) -> None:
    with (
        smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        client.starttls(context=ssl.create_default_context())


def test_smtps_with_auth(smtps_server: SmtpServer, tls_ca: LocalCA) -> None:
    with smtplib.SMTP_SSL(
        smtps_server.host, smtps_server.port, context=tls_ca.client_context(), timeout=10
    ) as client:
        client.login(smtps_server.user or "", smtps_server.password or "")
        client.send_message(_alert("over smtps"))
    (mail,) = smtps_server.wait_for_messages(1)
    assert (mail.tls, mail.message["Subject"]) == (True, "over smtps")


def test_smtp_down_and_up_again(smtp_server: SmtpServer) -> None:
    port = smtp_server.port
    smtp_server.stop()
    with pytest.raises(OSError):
        smtplib.SMTP(smtp_server.host, port, timeout=2)
    smtp_server.start()
    assert smtp_server.port == port
    with smtp_server.client() as client:
        client.send_message(_alert("back"))
    assert smtp_server.wait_for_messages(1)[0].message["Subject"] == "back"


def test_imaplib_is_also_fine_with_the_server(mail_user: MailUser) -> None:
    # exportmon may use the stdlib client directly; make sure nothing depends on imapclient.
    client = imaplib.IMAP4_SSL(
        mail_user.host, mail_user.ports.imaps, ssl_context=mail_user.ssl_context()
    )
    try:
        client.login(mail_user.name, mail_user.password)
        typ, data = client.select("INBOX")
        assert (typ, data) == ("OK", [b"0"])
    finally:
        client.logout()
