"""The ``mail`` channel: notices as mails through ``[alerts] smtp_url`` to ``[alerts] to``.

How ``smtp_url`` connects:

* ``smtps://host[:465]`` – TLS from the first byte.
* ``submission://host[:587]`` – STARTTLS, which the server must offer.
* ``smtp://host[:25]`` – STARTTLS when the server offers it, plain otherwise;
  a login (``smtp_user``) is refused on a plain connection, so a password never
  travels unencrypted.

Certificates are always verified, against the system's CAs or ``smtp_ca_file``.
Every mail has a plain-text and an HTML part and is marked as automatic
(``Auto-Submitted: auto-generated`` and :data:`ALERT_HEADER`), so no
auto-responder answers it and no exportmon mail source takes it for an export.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import urlsplit

from exportmon import redact
from exportmon.config.schema import AlertsConfig, MonitorConfig
from exportmon.errors import AlertError, AuthError, ConnectionFailed, TLSError
from exportmon.hooks import credentials
from exportmon.net.tls import client_context, tls_error
from exportmon.notify import Channel, Notice

#: Header that marks exportmon's own mails; the mail sources skip mails carrying it.
ALERT_HEADER = "X-Exportmon-Alert"
SMTP_TIMEOUT = 30.0
DEFAULT_PORTS = {"smtp": 25, "submission": 587, "smtps": 465}


@dataclass(frozen=True)
class MailChannel:
    """Mails every notice to ``[alerts] to`` through ``[alerts] smtp_url``."""

    alerts: AlertsConfig
    monitor: str
    name: str = "mail"
    #: The monitor whose sign-in logs in with ``smtp_auth = "oauth2"``.
    config: MonitorConfig | None = None

    @property
    def label(self) -> str:
        return f"mail to {', '.join(self.alerts.to)}"

    def send(self, notice: Notice) -> None:
        message = new_message(
            self.alerts,
            monitor=self.monitor,
            subject=notice.title,
            text=notice.text,
            html=notice.html or None,
        )
        send_mail(self.alerts, message, monitor=self.config)


def channels(monitor: MonitorConfig) -> list[Channel]:
    """The mail channel, when ``smtp_url`` and ``to`` are both set."""
    if monitor.alerts.smtp_url and monitor.alerts.to:
        return [MailChannel(monitor.alerts, monitor.name, config=monitor)]
    return []


@dataclass(frozen=True)
class SmtpTarget:
    """Where and how to connect, parsed from ``smtp_url``."""

    scheme: str
    host: str
    port: int

    @property
    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://``, ``smtps://`` or ``submission://`` with host and optional port."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise AlertError(
            f"not an SMTP server address: {redact.redact(url)!r}",
            hint="use smtp://host:25, smtps://host:465 or submission://host:587",
            retryable=False,
        )
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise AlertError(f"bad port in {redact.redact(url)!r}", retryable=False) from None
    return SmtpTarget(parts.scheme, parts.hostname, port)


def sender_address(alerts: AlertsConfig) -> str:
    """``alerts.from``, or ``exportmon@<hostname>``."""
    return alerts.from_ or f"exportmon@{socket.gethostname()}"


def new_message(
    alerts: AlertsConfig,
    *,
    monitor: str,
    subject: str,
    text: str,
    html: str | None = None,
    to: Sequence[str] | None = None,
) -> EmailMessage:
    """A mail from exportmon: redacted, and marked so no auto-responder or exportmon takes it up.

    ``html`` makes it ``multipart/alternative`` with the text first.
    """
    sender = sender_address(alerts)
    message = EmailMessage()
    message["Subject"] = _one_line(redact.redact(subject))
    message["From"] = sender
    message["To"] = ", ".join(to if to is not None else alerts.to)
    message["Date"] = formatdate(localtime=True)
    domain = sender.rpartition("@")[2] or socket.gethostname()
    message["Message-ID"] = make_msgid("exportmon", domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message["Precedence"] = "bulk"
    message["X-Auto-Response-Suppress"] = "All"
    message[ALERT_HEADER] = _one_line(monitor)
    message.set_content(redact.redact(text))
    if html is not None:
        message.add_alternative(redact.redact(html), subtype="html")
    return message


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def send_mail(
    alerts: AlertsConfig, message: EmailMessage, *, monitor: MonitorConfig | None = None
) -> None:
    """Deliver ``message`` through ``alerts.smtp_url``.

    With ``smtp_auth = "oauth2"`` the login is XOAUTH2 with an access token of
    ``monitor``'s sign-in (refreshed as for its mailbox).

    Raises :class:`TLSError`, :class:`AuthError`, :class:`ConnectionFailed`,
    :class:`SignInError` or :class:`AlertError`, each one line without secrets.
    """
    if not alerts.smtp_url:
        raise AlertError("no smtp_url configured in [alerts]", retryable=False)
    target = parse_smtp_url(alerts.smtp_url)
    login = _login(alerts, monitor)
    where = target.display
    try:
        with _connect(target, alerts) as client:
            if login is not None:
                if not _encrypted(client):
                    raise AlertError(
                        f"{where} offers no STARTTLS: refusing to send the SMTP password"
                        " unencrypted",
                        hint="use submission:// or smtps://, or a server with STARTTLS",
                    )
                login(client)
            # Recipients come from the message's To header.
            refused = client.send_message(message, from_addr=sender_address(alerts))
            if refused:
                raise AlertError(
                    f"{where} refused recipient(s) {', '.join(sorted(refused))}",
                    retryable=False,
                )
    except ssl.SSLCertVerificationError as exc:
        raise tls_error(where, exc, "alerts.smtp_ca_file") from None
    except ssl.SSLError as exc:
        raise TLSError(f"{where}: TLS failed: {exc.reason or exc}") from None
    except smtplib.SMTPAuthenticationError as exc:
        if alerts.smtp_auth == "oauth2":
            raise AuthError(
                f"{where} refused the XOAUTH2 login of {_oauth_user(alerts, monitor)}:"
                f" {_reply(exc)}",
                hint="the sign-in may lack the SMTP scope or SMTP AUTH may be off for "
                "the mailbox; see the sign-in page of the docs, then run exportmon login",
            ) from None
        raise AuthError(
            f"{where} refused the login of {alerts.smtp_user}: {_reply(exc)}",
            hint="check alerts.smtp_user and the SMTP password",
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise AlertError(f"{where}: {exc}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise AlertError(
            f"{where} refused every recipient ({', '.join(sorted(exc.recipients))})",
            retryable=False,
        ) from None
    except smtplib.SMTPResponseException as exc:
        raise AlertError(f"{where} answered {_reply(exc)}") from None
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPException) as exc:
        raise ConnectionFailed(f"{where}: {str(exc) or 'connection closed'}") from None
    except OSError as exc:
        raise ConnectionFailed(
            f"cannot reach SMTP server {where}: {exc.strerror or exc}",
            hint="alerts stay queued and are sent on the next run",
        ) from None


def _login(
    alerts: AlertsConfig, monitor: MonitorConfig | None
) -> Callable[[smtplib.SMTP], object] | None:
    """How to log in once connected (``None``: no login); secrets are had here, before
    connecting, so a missing one is its own clear error."""
    if alerts.smtp_auth == "oauth2":
        if monitor is None:
            raise AlertError('smtp_auth = "oauth2" needs the monitor\'s sign-in', retryable=False)
        from exportmon import oauth

        user = _oauth_user(alerts, monitor)
        token = oauth.access_token(monitor)
        payload = f"user={user}\x01auth=Bearer {token}\x01\x01"

        def xoauth2(challenge: bytes | None = None) -> str:
            # A failed XOAUTH2 gets a 334 with an error document; an empty answer
            # ends the exchange so the server's refusal code is what is raised.
            return payload if challenge is None else ""

        return lambda client: client.auth("XOAUTH2", xoauth2)
    if alerts.smtp_user:
        user, password = alerts.smtp_user, credentials.resolve(alerts.smtp_password_source())
        return lambda client: client.login(user, password or "")
    return None


def _oauth_user(alerts: AlertsConfig, monitor: MonitorConfig | None) -> str:
    return alerts.smtp_user or (monitor.source.user if monitor else "") or ""


def _connect(target: SmtpTarget, alerts: AlertsConfig) -> smtplib.SMTP:
    context = client_context(alerts.smtp_ca_file, ca_key="alerts.smtp_ca_file")
    if target.scheme == "smtps":
        return smtplib.SMTP_SSL(target.host, target.port, timeout=SMTP_TIMEOUT, context=context)
    client = smtplib.SMTP(target.host, target.port, timeout=SMTP_TIMEOUT)
    try:
        client.ehlo()
        if client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        elif target.scheme == "submission":
            raise AlertError(
                f"{target.display} does not offer STARTTLS, which submission:// requires",
                hint="use smtps:// if the server speaks TLS from the start",
            )
    except BaseException:
        client.close()
        raise
    return client


def _encrypted(client: smtplib.SMTP) -> bool:
    return isinstance(client.sock, ssl.SSLSocket)


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else ""
    return redact.redact(f"{exc.smtp_code} {_one_line(text)}".strip())
