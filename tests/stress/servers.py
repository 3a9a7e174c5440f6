"""The real test servers outside pytest: for the full-size stress runs."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from servers.dovecot import DovecotServer
from servers.ftp import FtpServer
from servers.smtp import SmtpServer
from servers.tlsca import LocalCA
from servers.web import WebServer


@dataclass
class Servers:
    """One of each server the fixtures give a test, sharing one CA."""

    tls_ca: LocalCA
    dovecot: DovecotServer
    https_server: WebServer
    ftps_server: FtpServer
    smtp_server: SmtpServer


@contextlib.contextmanager
def running_servers(workdir: Path) -> Iterator[Servers]:
    """Start Dovecot, HTTPS, FTPS and SMTP on 127.0.0.1; stop them all afterwards.

    Dovecot's files live in a short ``/tmp`` folder (its socket paths must be
    short and traversable by ``nobody``), the FTP home under ``workdir``.
    """
    short = Path(tempfile.mkdtemp(prefix="exportmon-stress-"))
    short.chmod(0o755)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, short, ignore_errors=True)
        (short / "tls").mkdir(mode=0o755)
        (short / "dovecot").mkdir(mode=0o755)
        tls_ca = LocalCA(short / "tls")
        dovecot = DovecotServer(short / "dovecot", tls_ca.server, tls_ca.ca_file)
        https_server = WebServer(tls_ca.server)
        ftps_server = FtpServer(workdir / "ftps-home", cert=tls_ca.server, ca_file=tls_ca.ca_file)
        smtp_server = SmtpServer(cert=tls_ca.server, ca_file=tls_ca.ca_file)
        for server in (dovecot, https_server, ftps_server, smtp_server):
            server.start()
            stack.callback(server.stop)
        yield Servers(tls_ca, dovecot, https_server, ftps_server, smtp_server)
