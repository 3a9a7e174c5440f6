"""pytest fixtures that start real servers on 127.0.0.1.

Load with ``pytest_plugins = ["servers.fixtures"]`` in ``tests/conftest.py``.

Session scope: ``tls_ca`` (certificates) and ``dovecot`` (IMAP/POP3; each test
gets its own account through ``mail_user``). Function scope, so every test
starts clean: ``http_server``, ``https_server``, ``ftp_server``,
``ftps_server``, ``sshd`` (OpenSSH, SFTP only; its client keys come from the
session's ``ssh_keys``), ``smtp_server`` (STARTTLS + AUTH), ``smtps_server``, and
``start_server`` for one-off variants such as an HTTPS server with a bad
certificate.

A server that cannot start makes the test *fail* (never skip) with the reason
and, for Dovecot, its log. Set ``EXPORTMON_KEEP_SERVER_FILES=1`` to keep the
temporary Dovecot/TLS directories for inspection.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

from servers import ServerStartError
from servers.browser import Browser
from servers.dovecot import DovecotServer, MailUser
from servers.ftp import FtpServer
from servers.graph import GraphServer
from servers.oauth import OAuthServer
from servers.receiver import Receiver
from servers.smtp import SmtpServer
from servers.sshd import ClientKeys, SshServer
from servers.tlsca import LocalCA
from servers.web import WebServer


class _Startable(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None: ...


S = TypeVar("S", bound=_Startable)


def _keep_files() -> bool:
    return os.environ.get("EXPORTMON_KEEP_SERVER_FILES", "") not in ("", "0")


def _short_tempdir(prefix: str) -> Path:
    # Not pytest's tmp_path: Dovecot's sockets need short paths, and its
    # unprivileged processes need every parent directory to be traversable.
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _start_or_fail(server: S, what: str) -> S:
    try:
        server.start()
    except ServerStartError as exc:
        pytest.fail(f"{what} could not be started:\n{exc}", pytrace=False)
    return server


@pytest.fixture(scope="session")
def tls_ca() -> Iterator[LocalCA]:
    """Session CA: ``ca_file``, ``server``, ``wrong_ca``, ``wrong_host``, ``expired`` certs."""
    directory = _short_tempdir("exportmon-tls-")
    try:
        yield LocalCA(directory)
    finally:
        if not _keep_files():
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot(tls_ca: LocalCA) -> Iterator[DovecotServer]:
    """One Dovecot (IMAP, IMAPS, POP3, POP3S) for the whole session."""
    workdir = _short_tempdir("exportmon-dovecot-")
    server = DovecotServer(workdir, tls_ca.server, tls_ca.ca_file)
    try:
        _start_or_fail(server, "Dovecot")
        yield server
    finally:
        server.stop()
        if not _keep_files():
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def mail_user(dovecot: DovecotServer) -> MailUser:
    """A fresh, empty mail account on the session Dovecot.

    Restarts Dovecot first if an earlier test left it stopped.
    """
    if not dovecot.running:
        _start_or_fail(dovecot, "Dovecot (restart after an earlier test stopped it)")
    return dovecot.add_user()


@pytest.fixture
def start_server(request: pytest.FixtureRequest) -> Callable[[S], S]:
    """Start any server object from :mod:`servers` for this test and stop it afterwards.

    ``start_server(WebServer(tls_ca.wrong_host))`` returns the running server;
    a start failure fails the test.
    """

    def start(server: S) -> S:
        request.addfinalizer(server.stop)
        return _start_or_fail(server, type(server).__name__)

    return start


@pytest.fixture
def http_server() -> Iterator[WebServer]:
    """Plain HTTP file server; register bodies with ``add()``."""
    server = WebServer()
    try:
        yield _start_or_fail(server, "HTTP server")
    finally:
        server.stop()


@pytest.fixture
def https_server(tls_ca: LocalCA) -> Iterator[WebServer]:
    """HTTPS file server with the trusted certificate for 127.0.0.1."""
    server = WebServer(tls_ca.server)
    try:
        yield _start_or_fail(server, "HTTPS server")
    finally:
        server.stop()


@pytest.fixture
def ftp_server(tmp_path: Path) -> Iterator[FtpServer]:
    """Plain FTP server whose ``/`` is a fresh ``home`` directory."""
    server = FtpServer(tmp_path / "ftp-home")
    try:
        yield _start_or_fail(server, "FTP server")
    finally:
        server.stop()


@pytest.fixture
def ftps_server(tmp_path: Path, tls_ca: LocalCA) -> Iterator[FtpServer]:
    """Explicit FTPS server (TLS required on control and data), fresh home."""
    server = FtpServer(tmp_path / "ftps-home", cert=tls_ca.server, ca_file=tls_ca.ca_file)
    try:
        yield _start_or_fail(server, "FTPS server")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ssh_keys() -> Iterator[ClientKeys]:
    """SSH client key pairs (ed25519, ECDSA, PEM RSA, a protected one, an untrusted one)."""
    directory = _short_tempdir("exportmon-sshkeys-")
    try:
        try:
            keys = ClientKeys.create(directory)
        except ServerStartError as exc:
            pytest.fail(f"SSH client keys could not be made:\n{exc}", pytrace=False)
        yield keys
    finally:
        if not _keep_files():
            shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def sshd(ssh_keys: ClientKeys) -> Iterator[SshServer]:
    """OpenSSH on 127.0.0.1 offering SFTP to a key/password user and a chrooted user,
    with a fresh host key and fresh folders."""
    server = SshServer(ssh_keys)
    try:
        yield _start_or_fail(server, "OpenSSH sshd")
    finally:
        if _keep_files():
            server.stop()
        else:
            server.remove()


@pytest.fixture
def smtp_server(tls_ca: LocalCA) -> Iterator[SmtpServer]:
    """SMTP offering STARTTLS; AUTH PLAIN/LOGIN required (also allowed without TLS)."""
    server = SmtpServer(cert=tls_ca.server, ca_file=tls_ca.ca_file)
    try:
        yield _start_or_fail(server, "SMTP server")
    finally:
        server.stop()


@pytest.fixture
def smtps_server(tls_ca: LocalCA) -> Iterator[SmtpServer]:
    """SMTP over implicit TLS with AUTH PLAIN/LOGIN required."""
    server = SmtpServer(cert=tls_ca.server, implicit_tls=True, ca_file=tls_ca.ca_file)
    try:
        yield _start_or_fail(server, "SMTPS server")
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 recording webhook notifications and heartbeat pings."""
    server = Receiver()
    try:
        yield _start_or_fail(server, "webhook receiver")
    finally:
        server.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Headless Chromium with one page, driven over the DevTools protocol."""
    chromium = Browser()
    try:
        yield _start_or_fail(chromium, "headless Chromium")
    finally:
        chromium.stop()


#: The client ids the ``oauth_server`` fixture knows: a public one and a confidential one.
OAUTH_CLIENT = "exportmon-test"
OAUTH_APP = "exportmon-app"
OAUTH_APP_SECRET = "app-secret-9c41d2"


@pytest.fixture
def oauth_server(tls_ca: LocalCA) -> Iterator[OAuthServer]:
    """A local OAuth2 authorization server (device, PKCE, refresh, client credentials)."""
    server = OAuthServer(tls_ca.server, clients={OAUTH_CLIENT: None, OAUTH_APP: OAUTH_APP_SECRET})
    try:
        yield _start_or_fail(server, "OAuth2 server")
    finally:
        server.stop()


@pytest.fixture
def graph_server(tls_ca: LocalCA, oauth_server: OAuthServer) -> Iterator[GraphServer]:
    """A local Microsoft Graph mail API accepting the ``oauth_server``'s tokens."""
    server = GraphServer(tls_ca.server, oauth_server)
    try:
        yield _start_or_fail(server, "Graph server")
    finally:
        server.stop()
