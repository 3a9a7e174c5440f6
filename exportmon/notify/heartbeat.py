"""Heartbeats: pings to an outside service that raises the alarm when they stop.

``[heartbeat]`` names the check's ``url`` (a secret: it holds the check's key)
and its ``kind``:

=============  =================================  ======================  ======================
kind           start of ``run --once``            success                 failure
=============  =================================  ======================  ======================
healthchecks   ``<url>/start``                    ``<url>``               ``<url>/fail``
uptime-kuma    (none)                             ``?status=up&msg=..``   ``?status=down&msg=..``
cronitor       ``?state=run``                     ``?state=complete``     ``?state=fail``
=============  =================================  ======================  ======================

Healthchecks gets the last lines of the run's log (bounded, redacted) as the
POST body; Uptime Kuma and Cronitor, whose pings carry no body, get the last
line as ``msg`` / ``message``. The watcher pings once per cycle (success or
failure, no start). A ping that cannot be sent is logged as a warning, once
per outage, and never makes the run fail: the service outside notices the
silence, which is the point of a heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from exportmon import __version__, redact
from exportmon.config.schema import HeartbeatConfig
from exportmon.errors import ExportmonError
from exportmon.hooks import credentials
from exportmon.log import LOGGER_NAME, current_monitor, get_logger
from exportmon.net.tls import client_context
from exportmon.notify.apprise import register_url

log = get_logger(__name__)

Event = Literal["start", "success", "failure"]

#: The most log lines, and characters, a ping carries.
MAX_LINES = 20
MAX_BODY = 10_000
#: The longest ``msg`` in a query string (Uptime Kuma, Cronitor).
MAX_MESSAGE = 200

_failing: set[str] = set()
_failing_lock = threading.Lock()


def ping_url(kind: str, url: str, event: Event, message: str = "") -> str:
    """The URL one ping of ``event`` goes to, for a check of ``kind`` at ``url``."""
    parts = urlsplit(url)
    if kind == "healthchecks":
        path = parts.path.rstrip("/")
        suffix = {"start": "/start", "success": "", "failure": "/fail"}[event]
        return urlunsplit(parts._replace(path=path + suffix))
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    short = " ".join(message.split())[:MAX_MESSAGE]
    if kind == "uptime-kuma":
        keep = [(k, v) for k, v in query if k not in ("status", "msg")]
        status = "down" if event == "failure" else "up"
        keep += [("status", status), ("msg", short or ("OK" if status == "up" else "failed"))]
    elif kind == "cronitor":
        keep = [(k, v) for k, v in query if k not in ("state", "message")]
        state = {"start": "run", "success": "complete", "failure": "fail"}[event]
        keep.append(("state", state))
        if short:
            keep.append(("message", short))
    else:
        raise ValueError(f"unknown heartbeat kind {kind!r}")
    return urlunsplit(parts._replace(query=urlencode(keep)))


def wants_ping(kind: str, event: Event) -> bool:
    """Uptime Kuma has no notion of a start."""
    return not (kind == "uptime-kuma" and event == "start")


def send(config: HeartbeatConfig, event: Event, lines: list[str] | None = None) -> bool:
    """Ping the check for ``event``; True if it was received. Never raises.

    ``lines`` are the last log lines of the run (the body of a Healthchecks
    ping, the last one the message of the others).
    """
    if not config.configured or not wants_ping(config.kind, event):
        return False
    monitor = current_monitor.get()
    try:
        url = credentials.resolve(config.url_source())
    except ExportmonError as exc:
        _warn(monitor, f"heartbeat not sent: {exc.one_line()}")
        return False
    register_url(url)
    body_lines = [redact.redact(line) for line in (lines or [])][-MAX_LINES:]
    body = "\n".join(body_lines)[-MAX_BODY:]
    target = ping_url(config.kind, url, event, body_lines[-1] if body_lines else "")
    data = body.encode("utf-8") if config.kind == "healthchecks" else None
    request = urllib.request.Request(
        target,
        data=data,
        method="POST" if data is not None else "GET",
        headers={
            "User-Agent": f"exportmon/{__version__}",
            "Content-Type": "text/plain; charset=utf-8",
        },
    )
    timeout = config.timeout or 10.0
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=client_context()) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        _warn(monitor, f"heartbeat not received: the service answered HTTP {exc.code}")
        return False
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        _warn(monitor, f"heartbeat not sent: {redact.redact(str(reason))}")
        return False
    with _failing_lock:
        if monitor in _failing:
            _failing.discard(monitor)
            log.info("heartbeat: pings are received again")
    return True


def _warn(monitor: str, message: str) -> None:
    """Warn once per outage; later failures only at debug level."""
    with _failing_lock:
        first = monitor not in _failing
        _failing.add(monitor)
    log.log(logging.WARNING if first else logging.DEBUG, "%s", message)


class RecentLines(logging.Handler):
    """Keeps the last :data:`MAX_LINES` log lines of one monitor (the ping's body)."""

    def __init__(self, monitor: str) -> None:
        super().__init__(logging.INFO)
        self.monitor = monitor
        self.lines: deque[str] = deque(maxlen=MAX_LINES)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if current_monitor.get() != self.monitor or record.name == __name__:
            return
        # A log line that cannot be formatted is left out.
        with contextlib.suppress(Exception):
            self.lines.append(" ".join(self.format(record).split())[:500])


@contextmanager
def recent_lines(monitor: str) -> Iterator[RecentLines]:
    """Collect ``monitor``'s log lines while the block runs."""
    handler = RecentLines(monitor)
    root = logging.getLogger(LOGGER_NAME)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
