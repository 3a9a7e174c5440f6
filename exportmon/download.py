"""Downloading an export link safely: streamed, resumable, size-checked, SSRF-guarded.

:func:`download` fetches one ``http``/``https`` link into a directory. The body is
streamed in large blocks into ``<name>.part`` (constant memory whatever the size),
hashed on the way, fsynced and only then renamed to ``<name>``. A broken connection
is resumed with an HTTP ``Range`` request; network errors, 5xx, 408 and 429 answers
are retried a bounded number of times with exponential backoff; redirects are
followed up to a limit.

Every connection goes through the same gate: the host is resolved once, every
address it resolves to must be public (not loopback, private, link-local,
multicast, reserved or a cloud metadata address) unless the host is listed in
``download.allow_hosts``, and the connection is then made to exactly the address
that was checked, so a DNS answer cannot change between the check and the
connection. The gate is applied again on every redirect hop.

A pre-signed link whose expiry time has passed is refused before any request with
:class:`~exportmon.errors.LinkExpired` ("ask the sender to re-run the export"),
and so is a 403 answer to a link that looks expired, instead of a bare 403.

The stdlib :mod:`http.client` is used on purpose: it lets the connection be pinned to
a checked address while TLS still verifies the host name, and ``readinto`` with a
1 MiB buffer has no per-chunk allocation.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import email.message
import errno
import hashlib
import http.client
import ipaddress
import json
import os
import random
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urljoin, urlsplit

from exportmon import __version__
from exportmon.atomic import fsync_dir
from exportmon.errors import DownloadError, LinkExpired, LinkRefused, TLSError, UnsafePathError
from exportmon.files.names import UnsafeName, name_from_link, safe_file_name
from exportmon.log import get_logger
from exportmon.progress import ProgressFactory
from exportmon.redact import redact
from exportmon.safe_open import open_nofollow
from exportmon.signals import checkpoint
from exportmon.units import format_duration, format_size

if TYPE_CHECKING:
    from exportmon.config.schema import DownloadConfig

log = get_logger(__name__)

#: Bytes read from the network per call, and written per call.
BLOCK_SIZE = 1024 * 1024
#: Longest wait between two attempts, and the longest Retry-After honoured.
MAX_BACKOFF = 60.0
#: A 403 for a link that expires within this many seconds is taken as "expired"
#: (the sender's clock and ours may differ a little).
CLOCK_SKEW = 300.0
#: Answers worth another attempt: the server or the network may recover.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
EXPIRED_HINT = "ask the sender to re-run the export"

#: Cloud metadata services; refused even though some are in ranges one might allow.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)


@dataclass(frozen=True)
class DownloadSettings:
    """The ``[download]`` options as :func:`download` uses them."""

    ca_file: str | None = None
    timeout: float = 60.0
    retries: int = 3
    max_bytes: int | None = None
    allow_hosts: Sequence[str] = ()
    max_redirects: int = 5
    #: First wait between attempts in seconds; doubled on each further attempt.
    backoff: float = 1.0

    @classmethod
    def from_config(cls, config: DownloadConfig, **overrides: object) -> DownloadSettings:
        values: dict[str, object] = {
            "ca_file": config.ca_file,
            "timeout": config.timeout if config.timeout is not None else 60.0,
            "retries": max(0, config.retries),
            "max_bytes": config.max_bytes,
            "allow_hosts": tuple(config.allow_hosts),
            "max_redirects": max(0, config.max_redirects),
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Downloaded:
    """A completed download."""

    path: Path
    bytes: int
    sha256: str
    #: The URL the body finally came from (after redirects), secrets masked.
    final_url: str
    attempts: int
    resumed: bool


# --- link checks (pure) ------------------------------------------------------------


def display_url(url: str, limit: int = 120) -> str:
    """``url`` fit for a message: signatures and passwords masked, shortened."""
    shown = redact(url)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def link_expiry(url: str) -> datetime | None:
    """When a pre-signed link stops working, if the link says so.

    Understands AWS signature v2 and CloudFront (``Expires=<unix time>``), AWS
    signature v4 (``X-Amz-Date`` + ``X-Amz-Expires``), Google Cloud Storage v4
    (``X-Goog-Date`` + ``X-Goog-Expires``) and Azure SAS (``se=<ISO time>``).
    """
    query = {k.lower(): v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True)}
    with contextlib.suppress(ValueError, OverflowError, OSError):
        if "expires" in query:
            return datetime.fromtimestamp(int(query["expires"]), timezone.utc)
        for prefix in ("x-amz-", "x-goog-"):
            if f"{prefix}date" in query and f"{prefix}expires" in query:
                start = datetime.strptime(query[f"{prefix}date"], "%Y%m%dT%H%M%SZ")
                seconds = int(query[f"{prefix}expires"])
                return datetime.fromtimestamp(
                    start.replace(tzinfo=timezone.utc).timestamp() + seconds, timezone.utc
                )
        if "se" in query and "sig" in query:
            text = query["se"].replace("Z", "+00:00")
            moment = datetime.fromisoformat(text)
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


def check_not_expired(url: str, *, now: datetime | None = None) -> None:
    """Raise :class:`LinkExpired` when ``url`` is a pre-signed link past its expiry."""
    expiry = link_expiry(url)
    now = now or datetime.now(timezone.utc)
    if expiry is not None and expiry <= now:
        raise LinkExpired(
            f"download link expired on {expiry:%Y-%m-%d %H:%M} UTC "
            f"({format_duration((now - expiry).total_seconds())} ago)",
            hint=EXPIRED_HINT,
        )


def check_scheme(url: str) -> tuple[str, str, int]:
    """``(scheme, host, port)`` of an http(s) link; :class:`LinkRefused` for anything else."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise LinkRefused(f"not a valid link: {display_url(url)}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise LinkRefused(
            f"refused a {scheme or 'scheme-less'} link: only http and https are downloaded",
            hint=f"link was {display_url(url)}",
        )
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise LinkRefused(f"link has no host: {display_url(url)}")
    return scheme, host, port or (443 if scheme == "https" else 80)


def _host_allowed(host: str, allow_hosts: Sequence[str]) -> bool:
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


def resolve_checked(host: str, port: int, allow_hosts: Sequence[str]) -> list[str]:
    """The addresses of ``host`` that may be connected to, or :class:`LinkRefused`.

    Every address ``host`` resolves to must be public unless the host (or a
    network in ``allow_hosts`` containing the address) is allowed: one private
    address among public ones is refused too, since DNS answers can be chosen by
    whoever controls the name.
    """
    allowed = _host_allowed(host, allow_hosts)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise DownloadError(f"cannot resolve {host}: {exc.strerror}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        problem = address_problem(address)
        if problem and not (allowed or _host_allowed(address, allow_hosts)):
            shown = host if host == address else f"{host} ({address})"
            raise LinkRefused(
                f"refused to download from {shown}: {problem}",
                hint=f'if this is your own server, add "{host}" to download.allow_hosts',
            )
    if not addresses:
        raise DownloadError(f"cannot resolve {host}: no addresses")
    return addresses


# --- HTTP plumbing -----------------------------------------------------------------


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to a host name, made to one already-checked address."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.pinned_address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.pinned_address, self.port), self.timeout)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """As :class:`_PinnedHTTPConnection`, with TLS verifying the host name (not the address)."""

    default_port = 443

    def __init__(
        self, host: str, port: int, address: str, timeout: float, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, address, timeout)
        self.tls_context = context

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls_context.wrap_socket(self.sock, server_hostname=self.host)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A verifying client context trusting the system CAs plus ``ca_file``."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def tls_error(where: str, exc: ssl.SSLError, ca_key: str) -> TLSError:
    """A one-line :class:`TLSError` for a failed handshake with ``where``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == 10:
            return TLSError(
                f"{where}: the server's certificate has expired",
                hint=f"the server must renew it; {ca_key} cannot make an expired one trusted",
            )
        if code in (62, 64):
            return TLSError(
                f"{where}: the server's certificate is for another host name",
                hint="connect by the name the certificate is for, or set "
                f"{ca_key} to the CA of a certificate issued for this name",
            )
        reason = getattr(exc, "verify_message", None) or "not trusted"
        return TLSError(
            f"{where}: certificate not trusted ({reason})",
            hint=f"set {ca_key} to the CA file of a private certificate authority",
        )
    if "WRONG_VERSION_NUMBER" in str(exc.reason or exc) or "wrong version number" in str(exc):
        return TLSError(
            f"{where} answered in plain text, not TLS: this port does not speak TLS",
            hint=PLAIN_PORT_HINTS.get(ca_key.partition(".")[0], PLAIN_PORT_HINTS[""]),
        )
    return TLSError(f"{where}: TLS handshake failed: {exc.reason or exc}")


#: What to set when a TLS connection meets a port that speaks plain text, by config table.
PLAIN_PORT_HINTS = {
    "source": 'set source.security = "starttls" for this port, or give the TLS port '
    "(IMAP 993, POP3 995) in source.port",
    "download": "the link names a plain-HTTP port with https://; the sender must fix the link",
    "alerts": "use submission:// (STARTTLS, port 587) or smtps:// (TLS, port 465) in "
    "alerts.smtp_url",
    "": "use the server's TLS port, or its plain-text mode with STARTTLS",
}


class _Retry(Exception):
    """A failure another attempt may overcome (network, 5xx, short body)."""

    def __init__(self, message: str, *, wait: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.wait = wait


@dataclass
class _Target:
    """Where the body is being written, and what is known about it so far.

    Next to ``.<name>.part`` a small ``.<name>.part.json`` keeps the server's
    validator (ETag or Last-Modified) and the total size, so that a later process
    can resume the part file, and can tell when the file on the server changed.
    Both start with a dot, which no file name made safe can (:func:`safe_file_name`
    drops leading dots), so a file named by a server is never taken for them; both
    are opened without following links.
    """

    part: Path
    meta: Path
    hasher: Any = field(default_factory=hashlib.sha256)
    offset: int = 0
    validator: str | None = None
    total: int | None = None
    resumed: bool = False

    def restart(self) -> None:
        os.close(open_nofollow(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        self.hasher = hashlib.sha256()
        self.offset = 0
        self.validator = None
        self.total = None
        with contextlib.suppress(OSError):
            self.meta.unlink()

    def remember(self, validator: str | None, total: int | None) -> None:
        """Keep the response's validator and size next to the part file, for a later resume."""
        self.validator, self.total = validator, total
        if validator or total is not None:
            fd = open_nofollow(self.meta, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps({"validator": validator, "total": total}))

    def discard(self) -> None:
        for path in (self.part, self.meta):
            with contextlib.suppress(OSError):
                path.unlink()


def _open_target(part: Path) -> _Target:
    """The part file to write, picking up a part left by an earlier process if it can be."""
    target = _Target(part=part, meta=part.with_name(part.name + ".json"))
    try:
        with os.fdopen(open_nofollow(target.meta, os.O_RDONLY)) as handle:
            saved = json.loads(handle.read(4096))
    except (OSError, ValueError, UnsafePathError):
        saved = None
    if not isinstance(saved, dict):
        saved = {}
    validator = saved.get("validator") if isinstance(saved.get("validator"), str) else None
    total = saved.get("total") if isinstance(saved.get("total"), int) else None
    size = part.lstat().st_size if part.is_file() and not part.is_symlink() else 0
    if (validator or total is not None) and size > 0 and (total is None or size <= total):
        # Resuming needs the hash of what is already there.
        with open(part, "rb") as handle:
            while block := handle.read(BLOCK_SIZE):
                target.hasher.update(block)
        target.offset = size
        target.validator = validator
        target.total = total
        log.info("resuming %s at %s", part.name, format_size(size))
    else:
        target.restart()
    return target


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(start, total)`` from ``Content-Range: bytes a-b/total`` (or ``*/total``)."""
    match = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value or "", re.IGNORECASE)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def expected_sha256(response: http.client.HTTPResponse, *, partial: bool) -> bytes | None:
    """The SHA-256 of the whole file, when the server states it.

    ``Repr-Digest`` (RFC 9530), the older ``Digest`` (RFC 3230) and S3's
    ``x-amz-checksum-sha256`` describe the whole file even in a range answer;
    ``Content-Digest`` only the body of this answer, so it counts only for a full one.
    """
    candidates = [response.getheader("Repr-Digest"), response.getheader("Digest")]
    if not partial:
        candidates.append(response.getheader("Content-Digest"))
    for header in candidates:
        for item in (header or "").split(","):
            name, _, value = item.strip().partition("=")
            if name.strip().lower() == "sha-256" and value:
                with contextlib.suppress(binascii.Error, ValueError):
                    digest = base64.b64decode(value.strip().strip(":"), validate=True)
                    if len(digest) == 32:
                        return digest
    amz = response.getheader("x-amz-checksum-sha256")
    if amz and response.getheader("x-amz-checksum-type", "FULL_OBJECT").upper() == "FULL_OBJECT":
        with contextlib.suppress(binascii.Error, ValueError):
            digest = base64.b64decode(amz.strip(), validate=True)
            if len(digest) == 32:
                return digest
    return None


def disposition_name(value: str | None) -> str | None:
    """The file name in a ``Content-Disposition`` header (RFC 6266 / 2231), made safe."""
    if not value:
        return None
    holder = email.message.Message()
    holder["Content-Disposition"] = value
    try:
        name = holder.get_filename()
    except Exception:  # a hostile header must not break the download
        return None
    if not name:
        return None
    try:
        return safe_file_name(Path(name.replace("\\", "/")).name)
    except UnsafeName:
        return None


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


class _BackgroundWriter:
    """Hashes and writes received blocks in a thread while the next block is received.

    Decrypting TLS, SHA-256 and file writes all release the GIL, so on two cores the
    hash no longer adds to the download time. Every :data:`SYNC_EVERY` bytes the
    kernel is asked (in a third thread) to write the file out, so that the fsync at the
    end has little left to do. Leaving the ``with`` block waits for every write, so the
    hash and the file always hold exactly the bytes handed over (a resumed download
    relies on it), and raises the first write error as a :class:`DownloadError`.
    """

    BUFFERS = 3
    SYNC_EVERY = 32 * 1024 * 1024

    def __init__(self, fd: int, hasher: Any, path: Path) -> None:
        self.fd = fd
        self.hasher = hasher
        self.path = path
        self.buffers = [memoryview(bytearray(BLOCK_SIZE)) for _ in range(self.BUFFERS)]
        self.pending: collections.deque[Future[None]] = collections.deque()
        self.turn = 0
        self.unsynced = 0
        self.syncing: Future[None] | None = None
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="download-write")
        self.syncer = ThreadPoolExecutor(1, thread_name_prefix="download-sync")

    def __enter__(self) -> _BackgroundWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            while self.pending:
                self._wait(self.pending.popleft())
        finally:
            self.writer.shutdown(wait=True)
            self.syncer.shutdown(wait=True)

    def free_buffer(self) -> memoryview:
        """A buffer no write is using any more."""
        if len(self.pending) == self.BUFFERS:
            self._wait(self.pending.popleft())
        self.turn = (self.turn + 1) % self.BUFFERS
        return self.buffers[self.turn]

    def write(self, chunk: memoryview) -> None:
        """Hash and write ``chunk`` (one of :meth:`free_buffer`'s) after those before it."""
        self.pending.append(self.writer.submit(self._write, chunk))

    def _write(self, chunk: memoryview) -> None:
        self.hasher.update(chunk)
        _write_all(self.fd, chunk)
        self.unsynced += len(chunk)
        if self.unsynced >= self.SYNC_EVERY and (self.syncing is None or self.syncing.done()):
            self.unsynced = 0
            self.syncing = self.syncer.submit(_sync_quietly, self.fd)

    def _wait(self, future: Future[None]) -> None:
        try:
            future.result()
        except OSError as exc:
            raise _disk_error(self.path, exc) from None


def _sync_quietly(fd: int) -> None:
    # Only an early start of the write-out: the final fsync reports real errors. On Linux
    # POSIX_FADV_DONTNEED starts writing the dirty pages out without waiting for them;
    # measured on a 1 GB download it takes half the CPU time of an fdatasync (or a
    # sync_file_range) every 32 MiB, and the download 1.8-2.2 s instead of 3.0-3.3 s.
    with contextlib.suppress(OSError):
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        else:
            getattr(os, "fdatasync", os.fsync)(fd)


# --- the download --------------------------------------------------------------------


class _Attempt:
    """One request (following redirects) and the streaming of its body."""

    def __init__(self, settings: DownloadSettings, context: ssl.SSLContext | None) -> None:
        self.settings = settings
        self.context = context

    def _context(self) -> ssl.SSLContext:
        if self.context is None:
            self.context = tls_context(self.settings.ca_file)
        return self.context

    def connect(self, url: str) -> tuple[http.client.HTTPConnection, str]:
        """A connection for ``url`` to a checked address, and the request target."""
        scheme, host, port = check_scheme(url)
        addresses = resolve_checked(host, port, self.settings.allow_hosts)
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        last_error: OSError | None = None
        for address in addresses:
            connection: http.client.HTTPConnection
            if scheme == "https":
                connection = _PinnedHTTPSConnection(
                    host, port, address, self.settings.timeout, self._context()
                )
            else:
                connection = _PinnedHTTPConnection(host, port, address, self.settings.timeout)
            try:
                connection.connect()
                return connection, target
            except ssl.SSLError as exc:
                connection.close()
                raise tls_error(f"{host}:{port}", exc, "download.ca_file") from None
            except OSError as exc:
                connection.close()
                last_error = exc
        raise _Retry(f"cannot connect to {host}:{port}: {_reason(last_error)}")

    def request(
        self, url: str, headers: dict[str, str]
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, str]:
        """GET ``url``, following redirects; the connection, the response and its URL."""
        hops = 0
        current = url
        while True:
            check_not_expired(current)
            connection, target = self.connect(current)
            try:
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
            except ssl.SSLError as exc:
                connection.close()
                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise tls_error(urlsplit(current).netloc, exc, "download.ca_file") from None
                raise _Retry(f"TLS error: {exc.reason or exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                raise _Retry(f"request failed: {_reason(exc)}") from None
            if response.status not in REDIRECT_STATUSES:
                return connection, response, current
            location = response.getheader("Location")
            response.close()
            connection.close()
            hops += 1
            if not location:
                raise DownloadError(
                    f"redirect ({response.status}) without a Location", retryable=False
                )
            if hops > self.settings.max_redirects:
                raise DownloadError(
                    f"more than {self.settings.max_redirects} redirects",
                    hint="raise download.max_redirects if the server really needs more",
                    retryable=False,
                )
            following = urljoin(current, location.strip())
            if urlsplit(current).scheme == "https" and urlsplit(following).scheme == "http":
                raise LinkRefused(
                    f"refused a redirect from https to plain http ({display_url(following)})"
                )
            log.debug("redirected to %s", display_url(following))
            current = following


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "no address answered"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return redact(str(exc) or type(exc).__name__)


def _status_error(status: int, reason: str, url: str, body: bytes) -> DownloadError:
    shown = display_url(url)
    if status in (401, 403):
        expiry = link_expiry(url)
        now = datetime.now(timezone.utc)
        if expiry is not None and (
            b"expired" in body.lower() or (expiry - now).total_seconds() < CLOCK_SKEW
        ):
            return LinkExpired(
                f"the server refused the link ({status}): it has expired "
                f"(valid until {expiry:%Y-%m-%d %H:%M} UTC)",
                hint=EXPIRED_HINT,
            )
        return DownloadError(
            f"the server refused access ({status} {reason}) to {shown}",
            hint="the link may be wrong or revoked; " + EXPIRED_HINT,
            retryable=False,
        )
    if status in (404, 410):
        return DownloadError(
            f"the export file is not there ({status} {reason}): {shown}",
            hint="it may have been removed; " + EXPIRED_HINT,
            retryable=False,
        )
    return DownloadError(f"unexpected answer {status} {reason} from {shown}", retryable=False)


def _retry_after(response: http.client.HTTPResponse) -> float | None:
    value = (response.getheader("Retry-After") or "").strip()
    return min(MAX_BACKOFF, float(value)) if value.isdigit() else None


def _disk_error(path: Path, exc: OSError) -> DownloadError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(
            f"disk full while writing {path}", hint=f"free some space in {path.parent}"
        )
    return DownloadError(f"cannot write {path}: {exc.strerror or exc}")


class _Download:
    """The state of one :func:`download` call across its attempts."""

    def __init__(
        self,
        url: str,
        directory: Path,
        file_name: str | None,
        settings: DownloadSettings,
        progress: ProgressFactory | None,
        description: str | None,
    ) -> None:
        self.url = url
        self.directory = directory
        self.name = file_name
        self.settings = settings
        self.progress = progress
        self.description = description or file_name or display_url(url, 60)
        self.http = _Attempt(settings, None)
        self.target = _open_target(directory / f".{file_name or 'download'}.part")
        self.total: int | None = None
        self.expected: bytes | None = None
        self.final_url = url
        self.advance: Callable[[int], None] | None = None
        self.done: Callable[[], None] = lambda: None

    def _show_progress(self) -> None:
        if self.progress is None or self.advance is not None:
            return
        advance, self.done = self.progress(self.description, self.total)
        self.advance = advance or (lambda n: None)
        if self.target.offset:
            self.advance(self.target.offset)

    def _request_headers(self) -> dict[str, str]:
        headers = {
            "User-Agent": f"exportmon/{__version__}",
            "Accept": "*/*",
            # A compressed transfer would make Content-Length and the checksum lie.
            "Accept-Encoding": "identity",
        }
        if self.target.offset > 0:
            headers["Range"] = f"bytes={self.target.offset}-"
            if self.target.validator:
                headers["If-Range"] = self.target.validator
        return headers

    def attempt(self) -> None:
        """One request and as much of the body as arrives; :class:`_Retry` when short."""
        connection, response, url = self.http.request(self.url, self._request_headers())
        self.final_url = url
        try:
            self._receive(response, url)
        finally:
            response.close()
            connection.close()

    def _receive(self, response: http.client.HTTPResponse, url: str) -> None:
        target = self.target
        status = response.status
        if status == 416 and target.offset > 0:
            _, total = _content_range(response.getheader("Content-Range"))
            if total == target.offset and target.total in (None, total):
                self.total = total
                return
            announced = target.total
            target.restart()
            if total is not None and announced is not None and total != announced:
                raise _Retry(
                    f"the server sent {format_size(total)} where it announced "
                    f"{format_size(announced)}; starting again",
                    wait=0,
                )
            raise _Retry("the server cannot resume this download; starting again", wait=0)
        if status in RETRY_STATUSES:
            raise _Retry(
                f"the server answered {status} {response.reason}", wait=_retry_after(response)
            )
        if status not in (200, 206):
            raise _status_error(status, response.reason, url, response.read(4096))
        partial = status == 206
        if partial:
            start, total = _content_range(response.getheader("Content-Range"))
            if start != target.offset or (target.total is not None and total != target.total):
                target.restart()
                raise _Retry("the file on the server is not the one begun; starting again", wait=0)
            target.resumed = True
        else:
            if target.offset:
                log.info("%s: the server does not resume downloads; starting again", self.name)
                target.restart()
            total = _content_length(response)
        self.total = total
        max_bytes = self.settings.max_bytes
        if max_bytes is not None and total is not None and total > max_bytes:
            raise DownloadError(
                f"the export is {format_size(total)}, more than download.max_bytes "
                f"({format_size(max_bytes)})",
                hint="raise download.max_bytes to accept it",
                retryable=False,
            )
        if self.name is None:
            self.name = disposition_name(response.getheader("Content-Disposition")) or (
                name_from_link(url)
            )
        etag = response.getheader("ETag")
        validator = etag if etag and not etag.startswith("W/") else None
        validator = validator or response.getheader("Last-Modified")
        if not partial:
            target.remember(validator, total)
        self.expected = expected_sha256(response, partial=partial) or self.expected
        self._show_progress()
        self._stream(response, _content_length(response))

    def _stream(self, response: http.client.HTTPResponse, length: int | None) -> None:
        target = self.target
        max_bytes = self.settings.max_bytes
        received = 0
        try:
            fd = open_nofollow(target.part, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise _disk_error(target.part, exc) from None
        try:
            with _BackgroundWriter(fd, target.hasher, target.part) as writer:
                while True:
                    view = writer.free_buffer()
                    try:
                        count = response.readinto(view)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retry(
                            f"connection broken after {format_size(target.offset)}: {_reason(exc)}"
                        ) from None
                    if not count:
                        break
                    checkpoint()
                    if max_bytes is not None and target.offset + count > max_bytes:
                        raise DownloadError(
                            "the export is larger than download.max_bytes "
                            f"({format_size(max_bytes)})",
                            hint="raise download.max_bytes to accept it",
                            retryable=False,
                        )
                    writer.write(view[:count])
                    target.offset += count
                    received += count
                    if self.advance is not None:
                        self.advance(count)
            try:
                os.fsync(fd)
            except OSError as exc:
                raise _disk_error(target.part, exc) from None
        finally:
            os.close(fd)
        if length is not None and received < length:
            raise _Retry(
                f"the server sent {format_size(target.offset)} of the "
                f"{format_size(self.total or length)} it announced"
            )
        if self.total is not None and target.offset != self.total:
            target.restart()
            raise _Retry(
                f"received {target.offset} bytes where the server announced {self.total}; "
                "starting again"
            )

    def finish(self) -> Downloaded:
        """Check the checksum, then fsync-rename the part file to its final name."""
        target = self.target
        digest = target.hasher.digest()
        if self.expected is not None and digest != self.expected:
            target.discard()
            raise DownloadError(
                "the downloaded file does not match the checksum the server gave",
                hint="the next fetch downloads it again",
            )
        final = self.directory / (self.name or "download")
        try:
            os.replace(target.part, final)
            fsync_dir(self.directory)
        except OSError as exc:
            raise _disk_error(final, exc) from None
        with contextlib.suppress(OSError):
            target.meta.unlink()
        return Downloaded(
            path=final,
            bytes=target.offset,
            sha256=digest.hex(),
            final_url=display_url(self.final_url, 2000),
            attempts=0,
            resumed=target.resumed,
        )


def download(
    url: str,
    directory: Path,
    *,
    file_name: str | None = None,
    settings: DownloadSettings | None = None,
    progress: ProgressFactory | None = None,
    description: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Downloaded:
    """Download ``url`` into ``directory/<file_name>`` and return what was written.

    ``file_name`` (already safe) is the name to use; without it the name comes from
    ``Content-Disposition``, the link's path, or is ``download``. An existing file of
    that name in ``directory`` is replaced (``directory`` belongs to one export).

    Raises :class:`LinkRefused`, :class:`LinkExpired`, :class:`TLSError` or
    :class:`DownloadError`, whose ``retryable`` says whether a later try can help.
    The part file is kept for a later resume only after a retryable failure.
    """
    settings = settings or DownloadSettings()
    check_scheme(url)
    check_not_expired(url)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        state = _Download(url, directory, file_name, settings, progress, description)
    except OSError as exc:
        raise _disk_error(directory / (file_name or "download"), exc) from None
    attempts = 0
    try:
        while True:
            attempts += 1
            try:
                state.attempt()
                break
            except _Retry as problem:
                if attempts > settings.retries:
                    raise DownloadError(
                        f"{problem.message} (gave up after {attempts} attempts)",
                        hint="the next fetch tries again after retry_after",
                    ) from None
                wait = problem.wait
                if wait is None:
                    wait = settings.backoff * (2 ** (attempts - 1)) * (1 + random.random() / 10)
                wait = min(MAX_BACKOFF, wait)
                log.warning(
                    "%s: %s; trying again in %.1fs (attempt %d of %d)",
                    state.name or display_url(url, 60),
                    problem.message,
                    wait,
                    attempts + 1,
                    settings.retries + 1,
                )
                sleep(wait)
        result = state.finish()
    except DownloadError as exc:
        if not exc.retryable:
            state.target.discard()
        raise
    except TLSError:
        state.target.discard()
        raise
    finally:
        state.done()
    return Downloaded(
        path=result.path,
        bytes=result.bytes,
        sha256=result.sha256,
        final_url=result.final_url,
        attempts=attempts,
        resumed=result.resumed,
    )
