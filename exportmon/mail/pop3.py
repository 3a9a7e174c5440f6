"""Reading export mails from a POP3 account (poplib), by UIDL, deleting nothing by default.

Each poll is one short session (POP3 servers lock the mailbox while a session is
open): ``UIDL`` lists every mail's unique id, ids already in the ledger are
skipped, the header block of each new one is read with ``TOP n 0`` to screen it,
and only the remaining ones are retrieved. A mail is deleted from the server only
with ``source.delete_after = true`` and only once its export is delivered
(:meth:`Pop3Source.archive`, committed at once with ``QUIT``).

OAuth2 logins use ``AUTH XOAUTH2`` with an initial response (RFC 5034, as Gmail
and Microsoft 365 accept it); see :func:`xoauth2_initial_response`.
"""

from __future__ import annotations

import base64
import contextlib
import poplib
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

from exportmon.errors import (
    ArchiveError,
    ConnectionFailed,
    ExportmonError,
    MailError,
    TLSError,
)
from exportmon.log import get_logger
from exportmon.mail.source import (
    ArchiveOutcome,
    Intake,
    MailLocation,
    MailSource,
    PolledMail,
    ServerAddress,
    client_tls_context,
    known_uids,
    login_refused,
    login_secret,
    warn_if_plain,
)
from exportmon.net.tls import tls_error

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig
    from exportmon.ledger import Ledger, Mail

log = get_logger(__name__)

# poplib refuses lines over 2048 bytes, which real mails (long HTML lines) exceed.
poplib._MAXLINE = max(poplib._MAXLINE, 1024 * 1024)  # type: ignore[attr-defined]


def xoauth2_initial_response(user: str, token: str) -> str:
    """The base64 XOAUTH2 SASL response for ``user`` with OAuth2 access ``token``.

    ``user=<user>^Aauth=Bearer <token>^A^A`` (Google's and Microsoft's format).
    """
    return base64.b64encode(f"user={user}\x01auth=Bearer {token}\x01\x01".encode()).decode()


class Pop3Source(MailSource):
    """A POP3 account (``[source] kind = "pop3"``)."""

    def __init__(self, monitor: MonitorConfig) -> None:
        super().__init__(monitor)
        config = monitor.source
        address = ServerAddress.of(config, "pop3s", "pop3")
        self.host, self.port, self.key, self.where = (
            address.host,
            address.port,
            address.key,
            address.where,
        )
        self.mailbox = ""
        self.moves_mail = config.delete_after
        self._count: int | None = None

    # -- connection -----------------------------------------------------------------

    def _connect(self) -> poplib.POP3:
        config = self.monitor.source
        timeout = config.timeout or 60.0
        # Before connecting: a failing password command leaves nothing open.
        secret = login_secret(self.monitor)
        context = client_tls_context(config)
        warn_if_plain(config, self.where)
        client: poplib.POP3
        try:
            if config.security == "ssl":
                client = poplib.POP3_SSL(self.host, self.port, context=context, timeout=timeout)
            else:
                client = poplib.POP3(self.host, self.port, timeout=timeout)
                if config.security == "starttls":
                    try:
                        client.stls(context)
                    except poplib.error_proto as exc:
                        client.close()
                        raise TLSError(
                            f"POP3 server {self.where} does not offer STLS: {exc}",
                            hint='use security = "ssl" (usually port 995)',
                        ) from None
        except ssl.SSLError as exc:
            raise tls_error(f"POP3 server {self.where}", exc, "source.ca_file") from None
        except OSError as exc:
            raise ConnectionFailed(
                f"cannot connect to POP3 server {self.where}: {exc.strerror or exc}",
                hint="check source.host, source.port and source.security",
            ) from None
        except poplib.error_proto as exc:
            raise ConnectionFailed(f"POP3 server {self.where}: {exc}") from None
        try:
            if config.auth == "password":
                client.user(config.user)
                client.pass_(secret)
            else:
                # poplib has no AUTH command; _shortcmd sends one line and checks +OK.
                client._shortcmd(  # type: ignore[attr-defined]
                    "AUTH XOAUTH2 " + xoauth2_initial_response(config.user, secret)
                )
        except poplib.error_proto as exc:
            with contextlib.suppress(Exception):
                client.close()
            reason = exc.args[0].decode("utf-8", "replace") if exc.args else ""
            raise login_refused(f"POP3 server {self.where}", config, reason) from None
        except OSError as exc:
            with contextlib.suppress(Exception):
                client.close()
            raise ConnectionFailed(
                f"POP3 server {self.where} closed the connection during login: {exc}"
            ) from None
        return client

    @contextlib.contextmanager
    def _session(self, doing: str) -> Iterator[poplib.POP3]:
        """A logged-in session ended with QUIT (which commits deletions)."""
        client = self._connect()
        try:
            yield client
            client.quit()
        except ExportmonError:
            with contextlib.suppress(Exception):
                client.close()
            raise
        except (OSError, EOFError) as exc:
            with contextlib.suppress(Exception):
                client.close()
            raise ConnectionFailed(
                f"POP3 server {self.where}: connection lost while {doing}: {exc}"
            ) from None
        except poplib.error_proto as exc:
            with contextlib.suppress(Exception):
                client.close()
            raise MailError(f"POP3 server {self.where} refused {doing}: {exc}") from None

    @staticmethod
    def _listing(client: poplib.POP3) -> list[tuple[int, str]]:
        _, lines, _ = client.uidl()
        listing = []
        for line in lines:
            parts = line.decode("ascii", "replace").split()
            if len(parts) >= 2 and parts[0].isdigit():
                listing.append((int(parts[0]), parts[1]))
        return listing

    # -- polling ----------------------------------------------------------------------

    def poll(self, ledger: Ledger, *, dry_run: bool = False) -> list[PolledMail]:
        intake = Intake(self.monitor, ledger, dry_run=dry_run)
        with self._session("reading the mailbox") as client:
            listing = self._listing(client)
            self._count = len(listing)
            seen = known_uids(ledger, self.key)
            for number, uid in listing:
                if uid in seen:
                    continue
                location = MailLocation(self.key, "", None, uid)
                # With a message number LIST answers one line (b"+OK 1 4242"), not
                # the listing typeshed types it as.
                size = int(cast(bytes, client.list(number)).split()[2])
                try:
                    _, lines, _ = client.top(number, 0)
                except poplib.error_proto:
                    lines = None  # no TOP: decide on the whole mail
                if lines is not None:
                    headers = b"\r\n".join(lines) + b"\r\n"
                    if not intake.screen_headers(location, headers, size):
                        continue
                _, lines, _ = client.retr(number)
                intake.take(location, b"\r\n".join(lines) + b"\r\n")
        return intake.results

    # -- deleting ---------------------------------------------------------------------

    def archive(self, mail: Mail) -> ArchiveOutcome:
        if not self.moves_mail:
            return "kept"
        with self._session(f"deleting mail {mail.uid}") as client:
            numbers = [n for n, uid in self._listing(client) if uid == mail.uid]
            if not numbers:
                return "gone"
            try:
                client.dele(numbers[0])
            except poplib.error_proto as exc:
                raise ArchiveError(f"POP3 server {self.where} refused to delete: {exc}") from None
        log.info("deleted mail %r from the POP3 server (delete_after = true)", mail.subject)
        return "archived"

    # -- waiting ------------------------------------------------------------------------

    def wait_for_change(self, timeout: float) -> bool:
        """POP3 cannot push: check the message count every ``poll_interval`` (True if changed)."""
        deadline = time.monotonic() + max(0.0, timeout)
        interval = max(1.0, self.monitor.poll_interval or 60.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, interval))
            with self._session("counting mails") as client:
                count, _ = client.stat()
            if self._count is None or count != self._count:
                self._count = count
                return True
