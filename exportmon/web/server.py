"""``exportmon serve``: the status page, JSON, metrics and a health check over HTTP.

=====================  ==========================================================
path                   answer
=====================  ==========================================================
``/``                  the page (refreshes itself from ``/live``)
``/live``              the page's changing part, as an HTML fragment
``/api/status``        ``exportmon status --json``
``/api/report``        ``exportmon report --json``; ``?since=7d`` (a duration)
``/metrics``           the Prometheus exposition (``status --prometheus``)
``/healthz``           ``200 ok`` when every monitor is ok, else ``503``
=====================  ==========================================================

Read-only: only GET and HEAD are answered. It listens on a loopback address
unless a token (``Authorization: Bearer <token>`` or ``?token=<token>``) or
basic auth is required; ``/healthz`` stays open for probes and says only
``ok`` or the overall state. No secret is ever shown: every text shown is
redacted and escaped.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from exportmon.errors import UsageError
from exportmon.log import get_logger
from exportmon.units import parse_duration
from exportmon.web import page
from exportmon.web.data import Source

log = get_logger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8580"
#: Seconds between the page's refreshes.
DEFAULT_REFRESH = 5.0
#: A client that sends nothing for this long is dropped (a thread each).
REQUEST_TIMEOUT = 30.0
#: The longest period ``/api/report?since=`` accepts.
MAX_SINCE = timedelta(days=366)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Access:
    """Who may read: anyone on loopback, or the holders of a token or a user's password."""

    token: str | None = None
    user: str | None = None
    password: str | None = None

    @property
    def required(self) -> bool:
        return bool(self.token or (self.user and self.password))

    def allows(self, headers: Any, query: dict[str, list[str]]) -> bool:
        if not self.required:
            return True
        given = headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if self.token:
            offered = value.strip() if scheme.lower() == "bearer" else ""
            offered = offered or (query.get("token") or [""])[0]
            if offered and hmac.compare_digest(offered.encode(), self.token.encode()):
                return True
        if self.user and self.password and scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return False
            user, _, password = decoded.partition(":")
            same_user = hmac.compare_digest(user.encode(), self.user.encode())
            same_password = hmac.compare_digest(password.encode(), self.password.encode())
            return same_user and same_password
        return False


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``:port`` (loopback) as a host and a port."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(
            f"--listen: not an address and port: {text!r}", hint="e.g. --listen 127.0.0.1:8580"
        )
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: StatusApp) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT
    server_version = "exportmon"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("serve: %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _refuse_method(self) -> None:
        self._send(
            HTTPStatus.METHOD_NOT_ALLOWED, b"read-only\n", "text/plain", {"Allow": "GET, HEAD"}
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse_method

    def _answer(self, head: bool) -> None:
        try:
            status, body, content_type, extra = self.server.app.respond(self.path, self.headers)
        except Exception:  # never leave a client hanging, never show a traceback
            log.exception("serve: %s failed", urlsplit(self.path).path)
            status, body, content_type, extra = (
                HTTPStatus.INTERNAL_SERVER_ERROR,
                b"internal error; see the log\n",
                "text/plain",
                {},
            )
        self._send(status, b"" if head else body, content_type, extra, length=len(body))

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: dict[str, str],
        *,
        length: int | None = None,
    ) -> None:
        self.send_response(status)
        charset = (
            "; charset=utf-8" if content_type.startswith(("text/", "application/json")) else ""
        )
        self.send_header("Content-Type", content_type + charset)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for name, value in {**SECURITY_HEADERS, **extra}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)


Response = tuple[int, bytes, str, dict[str, str]]


class StatusApp:
    """Turns a request path into a response, from the snapshots of ``source``."""

    def __init__(self, source: Source, access: Access, refresh: float = DEFAULT_REFRESH) -> None:
        self.source = source
        self.access = access
        self.refresh = refresh
        self.routes: dict[str, Callable[[dict[str, list[str]]], Response]] = {
            "/": self.index,
            "/live": self.live,
            "/api/status": self.api_status,
            "/api/report": self.api_report,
            "/metrics": self.metrics,
            "/static/page.css": lambda q: (200, page.STYLE.encode(), "text/css", {}),
            "/static/page.js": lambda q: (200, page.SCRIPT.encode(), "text/javascript", {}),
        }

    def respond(self, target: str, headers: Any) -> Response:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        path = parts.path
        if path == "/healthz":
            return self.healthz()
        route = self.routes.get(path) or self.routes.get(path.rstrip("/") or "/")
        if route is None:
            return HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", {}
        if not self.access.allows(headers, query):
            extra = {"WWW-Authenticate": 'Basic realm="exportmon"'} if self.access.user else {}
            return HTTPStatus.UNAUTHORIZED, b"authentication required\n", "text/plain", extra
        return route(query)

    def index(self, query: dict[str, list[str]]) -> Response:
        return 200, page.document(self.refresh).encode(), "text/html", {}

    def live(self, query: dict[str, list[str]]) -> Response:
        return 200, page.live_html(self.source.snapshot()).encode(), "text/html", {}

    def api_status(self, query: dict[str, list[str]]) -> Response:
        return _json(self.source.snapshot().status_json())

    def api_report(self, query: dict[str, list[str]]) -> Response:
        since_text = (query.get("since") or ["7d"])[0]
        try:
            since = timedelta(seconds=parse_duration(since_text))
        except ValueError as exc:
            return _json({"error": f"since: {exc}"}, HTTPStatus.BAD_REQUEST)
        if since > MAX_SINCE or since.total_seconds() <= 0:
            return _json({"error": "since: between 1s and 366d"}, HTTPStatus.BAD_REQUEST)
        return _json(self.source.take(since).report.to_dict())

    def metrics(self, query: dict[str, list[str]]) -> Response:
        body = self.source.snapshot().metrics().encode()
        return 200, body, "text/plain; version=0.0.4", {}

    def healthz(self) -> Response:
        snapshot = self.source.snapshot()
        if snapshot.healthy:
            return 200, b"ok\n", "text/plain", {}
        return HTTPStatus.SERVICE_UNAVAILABLE, f"{snapshot.state}\n".encode(), "text/plain", {}


def _json(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n"
    return status, body.encode(), "application/json", {}


class StatusServer:
    """The HTTP server on its own thread; ``url`` says where it listens."""

    def __init__(self, app: StatusApp, listen: str = DEFAULT_LISTEN) -> None:
        host, port = parse_listen(listen)
        if not is_loopback(host) and not app.access.required:
            raise UsageError(
                f"--listen {listen}: not a loopback address, and nobody is asked who they are",
                hint="add --token (or EXPORTMON_SERVE_TOKEN), or --auth-user with a password",
            )
        try:
            self.httpd = _Server((host, port), app)
        except OSError as exc:
            raise UsageError(
                f"--listen {listen}: cannot listen there: {exc.strerror or exc}",
                hint="pick another port, or stop what uses this one",
            ) from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        address = self.httpd.server_address
        raw, port = address[0], address[1]
        host = raw.decode() if isinstance(raw, bytes) else str(raw)
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def start(self) -> StatusServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever,
            kwargs={"poll_interval": 0.5},
            name="serve",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> StatusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
