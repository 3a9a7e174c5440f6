"""The ``notify`` channels: one per Apprise URL in ``[alerts] notify``.

Apprise (https://github.com/caronc/apprise) knows how to reach Slack, Microsoft
Teams, ntfy, Matrix, Telegram, Discord, Pushover, plain ``json://`` / ``form://``
webhooks, ``mailto://`` and many more from one URL each. It is an optional
dependency, installed with the ``notify`` extra (``pip install 'exportmon[notify]'``)
and imported only when a monitor configures a URL.

The URLs come from ``notify`` (a list), ``notify_env`` (an environment variable
holding URLs separated by spaces, commas or new lines) or ``notify_command``
(a command printing them). URLs hold tokens, so they are secrets: each one and
each of its long parts is registered with :mod:`exportmon.redact` the moment
it is known, and channels are named by their scheme and a hash
(``notify:slack:1a2b3c4d``), never by the URL.

Chat messages are short: the notice's title and the one line that matters.
Services that render mail (``mailto://`` and the like) get the HTML body.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from exportmon import redact
from exportmon.config.schema import AlertsConfig, MonitorConfig
from exportmon.errors import AlertError, ConfigError
from exportmon.hooks import credentials
from exportmon.notify import Channel, Notice

#: How the one-line error names the extra that brings Apprise.
EXTRA_HINT = "install the notify extra: pip install 'exportmon[notify]'"
#: Parts of a URL at least this long are treated as tokens and masked.
TOKEN_LENGTH = 6
#: How long one service may take (Apprise's own connect/read timeouts are shorter).
SEND_TIMEOUT = 60.0

_SEPARATORS = re.compile(r"[\s,]+")


def configured(alerts: AlertsConfig) -> bool:
    return bool(alerts.notify or alerts.notify_env or alerts.notify_command)


def notify_urls(alerts: AlertsConfig) -> list[str]:
    """The configured Apprise URLs, each registered as a secret.

    Raises :class:`~exportmon.errors.SecretError` when the variable is unset or
    the command fails.
    """
    if not configured(alerts):
        return []
    text = credentials.resolve(alerts.notify_source())
    urls = [url for url in _SEPARATORS.split(text) if url]
    for url in urls:
        register_url(url)
    return urls


def register_url(url: str) -> None:
    """Mask ``url`` and every part of it that may be a token, wherever it appears."""
    redact.register(url)
    parts = urlsplit(url)
    pieces = [unquote(parts.password or ""), unquote(parts.username or "")]
    if parts.hostname and "." not in parts.hostname:
        # Many services put a token where the host goes (slack://T000/B000/XXX).
        pieces.append(parts.hostname)
    pieces += [unquote(segment) for segment in parts.path.split("/")]
    pieces += [value for _, value in parse_qsl(parts.query)]
    for piece in pieces:
        if len(piece) >= TOKEN_LENGTH:
            redact.register(piece)


def channel_name(url: str) -> str:
    """A stable, secret-free identity: scheme and the first 8 hex digits of a hash."""
    scheme = urlsplit(url).scheme.lower() or "url"
    return f"notify:{scheme}:{hashlib.sha256(url.encode()).hexdigest()[:8]}"


def channel_label(url: str, index: int) -> str:
    """How logs name the channel: the scheme, and the host when it is a real host name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    where = f"{parts.scheme}://{host}" if "." in host else f"{parts.scheme}://…"
    return f"notify[{index}] {where}"


@dataclass(frozen=True)
class AppriseChannel:
    """Sends every notice to one Apprise URL."""

    url: str = field(repr=False)
    name: str
    label: str

    def send(self, notice: Notice) -> None:
        apprise = load_apprise()
        asset = apprise.AppriseAsset(app_id="exportmon", app_desc="exportmon")
        sender = apprise.Apprise(asset=asset)
        if not sender.add(self.url):
            raise AlertError(
                f"{self.label}: not a URL Apprise knows",
                hint="see https://github.com/caronc/apprise/wiki for the URL of each service",
                retryable=False,
            )
        service = sender[0]
        notify_format = getattr(service, "notify_format", "text")
        if isinstance(notify_format, (tuple, list)):
            notify_format = notify_format[0] if notify_format else "text"
        wants_html = getattr(notify_format, "value", notify_format) == "html"
        body = notice.html if wants_html and notice.html else notice.line
        result = sender.notify(
            body=body,
            title=notice.title,
            notify_type=apprise.NotifyType(notice.level),
            body_format=apprise.NotifyFormat.HTML if wants_html else apprise.NotifyFormat.TEXT,
            **_timeout_argument(apprise),
        )
        if not result:
            raise AlertError(f"{self.label}: {_reason(result)}")


def channels(monitor: MonitorConfig) -> list[Channel]:
    """One channel per configured Apprise URL.

    Raises :class:`ConfigError` naming the ``notify`` extra when Apprise is missing.
    """
    urls = notify_urls(monitor.alerts)
    if not urls:
        return []
    load_apprise()
    return [
        AppriseChannel(url, channel_name(url), channel_label(url, number))
        for number, url in enumerate(urls, start=1)
    ]


def installed() -> bool:
    """Whether Apprise can be imported (checked without importing it: that takes a second)."""
    try:
        return importlib.util.find_spec("apprise") is not None
    except (ImportError, ValueError):
        return False


def load_apprise() -> Any:
    """The ``apprise`` module, or a one-line :class:`ConfigError` naming the extra."""
    try:
        import apprise
    except ImportError:
        raise ConfigError(
            "alerts.notify needs Apprise, which is not installed", hint=EXTRA_HINT
        ) from None
    # Apprise logs its own failures with URLs in them; its result says the same, redacted.
    logging.getLogger("apprise").propagate = False
    return apprise


def _timeout_argument(apprise: Any) -> dict[str, Any]:
    import inspect

    try:
        parameters = inspect.signature(apprise.Apprise.notify).parameters
    except (TypeError, ValueError):
        return {}
    return {"timeout": SEND_TIMEOUT} if "timeout" in parameters else {}


def _reason(result: Any) -> str:
    """The last warning Apprise recorded for a failed send, redacted, on one line."""
    logs = getattr(result, "logs", None)
    entries = list(logs()) if callable(logs) else []
    messages = [
        " ".join(str(getattr(entry, "message", entry)).split())
        for entry in entries
        if str(getattr(entry, "level", "WARNING")).upper() in ("WARNING", "ERROR", "CRITICAL")
    ]
    if messages:
        return redact.redact(messages[-1])[:300]
    return "the service did not accept the notification"
