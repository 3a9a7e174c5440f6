"""Mail sources: the common interface, and taking new mails into the ledger.

A :class:`MailSource` is where export mails come from: an IMAP mailbox
(:mod:`exportmon.mail.imap`), a POP3 account (:mod:`exportmon.mail.pop3`), or a
local Maildir, mbox file, directory of ``.eml`` files or list of ``.eml`` files
(:mod:`exportmon.mail.local`), or a folder export files are dropped into
(:mod:`exportmon.mail.dropfolder`). :func:`open_source` picks the one a monitor
configures. Every source:

* ``poll(ledger, dry_run=False)`` looks at mails it has not seen before (cheaply:
  IMAP asks only for UIDs above the last one seen), records each one in the ledger
  with its exports, and returns them as :class:`PolledMail`;
* ``archive(mail)`` moves a delivered mail to the archive folder (or deletes it
  from a POP3 server with ``delete_after``) and says what it did;
* ``wait_for_change(timeout)`` blocks until new mail may be there (IMAP IDLE) or
  the time is up;
* ``close()`` ends any connection. Sources are context managers.

Connection problems raise :class:`~exportmon.errors.ConnectionFailed`,
:class:`~exportmon.errors.TLSError` or :class:`~exportmon.errors.AuthError` with a
one-line message naming the server.

:class:`Intake` is the part every source shares: it screens a mail (from its
headers alone where the source can fetch those first), skips mails seen before
(by location, then Message-ID, then export token), recognises the exports,
saves attached export files, and records mail and exports in the ledger.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from exportmon.atomic import atomic_write
from exportmon.errors import AuthError, ConfigError, ExportmonError, reason_text
from exportmon.hooks.credentials import SecretSource, resolve
from exportmon.ledger import Export, Ledger, Mail
from exportmon.log import get_logger
from exportmon.mail.message import (
    FoundExport,
    MailInfo,
    Recognition,
    identify,
    mail_info,
    parse,
    recognise,
    screen,
)
from exportmon.net.tls import client_context
from exportmon.paths import download_hint, export_dir
from exportmon.redact import redact
from exportmon.units import format_size

if TYPE_CHECKING:
    from pathlib import Path

    from exportmon.config.schema import MonitorConfig, SourceConfig

log = get_logger(__name__)

#: Mails larger than this are not read into memory; export files that big come as links.
MAX_MAIL_BYTES = 64 * 1024 * 1024

Outcome = Literal["export", "ignored", "duplicate", "failed"]
#: What :meth:`MailSource.archive` did: moved/deleted, left by configuration, not found.
ArchiveOutcome = Literal["archived", "kept", "gone"]


@dataclass(frozen=True)
class MailLocation:
    """Where a mail is: the ledger's source key, mailbox, UIDVALIDITY and UID (or key)."""

    source: str
    mailbox: str
    uidvalidity: int | None
    uid: str

    def describe(self) -> str:
        source = display_source(self.source)
        return f"{source}/{self.mailbox}#{self.uid}" if self.mailbox else f"{source}#{self.uid}"


@dataclass
class PolledMail:
    """A mail :meth:`MailSource.poll` looked at, and what became of it.

    ``outcome`` is ``export`` (recorded with its exports), ``ignored`` (not for
    this monitor; left alone), ``duplicate`` (seen before elsewhere) or ``failed``
    (cannot be used; recorded with the reason). In a dry run ``mail`` is None and
    ``exports`` empty, while ``found`` still lists what would be recorded.
    """

    location: MailLocation
    outcome: Outcome
    info: MailInfo | None = None
    reason: str | None = None
    mail: Mail | None = None
    exports: list[Export] = field(default_factory=list)
    found: list[FoundExport] = field(default_factory=list)

    def label(self) -> str:
        """A short description for messages: subject and sender."""
        if self.info is None:
            return self.location.describe()
        subject = self.info.subject or "(no subject)"
        return f"{subject!r} from {self.info.sender or 'unknown sender'}"


class MailSource:
    """Base of the mail sources; see the module documentation for the contract."""

    #: The source's identity in the ledger, e.g. ``imaps://user@host:993``.
    key: str = ""
    mailbox: str = ""
    #: Whether :meth:`archive` changes the store (moves or deletes the mail).
    moves_mail: bool = False

    def __init__(self, monitor: MonitorConfig) -> None:
        self.monitor = monitor

    def poll(self, ledger: Ledger, *, dry_run: bool = False) -> list[PolledMail]:
        """Look at new mails, record them (unless ``dry_run``) and return them."""
        raise NotImplementedError

    def archive(self, mail: Mail) -> ArchiveOutcome:
        """Move a delivered mail out of the way; raises :class:`ArchiveError` on failure."""
        return "kept"

    def wait_for_change(self, timeout: float) -> bool:
        """Wait until new mail may have arrived (True) or ``timeout`` seconds passed (False)."""
        time.sleep(max(0.0, timeout))
        return False

    def owns(self, mail: Mail) -> bool:
        """Whether ``mail`` was recorded from this source (and so can be archived here)."""
        return mail.source == self.key and mail.mailbox == self.mailbox

    def close(self) -> None:
        """End any connection; the source reconnects when used again."""

    def __enter__(self) -> MailSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ServerAddress:
    """How a mail server is named: in the ledger (``key``) and in messages (``where``)."""

    host: str
    port: int
    #: ``<scheme>://<user>@<host>:<port>``, the mails' source in the ledger.
    key: str
    #: ``<host>:<port>``.
    where: str

    @classmethod
    def of(cls, config: SourceConfig, tls_scheme: str, plain_scheme: str) -> ServerAddress:
        port = config.default_port()
        host = f"[{config.host}]" if ":" in config.host else config.host
        scheme = tls_scheme if config.security == "ssl" else plain_scheme
        return cls(config.host, port, f"{scheme}://{config.user}@{host}:{port}", f"{host}:{port}")


def display_source(key: str) -> str:
    """A source's ledger key as a URL a reader can take apart: the user escaped
    (``imaps://someone%40gmail.com@imap.gmail.com:993``)."""
    scheme, sep, rest = key.partition("://")
    user, at, host = rest.rpartition("@")
    if not (sep and at):
        return key
    return f"{scheme}://{quote(user, safe='')}@{host}"


def source_url(config: SourceConfig) -> str:
    """``imap://user@host/INBOX`` for a mail server source (the user escaped), else
    ``kind:path``."""
    if config.kind not in ("imap", "pop3"):
        return f"{config.kind}:{config.path}"
    host = f"[{config.host}]" if ":" in config.host else config.host
    mailbox = f"/{quote(config.mailbox)}" if config.kind == "imap" else ""
    return f"{config.kind}://{quote(config.user, safe='')}@{host}{mailbox}"


#: The servers already warned about in this process: a warning once per run.
_warned_plain: set[str] = set()


def warn_if_plain(config: SourceConfig, where: str) -> None:
    """Warn, once per run, that ``security = "plain"`` sends the login unencrypted;
    said where the connection is made, so commands that never connect say nothing."""
    if config.security != "plain" or where in _warned_plain:
        return
    _warned_plain.add(where)
    log.warning(
        'source.security = "plain": the mail password travels unencrypted to %s '
        '(use "ssl" or "starttls" where the server offers it)',
        where,
    )


def client_tls_context(config: SourceConfig) -> ssl.SSLContext:
    """A verifying TLS context for the mail server: system CAs plus ``source.ca_file``."""
    return client_context(config.ca_file, ca_key="source.ca_file")


def login_secret(monitor: MonitorConfig) -> str:
    """The password; for ``auth = "oauth2"`` a fresh access token from the saved sign-in
    (renewed when needed); for xoauth2/oauthbearer one from ``source.token_command``."""
    config = monitor.source
    if config.auth == "password":
        return resolve(config.password_source())
    if config.auth == "oauth2":
        from exportmon import oauth

        return oauth.access_token(monitor)
    # Tokens expire: run the command for every login.
    return resolve(SecretSource("source.token", command=config.token_command), cache=False)


def login_refused(server: str, config: SourceConfig, reason: str) -> AuthError:
    """The one-line error for credentials the server refused (secrets masked)."""
    if config.auth == "oauth2":
        hint = "check source.user, that the app may use this protocol, and the sign-in (login)"
    else:
        how = "password" if config.auth == "password" else f"{config.auth} token"
        hint = f"check source.user and the {how}"
    if reason.startswith(("b'", 'b"')):  # a bytes repr some libraries put in their text
        reason = reason_text(Exception(reason))
    return AuthError(
        f"{server} refused the login of {config.user}: {redact(reason) or 'no reason given'}",
        hint=hint,
    )


def open_source(monitor: MonitorConfig) -> MailSource:
    """The mail source ``monitor`` configures (``[source] kind``); connects on first use."""
    kind = monitor.source.kind
    if kind == "imap":
        from exportmon.mail.imap import ImapSource

        return ImapSource(monitor)
    if kind == "pop3":
        from exportmon.mail.pop3 import Pop3Source

        return Pop3Source(monitor)
    from exportmon.mail.local import DirSource, MaildirSource, MboxSource

    if kind == "maildir":
        return MaildirSource(monitor)
    if kind == "mbox":
        return MboxSource(monitor)
    if kind == "dir":
        return DirSource(monitor)
    if kind == "graph":
        from exportmon.mail.graph import GraphSource

        return GraphSource(monitor)
    if kind == "folder":
        from exportmon.mail.dropfolder import FolderSource

        return FolderSource(monitor)
    raise ConfigError(f"unknown source kind {kind!r}", path=monitor.path, key="source.kind")


# --- intake: from raw mail to ledger records ----------------------------------------


def known_uids(
    ledger: Ledger, source: str, mailbox: str = "", uidvalidity: int | None = None
) -> set[str]:
    """The UIDs (or keys) of mails taken from ``source`` before, in one query.

    Sources without incremental UIDs (POP3, local stores) compare their listing
    with this set. A mail recorded as new but without exports (a crash cut its
    intake short) is left out, so it is taken again.
    """
    return ledger.known_uids(source, mailbox, uidvalidity)


def export_key(found: FoundExport, info: MailInfo, raw_digest: str) -> str:
    """The ledger key that makes an export unique: its token, else the mail and file.

    ITRP gives every export file a token; an attachment adds its name to it. Without
    a token the mail's Message-ID (or a digest of the mail) stands in.
    """
    base = found.token or info.message_id or f"sha256:{raw_digest}"
    if found.kind == "attachment":
        return f"{base}/{found.file_name}"
    if found.token:
        return found.token
    if found.link is None:
        return f"{base}/no-link"
    name = found.file_name or "link-" + hashlib.sha256(found.link.encode()).hexdigest()[:12]
    return f"{base}/{name}"


class Intake:
    """Takes the mails of one poll into the ledger (see the module documentation).

    ``relocating`` is set after a UIDVALIDITY change: mails found again are then
    expected and skipped quietly.
    """

    def __init__(
        self,
        monitor: MonitorConfig,
        ledger: Ledger,
        *,
        dry_run: bool = False,
        relocating: bool = False,
    ) -> None:
        self.monitor = monitor
        self.ledger = ledger
        self.dry_run = dry_run
        self.relocating = relocating
        self.results: list[PolledMail] = []
        # What this poll took, for duplicates a dry run cannot look up in the ledger.
        self._taken_ids: set[str] = set()
        self._taken_keys: set[str] = set()

    # -- the steps a source calls -------------------------------------------------

    def known(self, location: MailLocation) -> Mail | None:
        """The ledger's record of the mail at ``location``, if it was recorded before."""
        return self.ledger.find_mail(
            source=location.source,
            mailbox=location.mailbox,
            uidvalidity=location.uidvalidity,
            uid=location.uid,
        )

    def screen_headers(self, location: MailLocation, headers: bytes, size: int | None) -> bool:
        """Decide from the header block alone; True when the whole mail is needed.

        When False, the outcome (ignored, duplicate or failed) is already recorded.
        """
        try:
            message = parse(headers)
            info = mail_info(message)
        except Exception:  # hostile header block: let the full parse report it
            return True
        if self._duplicate(location, info):
            return False
        reason = screen(message, self.monitor)
        if reason is None:
            identity = identify(message, self.monitor)
            if identity is not None and identity[1] is not None:
                if identity[1] not in self.monitor.ids:
                    self._unmonitored(identity[1])
                    reason = f"export id {identity[1]} is not monitored"
            elif identity is None and not self.monitor.source.accept_forwarded:
                reason = "not an export mail"
        if reason is not None:
            self._ignore(location, info, reason)
            return False
        if size is not None and size > MAX_MAIL_BYTES:
            self.too_large(location, size, info)
            return False
        return True

    def too_large(
        self, location: MailLocation, size: int | None, info: MailInfo | None = None
    ) -> PolledMail:
        """Record a mail too large to read (``size`` bytes, if known) as failed."""
        shown = f"{format_size(size)}, more" if size is not None else "more"
        return self._fail(
            location,
            info,
            f"mail is {shown} than the {format_size(MAX_MAIL_BYTES)} exportmon reads "
            "(exports that big should come as a link)",
        )

    def take(self, location: MailLocation, raw: bytes) -> PolledMail:
        """Recognise a whole mail and record it with its exports."""
        if len(raw) > MAX_MAIL_BYTES:
            return self.too_large(location, len(raw))
        try:
            message = parse(raw)
            recognition = recognise(message, self.monitor)
        except Exception as exc:  # hostile mail: one line, the others go on
            log.debug("cannot parse mail %s", location.describe(), exc_info=True)
            return self._fail(location, None, f"cannot read the mail ({type(exc).__name__})")
        duplicate = self._duplicate(location, recognition.info)
        if duplicate is not None:
            return duplicate
        if recognition.skip is not None:
            if recognition.unmonitored is not None:
                self._unmonitored(recognition.unmonitored)
            return self._ignore(location, recognition.info, recognition.skip)
        if recognition.export_id is None:
            return self._fail(location, recognition.info, recognition.problem or "unreadable")
        return self._record(location, recognition, hashlib.sha256(raw).hexdigest())

    # -- outcomes -----------------------------------------------------------------

    def _add(self, polled: PolledMail) -> PolledMail:
        self.results.append(polled)
        return polled

    def _add_mail(
        self, location: MailLocation, info: MailInfo | None, state: str, note: str | None
    ) -> Mail | None:
        if self.dry_run:
            return None
        return self.ledger.add_mail(
            source=location.source,
            mailbox=location.mailbox,
            uidvalidity=location.uidvalidity,
            uid=location.uid,
            message_id=info.message_id if info else None,
            sender=info.sender if info else None,
            subject=info.subject if info else None,
            sent_at=info.sent_at if info else None,
            state=state,
            note=note,
        )

    def _ignore(self, location: MailLocation, info: MailInfo, reason: str) -> PolledMail:
        log.debug("leaving mail %s alone: %s", location.describe(), reason)
        if "allowed_senders" in reason and not self.dry_run:
            sender = info.senders[0] if info.senders else ""
            if self.ledger.notice_once(f"sender:{sender}"):
                log.warning("mail from %s left alone: %s", info.sender, reason)
        mail = self._add_mail(location, info, "ignored", reason)
        return self._add(PolledMail(location, "ignored", info, reason, mail))

    def _unmonitored(self, export_id: int) -> None:
        if self.dry_run or self.ledger.notice_once(f"unmonitored:{export_id}"):
            log.info(
                "export mails for export id %s are left alone: it is not in ids (logged once)",
                export_id,
            )

    def _fail(self, location: MailLocation, info: MailInfo | None, reason: str) -> PolledMail:
        subject = info.subject if info and info.subject else location.describe()
        log.error("cannot use mail %r: %s", subject, reason)
        mail = self._add_mail(location, info, "failed", reason)
        return self._add(PolledMail(location, "failed", info, reason, mail))

    def _duplicate(self, location: MailLocation, info: MailInfo) -> PolledMail | None:
        """A mail with this Message-ID is in the ledger already (elsewhere): skip it."""
        if not info.message_id:
            return None
        earlier = self.ledger.find_mail(message_id=info.message_id)
        if earlier is None or self._same_place(earlier, location):
            if info.message_id in self._taken_ids:
                return self._skip_duplicate(location, info, None)
            return None
        return self._skip_duplicate(location, info, earlier)

    @staticmethod
    def _same_place(mail: Mail, location: MailLocation) -> bool:
        return (mail.source, mail.mailbox, mail.uidvalidity, mail.uid) == (
            location.source,
            location.mailbox,
            location.uidvalidity,
            location.uid,
        )

    def _skip_duplicate(
        self, location: MailLocation, info: MailInfo, earlier: Mail | None
    ) -> PolledMail:
        if earlier is None:
            reason = "already seen in this poll"
        else:
            reason = f"already seen as mail #{earlier.id} ({earlier.state})"
        if self.relocating:
            log.debug("mail %s found again after a UIDVALIDITY change", location.describe())
        else:
            log.info("skipping mail %r: %s", info.subject, reason)
        mail = self._add_mail(location, info, "ignored", "duplicate: " + reason)
        return self._add(PolledMail(location, "duplicate", info, reason, mail))

    def _record(self, location: MailLocation, recognition: Recognition, digest: str) -> PolledMail:
        info = recognition.info
        assert recognition.export_id is not None
        found = recognition.exports
        if not found:
            # An export mail for us without a usable link: recorded as an export
            # so the failure is tracked (and alerted on) under its export id.
            found = [
                FoundExport(
                    export_id=recognition.export_id,
                    kind="link",
                    recognizer=recognition.recognizer or "",
                    token=recognition.token,
                )
            ]
        keys = [export_key(f, info, digest) for f in found]
        recorded = self.known(location)
        if all(key in self._taken_keys for key in keys):
            return self._skip_duplicate(location, info, None)
        existing = [self.ledger.find_export(k) for k in keys]
        if existing[0] is not None and all(e is not None for e in existing):
            owner = existing[0].mail_id
            if recorded is None or owner != recorded.id:
                earlier = self.ledger.mail(owner) if owner is not None else None
                if earlier is not None:
                    return self._skip_duplicate(location, info, earlier)
        self._taken_keys.update(keys)
        if info.message_id:
            self._taken_ids.add(info.message_id)
        via = " (forwarded)" if recognition.forwarded else ""
        names = ", ".join(f.file_name or "no link" for f in found)
        log.log(
            logging.DEBUG if self.dry_run else logging.INFO,
            "export mail for export %s%s: %s (%r)",
            recognition.export_id,
            via,
            names,
            info.subject,
        )
        if self.dry_run:
            return self._add(PolledMail(location, "export", info, None, None, [], found))
        # One transaction: a mail is never recorded with only some of its exports (it
        # would be archived once those are delivered, and the others lost). An attached
        # file is saved inside it, into the folder of its export's row, so a recorded
        # attachment export always has its file.
        with self.ledger.atomic():
            mail = recorded or self._add_mail(location, info, "new", recognition.problem)
            assert mail is not None
            exports = []
            for item, key in zip(found, keys, strict=True):
                export = self.ledger.add_export(
                    key=key,
                    kind=item.kind,
                    mail_id=mail.id,
                    export_id=item.export_id,
                    token=item.token,
                    link=item.link,
                    file_name=item.file_name,
                )
                if item.attachment is not None and export.state == "new":
                    path = self._save_attachment(item, export, info)
                    export = self.ledger.advance_export(export.id, "new", download_path=str(path))
                exports.append(export)
        return self._add(PolledMail(location, "export", info, None, mail, exports, found))

    def _save_attachment(self, item: FoundExport, export: Export, info: MailInfo) -> Path:
        """Write an attached export file into its export's folder (temporary name, fsync, rename).

        Raises :class:`ExportmonError` (retryable: the mail is taken again by the next poll).
        """
        assert item.attachment is not None and item.file_name is not None
        hint = download_hint(item.token, info.sent_at)
        directory = export_dir(self.monitor.dirs.downloads, export.id, item.export_id, hint)
        path = directory / item.file_name
        try:
            with atomic_write(path, within=self.monitor.dirs.downloads) as handle:
                handle.write(item.attachment.content)
        except OSError as exc:
            raise ExportmonError(
                f"cannot save attachment {item.file_name} in {directory}: {exc.strerror}",
                hint="free disk space; the mail is read again by the next fetch",
            ) from None
        return path
