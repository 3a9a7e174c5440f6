"""An HTTP server that receives webhooks and pings and records every request.

:class:`Receiver` answers every ``GET``/``POST``/``PUT``/``HEAD`` on 127.0.0.1
(port picked by the OS) with ``200 OK`` unless a status was set for the path
with :meth:`Receiver.fail`, and keeps each request as a :class:`Received`
(method, path, query, headers, body). It stands in for the services that take
Apprise ``json://`` / ``form://`` notifications and heartbeat pings
(Healthchecks, Uptime Kuma, Cronitor all speak plain HTTP GET/POST).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from servers import LOCALHOST, ServerStartError


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        received = Received(
            self.command,
            parts.path,
            dict(parse_qsl(parts.query, keep_blank_values=True)),
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        owner = self.server.owner
        with owner.lock:
            owner.requests.append(received)
            status = owner.statuses.get(parts.path, 200)
            owner.lock.notify_all()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "2")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"OK")

    do_GET = do_POST = do_PUT = do_HEAD = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: Receiver) -> None:
        super().__init__((LOCALHOST, 0), _Handler)
        self.owner = owner


class Receiver:
    """Records requests; use as a context manager or with start()/stop()."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: dict[str, int] = {}
        self.lock = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://{LOCALHOST}:{self.port}{path}"

    def fail(self, path: str, status: int) -> None:
        """Answer requests for ``path`` with ``status`` from now on."""
        with self.lock:
            self.statuses[path] = status

    def at(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(
        self, count: int, path: str | None = None, timeout: float = 20.0
    ) -> list[Received]:
        """Block until ``count`` requests (for ``path``) arrived; return them."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                found = [r for r in self.requests if path is None or r.path == path]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"only {len(found)} of {count} request(s) for {path}")
                self.lock.wait(remaining)

    def start(self) -> None:
        try:
            self._server = _Server(self)
        except OSError as exc:
            raise ServerStartError(f"webhook receiver could not bind: {exc}") from exc
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
