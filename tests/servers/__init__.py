"""Real network servers on 127.0.0.1 for exportmon's tests.

Each module starts one kind of server (IMAP/POP3 via Dovecot, HTTP(S), FTP(S),
SMTP(S)) in a background thread or subprocess; :mod:`servers.fixtures` wraps them
in pytest fixtures. Nothing here is a mock: clients speak the real protocol over
real sockets, and TLS uses certificates issued by a throw-away CA
(:mod:`servers.tlsca`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

LOCALHOST = "127.0.0.1"


class ServerStartError(RuntimeError):
    """A test server could not be started (or restarted).

    The message says which server, why, and includes whatever log output the
    server produced, so a fixture can hand it to ``pytest.fail`` unchanged.
    """


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on *host* that was free a moment ago.

    Only for servers that cannot bind port 0 themselves (Dovecot needs its
    ports in the config file): another process could grab the port before the
    server binds it, which the server's start-up check then reports.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    host: str,
    port: int,
    *,
    timeout: float = 10.0,
    probe: Callable[[socket.socket], None] | None = None,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Block until *host*:*port* accepts a TCP connection (and *probe* passes).

    *probe* is called with each connected socket (5 s timeout) and should raise
    ``OSError`` (or a subclass such as ``ssl.SSLError``) while the server is not
    really ready, e.g. when no greeting arrives yet. *alive* is polled between
    attempts; when it returns false the wait stops at once instead of running
    into the timeout.

    Raises:
        TimeoutError: if the port did not become ready within *timeout*
            seconds, or *alive* reported the server gone. The message carries
            the last connection error.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if alive is not None and not alive():
            raise TimeoutError(f"server for {host}:{port} exited while starting")
        try:
            with socket.create_connection((host, port), timeout=5.0) as sock:
                if probe is not None:
                    probe(sock)
                return
        except OSError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{host}:{port} not ready after {timeout:.1f}s (last error: {last_error!r})"
            )
        time.sleep(0.02)


def wait_for_port_closed(host: str, port: int, *, timeout: float = 10.0) -> None:
    """Block until nothing accepts TCP connections on *host*:*port* any more.

    Raises:
        TimeoutError: if the port still accepts connections after *timeout*
            seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                pass
        except OSError:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{host}:{port} still accepts connections after {timeout:.1f}s")
        time.sleep(0.02)
