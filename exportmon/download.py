"""Downloading an export link: streamed, resumable, size-checked, time-bounded, checked.

:func:`download` fetches one ``http``/``https`` link into a directory. The body is
streamed in large blocks into ``<name>.part`` (constant memory whatever the size),
hashed on the way, fsynced and only then renamed to ``<name>``. A broken connection
is resumed with an HTTP ``Range`` request; network errors, too slow transfers, 5xx,
408 and 429 answers are retried by the shared :class:`~exportmon.net.retry.RetryPolicy`
(``Retry-After`` honoured), and a stop request ends any wait at once, keeping the
part file for the next run.

Connections go through :func:`exportmon.net.http.request`: the address guard
(no private addresses unless in ``download.allow_hosts``, pinned to the checked
address, applied again on every redirect), ``download.timeout`` for every read,
``download.min_rate`` for the transfer rate and ``download.deadline`` for the whole
download, all attempts together.

What arrives must be the export. A pre-signed link whose expiry time has passed is
refused before any request with :class:`~exportmon.errors.LinkExpired`, and so is a
403 answer to a link that looks expired. An answer in a content coding that was not
asked for (``Content-Encoding: gzip``) is refused, and so is a body whose type or
first bytes say it is something else than the file expected: a web page (a sign-in
page or an expired link's landing page), a JSON or XML error document, or anything
but a zip archive where a ``.zip`` is expected.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import email.message
import errno
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from exportmon.atomic import fsync_dir
from exportmon.errors import DownloadError, LinkExpired, TLSError, UnsafePathError
from exportmon.files.names import UnsafeName, name_from_link, safe_file_name
from exportmon.log import get_logger
from exportmon.net import http, retry
from exportmon.net.http import display_url
from exportmon.net.tls import client_context
from exportmon.progress import ProgressFactory
from exportmon.safe_open import open_nofollow
from exportmon.signals import checkpoint
from exportmon.units import format_duration, format_size

if TYPE_CHECKING:
    import ssl

    from exportmon.config.schema import DownloadConfig

__all__ = ["DownloadSettings", "Downloaded", "display_url", "download", "link_expiry"]

log = get_logger(__name__)

#: Bytes read from the network per call, and written per call.
BLOCK_SIZE = 1024 * 1024
#: A 403 for a link that expires within this many seconds is taken as "expired"
#: (the sender's clock and ours may differ a little).
CLOCK_SKEW = 300.0
#: Answers worth another attempt: the server or the network may recover.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
EXPIRED_HINT = "ask the sender to re-run the export"


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
    #: Longest a download may take, all attempts and waits together (seconds).
    deadline: float | None = None
    #: Slowest transfer accepted, in bytes per second over each ``timeout`` window.
    min_rate: int | None = None

    @classmethod
    def from_config(cls, config: DownloadConfig, **overrides: object) -> DownloadSettings:
        values: dict[str, object] = {
            "ca_file": config.ca_file,
            "timeout": config.timeout if config.timeout is not None else 60.0,
            "retries": max(0, config.retries),
            "max_bytes": config.max_bytes,
            "allow_hosts": tuple(config.allow_hosts),
            "max_redirects": max(0, config.max_redirects),
            "deadline": config.deadline,
            "min_rate": config.min_rate or None,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def http(self) -> http.HttpSettings:
        """The connection settings for :func:`exportmon.net.http.request`."""
        return http.HttpSettings(
            ca_file=self.ca_file,
            ca_key="download.ca_file",
            allow_hosts=tuple(self.allow_hosts),
            allow_key="download.allow_hosts",
            action="download from",
            timeout=self.timeout,
            min_rate=self.min_rate,
            max_redirects=self.max_redirects,
        )

    def policy(self) -> retry.RetryPolicy:
        return retry.RetryPolicy(retries=self.retries, first=self.backoff)


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


def expected_sha256(response: http.Response, *, partial: bool) -> bytes | None:
    """The SHA-256 of the whole file, when the server states it.

    ``Repr-Digest`` (RFC 9530), the older ``Digest`` (RFC 3230) and S3's
    ``x-amz-checksum-sha256`` describe the whole file even in a range answer;
    ``Content-Digest`` only the body of this answer, so it counts only for a full one.
    """
    candidates = [response.header("Repr-Digest"), response.header("Digest")]
    if not partial:
        candidates.append(response.header("Content-Digest"))
    for header in candidates:
        for item in (header or "").split(","):
            name, _, value = item.strip().partition("=")
            if name.strip().lower() == "sha-256" and value:
                with contextlib.suppress(binascii.Error, ValueError):
                    digest = base64.b64decode(value.strip().strip(":"), validate=True)
                    if len(digest) == 32:
                        return digest
    amz = response.header("x-amz-checksum-sha256")
    if amz and (response.header("x-amz-checksum-type") or "FULL_OBJECT").upper() == "FULL_OBJECT":
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
        self.http = settings.http()
        self.progress = progress
        self.description = description or file_name or display_url(url, 60)
        self.context: ssl.SSLContext | None = None
        self.target = _open_target(directory / f".{file_name or 'download'}.part")
        self.total: int | None = None
        self.expected: bytes | None = None
        self.final_url = url
        self.deadline = (
            time.monotonic() + settings.deadline if settings.deadline is not None else None
        )
        self.attempts = 0
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
        # Accept-Encoding: identity (the default of http.request): a compressed
        # transfer would make Content-Length and the checksum lie.
        headers = {}
        if self.target.offset > 0:
            headers["Range"] = f"bytes={self.target.offset}-"
            if self.target.validator:
                headers["If-Range"] = self.target.validator
        return headers

    def attempt(self) -> None:
        """One request and as much of the body as arrives; :class:`TryAgain` when short."""
        self.attempts += 1
        if self.context is None and urlsplit(self.url).scheme.lower() == "https":
            self.context = client_context(self.settings.ca_file, ca_key="download.ca_file")
        try:
            with http.request(
                "GET",
                self.url,
                headers=self._request_headers(),
                settings=self.http,
                deadline=self.deadline,
                check_url=check_not_expired,
                context=self.context,
            ) as response:
                self.final_url = response.url
                self._receive(response)
        except http.NetworkError as exc:
            raise retry.TryAgain(exc.message) from None
        except http.DeadlineExceeded:
            raise self._late() from None

    def _late(self) -> DownloadError:
        return DownloadError(
            "the download did not finish within download.deadline "
            f"({format_duration(self.settings.deadline or 0)})",
            hint="raise download.deadline for very large exports or slow servers; "
            "the next fetch resumes it",
        )

    def _receive(self, response: http.Response) -> None:
        target = self.target
        status = response.status
        if status == 416 and target.offset > 0:
            _, total = _content_range(response.header("Content-Range"))
            if total == target.offset and target.total in (None, total):
                self.total = total
                return
            announced = target.total
            target.restart()
            if total is not None and announced is not None and total != announced:
                raise retry.TryAgain(
                    f"the server sent {format_size(total)} where it announced "
                    f"{format_size(announced)}; starting again",
                    retry_after=0,
                )
            raise retry.TryAgain(
                "the server cannot resume this download; starting again", retry_after=0
            )
        if status in RETRY_STATUSES:
            raise retry.TryAgain(
                f"the server answered {status} {response.reason}",
                retry_after=retry.parse_retry_after(response.header("Retry-After")),
            )
        if status not in (200, 206):
            raise _status_error(status, response.reason, response.url, response.read(4096))
        check_coding(response)
        partial = status == 206
        if partial:
            start, total = _content_range(response.header("Content-Range"))
            if start != target.offset or (target.total is not None and total != target.total):
                target.restart()
                raise retry.TryAgain(
                    "the file on the server is not the one begun; starting again", retry_after=0
                )
            target.resumed = True
        else:
            if target.offset:
                log.info("%s: the server does not resume downloads; starting again", self.name)
                target.restart()
            total = response.length
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
            self.name = disposition_name(response.header("Content-Disposition")) or (
                name_from_link(response.url)
            )
        if not partial:
            check_content_type(response.header("Content-Type"), self.name)
        etag = response.header("ETag")
        validator = etag if etag and not etag.startswith("W/") else None
        validator = validator or response.header("Last-Modified")
        if not partial:
            target.remember(validator, total)
        self.expected = expected_sha256(response, partial=partial) or self.expected
        self._show_progress()
        self._stream(response, response.length, sniff=not partial)

    def _stream(self, response: http.Response, length: int | None, *, sniff: bool) -> None:
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
                    except http.NetworkError as exc:
                        raise retry.TryAgain(
                            f"{exc.message} after {format_size(target.offset)}"
                        ) from None
                    if not count:
                        break
                    checkpoint()
                    if sniff and received == 0:
                        check_first_bytes(bytes(view[: min(count, 1024)]), self.name)
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
            raise retry.TryAgain(
                f"the server sent {format_size(target.offset)} of the "
                f"{format_size(self.total or length)} it announced"
            )
        if self.total is not None and target.offset != self.total:
            target.restart()
            raise retry.TryAgain(
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
            attempts=self.attempts,
            resumed=target.resumed,
        )

    def give_up(self, failure: retry.TryAgain, attempts: int) -> DownloadError:
        if self.deadline is not None and time.monotonic() >= self.deadline - 0.5:
            return self._late()
        return DownloadError(
            f"{failure.message} (gave up after {attempts} attempts)",
            hint="the next fetch tries again after retry_after",
        )

    def log_retry(self, failure: retry.TryAgain, attempts: int, wait: float) -> None:
        log.warning(
            "%s: %s; trying again in %.1fs (attempt %d of %d)",
            self.name or display_url(self.url, 60),
            failure.message,
            wait,
            attempts + 1,
            self.settings.retries + 1,
        )


def download(
    url: str,
    directory: Path,
    *,
    file_name: str | None = None,
    settings: DownloadSettings | None = None,
    progress: ProgressFactory | None = None,
    description: str | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Downloaded:
    """Download ``url`` into ``directory/<file_name>`` and return what was written.

    ``file_name`` (already safe) is the name to use; without it the name comes from
    ``Content-Disposition``, the link's path, or is ``download``. An existing file of
    that name in ``directory`` is replaced (``directory`` belongs to one export).

    Raises :class:`LinkRefused`, :class:`LinkExpired`, :class:`TLSError`,
    :class:`DownloadError` (whose ``retryable`` says whether a later try can help),
    or :class:`~exportmon.net.retry.Interrupted` when a stop was requested. The part
    file is kept for a later resume only after a retryable failure. ``sleep``
    replaces the interruptible wait between attempts (tests).
    """
    settings = settings or DownloadSettings()
    http.check_scheme(url)
    check_not_expired(url)
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        state = _Download(url, directory, file_name, settings, progress, description)
    except OSError as exc:
        raise _disk_error(directory / (file_name or "download"), exc) from None
    try:
        retry.call(
            state.attempt,
            settings.policy(),
            give_up=state.give_up,
            on_retry=state.log_retry,
            deadline=state.deadline,
            sleep=sleep,
        )
        return state.finish()
    except DownloadError as exc:
        if not exc.retryable:
            state.target.discard()
        raise
    except TLSError:
        state.target.discard()
        raise
    finally:
        state.done()


# --- is it the export? -----------------------------------------------------------------


#: File name endings of text exports (CSV and its cousins).
TEXT_SUFFIXES = frozenset({".csv", ".tsv", ".txt", ".psv", ".dat"})
WRONG_BODY_HINT = (
    "the link has probably expired or needs a sign-in; open it in a browser, "
    "or ask the sender to re-run the export"
)


def check_coding(response: http.Response) -> None:
    """Refuse an answer in a content coding exportmon did not ask for (gzip, br, ...).

    Downloads ask for ``identity``: decoding would make ``Content-Length``, resuming
    and the server's checksum refer to other bytes than the file, and an unasked-for
    coding is a misconfigured server or proxy, or a decompression bomb.
    """
    coding = (response.header("Content-Encoding") or "").strip().lower()
    if coding and coding != "identity":
        raise DownloadError(
            f"the server sent the export encoded as {coding!r} (Content-Encoding), "
            "which exportmon did not ask for",
            hint="the server or a proxy in between ignores Accept-Encoding: identity; "
            "have it serve the file as it is",
            retryable=False,
        )


def _expected_kind(name: str | None) -> str | None:
    suffix = Path(name or "").suffix.lower()
    if suffix == ".zip":
        return "zip"
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in (".htm", ".html", ".xhtml"):
        return "html"
    if suffix in (".json", ".xml"):
        return suffix[1:]
    return None


def check_content_type(content_type: str | None, name: str | None) -> None:
    """Refuse an answer whose ``Content-Type`` says it is not the expected file."""
    kind = _expected_kind(name)
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if kind != "html" and media in ("text/html", "application/xhtml+xml"):
        raise _wrong_body(name, "a web page (text/html)")
    if kind not in ("json", None) and (media == "application/json" or media.endswith("+json")):
        raise _wrong_body(name, f"a JSON document ({media}), probably an error message")
    if kind in ("zip", "text") and media in ("application/xml", "text/xml"):
        raise _wrong_body(name, f"an XML document ({media}), probably an error message")


def _looks_like(start: bytes) -> str | None:
    """What the first bytes of a body look like, when it is a document, not data."""
    text = start.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "a web page"
    if text.startswith(b"<?xml") or text.startswith(b"<error"):
        return "an XML document, probably an error message"
    if text.startswith((b"{", b"[{")):
        return "a JSON document, probably an error message"
    return None


def check_first_bytes(start: bytes, name: str | None) -> None:
    """Refuse a body whose first bytes say it is a document, not the expected export.

    A zip archive or a text export (``.csv``, ...) must not start like a web page, an
    XML or a JSON document. (Whether a ``.zip`` is a sound archive is for unpacking
    to say: zip files may carry data before their first entry.)
    """
    if _expected_kind(name) in ("zip", "text"):
        what = _looks_like(start)
        if what is not None:
            raise _wrong_body(name, what)


def _wrong_body(name: str | None, what: str) -> DownloadError:
    return DownloadError(
        f"the server answered with {what} instead of the export {name or 'file'}",
        hint=WRONG_BODY_HINT,
        retryable=False,
    )
