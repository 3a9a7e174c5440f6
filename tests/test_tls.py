"""TLS for every protocol, through the CLI: an untrusted (self-signed CA), wrong-host or
expired certificate is refused by default with one line that names the ``ca_file`` way
out; the right ``ca_file`` is accepted; plain IMAP and FTP work only when configured,
with a warning.

IMAP (ssl and STARTTLS) and POP3 run against Dovecots serving each bad certificate,
HTTPS against the web fixture, FTPS against pyftpdlib and alerts against aiosmtpd.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from fetchkit import export_mail, write_config

from cli import run_cli
from servers import ServerStartError
from servers.dovecot import DovecotServer
from servers.ftp import FtpServer
from servers.smtp import SmtpServer
from servers.web import WebServer

BAD_CERTS = {
    # certificate: (words in the message, is our CA file given?)
    "wrong_ca": ("certificate not trusted", False),
    "wrong_host": ("certificate is for another host name", True),
    "expired": ("certificate has expired", True),
}
PROTOCOLS = ["imap-ssl", "imap-starttls", "pop3-ssl", "https", "ftps", "smtp-starttls"]
CA_KEYS = {
    "imap-ssl": "source.ca_file",
    "imap-starttls": "source.ca_file",
    "pop3-ssl": "source.ca_file",
    "https": "download.ca_file",
    "ftps": "ftp_ca_file",
    "smtp-starttls": "alerts.smtp_ca_file",
}


@pytest.fixture(scope="module")
def bad_dovecots(tls_ca):
    """A Dovecot serving each bad certificate, with one mail account each."""
    servers: dict[str, tuple[DovecotServer, object]] = {}
    try:
        for name in BAD_CERTS:
            workdir = Path(tempfile.mkdtemp(prefix=f"em-tls-{name}-"))
            workdir.chmod(0o755)
            server = DovecotServer(
                workdir,
                getattr(tls_ca, name),
                tls_ca.wrong_ca_file if name == "wrong_ca" else tls_ca.ca_file,
                # Readiness is checked with a verified connection where it can be.
                verify_ready=name == "wrong_ca",
            )
            try:
                server.start()
            except ServerStartError as exc:
                pytest.fail(f"Dovecot with the {name} certificate did not start:\n{exc}")
            servers[name] = (server, server.add_user())
        yield servers
    finally:
        for server, _ in servers.values():
            server.stop()
            shutil.rmtree(server.workdir, ignore_errors=True)


def scenario(protocol, cert_name, tmp_path, tls_ca, request, trust_ca: bool):
    """CLI arguments and environment for one protocol against a server with ``cert_name``."""
    cert = getattr(tls_ca, cert_name)
    ca = {"ca_file": str(tls_ca.ca_file)} if trust_ca else {}
    mails = tmp_path / "mails"
    mails.mkdir()
    base = {"ids": [777], "root": str(tmp_path / "state")}
    if protocol.startswith(("imap", "pop3")):
        if cert_name == "server":
            user = request.getfixturevalue("mail_user")
        else:
            user = request.getfixturevalue("bad_dovecots")[cert_name][1]
        kind, security = protocol.split("-")
        ports = user.ports
        port = {"imap-ssl": ports.imaps, "imap-starttls": ports.imap}.get(protocol, ports.pop3s)
        source = {
            "kind": kind,
            "host": "127.0.0.1",
            "port": port,
            "security": security,
            "user": user.name,
            "password_env": "MAIL_PASS",
            "archive": "",
            **ca,
        }
        config = write_config(tmp_path, {**base, "source": source})
        return ["-c", config, "fetch"], {"MAIL_PASS": user.password}
    dir_source = {"kind": "dir", "path": str(mails), "archive": ""}
    if protocol == "https":
        server = request.getfixturevalue("start_server")(WebServer(cert))
        (mails / "a.eml").write_bytes(export_mail(server.add("/5-1-x.csv", b"id\n1\n")))
        download = {"allow_hosts": ["127.0.0.1"], **ca}
        config = write_config(tmp_path, {**base, "source": dir_source, "download": download})
        return ["-c", config, "fetch"], {}
    if protocol == "ftps":
        server = request.getfixturevalue("start_server")(
            FtpServer(tmp_path / "ftp-home", cert=cert, ca_file=tls_ca.ca_file)
        )
        upload = tmp_path / "5-1-x.csv"
        upload.write_bytes(b"id\n1\n")
        args = [
            "push-ftp",
            "--url",
            f"ftps://127.0.0.1:{server.port}",
            "--user",
            server.user,
            "--password-env",
            "FTP_PASS",
            upload,
        ]
        if trust_ca:
            args[1:1] = ["--ca-file", str(tls_ca.ca_file)]
        return args, {"FTP_PASS": server.password}
    server = request.getfixturevalue("start_server")(SmtpServer(cert=cert))
    (mails / "a.eml").write_bytes(export_mail("https://10.0.0.1/5-1-x.csv"))
    alerts = {
        "smtp_url": f"submission://127.0.0.1:{server.port}",
        "smtp_user": server.user,
        "smtp_password_env": "SMTP_PASS",
        "to": ["ops@example.com"],
        "from": "exportmon@example.com",
    }
    if trust_ca:
        alerts["smtp_ca_file"] = str(tls_ca.ca_file)
    config = write_config(tmp_path, {**base, "source": dir_source, "alerts": alerts})
    request.node.smtp = server
    return ["-c", config, "run", "--once"], {"SMTP_PASS": server.password}


BAD_CASES = [(protocol, cert_name) for protocol in PROTOCOLS for cert_name in BAD_CERTS]


@pytest.mark.parametrize(("protocol", "cert_name"), BAD_CASES)
def test_a_bad_certificate_is_refused_with_the_ca_file_way_out(
    protocol, cert_name, tmp_path, tls_ca, request
):
    words, trust_ca = BAD_CERTS[cert_name]
    args, env = scenario(protocol, cert_name, tmp_path, tls_ca, request, trust_ca)
    result = run_cli(*args, env=env)
    # A refused certificate is that connection's failure (exit 1), never a config error.
    assert result.code == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if words in line]
    assert lines, f"no line says {words!r}:\n{result.stderr}"
    assert any(CA_KEYS[protocol] in line or "--ca-file" in line for line in lines), lines
    if protocol == "smtp-starttls":
        assert request.node.smtp.messages == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_the_right_ca_file_is_accepted(protocol, tmp_path, tls_ca, request):
    args, env = scenario(protocol, "server", tmp_path, tls_ca, request, trust_ca=True)
    result = run_cli(*args, env=env)
    assert "certificate" not in result.stderr, result.stderr
    if protocol == "smtp-starttls":
        assert result.code == 1  # the refused link: the alert about it goes out
        assert request.node.smtp.messages and request.node.smtp.messages[0].tls
    else:
        assert result.code == 0, result.stderr


def test_plain_imap_and_ftp_work_only_when_configured_and_warn(
    tmp_path, mail_user, ftp_server, tls_ca
):
    source = {
        "kind": "imap",
        "host": "127.0.0.1",
        "port": mail_user.ports.imap,
        "security": "plain",
        "user": mail_user.name,
        "password_env": "MAIL_PASS",
        "archive": "",
    }
    deliver = {
        "ftp_url": f"ftp://127.0.0.1:{ftp_server.port}",
        "ftp_user": ftp_server.user,
        "ftp_password_env": "FTP_PASS",
    }
    config = write_config(
        tmp_path,
        {"ids": [777], "root": str(tmp_path / "state"), "source": source, "deliver": deliver},
    )
    result = run_cli(
        "-c",
        config,
        "run",
        "--once",
        env={"MAIL_PASS": mail_user.password, "FTP_PASS": ftp_server.password},
    )
    assert result.code == 0, result.stderr
    assert 'source.security = "plain": the mail password travels unencrypted' in result.stderr
    # The FTP server is warned about where it is used, once per run: not by a run that
    # delivered nothing, but by one that logs in to it.
    assert "ftp://, not ftps://" not in result.stderr
    (tmp_path / "one.csv").write_text("a\n")
    pushed = run_cli(
        "-c", config, "push-ftp", tmp_path / "one.csv", tmp_path / "one.csv",
        env={"FTP_PASS": ftp_server.password},
    )  # fmt: skip
    assert pushed.code == 0, pushed.stderr
    assert pushed.stderr.count("deliver.ftp_url is ftp://, not ftps://") == 1
    # Without security = "plain", the same port is never used without TLS.
    del source["security"]
    strict = write_config(
        tmp_path,
        {
            "ids": [777],
            "root": str(tmp_path / "state2"),
            "source": {**source, "ca_file": str(tls_ca.ca_file)},
        },
        "strict",
    )
    refused = run_cli("-c", strict, "fetch", env={"MAIL_PASS": mail_user.password})
    # A TLS handshake with a plain-text port fails as that connection's error (exit 1).
    assert refused.code == 1, refused.stderr
    (error,) = [line for line in refused.stderr.splitlines() if line.startswith("ERROR")]
    assert "IMAP server 127.0.0.1" in error and "TLS" in error, error
    assert "unencrypted" not in refused.stderr
