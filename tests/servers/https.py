"""Serving a request handler over HTTPS on 127.0.0.1, for the small protocol servers
(OAuth2, Graph) that need no file-serving machinery of :mod:`servers.web`."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from servers import LOCALHOST, ServerStartError, wait_for_port
from servers.tlsca import ServerCert


class QuietHandler(BaseHTTPRequestHandler):
    """A keep-alive (HTTP/1.1) handler that does not print every request to stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_https(
    handler: type[BaseHTTPRequestHandler], cert: ServerCert, what: str
) -> ThreadingHTTPServer:
    """A threaded HTTPS server for ``handler`` on a free port, serving in the background.

    Raises :class:`ServerStartError` naming ``what`` when it does not answer.
    """
    server = ThreadingHTTPServer((LOCALHOST, 0), handler)
    server.daemon_threads = True
    server.socket = cert.server_context().wrap_socket(server.socket, server_side=True)
    threading.Thread(
        target=server.serve_forever, daemon=True, kwargs={"poll_interval": 0.05}
    ).start()
    try:
        wait_for_port(LOCALHOST, server.server_address[1], timeout=10)
    except TimeoutError as exc:
        stop_https(server)
        raise ServerStartError(f"{what} did not come up: {exc}") from exc
    return server


def stop_https(server: ThreadingHTTPServer | None) -> None:
    """Stop serving and close the socket (nothing when ``server`` is None)."""
    if server is not None:
        server.shutdown()
        server.server_close()
