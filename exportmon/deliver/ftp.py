"""Delivering to an FTP server, or FTPS with explicit TLS (``AUTH TLS``), through ftputil.

For each file: the target folder is created one level at a time (folders that
exist are fine), the file is uploaded under its temporary name (``<name>.in_progress``
by default, or as :class:`~exportmon.deliver.signals.TempNaming` says: a prefix, or
a ``temp_dir`` on the same server), its size on the server is compared with the
local size, and only then is it renamed to ``<name>`` (replacing an older file of
that name where the server refuses to rename over it). A lost connection or a
failed size check is retried with exponential backoff, uploading the whole file
again under the same temporary name (the ``STOR`` replaces the partial one), so
nothing stale is left once it succeeds.

FTPS protects the control and the data connections (``PROT P``) and verifies the
server certificate and host name against the system's CAs or ``ca_file``. All
files of one :class:`FtpDestination` share one login: ftputil keeps a control
connection for commands and one reused child connection for the transfers.
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import posixpath
import re
import ssl
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

with warnings.catch_warnings():
    # ftputil warns that its default path encoding changes in 6.0; we always pass UTF-8.
    warnings.filterwarnings("ignore", "In ftputil 6.0.0", DeprecationWarning)
    import ftputil
    import ftputil.error
    import ftputil.session

from exportmon.atomic import COPY_BUFFER
from exportmon.crashpoints import crash_point
from exportmon.deliver import Outgoing, Placed, check_overwrite
from exportmon.deliver.reconnect import on_new_connections
from exportmon.deliver.signals import TempNaming
from exportmon.deliver.signals import describe as describe_signals
from exportmon.errors import (
    AuthError,
    DeliveryError,
    ExportmonError,
    UsageError,
)
from exportmon.log import get_logger
from exportmon.net.tls import client_context, tls_error
from exportmon.progress import ProgressFactory, start_task
from exportmon.signals import checkpoint

if TYPE_CHECKING:
    from exportmon.config.schema import DestinationConfig
    from exportmon.deliver.urls import DestinationURL

log = get_logger(__name__)

#: Plain FTP servers warned about in this process: once per run, where they are used.
_warned_plain: set[str] = set()

_URL = re.compile(r"(ftps?)://([^/:@\s]+|\[[0-9a-fA-F:]+\])(?::(\d+))?/?")


@dataclass(frozen=True)
class FtpAddress:
    """An FTP server: ``ftp://host[:port]`` or ``ftps://host[:port]`` (explicit TLS)."""

    tls: bool
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> FtpAddress:
        """The address in ``url``; :class:`UsageError` for anything else (credentials and
        folders do not belong in it)."""
        match = _URL.fullmatch(url.strip())
        if not match:
            raise UsageError(
                f"not an ftp:// or ftps:// server address: {url!r}",
                hint="e.g. ftps://ftp.example.com:21; give the folder and user separately",
            )
        port = int(match.group(3) or 21)
        if not 0 < port <= 65535:
            raise UsageError(f"not a port number: {port}")
        return cls(tls=match.group(1) == "ftps", host=match.group(2).strip("[]"), port=port)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'ftps' if self.tls else 'ftp'}://{host}:{self.port}"


def normalize_dir(directory: str) -> str:
    """``ftp_dir`` as a clean path: ``\\`` becomes ``/``, empty and ``.`` parts go,
    ``..`` is refused; a leading ``/`` (absolute) is kept; ``""`` is the login folder."""
    text = (directory or ".").strip().replace("\\", "/")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"the FTP folder must not contain '..': {directory!r}")
    joined = "/".join(parts)
    return "/" + joined if text.startswith("/") else joined


class _Transient(Exception):
    """A failure worth retrying at once on a new connection."""


#: What talking to a server can raise; anything else is a bug and propagates.
_NETWORK_ERRORS = (_Transient, ftputil.error.FTPError, ftplib.Error, OSError, EOFError)


class FtpDestination:
    """A folder on an FTP/FTPS server that files are delivered into."""

    def __init__(
        self,
        url: str,
        directory: str = ".",
        *,
        user: str | None = None,
        password: str | None = None,
        ca_file: Path | str | None = None,
        passive: bool = True,
        timeout: float | None = 60.0,
        retries: int = 3,
        overwrite: str = "replace",
        backoff: float = 1.0,
        temp: TempNaming | None = None,
        config: DestinationConfig | None = None,
    ) -> None:
        self.address = FtpAddress.parse(url)
        self.directory = normalize_dir(directory)
        self.user = user
        self._password = password
        self.ca_file = Path(ca_file) if ca_file else None
        self.passive = passive
        self.timeout = timeout
        self.retries = max(retries, 0)
        self.backoff = backoff
        self.overwrite = check_overwrite(overwrite)
        self.temp = temp or TempNaming()
        #: The ``[[deliver]]`` entry it was opened from, if any (for :meth:`describe`).
        self.config = config
        #: Whether something retries a failed delivery (``run`` does; a standalone
        #: ``push-ftp`` does not): the hint of a lost connection says so only then.
        self.retried_later = True
        #: Ledger name and log name: the server and folder, no credentials.
        self.label = f"{self.address.url}/{self.directory}"
        self.display = self.label
        self._host: Any = None
        self._made_dirs: set[str] = set()

    # --- connection --------------------------------------------------------------------

    def __enter__(self) -> FtpDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Log out (quietly: the connection may already be gone)."""
        host, self._host = self._host, None
        self._made_dirs.clear()
        if host is not None:
            try:
                host.close()
            except Exception as exc:  # closing a broken connection may fail any way
                log.debug("closing the FTP connection to %s: %s", self.display, exc)

    def _connected(self) -> Any:
        if self._host is None:
            self._warn_plain()
            factory = ftputil.session.session_factory(
                base_class=_session_base(self.address.tls, self._tls_context(), self.timeout),
                port=self.address.port,
                use_passive_mode=self.passive,
                encrypt_data_channel=True,
                encoding="utf-8",
            )
            host = ftputil.FTPHost(
                self.address.host,
                self.user or "anonymous",
                self._password or "",
                session_factory=factory,
            )
            # Sizes and existence are checked right after uploads: never from a cache.
            host.stat_cache.disable()
            self._host = host
        return self._host

    def _warn_plain(self) -> None:
        """Say once per run, when a plain ``ftp://`` server is first used, that the
        password and the files travel unencrypted (not with ``--quiet``)."""
        from exportmon.log import quiet

        if self.address.tls or self.label in _warned_plain:
            return
        _warned_plain.add(self.label)
        if quiet():
            return
        key = f"{self.config.key}url" if self.config is not None else "the URL"
        log.warning(
            "%s: %s is ftp://, not ftps://: the FTP password and the files travel unencrypted",
            self.display,
            key,
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.address.tls:
            return None
        return client_context(self.ca_file, ca_key="ftp_ca_file")

    def _with_retries(self, what: str, operation: Any) -> Any:
        """Run ``operation(connection)``, on a new connection after a failure that one
        may cure (:func:`~exportmon.deliver.reconnect.on_new_connections`)."""
        return on_new_connections(
            self, what, operation, network_errors=_NETWORK_ERRORS, describe=_describe
        )

    def _classify(self, exc: BaseException, what: str) -> ExportmonError | None:
        """A permanent error for ``exc``, or ``None`` when retrying may help."""
        for cause in _causes(exc):
            if isinstance(cause, ssl.SSLCertVerificationError):
                return tls_error(self.display, cause, "ftp_ca_file (--ca-file)")
        # Other TLS errors (an EOF without close_notify) are connection losses: retried.
        if isinstance(exc, _Transient | ftputil.error.TemporaryError | EOFError):
            return None
        if isinstance(exc, ftputil.error.PermanentError):
            text = _describe(exc)
            if self.address.tls and text[:3] in ("500", "502", "504") and "AUTH" in text.upper():
                return DeliveryError(
                    f"{self.display} does not offer TLS ({text})",
                    hint="the server speaks plain FTP only: use ftp:// where the network is "
                    "trusted, or ask for FTPS (AUTH TLS) to be enabled",
                    retryable=False,
                )
            if text.startswith("530"):
                return AuthError(
                    f"{self.display}: login refused for user {self.user or 'anonymous'}: {text}",
                    hint=self._login_hint(),
                )
            return DeliveryError(f"{what} at {self.display} refused: {text}")
        if isinstance(exc, ftputil.error.InternalError):  # e.g. a listing it cannot parse
            return DeliveryError(f"{what} at {self.display} failed: {_describe(exc)}")
        return None

    def _login_hint(self) -> str:
        """Which settings hold the login, as the user wrote them."""
        key = self.config.key if self.config is not None else "deliver.ftp_"
        if key == "--":
            return "check --user and --password-env / --password-command"
        return f"check {key}user and the password ({key}password_env or _command)"

    # --- paths -------------------------------------------------------------------------

    def remote_path(self, target: str) -> str:
        """The server path of ``target`` (relative to the login folder unless absolute)."""
        parts = [part for part in target.split("/") if part]
        if not parts or ".." in parts:
            raise DeliveryError(f"refusing target {target!r}")
        return posixpath.join(self.directory, *parts) if self.directory else "/".join(parts)

    def temporary_path(self, target: str) -> str:
        """The server path ``target`` is uploaded under before its rename."""
        temporary = self.temp.temporary(target)
        if temporary.startswith("/"):
            self.remote_path(target)  # refuses unsafe targets
            return posixpath.normpath(temporary)
        return self.remote_path(temporary)

    def location(self, target: str) -> str:
        return f"{self.label.rstrip('/')}/{target}"

    def describe(self) -> str:
        """What delivering here does, for dry runs (nothing is connected)."""
        parts = [self.temp.describe()] + (describe_signals(self.config) if self.config else [])
        if not self.address.tls:
            parts.append("plain FTP: the password and the files travel unencrypted")
        return f"would deliver to {self.display} ({'; '.join(parts)})"

    def _make_dirs(self, host: Any, folder: str) -> None:
        if not folder or folder in ("/", ".") or folder in self._made_dirs:
            return
        # ftputil tries CWD into each level and sends MKD for those that fail.
        host.makedirs(folder, exist_ok=True)
        self._made_dirs.add(folder)

    # --- the destination interface ------------------------------------------------------

    def exists(self, target: str) -> bool:
        path = self.remote_path(target)
        return bool(self._with_retries(f"checking {target}", lambda host: host.path.exists(path)))

    def holds(self, target: str, size: int, sha256: str | None) -> bool:
        """Whether ``target`` is a file of ``size`` bytes and, when ``sha256`` is given,
        of those very bytes: FTP has no standard checksum command, so the file is read
        back. Only deliveries cut short by a crash or a failure are checked, and a file of
        the same name and size (yesterday's export) must not pass for today's."""
        path = self.remote_path(target)

        def check(host: Any) -> bool:
            # A link is not a delivered file, whatever it points to.
            if host.path.islink(path):
                return False
            if not (host.path.isfile(path) and host.path.getsize(path) == size):
                return False
            if sha256 is None:
                return True
            digest = hashlib.sha256()
            with host.open(path, "rb") as remote:
                while block := remote.read(COPY_BUFFER):
                    digest.update(block)
            return digest.hexdigest() == sha256

        return bool(self._with_retries(f"checking {target}", check))

    def put(
        self, item: Outgoing, target: str, *, progress: ProgressFactory | None = None
    ) -> Placed:
        """Upload ``item`` under its temporary name, check its size, rename it to ``target``."""
        final = self.remote_path(target)
        temporary = self.temporary_path(target)
        if not item.source.is_file():
            raise DeliveryError(f"cannot deliver {item.source}: it no longer exists")

        def upload(host: Any) -> None:
            self._make_dirs(host, posixpath.dirname(final))
            self._make_dirs(host, posixpath.dirname(temporary))
            advance, done = start_task(progress, f"upload {posixpath.basename(final)}", item.bytes)

            def sent(chunk: bytes) -> None:
                checkpoint()
                if advance is not None:
                    advance(len(chunk))

            _remove_quietly(host, temporary)
            try:
                host.upload(str(item.source), temporary, callback=sent)
            finally:
                done()
            size = host.path.getsize(temporary)
            if size != item.bytes:
                raise _Transient(
                    f"{temporary} has {size} bytes on the server, {item.bytes} were sent"
                )
            crash_point("ftp.uploaded")
            self._rename(host, temporary, final)

        self._with_retries(f"uploading {target}", upload)
        return Placed(target=target, location=self.location(target), bytes=item.bytes)

    def _rename(self, host: Any, temporary: str, final: str) -> None:
        try:
            host.rename(temporary, final)
        except ftputil.error.PermanentError:
            # Some servers (IIS) refuse to rename onto an existing file.
            if self.overwrite != "replace" or not host.path.isfile(final):
                raise
            host.remove(final)
            host.rename(temporary, final)

    def discard(self, target: str) -> None:
        """Remove a stale temporary file of ``target`` if one is there (best effort)."""
        temporary = self.temporary_path(target)
        try:
            host = self._connected()
            if host.path.isfile(temporary):
                host.remove(temporary)
        except Exception as exc:  # cleanup only: the failure was already reported
            log.debug("could not remove %s at %s: %s", temporary, self.display, exc)
            self.close()


def _remove_quietly(host: Any, path: str) -> None:
    """Remove what is under the temporary name ``path`` before uploading to it: an
    earlier attempt's partial file, or a link planted there, which ``STOR`` would
    write through (``DELE`` removes the link and leaves its target alone). FTP has no
    exclusive create, so this narrows the window rather than closing it; nothing
    there (550) is the usual answer."""
    with contextlib.suppress(ftputil.error.PermanentError):
        host.remove(path)


def _session_base(tls: bool, context: ssl.SSLContext | None, timeout: float | None) -> type:
    """An ftplib class that ftputil's session factory can build on, with our TLS context
    and timeout (its own factory passes neither)."""
    base: type[ftplib.FTP] = ftplib.FTP_TLS if tls else ftplib.FTP

    class Session(base):  # type: ignore[valid-type,misc]
        def __init__(self, **kwargs: Any) -> None:
            if tls:
                kwargs["context"] = context
            if timeout is not None:
                kwargs["timeout"] = timeout
            super().__init__(**kwargs)

    return Session


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _describe(exc: BaseException) -> str:
    """A one-line reason: ftputil's first line (it appends debugging info), or the OS
    error text, with the kind of error when the text alone says little."""
    text = str(getattr(exc, "strerror", None) or exc).strip()
    first = text.splitlines()[0] if text else ""
    if not first:
        return type(exc).__name__
    if isinstance(exc, OSError) and not isinstance(exc, ftputil.error.FTPError):
        return f"{type(exc).__name__}: {first}"
    return first


def open_destination(config: DestinationConfig, url: DestinationURL) -> FtpDestination:
    """The FTP/FTPS server of a ``[[deliver]]`` entry; the password is resolved here.

    The URL's path is the folder below the login folder (``//in`` is absolute).
    """
    from exportmon.hooks.credentials import resolve

    source = config.password_source()
    password = resolve(source) if source.configured else None
    return FtpDestination(
        f"{url.kind}://{url.netloc}",
        url.path[1:] if url.path.startswith("/") else url.path or ".",
        user=config.user or url.user,
        password=password,
        ca_file=config.ca_file,
        passive=config.passive,
        timeout=config.timeout,
        retries=config.retries,
        overwrite="timestamp" if config.archive else config.overwrite,
        temp=TempNaming.of(config),
        config=config,
    )
