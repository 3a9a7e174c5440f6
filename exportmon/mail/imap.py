"""Reading export mails from an IMAP mailbox (imapclient), cheaply and without side effects.

Polling is incremental: the ledger keeps the mailbox's UIDVALIDITY and the highest
UID already looked at. A poll selects the mailbox read-only (EXAMINE), and when
the server's UIDNEXT shows nothing new it is done without a single SEARCH, so a
mailbox of 100,000 old mails costs what one of 10 does. Otherwise it searches
``UID <last+1>:* (<source.search>)`` (dropping the highest old UID that
``n:*`` always returns), reads the header blocks of the matches to screen them,
and fetches the bodies of the remaining ones only. Everything is read with
``BODY.PEEK`` on a read-only selection, so no ``\\Seen`` flag is ever set.

When UIDVALIDITY changes, the mailbox is read again from the start; mails seen
before are recognised by Message-ID or export token and not processed twice.

Archiving selects the mailbox read-write and moves one delivered mail (by UID,
checked against its Message-ID) with MOVE where the server has it, else COPY,
``\\Deleted`` and ``UID EXPUNGE`` of that UID alone (without UIDPLUS the original
is only flagged, never expunged with others). Nothing else is ever changed. A mail
that a killed process already moved (or copied) is found in the archive folder by
its Message-ID and not moved (or copied) again.

:meth:`ImapSource.wait_for_change` uses IDLE where the server offers it, renewed
before the 29-minute limit of RFC 2177, and returns as soon as the server reports
a new message.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import ssl
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from exportmon.crashpoints import crash_point
from exportmon.errors import (
    ArchiveError,
    ConnectionFailed,
    ExportmonError,
    MailError,
    TLSError,
    reason_text,
)
from exportmon.log import get_logger
from exportmon.mail.message import header, parse
from exportmon.mail.source import (
    ArchiveOutcome,
    Intake,
    MailLocation,
    MailSource,
    PolledMail,
    ServerAddress,
    client_tls_context,
    login_refused,
    login_secret,
    warn_if_plain,
)
from exportmon.net.tls import tls_error
from exportmon.redact import redact

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig
    from exportmon.ledger import Ledger, Mail

log = get_logger(__name__)

#: Header blocks fetched per FETCH command.
HEADER_BATCH = 500
#: Whole mails fetched per FETCH command, and their total size at most.
BODY_BATCH = 50
BODY_BATCH_BYTES = 16 * 1024 * 1024
#: IDLE is renewed after this long; servers may drop it after 30 minutes (RFC 2177).
IDLE_RENEW = 24 * 60.0
#: A connection unused for this long is checked with NOOP before it is trusted.
STALE_AFTER = 120.0


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ImapSource(MailSource):
    """An IMAP mailbox (``[source] kind = "imap"``).

    ``use_move=False`` and ``use_idle=False`` make it behave as with a server that
    lacks those extensions (used by tests; Dovecot has both).
    """

    def __init__(
        self,
        monitor: MonitorConfig,
        *,
        use_move: bool = True,
        use_idle: bool = True,
        idle_renew: float = IDLE_RENEW,
    ) -> None:
        super().__init__(monitor)
        config = monitor.source
        address = ServerAddress.of(config, "imaps", "imap")
        self.host, self.port, self.key, self.where = (
            address.host,
            address.port,
            address.key,
            address.where,
        )
        self.mailbox = config.mailbox
        self.archive_folder = (config.archive or "").strip()
        self.moves_mail = bool(self.archive_folder) and self.archive_folder != self.mailbox
        self.use_move = use_move
        self.use_idle = use_idle
        self.idle_renew = idle_renew
        self._client: IMAPClient | None = None
        self._selected: tuple[str, bool] | None = None
        self._last_used = 0.0
        self._folder_checked = False

    # -- connection -----------------------------------------------------------------

    def _connect(self) -> IMAPClient:
        config = self.monitor.source
        timeout = config.timeout or 60.0
        # Before connecting, as for POP3: a missing or failing secret is a config error,
        # not a connection problem, and leaves nothing open.
        secret = login_secret(self.monitor)
        context = client_tls_context(config)
        warn_if_plain(config, self.where)
        try:
            if config.security == "ssl":
                client = IMAPClient(
                    self.host, self.port, ssl=True, ssl_context=context, timeout=timeout
                )
            else:
                client = IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
                if config.security == "starttls":
                    self._starttls(client, context)
        except ssl.SSLError as exc:
            raise tls_error(f"IMAP server {self.where}", exc, "source.ca_file") from None
        except OSError as exc:
            raise ConnectionFailed(
                f"cannot connect to IMAP server {self.where}: {exc.strerror or exc}",
                hint="check source.host, source.port and source.security",
            ) from None
        except imaplib.IMAP4.error as exc:
            raise ConnectionFailed(
                f"IMAP server {self.where}: {redact(reason_text(exc))}"
            ) from None
        try:
            self._login(client, secret)
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
        log.debug("logged in to %s", self.key)
        return client

    def _starttls(self, client: IMAPClient, context: ssl.SSLContext) -> None:
        try:
            client.starttls(context)
        except ssl.SSLError:
            raise
        except imaplib.IMAP4.error as exc:
            if "STARTTLS" in reason_text(exc).upper():
                raise TLSError(
                    f"IMAP server {self.where} does not offer STARTTLS",
                    hint='use security = "ssl" (usually port 993)',
                ) from None
            raise

    def _login(self, client: IMAPClient, secret: str) -> None:
        config = self.monitor.source
        try:
            if config.auth == "password":
                client.login(config.user, secret)
            elif config.auth in ("xoauth2", "oauth2"):
                client.oauth2_login(config.user, secret)
            else:
                client.oauthbearer_login(config.user, secret)
        except LoginError as exc:
            raise login_refused(f"IMAP server {self.where}", config, reason_text(exc)) from None
        except (OSError, imaplib.IMAP4.abort) as exc:
            raise ConnectionFailed(
                f"IMAP server {self.where} closed the connection during login: {exc}"
            ) from None

    def _ensure(self) -> IMAPClient:
        client = self._client
        if client is not None and time.monotonic() - self._last_used > STALE_AFTER:
            try:
                client.noop()
            except Exception:
                log.debug("IMAP connection to %s went stale; reconnecting", self.where)
                self._drop()
                client = None
        if client is None:
            client = self._client = self._connect()
            self._selected = None
            self._folder_checked = False
        self._last_used = time.monotonic()
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        self._selected = None
        if client is not None:
            with contextlib.suppress(Exception):
                client.shutdown()

    def close(self) -> None:
        client, self._client = self._client, None
        self._selected = None
        if client is not None:
            try:
                client.logout()
            except Exception:
                with contextlib.suppress(Exception):
                    client.shutdown()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn imaplib/socket failures into one-line exportmon errors."""
        try:
            yield
        except ExportmonError:
            raise
        except (imaplib.IMAP4.abort, OSError) as exc:
            self._drop()
            raise ConnectionFailed(
                f"IMAP server {self.where}: connection lost while {doing}: {exc}"
            ) from None
        except imaplib.IMAP4.error as exc:
            reason = redact(reason_text(exc))
            raise MailError(f"IMAP server {self.where} refused {doing}: {reason}") from None

    def _select(self, client: IMAPClient, folder: str, *, readonly: bool) -> dict[bytes, object]:
        try:
            info: dict[bytes, object] = client.select_folder(folder, readonly=readonly)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            raise MailError(
                f"cannot open mailbox {folder!r} on {self.where}: {redact(reason_text(exc))}",
                hint="check source.mailbox",
            ) from None
        self._selected = (folder, readonly)
        return info

    # -- polling ----------------------------------------------------------------------

    def _criteria(self, last: int) -> tuple[str, str | None]:
        search = (self.monitor.source.search or "ALL").strip() or "ALL"
        if "\r" in search or "\n" in search:
            raise MailError("source.search must be one line")
        charset = None if search.isascii() else "UTF-8"
        return f"UID {last + 1}:* ({search})", charset

    def poll(self, ledger: Ledger, *, dry_run: bool = False) -> list[PolledMail]:
        with self._errors(f"reading {self.mailbox!r}"):
            client = self._ensure()
            info = self._select(client, self.mailbox, readonly=True)
            uidvalidity = int(info[b"UIDVALIDITY"])  # type: ignore[call-overload]
            raw_next = info.get(b"UIDNEXT")
            uidnext = int(raw_next) if raw_next is not None else None  # type: ignore[call-overload]
            state = ledger.mailbox_state(self.key, self.mailbox)
            relocating = bool(
                state and state.uidvalidity is not None and state.uidvalidity != uidvalidity
            )
            if relocating:
                log.warning(
                    "the UIDVALIDITY of %s on %s changed: reading it again from the start "
                    "(mails already processed are recognised and skipped)",
                    self.mailbox,
                    self.where,
                )
            last = state.last_uid if state and not relocating else 0
            if uidnext is not None and uidnext <= last + 1:
                return []
            criteria, charset = self._criteria(last)
            uids = sorted(uid for uid in client.search(criteria, charset) if uid > last)
            highest = max([last, *uids, (uidnext - 1) if uidnext else 0])
            intake = Intake(self.monitor, ledger, dry_run=dry_run, relocating=relocating)
            for chunk in _chunks(uids, HEADER_BATCH):
                self._take(client, intake, chunk, uidvalidity)
                if not dry_run:
                    ledger.save_mailbox_state(self.key, self.mailbox, uidvalidity, chunk[-1])
            if not dry_run and (highest != last or relocating or state is None):
                ledger.save_mailbox_state(self.key, self.mailbox, uidvalidity, highest)
            return sorted(intake.results, key=lambda polled: int(polled.location.uid))

    def _take(self, client: IMAPClient, intake: Intake, uids: list[int], uidvalidity: int) -> None:
        wanted: list[tuple[int, int]] = []
        headers = client.fetch(uids, [b"RFC822.SIZE", b"BODY.PEEK[HEADER]"])
        for uid in uids:
            data = headers.get(uid)
            if data is None:  # expunged meanwhile
                continue
            location = MailLocation(self.key, self.mailbox, uidvalidity, str(uid))
            known = intake.known(location)
            if known is not None and not _incomplete(intake.ledger, known):
                continue
            size = data.get(b"RFC822.SIZE")
            size = int(size) if isinstance(size, int) else None
            block = data.get(b"BODY[HEADER]") or b""
            if intake.screen_headers(location, bytes(block), size):
                wanted.append((uid, size or 0))
        for batch in _size_batches(wanted):
            bodies = client.fetch(batch, [b"BODY.PEEK[]"])
            crash_point("imap.fetched")
            for uid in batch:
                raw = (bodies.get(uid) or {}).get(b"BODY[]")
                if raw is None:
                    continue
                intake.take(MailLocation(self.key, self.mailbox, uidvalidity, str(uid)), raw)

    # -- archiving --------------------------------------------------------------------

    def archive(self, mail: Mail) -> ArchiveOutcome:
        if not self.moves_mail:
            return "kept"
        with self._errors(f"archiving mail {mail.uid}"):
            client = self._ensure()
            info = self._select(client, self.mailbox, readonly=False)
            uidvalidity = int(info[b"UIDVALIDITY"])  # type: ignore[call-overload]
            uid = self._locate(client, mail, uidvalidity)
            if uid is None:
                if self._archived_before(client, mail):
                    log.info(
                        "mail %r is already in %s (moved before an interruption)",
                        mail.subject,
                        self.archive_folder,
                    )
                    return "archived"
                return "gone"
            self._ensure_archive_folder(client)
            try:
                if self.use_move and client.has_capability("MOVE"):
                    client.move([uid], self.archive_folder)
                else:
                    self._copy_delete(client, uid, mail)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                raise ArchiveError(
                    f"cannot move mail {uid} to {self.archive_folder!r} on {self.where}: "
                    f"{redact(reason_text(exc))}",
                    hint="check source.archive",
                ) from None
            log.info("moved mail %r to %s", mail.subject, self.archive_folder)
            return "archived"

    def _copy_delete(self, client: IMAPClient, uid: int, mail: Mail) -> None:
        # A copy made by a process killed before it could delete the original is not
        # made twice. It is recognised by its bytes (COPY keeps them), not only by its
        # Message-ID, so another mail that merely reuses the Message-ID is still copied
        # before its original is deleted. Bodies are read only when the archive holds a
        # mail with the same Message-ID. This path is taken only without MOVE.
        same_id = self._archive_copies(client, mail)
        copies: set[str] = set()
        if same_id:
            copies = {_digest(data) for data in client.fetch(same_id, [b"BODY.PEEK[]"]).values()}
        self._select(client, self.mailbox, readonly=False)
        copied = bool(copies) and (
            _digest(client.fetch([uid], [b"BODY.PEEK[]"]).get(uid, {})) in copies
        )
        if not copied:
            client.copy([uid], self.archive_folder)
            crash_point("imap.copied")
        client.add_flags([uid], [b"\\Deleted"], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge([uid])
        else:
            # A plain EXPUNGE would also remove other mails flagged \Deleted.
            log.warning(
                "%s has no UIDPLUS: the archived mail is flagged \\Deleted in %s and "
                "disappears at the next expunge",
                self.where,
                self.mailbox,
            )

    def _ensure_archive_folder(self, client: IMAPClient) -> None:
        if self._folder_checked:
            return
        if not client.folder_exists(self.archive_folder):
            try:
                client.create_folder(self.archive_folder)
            except imaplib.IMAP4.abort:
                raise
            except imaplib.IMAP4.error as exc:
                raise ArchiveError(
                    f"archive folder {self.archive_folder!r} does not exist on {self.where} "
                    f"and cannot be created: {redact(reason_text(exc))}",
                    hint="create it or set source.archive",
                ) from None
            log.info("created archive folder %r on %s", self.archive_folder, self.where)
        self._folder_checked = True

    def _locate(self, client: IMAPClient, mail: Mail, uidvalidity: int) -> int | None:
        """The current UID of ``mail``: its recorded one if still valid, else by Message-ID."""
        if mail.uid and mail.uid.isdigit() and mail.uidvalidity == uidvalidity:
            uid = int(mail.uid)
            found = client.fetch([uid], [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
            data = found.get(uid)
            if data is not None:
                block = next((v for k, v in data.items() if k.startswith(b"BODY[")), b"")
                if mail.message_id is None or _message_id(block) == mail.message_id:
                    return uid
        return self._find_message_id(client, mail.message_id)

    def _archived_before(self, client: IMAPClient, mail: Mail) -> bool:
        """Whether ``mail`` is in the archive folder already: a process killed between the
        move and the ledger's record of it left it there."""
        return bool(self._archive_copies(client, mail))

    def _archive_copies(self, client: IMAPClient, mail: Mail) -> list[int]:
        """The UIDs of the mails in the archive folder with exactly ``mail``'s Message-ID
        (the archive folder is left selected read-only when it exists)."""
        if not mail.message_id or not client.folder_exists(self.archive_folder):
            return []
        self._select(client, self.archive_folder, readonly=True)
        return self._uids_with_message_id(client, mail.message_id)

    def _find_message_id(self, client: IMAPClient, message_id: str | None) -> int | None:
        """The UID of the mail with exactly this Message-ID in the selected folder."""
        uids = self._uids_with_message_id(client, message_id)
        return uids[0] if uids else None

    def _uids_with_message_id(self, client: IMAPClient, message_id: str | None) -> list[int]:
        """The UIDs of the mails with exactly this Message-ID in the selected folder, in
        order (SEARCH HEADER matches substrings, so each is checked)."""
        if not message_id or not message_id.isascii():
            return []
        candidates = client.search(["HEADER", "Message-ID", message_id])
        if not candidates:
            return []
        found = client.fetch(candidates, [b"BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        uids = []
        for uid in sorted(found):
            block = next((v for k, v in found[uid].items() if k.startswith(b"BODY[")), b"")
            if _message_id(block) == message_id:
                uids.append(int(uid))
        return uids

    # -- waiting ------------------------------------------------------------------------

    def wait_for_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        with self._errors("waiting for new mail"):
            client = self._ensure()
            if self._selected != (self.mailbox, True):
                self._select(client, self.mailbox, readonly=True)
            if self.use_idle and client.has_capability("IDLE"):
                return self._idle(client, deadline)
            return self._watch(client, deadline)

    def _idle(self, client: IMAPClient, deadline: float) -> bool:
        # Dovecot pushes only changes made while IDLE runs; mail that arrived since
        # the last command is reported with the next command's answer. So ask first,
        # and read the answer to DONE too.
        if _new_mail(client.noop()[1]):
            return True
        client.idle()
        idling = True
        started = time.monotonic()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    idling = False
                    return _new_mail(client.idle_done()[1])
                wait = max(0.0, min(remaining, self.idle_renew - (time.monotonic() - started)))
                asked = time.monotonic()
                responses = client.idle_check(timeout=wait)
                if _new_mail(responses):
                    return True
                if not responses and time.monotonic() - asked < wait * 0.5:
                    # The socket was readable but nothing came: the server hung up.
                    raise ConnectionFailed(f"IMAP server {self.where} closed the connection")
                if time.monotonic() - started >= self.idle_renew:
                    idling = False
                    # Mail that arrived meanwhile may be reported with DONE's answer.
                    if _new_mail(client.idle_done()[1]):
                        return True
                    client.idle()
                    idling = True
                    started = time.monotonic()
        finally:
            if idling and self._client is not None and self._client is client:
                try:
                    client.idle_done()
                except Exception:
                    self._drop()
            self._last_used = time.monotonic()

    def _watch(self, client: IMAPClient, deadline: float) -> bool:
        """Without IDLE: a NOOP every ``poll_interval`` reports new mail (EXISTS)."""
        interval = max(0.1, self.monitor.poll_interval or 60.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, interval))
            _, responses = client.noop()
            self._last_used = time.monotonic()
            if _new_mail(responses):
                return True


def _new_mail(responses: list[tuple[object, ...]]) -> bool:
    """Whether untagged responses announce a new message; :class:`ConnectionFailed` on BYE."""
    for response in responses:
        if len(response) >= 2 and response[1] in (b"EXISTS", b"RECENT"):
            return True
        if response and response[0] == b"BYE":
            raise ConnectionFailed("the IMAP server ended the session")
    return False


def _incomplete(ledger: Ledger, mail: Mail) -> bool:
    """A mail recorded as new but without exports: a crash cut its intake short."""
    return mail.state == "new" and not ledger.exports(mail_id=mail.id)


def _digest(data: dict[bytes, object]) -> str:
    """The digest of a mail fetched with ``BODY.PEEK[]``: a COPY has the same bytes."""
    raw = data.get(b"BODY[]")
    return hashlib.sha256(bytes(raw) if isinstance(raw, bytes | bytearray) else b"").hexdigest()


def _message_id(block: bytes) -> str | None:
    value = header(parse(bytes(block)), "Message-ID")
    return value.strip() if value else None


def _size_batches(items: list[tuple[int, int]]) -> Iterator[list[int]]:
    batch: list[int] = []
    total = 0
    for uid, size in items:
        if batch and (len(batch) >= BODY_BATCH or total + size > BODY_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(uid)
        total += size
    if batch:
        yield batch
