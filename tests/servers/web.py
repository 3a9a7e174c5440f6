"""A threaded HTTP/HTTPS file server with switchable misbehaviour.

:class:`WebServer` serves files registered with :meth:`WebServer.add` and
records every request. Per file it can fail the first requests with an error
status, cut the connection after some bytes, lie about ``Content-Length``,
redirect, trickle the body slowly or stall forever, which is what exportmon's
download code must survive. ``Range: bytes=N-`` (and ``N-M``) requests are
answered with 206 so resuming after a cut can be tested.

Bodies given as a :class:`~pathlib.Path` are streamed from disk in chunks (with
``sendfile`` on plain HTTP), so gigabyte-sized files cost no memory.

One thread per connection; TLS handshakes happen in that thread, never in the
accept loop, so a client that stalls the handshake cannot block other clients.
:meth:`WebServer.stop` wakes stalled handlers, shuts every open connection down
and joins the threads, so nothing outlives the fixture.
"""

from __future__ import annotations

import contextlib
import mimetypes
import re
import select
import socket
import ssl
import struct
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.client import HTTPMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from servers import LOCALHOST, ServerStartError, wait_for_port
from servers.tlsca import ServerCert

_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it.

    Attributes:
        method: ``GET``, ``HEAD``, …
        target: The raw request target, e.g. ``/a/b.csv?sig=1``.
        path: The path part of *target* (what routes match on).
        query: The query string without ``?`` ('' if none).
        headers: Request headers (case-insensitive ``get``).
        range: The ``Range`` header value, or ``None``.
        client: The client's (address, port).
        tls: Whether the request came over HTTPS.
        time: ``time.monotonic()`` when the request line was parsed.
        body: The request body (POST and PUT; read whole, with a length or chunked).
    """

    method: str
    target: str
    path: str
    query: str
    headers: HTTPMessage
    range: str | None
    client: tuple[str, int]
    tls: bool
    time: float
    body: bytes = b""


@dataclass
class Route:
    """How the server answers one path (see :meth:`WebServer.add` for fields)."""

    path: str
    body: bytes | Path
    status: int = 200
    content_type: str = "application/octet-stream"
    delay_per_chunk: float = 0.0
    chunk_size: int = 64 * 1024
    fail_times: int = 0
    fail_status: int = 503
    drop_after: int | None = None
    drop_times: int = 1
    drop_reset: bool = False
    wrong_length: int | None = None
    redirect_to: str | None = None
    redirect_status: int = 302
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False
    stall_after: int = 0
    chunked: bool = False
    fail_headers: dict[str, str] = field(default_factory=dict)
    fail_after_drops: bool = False
    #: Requests that reached this route so far.
    hits: int = 0
    #: How many requests were answered with ``fail_status`` so far.
    failed: int = 0
    #: How many responses were cut short by ``drop_after`` so far.
    dropped: int = 0

    def size(self) -> int:
        """Current body size in bytes (a file's size is read at request time)."""
        if isinstance(self.body, Path):
            return self.body.stat().st_size
        return len(self.body)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks connections so stop() can cut them."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, owner: WebServer, address: tuple[str, int]) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"web-{client_address[1]}",
            daemon=True,
        )
        with self.owner._lock:
            # Registered here, in the accept thread, so stop() never misses one.
            self.owner._threads.add(thread)
            self.owner._connections.add(request)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        owner = self.owner
        conn: socket.socket = request
        try:
            if owner.ssl_context is not None:
                conn.settimeout(10)
                try:
                    conn = owner.ssl_context.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError) as exc:
                    # Expected whenever a test client rejects the certificate.
                    owner.errors.append(f"TLS handshake with {client_address} failed: {exc!r}")
                    return
                with owner._lock:
                    owner._connections.add(conn)
            _Handler(conn, client_address, self)
        except Exception:
            if not owner._stopping.is_set():
                owner.errors.append(traceback.format_exc())
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with contextlib.suppress(OSError):
                request.close()
            with owner._lock:
                owner._connections.discard(conn)
                owner._connections.discard(request)
                owner._threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.owner.errors.append(traceback.format_exc())


class _Abort(Exception):
    """Raised inside the handler after the connection was cut on purpose."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 60
    server: _Server

    # BaseHTTPRequestHandler prints every request to stderr otherwise.
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def handle(self) -> None:
        try:
            super().handle()
        except _Abort:
            pass
        except (ConnectionError, TimeoutError, ssl.SSLError):
            # Clients under test hang up whenever they like.
            pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_POST(self) -> None:
        self._serve(head=False)

    def do_PUT(self) -> None:
        self._serve(head=False)

    def _read_body(self) -> bytes:
        if self.command not in ("POST", "PUT"):
            return b""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- helpers ----------------------------------------------------------

    @property
    def owner(self) -> WebServer:
        return self.server.owner

    def _record(self) -> str:
        split = urlsplit(self.path)
        self.owner.requests.append(
            RecordedRequest(
                method=self.command,
                target=self.path,
                path=split.path,
                query=split.query,
                headers=self.headers,
                range=self.headers.get("Range"),
                client=tuple(self.client_address[:2]),  # type: ignore[arg-type]
                tls=isinstance(self.connection, ssl.SSLSocket),
                time=time.monotonic(),
                body=self._read_body(),
            )
        )
        return split.path

    def _send_simple(
        self, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        path = self._record()
        owner = self.owner
        with owner._lock:
            route = owner._routes.get(path)
            if route is None:
                failing = dropping = False
            else:
                route.hits += 1
                failing = route.failed < route.fail_times and (
                    not route.fail_after_drops or route.dropped >= route.drop_times
                )
                if failing:
                    route.failed += 1
                dropping = (
                    not failing
                    and route.redirect_to is None
                    and route.drop_after is not None
                    and route.dropped < route.drop_times
                )
                if dropping:
                    route.dropped += 1
        if route is None:
            self._send_simple(404, b"not found\n")
            return
        if failing:
            self._send_simple(route.fail_status, b"simulated failure\n", route.fail_headers)
            return
        if route.redirect_to is not None:
            self._send_simple(
                route.redirect_status, b"", {"Location": route.redirect_to, **route.headers}
            )
            return

        size = route.size()
        status, start, length = route.status, 0, size
        extra = dict(route.headers)
        requested = self.headers.get("Range")
        if requested is not None and route.status == 200:
            parsed = _parse_range(requested, size)
            if parsed is None:
                self._send_simple(
                    416, b"range not satisfiable\n", {"Content-Range": f"bytes */{size}"}
                )
                return
            if parsed != (0, size):
                start, length = parsed
                status = 206
                extra["Content-Range"] = f"bytes {start}-{start + length - 1}/{size}"

        misbehaving = dropping or route.stall or route.wrong_length is not None
        self.send_response(status)
        self.send_header("Content-Type", route.content_type)
        advertised = route.wrong_length if route.wrong_length is not None else length
        if route.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(advertised))
        self.send_header("Accept-Ranges", "bytes")
        for name, value in extra.items():
            self.send_header(name, value)
        if misbehaving:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if head:
            return
        if route.stall and route.stall_after <= 0:
            self._stall()
            return
        limit = route.drop_after if dropping else None
        self._send_body(route, start, length, limit)

    def _send_body(self, route: Route, start: int, length: int, limit: int | None) -> None:
        plain = not isinstance(self.connection, ssl.SSLSocket)
        simple = (
            limit is None and not route.stall and route.delay_per_chunk <= 0 and not route.chunked
        )
        if isinstance(route.body, Path) and plain and simple:
            with route.body.open("rb") as handle:
                self.connection.sendfile(handle, offset=start, count=length)
            return
        sent = 0
        for chunk in _chunks(route.body, start, length, route.chunk_size):
            if limit is not None and sent + len(chunk) >= limit:
                self.wfile.write(chunk[: limit - sent])
                self._cut(route.drop_reset)
            if route.stall and sent + len(chunk) >= route.stall_after:
                self.wfile.write(chunk[: route.stall_after - sent])
                self._stall()
                return
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if route.chunked else chunk)
            sent += len(chunk)
            if route.delay_per_chunk > 0 and self.owner._stopping.wait(route.delay_per_chunk):
                raise _Abort
        if limit is not None:
            # drop_after at or beyond the body length: still end abruptly.
            self._cut(route.drop_reset)
        if route.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _cut(self, reset: bool) -> None:
        self.close_connection = True
        conn = self.connection
        if reset:
            # SO_LINGER 0 turns close() into a TCP RST instead of a FIN.
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            # shutdown() without TLS close_notify: the peer sees a bare EOF.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            conn.close()
        raise _Abort

    def _stall(self) -> None:
        """Keep the connection open, sending nothing, until the client or server quits."""
        self.close_connection = True
        conn = self.connection
        stopping = self.owner._stopping
        while not stopping.wait(0.05):
            try:
                readable, _, _ = select.select([conn], [], [], 0)
                if readable and not conn.recv(4096):
                    return
            except (OSError, ValueError):
                return


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Return (start, length) for a single byte range, or None if unsatisfiable.

    Unsupported forms (several ranges) are treated as "whole body", which
    RFC 9110 allows a server to do.
    """
    match = _RANGE_RE.match(header)
    if match is None:
        return (0, size)
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            return (0, size)
        suffix = min(int(last), size)
        return (size - suffix, suffix) if suffix else None
    start = int(first)
    if start >= size:
        return None
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return (start, end - start + 1)


def _chunks(body: bytes | Path, start: int, length: int, chunk_size: int) -> Iterator[bytes]:
    if isinstance(body, Path):
        with body.open("rb") as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                chunk = handle.read(min(chunk_size, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk
    else:
        view = memoryview(body)[start : start + length]
        for offset in range(0, len(view), chunk_size):
            yield bytes(view[offset : offset + chunk_size])


class WebServer:
    """HTTP (or, with *cert*, HTTPS) server on 127.0.0.1 serving registered bodies.

    Args:
        cert: Serve HTTPS with this certificate; plain HTTP when ``None``.
        host: Address to bind (tests use 127.0.0.1).

    Attributes:
        requests: Every request received, in arrival order.
        errors: Server-side problems (tracebacks, failed TLS handshakes);
            expected to stay empty unless a test provokes TLS refusal.
        routes: The registered routes by path, for inspecting hit counters.
    """

    def __init__(self, cert: ServerCert | None = None, *, host: str = LOCALHOST) -> None:
        self.cert = cert
        self.host = host
        self.ssl_context: ssl.SSLContext | None = cert.server_context() if cert else None
        self.requests: list[RecordedRequest] = []
        self.errors: list[str] = []
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serve_thread: threading.Thread | None = None
        self._port = 0

    @property
    def routes(self) -> dict[str, Route]:
        """Registered routes by path."""
        return self._routes

    @property
    def scheme(self) -> str:
        """``https`` when a certificate was given, else ``http``."""
        return "https" if self.cert else "http"

    @property
    def port(self) -> int:
        """The bound port (stable across :meth:`stop`/:meth:`start`)."""
        if not self._port:
            raise RuntimeError("WebServer has not been started yet")
        return self._port

    @property
    def base_url(self) -> str:
        """``<scheme>://127.0.0.1:<port>`` without a trailing slash."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """Full URL for *path* (which may carry a query string)."""
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def add(
        self,
        path: str,
        body: bytes | Path = b"",
        *,
        status: int = 200,
        content_type: str | None = None,
        delay_per_chunk: float = 0.0,
        chunk_size: int = 64 * 1024,
        fail_times: int = 0,
        fail_status: int = 503,
        drop_after: int | None = None,
        drop_times: int = 1,
        drop_reset: bool = False,
        wrong_length: int | None = None,
        redirect_to: str | None = None,
        redirect_status: int = 302,
        headers: Mapping[str, str] | None = None,
        stall: bool = False,
        stall_after: int = 0,
        chunked: bool = False,
        fail_headers: Mapping[str, str] | None = None,
        fail_after_drops: bool = False,
    ) -> str:
        """Register (or replace) what the server returns for *path*; return its URL.

        Args:
            path: URL path, optionally with a query string. Matching uses the
                path only; the query is ignored (but recorded per request) and
                kept in the returned URL.
            body: Response body; a ``Path`` is streamed from disk at request time.
            status: Status of a normal response. Range requests are only
                honoured when this is 200.
            content_type: ``Content-Type``; guessed from the path when ``None``.
            delay_per_chunk: Seconds to sleep after each chunk (slow server).
            chunk_size: Bytes per write.
            fail_times: Answer this many first requests with *fail_status*.
            fail_status: Status used for those failures (e.g. 503, 500, 403).
            drop_after: Send this many body bytes, then close the connection
                abruptly (no TLS close_notify). Applies to the first
                *drop_times* successful requests only.
            drop_times: See *drop_after*.
            drop_reset: Cut with a TCP RST instead of a FIN.
            wrong_length: Advertise this ``Content-Length`` instead of the real
                one, send the real body, then close the connection.
            redirect_to: Answer with *redirect_status* and this ``Location``.
            redirect_status: 301, 302, 303, 307 or 308.
            headers: Extra response headers.
            stall: Send the headers (and *stall_after* body bytes), then send
                nothing more until the client disconnects or the server stops.
            stall_after: See *stall*.
            chunked: Send the body with ``Transfer-Encoding: chunked`` (one chunk
                per write), without ``Content-Length``.
            fail_headers: Extra headers of the *fail_status* answers (``Retry-After``).
            fail_after_drops: The *fail_times* failures come after the *drop_times*
                cut answers, not before them.

        Returns:
            The absolute URL, e.g. ``https://127.0.0.1:PORT/path?query``.
        """
        if not path.startswith("/"):
            path = "/" + path
        match_path = urlsplit(path).path
        if content_type is None:
            content_type = mimetypes.guess_type(match_path)[0] or "application/octet-stream"
        route = Route(
            path=match_path,
            body=body,
            status=status,
            content_type=content_type,
            delay_per_chunk=delay_per_chunk,
            chunk_size=chunk_size,
            fail_times=fail_times,
            fail_status=fail_status,
            drop_after=drop_after,
            drop_times=drop_times,
            drop_reset=drop_reset,
            wrong_length=wrong_length,
            redirect_to=redirect_to,
            redirect_status=redirect_status,
            headers=dict(headers or {}),
            stall=stall,
            stall_after=stall_after,
            chunked=chunked,
            fail_headers=dict(fail_headers or {}),
            fail_after_drops=fail_after_drops,
        )
        with self._lock:
            self._routes[match_path] = route
        return self.url(path)

    def remove(self, path: str) -> None:
        """Forget the route for *path*; later requests get 404."""
        with self._lock:
            self._routes.pop(urlsplit(path).path, None)

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """The recorded requests whose path equals *path* (query ignored)."""
        wanted = urlsplit(path).path
        return [r for r in list(self.requests) if r.path == wanted]

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Bind (the same port again after a stop) and serve in a background thread.

        Raises:
            ServerStartError: the port cannot be bound or does not answer.
        """
        if self._server is not None:
            return
        self._stopping.clear()
        try:
            server = _Server(self, (self.host, self._port))
        except OSError as exc:
            raise ServerStartError(
                f"{self.scheme} server cannot bind {self.host}:{self._port}: {exc}"
            ) from exc
        self._server = server
        self._port = server.server_address[1]
        self._serve_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.scheme}-server-{self._port}",
            daemon=True,
        )
        self._serve_thread.start()
        try:
            wait_for_port(self.host, self._port, timeout=10, probe=self._probe)
        except TimeoutError as exc:
            self.stop()
            raise ServerStartError(f"{self.scheme} server did not come up: {exc}") from exc

    def _probe(self, sock: socket.socket) -> None:
        # A bare TCP probe would show up in `errors` as a failed TLS handshake;
        # the probe does not care which certificate is served.
        if self.ssl_context is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            with context.wrap_socket(sock, server_hostname=self.host):
                pass

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, cut open connections (also stalled ones) and join all threads."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        if self._serve_thread is not None:
            self._serve_thread.join(timeout)
        deadline = time.monotonic() + timeout
        while True:
            # Repeated, because a handler may swap its socket for a TLS one
            # between two rounds.
            with self._lock:
                connections = list(self._connections)
                threads = list(self._threads)
            for conn in connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            for thread in threads:
                thread.join(0.1)
            alive = [t.name for t in threads if t.is_alive()]
            if not alive or time.monotonic() >= deadline:
                break
        self._server = None
        self._serve_thread = None
        if alive:
            raise RuntimeError(f"web server threads did not stop: {alive}")

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start` on the same port; routes and records are kept."""
        self.stop()
        self.start()

    def __enter__(self) -> WebServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
