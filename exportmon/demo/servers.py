"""The demo's in-process servers: a web server for the exports, an FTP server, and a
receiver for webhook notifications and heartbeat pings.

Both listen on 127.0.0.1 on a free port, run in daemon threads, and stop when
their ``with`` block ends, so the demo leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """The demo's own log says what happened; no access log on the terminal."""


@contextlib.contextmanager
def web_server(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over HTTP on 127.0.0.1; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=directory))
    thread = threading.Thread(target=server.serve_forever, name="demo-web", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@dataclass(frozen=True)
class FtpAccount:
    url: str
    user: str
    password: str
    home: Path


@contextlib.contextmanager
def ftp_server(home: Path) -> Iterator[FtpAccount]:
    """An FTP server on 127.0.0.1 with one user whose home is ``home``."""
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.servers import FTPServer

    # pyftpdlib prints its own log to stderr unless its logger has a handler.
    ftp_log = logging.getLogger("pyftpdlib")
    ftp_log.addHandler(logging.NullHandler())
    ftp_log.propagate = False
    home.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    authorizer = DummyAuthorizer()
    authorizer.add_user("demo", password, str(home), perm="elradfmwMT")
    handler = type("DemoFTPHandler", (FTPHandler,), {"authorizer": authorizer, "banner": "demo"})
    # A loop of its own: pyftpdlib's default loop is shared by the whole process.
    server = FTPServer(("127.0.0.1", 0), handler, ioloop=IOLoop())
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.ioloop.loop(timeout=0.1, blocking=False)

    thread = threading.Thread(target=serve, name="demo-ftp", daemon=True)
    thread.start()
    try:
        yield FtpAccount(f"ftp://127.0.0.1:{server.address[1]}", "demo", password, home)
    finally:
        stop.set()
        thread.join()
        server.close_all()


@dataclass
class Receiver:
    """What the receiver got: JSON notifications and heartbeat pings, in order."""

    url: str
    notifications: list[dict[str, object]]
    pings: list[str]


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 taking Apprise ``json://`` posts (``/notify``) and
    Healthchecks-style pings (``/ping/...``)."""
    got = Receiver("", [], [])
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            """Quiet, like the other demo servers."""

        def _take(self) -> None:
            length = min(int(self.headers.get("Content-Length") or 0), 1_000_000)
            body = self.rfile.read(length) if length else b""
            with lock:
                if self.path.startswith("/notify"):
                    with contextlib.suppress(ValueError):
                        got.notifications.append(json.loads(body))
                else:
                    got.pings.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_POST = _take

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="demo-receiver", daemon=True)
    thread.start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
