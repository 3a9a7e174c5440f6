"""HTTP(S) requests to checked addresses, with deadlines, a minimum rate and streamed bodies.

Every HTTP request exportmon makes (export downloads, HTTPS uploads, JSON APIs such
as OAuth2 token endpoints) goes through :func:`request`:

- **Address guard.** The host is resolved once; every address must be public (not
  loopback, private, link-local, multicast, reserved or a cloud metadata address)
  unless the host, or a network holding the address, is in ``allow_hosts``. The
  connection is made to exactly the address that was checked (TLS still verifies
  the host name), so a DNS answer cannot change between check and connection.
- **Redirects** (when followed) are checked like the first URL: scheme, address
  guard, ``check_url``, no step down from https to http, at most ``max_redirects``.
  ``Authorization`` and ``Cookie`` headers are not sent to another origin. A 303
  (and a 301/302 answer to anything but GET/HEAD) becomes a GET without a body;
  307/308 repeat the method and the body.
- **Time limits.** ``timeout`` bounds the connect, every single read and the wait
  for the answer's headers; ``deadline`` (a :func:`time.monotonic` time) bounds the
  whole exchange, body included; ``min_rate`` (bytes per second, measured over each
  window of ``timeout`` seconds, at least 1 s) stops a transfer that trickles. A
  watchdog thread enforces them by shutting the socket down, so a body dripping a
  byte at a time cannot hold the process for ever, and a stop request
  (:func:`exportmon.net.retry.request_stop`) ends a transfer within a fraction of a
  second.
- **Bodies stream** both ways: a request body is ``bytes``, a binary file object or a
  :class:`~pathlib.Path` (sent in blocks, never read whole); the answer is read with
  :meth:`Response.readinto` into the caller's buffer.

Errors, each one line: :class:`~exportmon.errors.LinkRefused` (a URL or redirect that
is not followed: bad scheme, refused address, too many redirects),
:class:`~exportmon.errors.TLSError` (certificate problems), :class:`NetworkError`
(connect failures, resets, timeouts: worth another attempt), its subclass
:class:`TooSlow`, :class:`DeadlineExceeded`, and
:class:`~exportmon.net.retry.Interrupted` when a stop was requested. Answers with
any status (4xx, 5xx included) are returned; what they mean is the caller's to say.

Example::

    settings = HttpSettings(ca_file=None, allow_hosts=(), timeout=30)
    with request("POST", token_url, body=form_bytes, headers={...},
                 settings=settings) as response:
        if response.status != 200: ...
        data = response.json()
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import ssl
import stat
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from exportmon import __version__, json_answers
from exportmon.errors import ConnectionFailed, ExportmonError, LinkRefused
from exportmon.net import retry
from exportmon.net.tls import client_context, tls_error
from exportmon.redact import redact

#: Statuses that redirect (followed when ``follow_redirects``).
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Bytes per block when sending a request body.
SEND_BLOCK = 256 * 1024
#: How often the watchdog looks at running transfers, in seconds.
WATCH_TICK = 0.2
#: Cloud metadata services; refused even though some are in ranges one might allow.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

Body = bytes | IO[bytes] | Path | None


class NetworkError(ConnectionFailed):
    """The connection failed or broke (refused, reset, timed out): another try may work."""


class TooSlow(NetworkError):
    """The transfer moved fewer bytes than ``min_rate`` asks for."""


class DeadlineExceeded(ConnectionFailed):
    """The exchange was not finished by its deadline."""


@dataclass(frozen=True)
class HttpSettings:
    """How :func:`request` connects.

    ``allow_hosts`` lists host names, addresses or networks (``10.0.0.0/8``) that may
    be private; ``ca_key`` and ``allow_key`` are the config keys that set ``ca_file``
    and ``allow_hosts`` (named in errors); ``timeout`` and ``min_rate`` are described
    in the module docstring.
    """

    ca_file: str | None = None
    ca_key: str = "ca_file"
    allow_hosts: Sequence[str] = ()
    allow_key: str = "allow_hosts"
    #: How refusals put it: "refused to <action> <host>" ("download from", "upload to").
    action: str = "connect to"
    timeout: float = 60.0
    min_rate: int | None = None
    max_redirects: int = 5
    user_agent: str = f"exportmon/{__version__}"


# --- the address guard ---------------------------------------------------------------


def display_url(url: str, limit: int = 120) -> str:
    """``url`` fit for a message: credentials and signatures masked, shortened."""
    shown = redact(url)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def check_scheme(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) URL; :class:`LinkRefused` for anything else.

    A URL holding control characters or spaces is refused too: no server can be
    asked for it as it stands.
    """
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url.strip()):
        raise LinkRefused(
            "not a valid link: it contains control characters or spaces",
            hint=f"link was {display_url(url.encode('unicode_escape').decode('ascii'))}",
        )
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise LinkRefused(f"not a valid link: {display_url(url)}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise LinkRefused(
            f"refused a {scheme or 'scheme-less'} link: only http and https are used",
            hint=f"link was {display_url(url)}",
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise LinkRefused(f"link has no host: {display_url(url)}")
    return scheme, host, port or (443 if scheme == "https" else 80)


def host_allowed(host: str, allow_hosts: Sequence[str]) -> bool:
    """Whether ``host`` (a name or an address) is listed in ``allow_hosts``."""
    wanted = host.lower().strip("[]")
    for entry in allow_hosts:
        entry = entry.strip().lower().strip("[]")
        if entry == wanted:
            return True
        if "/" in entry:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(wanted) in ipaddress.ip_network(entry, strict=False):
                    return True
    return False


def address_problem(address: str) -> str | None:
    """Why exportmon will not connect to ``address``, or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_unspecified or ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


def resolve_checked(
    host: str,
    port: int,
    allow_hosts: Sequence[str],
    *,
    allow_key: str = "allow_hosts",
    action: str = "connect to",
) -> list[str]:
    """The addresses of ``host`` that may be connected to, or :class:`LinkRefused`.

    Every address ``host`` resolves to must be public unless the host (or a network
    in ``allow_hosts`` containing the address) is allowed: one private address among
    public ones is refused too, since DNS answers can be chosen by whoever controls
    the name. A name that does not resolve raises :class:`NetworkError`.
    """
    allowed = host_allowed(host, allow_hosts)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise NetworkError(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        problem = address_problem(address)
        if problem and not (allowed or host_allowed(address, allow_hosts)):
            shown = host if host == address else f"{host} ({address})"
            raise LinkRefused(
                f"refused to {action} {shown}: {problem}",
                hint=f'if this is your own server, add "{host}" to {allow_key}',
            )
    if not addresses:
        raise NetworkError(f"cannot resolve {host}: no addresses")
    return addresses


# --- metered sockets and the watchdog ----------------------------------------------------


class _Meter:
    """Bytes moved over one exchange's sockets, both ways (read by the watchdog)."""

    def __init__(self) -> None:
        self.moved = 0


class _MeteredSocket(socket.socket):
    meter: _Meter | None = None

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        count = super().recv_into(buffer, nbytes, flags)
        if self.meter is not None:
            self.meter.moved += count
        return count

    def sendall(self, data: Any, flags: int = 0) -> None:
        super().sendall(data, flags)
        if self.meter is not None:
            self.meter.moved += memoryview(data).nbytes


class _MeteredSSLSocket(ssl.SSLSocket):
    meter: _Meter | None = None

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        count = super().recv_into(buffer, nbytes, flags)
        if self.meter is not None:
            self.meter.moved += count
        return count

    def send(self, data: Any, flags: int = 0) -> int:
        count = super().send(data, flags)
        if self.meter is not None:
            self.meter.moved += count
        return count


class _Watch:
    """The limits of one exchange, checked by the watchdog every :data:`WATCH_TICK`.

    ``phase`` is ``send`` (connecting and sending the request), ``wait`` (waiting for
    the answer's headers) or ``body``. When a limit is passed, ``tripped`` names it
    and the socket is shut down, which ends any blocked read or write at once.
    """

    def __init__(self, timeout: float, deadline: float | None, min_rate: int | None) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.min_rate = min_rate
        self.window = max(1.0, timeout)
        self.meter = _Meter()
        self.sock: socket.socket | None = None
        self.tripped: str | None = None
        self.phase = "send"
        self._since = time.monotonic()
        self._moved_then = 0
        self._lock = threading.Lock()

    def enter(self, phase: str) -> None:
        with self._lock:
            self.phase = phase
            self._since = time.monotonic()
            self._moved_then = self.meter.moved

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self.sock = sock
        if self.tripped:
            self._shut()

    def check(self, now: float) -> None:
        if self.tripped:
            return
        reason = None
        if retry.stop_requested():
            reason = "stopped"
        elif self.deadline is not None and now >= self.deadline:
            reason = "deadline"
        else:
            with self._lock:
                elapsed = now - self._since
                moved = self.meter.moved - self._moved_then
                if self.phase == "wait" and elapsed >= self.timeout:
                    reason = "headers"
                elif self.phase == "body" and self.min_rate and elapsed >= self.window:
                    if moved < self.min_rate * elapsed:
                        reason = "slow"
                    self._since, self._moved_then = now, self.meter.moved
        if reason:
            self.tripped = reason
            self._shut()

    def _shut(self) -> None:
        with self._lock:
            sock = self.sock
        if sock is not None:
            # socket.socket.shutdown, not SSLSocket's: no TLS shutdown from this thread.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watchdog:
    """One thread checking every running exchange's limits."""

    def __init__(self) -> None:
        self._watches: weakref.WeakSet[_Watch] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="exportmon-http-watchdog", daemon=True
                )
                self._thread.start()

    def discard(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _run(self) -> None:
        while True:
            time.sleep(WATCH_TICK)
            with self._lock:
                watches = list(self._watches)
            now = time.monotonic()
            for watch in watches:
                watch.check(now)


_watchdog = _Watchdog()


# --- connections -------------------------------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a host name, made to one already-checked address."""

    def __init__(self, host: str, port: int, address: str, timeout: float, watch: _Watch) -> None:
        super().__init__(host, port, timeout=timeout, blocksize=SEND_BLOCK)
        self.pinned_address = address
        self.watch = watch

    def _raw_connect(self) -> _MeteredSocket:
        plain = socket.create_connection((self.pinned_address, self.port), self.timeout)
        sock = _MeteredSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        sock.settimeout(self.timeout)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.meter = self.watch.meter
        self.watch.attach(sock)
        return sock

    def connect(self) -> None:
        self.sock = self._raw_connect()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """As :class:`_PinnedHTTPConnection`, with TLS verifying the host name (not the address)."""

    default_port = 443

    def __init__(
        self,
        host: str,
        port: int,
        address: str,
        timeout: float,
        watch: _Watch,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(host, port, address, timeout, watch)
        self.tls_context = context

    def connect(self) -> None:
        raw = self._raw_connect()
        tls = self.tls_context.wrap_socket(raw, server_hostname=self.host)
        tls.meter = self.watch.meter  # type: ignore[attr-defined]
        self.watch.attach(tls)
        self.sock = tls


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no address answered"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return redact(str(exc) or type(exc).__name__)


def _tripped_error(watch: _Watch, what: str) -> ExportmonError | retry.Interrupted | None:
    """The error for a limit the watchdog found passed, if it did (a stop is no
    failure: :class:`~exportmon.signals.Interrupted`)."""
    if watch.tripped == "stopped":
        return retry.Interrupted(f"stopped while {what}")
    if watch.tripped == "deadline":
        return DeadlineExceeded(f"not finished by its deadline while {what}")
    if watch.tripped == "headers":
        return NetworkError(f"no answer within {watch.timeout:g} s")
    if watch.tripped == "slow":
        return TooSlow(
            f"too slow while {what}: less than {watch.min_rate} bytes/s over {watch.window:g} s"
        )
    return None


# --- the response ------------------------------------------------------------------------


class Response:
    """An answer from :func:`request`: status, headers, and the body read on demand.

    Close it (or use it as a context manager) to end the connection. :meth:`readinto`
    and :meth:`read` raise :class:`NetworkError`, :class:`TooSlow`,
    :class:`DeadlineExceeded` or :class:`~exportmon.net.retry.Interrupted`.
    """

    def __init__(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        url: str,
        redirects: int,
        watch: _Watch,
        payload: _Body,
    ) -> None:
        self._connection = connection
        self._payload = payload
        self._response = response
        self._watch = watch
        #: The URL this answer came from (after redirects).
        self.url = url
        self.status: int = response.status
        self.reason: str = response.reason
        self.headers: http.client.HTTPMessage = response.headers
        #: How many redirects were followed to get here.
        self.redirects = redirects

    def header(self, name: str, default: str | None = None) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``default``."""
        return self._response.getheader(name, default)

    @property
    def length(self) -> int | None:
        """``Content-Length``, when the answer gives a valid one."""
        value = (self.header("Content-Length") or "").strip()
        return int(value) if value.isdigit() else None

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Read body bytes into ``buffer``; the count, 0 at the end of the body."""
        try:
            count = self._response.readinto(buffer)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._failure(exc) from None
        if not count and self._watch.tripped:
            raise self._failure(None)
        return count

    def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes of the body (for error answers and small documents)."""
        chunks = bytearray()
        block = bytearray(min(limit, 64 * 1024) or 1)
        while len(chunks) < limit:
            view = memoryview(block)[: limit - len(chunks)]
            count = self.readinto(view)
            if not count:
                break
            chunks += view[:count]
        return bytes(chunks)

    def json(self, limit: int = 1024 * 1024) -> Any:
        """The body parsed as JSON (at most ``limit`` bytes); :class:`ExportmonError` if not."""
        data = self.read(limit + 1)
        if len(data) > limit:
            raise ExportmonError(f"the JSON answer from {display_url(self.url)} is too large")
        try:
            return json_answers.loads(data)
        except ValueError:
            raise ExportmonError(f"the answer from {display_url(self.url)} is not JSON") from None

    def _failure(self, exc: BaseException | None) -> ExportmonError | retry.Interrupted:
        return _tripped_error(self._watch, "receiving") or NetworkError(
            f"connection broken: {_describe(exc)}"
        )

    def close(self) -> None:
        """End the connection and stop watching it."""
        _watchdog.discard(self._watch)
        with contextlib.suppress(Exception):
            self._response.close()
        self._connection.close()
        self._payload.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- the request -------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


class _Body:
    """A request body that can be sent again after a 307/308 redirect."""

    def __init__(self, body: Body) -> None:
        self.body = body
        self._opened: IO[bytes] | None = None
        self._start = 0
        if not isinstance(body, (bytes, Path)) and body is not None:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                self._start = body.tell()

    def length(self) -> int | None:
        body = self.body
        if body is None:
            return None
        if isinstance(body, bytes):
            return len(body)
        if isinstance(body, Path):
            return body.stat().st_size
        with contextlib.suppress(OSError, ValueError, AttributeError):
            status = os.fstat(body.fileno())
            if stat.S_ISREG(status.st_mode):
                return status.st_size - self._start
        return None

    def payload(self) -> bytes | IO[bytes] | None:
        body = self.body
        if body is None or isinstance(body, bytes):
            return body
        if isinstance(body, Path):
            self.close()
            self._opened = body.open("rb")
            return self._opened
        return body

    def rewind(self) -> bool:
        """Make the body sendable again; False when it cannot be (a pipe)."""
        body = self.body
        if body is None or isinstance(body, (bytes, Path)):
            return True
        try:
            body.seek(self._start)
        except (OSError, ValueError, AttributeError):
            return False
        return True

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None


def request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: Body = None,
    settings: HttpSettings | None = None,
    deadline: float | None = None,
    follow_redirects: bool = True,
    check_url: Callable[[str], None] | None = None,
    context: ssl.SSLContext | None = None,
) -> Response:
    """Send ``method url`` and return the :class:`Response` once its headers arrived.

    ``headers`` are sent as given, after defaults for ``User-Agent``, ``Accept`` and
    ``Accept-Encoding: identity`` (a compressed answer would make lengths and
    checksums lie; ask for one explicitly to get it). ``body`` is ``bytes``, a binary
    file (sent from its current position) or a :class:`~pathlib.Path`; its length is
    sent as ``Content-Length`` when known, else it is sent chunked. ``deadline`` is a
    :func:`time.monotonic` time by which the whole exchange, reading the body
    included, must end. ``check_url(url)`` is called for the URL and each redirect
    target before connecting (it raises to refuse one). ``context`` is the TLS context
    (by default built from ``settings.ca_file``).

    Raises :class:`~exportmon.errors.LinkRefused`, :class:`~exportmon.errors.TLSError`,
    :class:`NetworkError`, :class:`DeadlineExceeded` or
    :class:`~exportmon.net.retry.Interrupted`.
    """
    settings = settings or HttpSettings()
    sent_headers = {
        "User-Agent": settings.user_agent,
        "Accept": "*/*",
        "Accept-Encoding": "identity",
        **(headers or {}),
    }
    payload = _Body(body)
    watch = _Watch(settings.timeout, deadline, settings.min_rate)
    _watchdog.add(watch)
    current, hops = url, 0
    try:
        while True:
            if check_url is not None:
                check_url(current)
            connection, response = _exchange(
                method, current, sent_headers, payload, settings, watch, context
            )
            if not follow_redirects or response.status not in REDIRECT_STATUSES:
                watch.enter("body")
                return Response(connection, response, current, hops, watch, payload)
            location = response.getheader("Location")
            status = response.status
            response.close()
            connection.close()
            hops += 1
            if not location:
                raise LinkRefused(
                    f"redirect ({status}) without a Location from {display_url(current)}"
                )
            if hops > settings.max_redirects:
                raise LinkRefused(
                    f"more than {settings.max_redirects} redirects from {display_url(url)}",
                    hint="raise max_redirects if the server really needs more",
                )
            following = urljoin(current, location.strip())
            if urlsplit(current).scheme == "https" and urlsplit(following).scheme == "http":
                raise LinkRefused(
                    f"refused a redirect from https to plain http ({display_url(following)})"
                )
            if _origin(following) != _origin(current):
                sent_headers = {
                    k: v
                    for k, v in sent_headers.items()
                    if k.lower() not in ("authorization", "cookie")
                }
            if status == 303 or (status in (301, 302) and method not in ("GET", "HEAD")):
                method = "GET" if method != "HEAD" else method
                payload = _Body(None)
                sent_headers = {
                    k: v
                    for k, v in sent_headers.items()
                    if k.lower() not in ("content-length", "content-type", "transfer-encoding")
                }
            elif not payload.rewind():
                raise LinkRefused(
                    f"cannot follow a {status} redirect: the request body cannot be sent again"
                )
            current = following
    except BaseException:
        _watchdog.discard(watch)
        payload.close()
        raise


def _exchange(
    method: str,
    url: str,
    headers: dict[str, str],
    payload: _Body,
    settings: HttpSettings,
    watch: _Watch,
    context: ssl.SSLContext | None,
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Connect to a checked address of ``url``'s host, send the request, read the head."""
    scheme, host, port = check_scheme(url)
    addresses = resolve_checked(
        host, port, settings.allow_hosts, allow_key=settings.allow_key, action=settings.action
    )
    parts = urlsplit(url.strip())
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if scheme == "https" and context is None:
        context = client_context(settings.ca_file, ca_key=settings.ca_key)
    if context is not None:
        context.sslsocket_class = _MeteredSSLSocket
    watch.enter("send")
    last_error: BaseException | None = None
    connection: http.client.HTTPConnection | None = None
    timeout = settings.timeout
    if watch.deadline is not None:
        timeout = max(0.1, min(timeout, watch.deadline - time.monotonic()))
    for address in addresses:
        if scheme == "https":
            assert context is not None
            connection = _PinnedHTTPSConnection(host, port, address, timeout, watch, context)
        else:
            connection = _PinnedHTTPConnection(host, port, address, timeout, watch)
        try:
            connection.connect()
            break
        except ssl.SSLError as exc:
            connection.close()
            raise tls_error(f"{host}:{port}", exc, settings.ca_key) from None
        except OSError as exc:
            connection.close()
            connection = None
            last_error = exc
            if watch.tripped:
                break
    if connection is None:
        raise _tripped_error(watch, "connecting") or NetworkError(
            f"cannot connect to {host}:{port}: {_describe(last_error)}"
        )
    send_headers = dict(headers)
    length = payload.length()
    if length is not None and not any(k.lower() == "content-length" for k in send_headers):
        send_headers["Content-Length"] = str(length)
    try:
        connection.request(
            method,
            target,
            body=payload.payload(),
            headers=send_headers,
            encode_chunked=length is None and payload.body is not None,
        )
        watch.enter("wait")
        response = connection.getresponse()
    except ssl.SSLError as exc:
        connection.close()
        if isinstance(exc, ssl.SSLCertVerificationError):
            raise tls_error(parts.netloc, exc, settings.ca_key) from None
        raise _tripped_error(watch, "sending") or NetworkError(_describe(exc)) from None
    except (OSError, http.client.HTTPException) as exc:
        connection.close()
        raise _tripped_error(watch, "sending the request") or NetworkError(
            f"request failed: {_describe(exc)}"
        ) from None
    return connection, response
