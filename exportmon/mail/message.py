"""Reading a mail and recognising the exports it announces (pure functions, no I/O).

An export mail is recognised by a *recogniser*: the built-in ITRP one (headers
``X-ITRP-ExportID`` and ``X-ITRP-Export``, link = the first http(s) link in the
text part, else in the HTML part) followed by those configured in
``[[recognizers]]``. The first one that finds an export id wins. An export is
either a download link or a ``.csv``/``.zip`` file attached to the mail.

Before that, :func:`screen` turns away mails exportmon must never act on:
exportmon's own alert mails, automatic replies and bounces (an ITRP mail carries
``Auto-Submitted: auto-generated`` and is *not* one of them), and senders not in
``source.allowed_senders``. Screening needs only the headers, so mail sources run
it before fetching a body.

Mails are hostile input: every header access and decode is guarded, and a mail
that cannot be understood yields a reason, never an exception.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from exportmon.files.names import (
    EXPORT_SUFFIXES,
    UnsafeName,
    distinct_name,
    name_from_link,
    safe_file_name,
)
from exportmon.ledger import to_text
from exportmon.log import get_logger
from exportmon.notify.smtp import ALERT_HEADER

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig, RecognizerConfig

log = get_logger(__name__)

ITRP_ID_HEADER = "X-ITRP-ExportID"
ITRP_TOKEN_HEADER = "X-ITRP-Export"
#: Only this much of a text part is searched for a link.
MAX_TEXT_CHARS = 1_000_000
#: How deep forwarded mails (``message/rfc822`` parts) are looked into.
MAX_FORWARD_DEPTH = 3

_LINK = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
_TRAILING_PUNCTUATION = ".,;:!?"
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_AUTO_REPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress-Reply")
_BOUNCE_SENDERS = ("mailer-daemon", "postmaster")


@dataclass(frozen=True)
class Recognizer:
    """How to spot one system's export mails (the built-in ITRP one, or a configured one)."""

    name: str
    id_header: str | None = None
    token_header: str | None = None
    subject_pattern: re.Pattern[str] | None = None
    link_pattern: re.Pattern[str] | None = None
    export_id: int | None = None
    attachments: bool = True

    @classmethod
    def from_config(cls, config: RecognizerConfig) -> Recognizer:
        return cls(
            name=config.name,
            id_header=config.id_header,
            token_header=config.token_header,
            subject_pattern=re.compile(config.subject_pattern) if config.subject_pattern else None,
            link_pattern=re.compile(config.link_pattern) if config.link_pattern else None,
            export_id=config.export_id,
            attachments=config.attachments,
        )


ITRP = Recognizer("itrp", id_header=ITRP_ID_HEADER, token_header=ITRP_TOKEN_HEADER)


def recognizers(monitor: MonitorConfig) -> list[Recognizer]:
    """The built-in ITRP recogniser followed by the monitor's own, in config order."""
    return [ITRP, *(Recognizer.from_config(r) for r in monitor.recognizers)]


@dataclass(frozen=True)
class Attachment:
    """An export file attached to the mail, decoded."""

    file_name: str
    content: bytes


@dataclass(frozen=True)
class FoundExport:
    """One export announced by a mail: a link to download or an attached file."""

    export_id: int
    kind: Literal["link", "attachment"]
    recognizer: str
    token: str | None = None
    link: str | None = None
    file_name: str | None = None
    attachment: Attachment | None = field(default=None, repr=False)


@dataclass(frozen=True)
class MailInfo:
    """What the ledger records about a mail."""

    message_id: str | None
    #: Sender addresses from ``From``, lower-cased.
    senders: tuple[str, ...]
    #: ``From`` as written (display name and address), for messages.
    sender: str | None
    subject: str | None
    #: ``Date`` as ledger text (UTC), when it can be read.
    sent_at: str | None


@dataclass
class Recognition:
    """The outcome of looking at one mail.

    Exactly one of: ``exports`` non-empty (an export mail for this monitor),
    ``skip`` set (not for exportmon: ignored and left alone), or ``problem`` set
    (an export mail for this monitor that cannot be used, e.g. no link).
    """

    info: MailInfo
    exports: list[FoundExport] = field(default_factory=list)
    skip: str | None = None
    problem: str | None = None
    #: The export id and recogniser, once known (also for skipped unmonitored ids).
    export_id: int | None = None
    recognizer: str | None = None
    token: str | None = None
    #: True when the export was found in a forwarded (attached) mail.
    forwarded: bool = False
    #: Export ids found that the monitor does not process.
    unmonitored: int | None = None


# --- parsing ---------------------------------------------------------------------------


def parse(raw: bytes) -> EmailMessage:
    """Parse a whole mail (or only its header block) without ever raising."""
    return email.message_from_bytes(raw, policy=email.policy.default)


def header(message: Message, name: str) -> str | None:
    """Header ``name`` as text (encoded words decoded), or None; never raises."""
    try:
        value = message.get(name)
    except Exception:
        try:
            value = message.get_all(name, [None])[0]
        except Exception:
            return None
    if value is None:
        return None
    try:
        text = str(value)
    except Exception:
        return None
    return " ".join(text.split())


def header_values(message: Message, name: str) -> list[str]:
    """Every ``name`` header of ``message`` as text (a header may be repeated); never raises."""
    try:
        values = message.get_all(name) or []
    except Exception:
        return [value] if (value := header(message, name)) is not None else []
    found = []
    for value in values:
        try:
            found.append(" ".join(str(value).split()))
        except Exception:
            continue
    return found


def mail_info(message: Message) -> MailInfo:
    """Message-ID, senders, subject and date of ``message``.

    ``senders`` holds the addresses of every ``From`` header: a mail with a second
    ``From`` cannot hide a sender from ``allowed_senders`` behind the first.
    """
    sender = header(message, "From")
    senders: tuple[str, ...] = ()
    if sender:
        try:
            pairs = email.utils.getaddresses(header_values(message, "From") or [sender])
        except Exception:
            pairs = []
        senders = tuple(address.lower() for _, address in pairs if address)
    sent_at = None
    date = header(message, "Date")
    if date:
        try:
            moment = email.utils.parsedate_to_datetime(date)
            if moment.tzinfo is not None:
                sent_at = to_text(moment)
        except (TypeError, ValueError, IndexError, OverflowError):
            sent_at = None
    message_id = header(message, "Message-ID")
    return MailInfo(
        message_id=message_id.strip() if message_id else None,
        senders=senders,
        sender=sender,
        subject=header(message, "Subject"),
        sent_at=sent_at,
    )


# --- screening ---------------------------------------------------------------------


def _sender_allowed(address: str, allowed: list[str]) -> bool:
    domain = address.rpartition("@")[2]
    for entry in allowed:
        entry = entry.strip().lower()
        if entry.startswith("@") and domain == entry[1:]:
            return True
        if entry == address:
            return True
    return False


def screen(message: Message, monitor: MonitorConfig) -> str | None:
    """Why exportmon must leave ``message`` alone, or None to look further.

    Works on the header block alone.
    """
    if header(message, ALERT_HEADER) is not None:
        return "an exportmon alert mail"
    info = mail_info(message)
    own = (monitor.alerts.from_ or "").strip().lower()
    if own:
        own_address = email.utils.parseaddr(own)[1].lower() or own
        if own_address in info.senders:
            return f"sent from this monitor's alert address {own_address}"
    auto = (header(message, "Auto-Submitted") or "").split(";")[0].strip().lower()
    if auto and auto not in ("no", "auto-generated"):
        return f"an automatic reply (Auto-Submitted: {auto})"
    content_type = (header(message, "Content-Type") or "").lower()
    if content_type.startswith("multipart/report"):
        return "a delivery or read report"
    if any(header(message, name) is not None for name in _AUTO_REPLY_HEADERS):
        return "an automatic reply"
    if (header(message, "Precedence") or "").lower() == "auto_reply":
        return "an automatic reply (Precedence: auto_reply)"
    if any(address.partition("@")[0] in _BOUNCE_SENDERS for address in info.senders):
        return "a bounce"
    allowed = monitor.source.allowed_senders
    if allowed:
        if not info.senders:
            return "no sender address, and source.allowed_senders is set"
        refused = [a for a in info.senders if not _sender_allowed(a, allowed)]
        if refused:
            return f"sender {refused[0]} is not in source.allowed_senders"
    return None


# --- identifying the export --------------------------------------------------------


@dataclass(frozen=True)
class _Identity:
    recognizer: Recognizer
    export_id: int | None
    token: str | None
    problem: str | None = None


def _identify(message: Message, recognizer: Recognizer) -> _Identity | None:
    """The export id ``recognizer`` finds in the headers, or None when it does not apply."""
    match = None
    if recognizer.subject_pattern is not None:
        match = recognizer.subject_pattern.search(header(message, "Subject") or "")
        if match is None:
            return None
    export_id: int | None = None
    raw_id = header(message, recognizer.id_header) if recognizer.id_header else None
    token = header(message, recognizer.token_header) if recognizer.token_header else None
    token = token.strip() or None if token else None
    if raw_id is not None and recognizer.id_header:
        if len({v.strip() for v in header_values(message, recognizer.id_header)}) > 1:
            return _Identity(
                recognizer,
                None,
                token,
                f"header {recognizer.id_header} appears more than once with different values",
            )
        if not re.fullmatch(r"\s*[0-9]{1,18}\s*", raw_id):
            return _Identity(
                recognizer, None, token, f"header {recognizer.id_header} is not a number"
            )
        export_id = int(raw_id)
    elif match is not None and "id" in match.groupdict() and match.group("id"):
        if not re.fullmatch(r"[0-9]{1,18}", match.group("id")):
            return _Identity(recognizer, None, token, "the subject's export id is not a number")
        export_id = int(match.group("id"))
    elif recognizer.export_id is not None and (match is not None or not recognizer.id_header):
        export_id = recognizer.export_id
    if export_id is None:
        return None
    return _Identity(recognizer, export_id, token)


def identify(message: Message, monitor: MonitorConfig) -> tuple[str, int | None] | None:
    """``(recogniser name, export id)`` from the headers alone, or None when none applies."""
    for recognizer in recognizers(monitor):
        identity = _identify(message, recognizer)
        if identity is not None:
            return recognizer.name, identity.export_id
    return None


def identities(message: Message, monitor: MonitorConfig) -> list[tuple[str, Any, str]]:
    """Each recogniser of ``monitor`` on ``message``: (name, identity or None, why not).

    For ``exportmon explain``: ``why not`` says what a recogniser that does not apply
    looked for and did not find.
    """
    found = []
    for recognizer in recognizers(monitor):
        identity = _identify(message, recognizer)
        found.append((recognizer.name, identity, "" if identity else _why_not(message, recognizer)))
    return found


def forwarded_identities(message: Message, monitor: MonitorConfig) -> list[Any]:
    """The identities recognisers find in mails forwarded (attached) inside ``message``."""
    return [
        identity
        for inner in _forwarded(message, 1)
        for recognizer in recognizers(monitor)
        if (identity := _identify(inner, recognizer)) is not None
    ]


def _why_not(message: Message, recognizer: Recognizer) -> str:
    pattern = recognizer.subject_pattern
    if pattern is not None and pattern.search(header(message, "Subject") or "") is None:
        return f"the subject does not match {pattern.pattern!r}"
    if recognizer.id_header and header(message, recognizer.id_header) is None:
        return f"no {recognizer.id_header} header"
    return "no export id (no id header, no id in the subject, no export_id)"


# --- links and attachments ---------------------------------------------------------


def _walk(message: Message) -> Iterator[Message]:
    """The parts of ``message``, not descending into attached (forwarded) mails."""
    yield message
    if message.is_multipart():
        payload = message.get_payload()
        if isinstance(payload, list):
            for part in payload:
                if isinstance(part, Message) and part.get_content_type() != "message/rfc822":
                    yield from _walk(part)
                elif isinstance(part, Message):
                    yield part


def _is_attachment(part: Message) -> bool:
    try:
        disposition = part.get_content_disposition()
    except Exception:
        return False
    return disposition == "attachment"


def _text(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    charset = "utf-8"
    try:
        charset = part.get_content_charset() or "utf-8"
        return payload[: MAX_TEXT_CHARS * 4].decode(charset, "replace")[:MAX_TEXT_CHARS]
    except (LookupError, ValueError):
        return payload[: MAX_TEXT_CHARS * 4].decode("utf-8", "replace")[:MAX_TEXT_CHARS]


def _texts(message: Message, subtype: str) -> Iterator[str]:
    for part in _walk(message):
        if part.get_content_type() == f"text/{subtype}" and not _is_attachment(part):
            yield _text(part)


def _trim_link(link: str) -> str:
    """Drop punctuation that ends a sentence rather than the link."""
    while link:
        last = link[-1]
        unbalanced = last in _CLOSERS and link.count(last) > link.count(_CLOSERS[last])
        if last not in _TRAILING_PUNCTUATION and not unbalanced:
            break
        link = link[:-1]
    return link


def first_link(text: str, pattern: re.Pattern[str] | None = None) -> str | None:
    """The first http(s) link in ``text`` (or the first match of ``pattern``)."""
    if pattern is not None:
        match = pattern.search(text)
        if match is None:
            return None
        groups = match.groupdict()
        return (groups.get("link") or match.group(0)).strip() or None
    match = _LINK.search(text)
    return _trim_link(match.group(0)) if match else None


class _HtmlLinks(HTMLParser):
    """Collects ``href`` targets and the visible text of an HTML part."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag.lower() == "a":
            for name, value in attrs:
                if name.lower() == "href" and value:
                    self.hrefs.append(value.strip())

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def html_link(html: str, pattern: re.Pattern[str] | None = None) -> str | None:
    """The first http(s) link of an HTML part: the first such ``<a href>``, else in its text."""
    parser = _HtmlLinks()
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        return first_link(html, pattern)
    for href in parser.hrefs:
        found = first_link(href, pattern)
        if found and (pattern is not None or found == href):
            return found
    return first_link(" ".join(parser.text), pattern)


def find_link(message: Message, pattern: re.Pattern[str] | None = None) -> str | None:
    """The download link: the first in a text part, else in an HTML part."""
    for text in _texts(message, "plain"):
        link = first_link(text, pattern)
        if link:
            return link
    for html in _texts(message, "html"):
        link = html_link(html, pattern)
        if link:
            return link
    return None


def find_attachments(message: Message) -> list[Attachment]:
    """Attached ``.csv`` and ``.zip`` files, decoded, with safe and distinct file names.

    Names may be RFC 2231 encoded or encoded words; any transfer encoding
    (base64, quoted-printable, uuencode, 8bit) is decoded. The same file attached
    twice (same safe name, same bytes) is kept once. Two different files whose names
    become the same file name (after making them safe, Unicode normalisation, case
    folding or shortening) both stay: the later one is renamed ``<stem>~2<suffix>``
    (:func:`~exportmon.files.names.distinct_name`), with a warning.
    """
    found: list[Attachment] = []
    taken: set[str] = set()
    for part in _walk(message):
        if part.is_multipart() or part.get_content_type() == "message/rfc822":
            continue
        try:
            name = part.get_filename()
        except Exception:
            continue
        if not name:
            continue
        base = PurePosixPath(name.replace("\\", "/")).name
        if not base.lower().endswith(EXPORT_SUFFIXES):
            continue
        try:
            safe = safe_file_name(base)
            content = part.get_payload(decode=True)
        except (UnsafeName, Exception):
            continue
        if not safe.lower().endswith(EXPORT_SUFFIXES) or not isinstance(content, bytes):
            continue  # "...csv" is only a suffix
        if any(a.file_name == safe and a.content == content for a in found):
            continue
        distinct = distinct_name(safe, taken)
        if distinct != safe:
            log.warning(
                "two attachments are both named %s once made safe; the later one is saved as %s",
                safe,
                distinct,
            )
        found.append(Attachment(distinct, content))
    return found


def _forwarded(message: Message, depth: int) -> Iterator[Message]:
    if depth > MAX_FORWARD_DEPTH:
        return
    for part in _walk(message):
        if part is message or part.get_content_type() != "message/rfc822":
            continue
        try:
            payload = part.get_payload()
        except Exception:
            continue
        inner = payload[0] if isinstance(payload, list) and payload else None
        if isinstance(inner, Message):
            yield inner
            yield from _forwarded(inner, depth + 1)


# --- recognition -------------------------------------------------------------------


def _exports_of(message: Message, identity: _Identity) -> tuple[list[FoundExport], str | None]:
    recognizer = identity.recognizer
    assert identity.export_id is not None
    exports: list[FoundExport] = []
    if recognizer.attachments:
        for attachment in find_attachments(message):
            exports.append(
                FoundExport(
                    export_id=identity.export_id,
                    kind="attachment",
                    recognizer=recognizer.name,
                    token=identity.token,
                    file_name=attachment.file_name,
                    attachment=attachment,
                )
            )
    if not exports or recognizer.link_pattern is not None:
        link = find_link(message, recognizer.link_pattern)
        if link:
            exports.append(
                FoundExport(
                    export_id=identity.export_id,
                    kind="link",
                    recognizer=recognizer.name,
                    token=identity.token,
                    link=link,
                    file_name=name_from_link(link),
                )
            )
    if not exports:
        return [], "no download link or attached .csv/.zip file in the export mail"
    return exports, None


def recognise(message: Message, monitor: MonitorConfig) -> Recognition:
    """Screen ``message`` and find the exports it announces for ``monitor``."""
    info = mail_info(message)
    result = Recognition(info=info)
    reason = screen(message, monitor)
    if reason:
        result.skip = reason
        return result
    candidates: list[tuple[Message, bool]] = [(message, False)]
    if monitor.source.accept_forwarded:
        candidates.extend((inner, True) for inner in _forwarded(message, 1))
    for candidate, forwarded in candidates:
        for recognizer in recognizers(monitor):
            identity = _identify(candidate, recognizer)
            if identity is None:
                continue
            result.recognizer = recognizer.name
            result.export_id = identity.export_id
            result.token = identity.token
            result.forwarded = forwarded
            if identity.problem:
                result.problem = identity.problem
                return result
            assert identity.export_id is not None
            if identity.export_id not in monitor.ids:
                result.unmonitored = identity.export_id
                result.skip = f"export id {identity.export_id} is not monitored"
                return result
            result.exports, result.problem = _exports_of(candidate, identity)
            return result
    result.skip = "not an export mail"
    return result
