"""pyftpdlib FTP and explicit-FTPS servers with recording and fault injection.

:class:`FtpServer` runs pyftpdlib's single-threaded asynchronous
``FTPServer`` on its own ``IOLoop`` in a background thread. The loop is
polled in 50 ms slices so :meth:`FtpServer.stop` can end it from another thread
and then close every socket from the loop thread itself; the port is free
again when ``stop()`` returns and can be bound again by :meth:`FtpServer.start`.

With a certificate the server speaks explicit FTPS (``AUTH TLS``) and *requires*
TLS on the control connection (USER/PASS refused before ``AUTH``) and on the
data connection (PASV/PORT refused before ``PROT P``).

Accounts (all with the same home directory):

* the main user (``user``/``password``): full rights, except in ``readonly/``
  where it may only list and read;
* the read-only user (``readonly_user``/``readonly_password``): ``elr``
  rights everywhere, so every upload, MKD, rename or delete gets 550.

Fault injection for later tests:

* :meth:`FtpServer.drop_next_uploads` – cut the data connection of the next
  STOR/APPE commands after some bytes (TCP RST, no TLS close_notify) and answer
  ``426``; the partial file stays on disk like on a real server.
* :meth:`FtpServer.slow_uploads` – throttle uploads so a test can look at the
  directory while a transfer is still running.

pyftpdlib notes (2.2.0): the default ``IOLoop.instance()`` is a process-wide
singleton, so each server gets its own ``IOLoop``; passive data ports are
left to the OS (``passive_ports=None`` binds port 0 per PASV), which never
collides with other servers; TLS contexts are cached on the handler *class*,
so every server uses its own handler subclass.
"""

from __future__ import annotations

import contextlib
import ftplib
import logging
import secrets
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # pyftpdlib 2.x is built on asyncore/asynchat, deprecated since Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.exceptions import _RetryError
    from pyftpdlib.handlers import DTPHandler, FTPHandler
    from pyftpdlib.handlers.ftps.control import TLS_FTPHandler
    from pyftpdlib.handlers.ftps.data import TLS_DTPHandler
    from pyftpdlib.ioloop import IOLoop
    from pyftpdlib.log import logger as ftpd_logger
    from pyftpdlib.servers import FTPServer

from servers import LOCALHOST, ServerStartError, wait_for_port, wait_for_port_closed
from servers.tlsca import ServerCert

# pyftpdlib installs a stderr handler of its own unless some handler exists;
# a NullHandler keeps its records flowing to pytest's log capture instead.
_pyftpdlib_logger = logging.getLogger("pyftpdlib")
if not _pyftpdlib_logger.handlers:
    _pyftpdlib_logger.addHandler(logging.NullHandler())

FULL_PERM = "elradfmwMT"
READ_PERM = "elr"
_PATH_COMMANDS = frozenset(
    {
        "APPE", "CWD", "DELE", "LIST", "MDTM", "MFMT", "MKD", "MLSD", "MLST", "NLST",
        "RETR", "RMD", "RNFR", "RNTO", "SIZE", "STOR", "XCWD", "XMKD", "XRMD",
    }
)  # fmt: skip


@dataclass
class FtpCommand:
    """One command received on a control connection.

    Attributes:
        session: Sequence number of the control connection (1, 2, …).
        user: Logged-in user at the time, ``None`` before login.
        command: Upper-case command verb (``STOR``, ``RNFR``, …).
        arg: Argument as sent; ``******`` for PASS.
        path: For path commands, the absolute FTP path the argument resolves
            to (e.g. ``/incoming/x.csv``); else ``None``.
        replies: Every reply line sent for it (a STOR gets ``150 …`` and
            then ``226 …`` or ``426 …``).
    """

    session: int
    user: str | None
    command: str
    arg: str
    path: str | None
    replies: list[str] = field(default_factory=list)

    @property
    def code(self) -> int | None:
        """Numeric code of the last reply, ``None`` if no reply yet."""
        return int(self.replies[-1][:3]) if self.replies else None


class _RecordingHandlerMixin:
    """Control-connection behaviour shared by the FTP and FTPS handler classes."""

    owner: FtpServer
    fs: Any
    username: str
    authenticated: bool

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._record: FtpCommand | None = None
        self._drop_after: int | None = None
        self._drop_close_control = False
        self._session = self.owner._next_session()
        super().__init__(*args, **kwargs)

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        path = None
        if cmd in _PATH_COMMANDS and self.authenticated and self.fs is not None:
            with contextlib.suppress(Exception):
                path = self.fs.ftpnorm(arg or self.fs.cwd)
        record = FtpCommand(
            session=self._session,
            user=self.username if self.authenticated else None,
            command=cmd,
            arg="******" if cmd == "PASS" else arg,
            path=path,
        )
        self._record = record
        self.owner.commands.append(record)
        super().pre_process_command(line, cmd, arg)  # type: ignore[misc]

    def respond(self, resp: str, *args: Any, **kwargs: Any) -> None:
        if self._record is not None:
            self._record.replies.append(resp)
        super().respond(resp, *args, **kwargs)  # type: ignore[misc]

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:
        self._drop_after, self._drop_close_control = self.owner._take_drop()
        return super().ftp_STOR(file, mode)  # type: ignore[misc]


class _FaultyDTPMixin:
    """Data-connection behaviour: throttling and simulated aborts for uploads."""

    cmd_channel: Any
    receive: bool
    ioloop: Any
    socket: Any
    transfer_finished: bool
    file_obj: Any
    _resp: tuple[str, Any]
    _error: bool
    _closed: bool

    def __init__(self, sock: Any, cmd_channel: Any) -> None:
        self._rate = cmd_channel.owner._upload_rate
        self._resume_timer: Any = None
        self._seen_for_drop = 0
        self._aborting = False
        self._upload_recorded = False
        super().__init__(sock, cmd_channel)  # type: ignore[call-arg]

    def recv(self, buffer_size: int) -> bytes:
        if self._aborting:
            raise _RetryError
        throttled = bool(self._rate) and self.receive
        if throttled:
            # Small reads with a pause after each give a steady rate; pyftpdlib's
            # ThrottledDTPHandler instead swallows ~2x the rate and then sleeps.
            buffer_size = max(1, min(buffer_size, self._rate // 10))
        chunk: bytes = super().recv(buffer_size)  # type: ignore[misc]
        if throttled and chunk:
            self._pause_reading(len(chunk) / self._rate)
        limit = self.cmd_channel._drop_after if self.receive else None
        if limit is None:
            return chunk
        room = max(limit - self._seen_for_drop, 0)
        if not chunk or len(chunk) >= room:
            # Also on EOF before the limit: the upload must fail, not succeed.
            chunk = chunk[:room]
            self._aborting = True
            self.ioloop.call_later(0, self._abort_upload)
        self._seen_for_drop += len(chunk)
        if not chunk:
            # An empty chunk would be taken for a clean end of file.
            raise _RetryError
        return chunk

    def _pause_reading(self, seconds: float) -> None:
        self.del_channel()  # type: ignore[attr-defined]
        self._resume_timer = self.ioloop.call_later(seconds, self._resume_reading)

    def _resume_reading(self) -> None:
        self._resume_timer = None
        if self._closed:
            return
        self.add_channel(events=self.ioloop.READ)  # type: ignore[attr-defined]
        pending = getattr(self.socket, "pending", None)
        if pending is not None and pending():
            # Decrypted TLS bytes already buffered would not wake the poller.
            self.ioloop.call_later(0, self.handle_read_event)  # type: ignore[attr-defined]

    def _record_upload(self) -> None:
        # Recorded here, before pyftpdlib sends 226/426, so a client that has
        # seen the reply always finds the upload in `received`/`incomplete`
        # (pyftpdlib's on_file_received hooks run only after the reply).
        file_obj = getattr(self, "file_obj", None)
        if self._closed or not self.receive or file_obj is None or self._upload_recorded:
            return
        self._upload_recorded = True
        owner = self.cmd_channel.owner
        target = owner.received if self.transfer_finished else owner.incomplete
        target.append(Path(file_obj.name))

    def _abort_upload(self) -> None:
        if not self._closed:
            self.close()

    def close(self) -> None:
        # Every way a data connection ends passes through close(), including a
        # clean EOF that pyftpdlib would otherwise report as "226 complete".
        if self._resume_timer is not None:
            self._resume_timer.cancel()
            self._resume_timer = None
        channel = self.cmd_channel
        dropping = not self._closed and self.receive and channel._drop_after is not None
        if dropping:
            channel._drop_after = None
            self.transfer_finished = False
        self._record_upload()
        if not dropping:
            super().close()  # type: ignore[misc]
            return
        self._resp = ("426 Connection closed; transfer aborted (simulated).", ftpd_logger.info)
        with contextlib.suppress(OSError, AttributeError):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Makes the TLS mixin skip its close_notify: the peer sees a bare reset.
        self._error = True
        super().close()  # type: ignore[misc]
        if channel._drop_close_control:
            channel.close_when_done()


class _PlainDTP(_FaultyDTPMixin, DTPHandler):
    pass


class _TLSDTP(_FaultyDTPMixin, TLS_DTPHandler):
    pass


class FtpServer:
    """An FTP or explicit-FTPS server on 127.0.0.1 serving *home*.

    Args:
        home: Directory shown as ``/``; created if missing.
        cert: Enables explicit FTPS with TLS required on control and data.
        user: Main account name.
        password: Its password (random when ``None``).
        readonly_user: Name of the ``elr`` account.
        readonly_password: Its password (random when ``None``).
        passive_ports: Ports for PASV/EPSV data connections; ``None`` lets the
            OS pick a free one for every transfer.
        timeout: Idle timeout of control connections in seconds.
        ca_file: CA certificate :meth:`client` verifies the FTPS server with.
        host: Address to bind (tests use 127.0.0.1).

    Attributes:
        commands: Every command received, in order (see :class:`FtpCommand`).
        received: Absolute paths of uploads that completed.
        incomplete: Absolute paths of uploads that were cut short.
    """

    def __init__(
        self,
        home: Path,
        *,
        cert: ServerCert | None = None,
        user: str = "exporter",
        password: str | None = None,
        readonly_user: str = "reader",
        readonly_password: str | None = None,
        passive_ports: Sequence[int] | None = None,
        timeout: int = 60,
        ca_file: Path | None = None,
        host: str = LOCALHOST,
    ) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.readonly_dir = self.home / "readonly"
        self.readonly_dir.mkdir(exist_ok=True)
        self.cert = cert
        self.ca_file = ca_file
        self.host = host
        self.user = user
        self.password = password or secrets.token_urlsafe(10)
        self.readonly_user = readonly_user
        self.readonly_password = readonly_password or secrets.token_urlsafe(10)
        self.passive_ports = list(passive_ports) if passive_ports is not None else None
        self.timeout = timeout
        self.commands: list[FtpCommand] = []
        self.received: list[Path] = []
        self.incomplete: list[Path] = []
        self._lock = threading.Lock()
        self._sessions = 0
        self._drops_left = 0
        self._drop_after_bytes = 0
        self._drop_close_control = False
        self._upload_rate = 0
        self._port = 0
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._handler = self._make_handler()

    # -- properties -------------------------------------------------------

    @property
    def tls(self) -> bool:
        """Whether this is the FTPS variant."""
        return self.cert is not None

    @property
    def port(self) -> int:
        """Control port (stable across :meth:`stop`/:meth:`start`)."""
        if not self._port:
            raise RuntimeError("FtpServer has not been started yet")
        return self._port

    @property
    def running(self) -> bool:
        """Whether the server thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    # -- fault injection --------------------------------------------------

    def drop_next_uploads(
        self, n: int = 1, after_bytes: int = 0, *, close_control: bool = False
    ) -> None:
        """Abort the data connection of the next *n* uploads (STOR/APPE).

        Each affected upload stores at most *after_bytes* bytes, then the data
        connection is reset and the client gets ``426``. An upload shorter than
        *after_bytes* is aborted at its end instead of completing. With
        *close_control* the control connection is closed after the 426 too.
        """
        with self._lock:
            self._drops_left = n
            self._drop_after_bytes = after_bytes
            self._drop_close_control = close_control

    def slow_uploads(self, bytes_per_sec: int | None) -> None:
        """Throttle data connections opened from now on (``None``/0 = full speed).

        Uploads are read in slices of a tenth of the rate with a matching
        pause after each, so the file on disk grows steadily.
        """
        self._upload_rate = int(bytes_per_sec or 0)

    def commands_named(self, *names: str) -> list[FtpCommand]:
        """The recorded commands whose verb is one of *names* (case-insensitive)."""
        wanted = {n.upper() for n in names}
        return [c for c in list(self.commands) if c.command in wanted]

    # -- clients ----------------------------------------------------------

    def client(
        self, user: str | None = None, password: str | None = None, *, timeout: float = 30
    ) -> ftplib.FTP:
        """Return a logged-in ftplib client (FTP_TLS with ``PROT P`` for FTPS).

        Defaults to the main account. The TLS client verifies the server
        against :attr:`ca_file`.
        """
        user = user or self.user
        if password is None:
            password = self.password if user == self.user else self.readonly_password
        if self.tls:
            ftp: ftplib.FTP = ftplib.FTP_TLS(context=self._client_context(), timeout=timeout)
        else:
            ftp = ftplib.FTP(timeout=timeout)
        ftp.connect(self.host, self.port)
        ftp.login(user, password)
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()
        return ftp

    def _client_context(self) -> ssl.SSLContext:
        if self.ca_file is None:
            raise RuntimeError("FtpServer needs ca_file to verify its FTPS certificate")
        return ssl.create_default_context(cafile=str(self.ca_file))

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Bind (the same port again after a stop) and serve in a background thread.

        Raises:
            ServerStartError: the port cannot be bound or does not answer.
        """
        if self.running:
            return
        self._stop_event.clear()
        try:
            server = FTPServer((self.host, self._port), self._handler, ioloop=IOLoop())
        except OSError as exc:
            raise ServerStartError(
                f"FTP server cannot bind {self.host}:{self._port}: {exc}"
            ) from exc
        server.max_cons = 256
        self._server = server
        self._port = server.address[1]
        self._thread = threading.Thread(
            target=self._serve, args=(server,), name=f"ftp-server-{self._port}", daemon=True
        )
        self._thread.start()
        try:
            wait_for_port(self.host, self._port, timeout=10, probe=_expect_greeting)
        except TimeoutError as exc:
            self.stop()
            raise ServerStartError(f"FTP server did not come up: {exc}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Close all connections and the listening socket, and join the thread."""
        thread = self._thread
        if thread is None:
            return
        self._stop_event.set()
        thread.join(timeout)
        self._thread = None
        self._server = None
        if thread.is_alive():
            raise RuntimeError("FTP server thread did not stop")
        wait_for_port_closed(self.host, self._port, timeout=timeout)

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start` on the same port; files and records are kept."""
        self.stop()
        self.start()

    def __enter__(self) -> FtpServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals --------------------------------------------------------

    def _serve(self, server: FTPServer) -> None:
        try:
            while not self._stop_event.is_set():
                server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        finally:
            # Runs on the loop thread: pyftpdlib objects are not thread-safe.
            server.close_all()

    def _next_session(self) -> int:
        with self._lock:
            self._sessions += 1
            return self._sessions

    def _take_drop(self) -> tuple[int | None, bool]:
        with self._lock:
            if self._drops_left <= 0:
                return None, False
            self._drops_left -= 1
            return self._drop_after_bytes, self._drop_close_control

    def _make_handler(self) -> type[FTPHandler]:
        authorizer = DummyAuthorizer()
        authorizer.add_user(self.user, self.password, str(self.home), perm=FULL_PERM)
        authorizer.override_perm(self.user, str(self.readonly_dir), READ_PERM, recursive=True)
        authorizer.add_user(
            self.readonly_user, self.readonly_password, str(self.home), perm=READ_PERM
        )
        attrs: dict[str, Any] = {
            "owner": self,
            "authorizer": authorizer,
            "passive_ports": self.passive_ports,
            "timeout": self.timeout,
            "banner": "exportmon test FTP server ready.",
        }
        if self.cert is None:
            attrs["dtp_handler"] = _PlainDTP
            return type("TestFTPHandler", (_RecordingHandlerMixin, FTPHandler), attrs)
        attrs.update(
            dtp_handler=_TLSDTP,
            certfile=str(self.cert.cert_file),
            keyfile=str(self.cert.key_file),
            ssl_context=None,
            tls_control_required=True,
            tls_data_required=True,
        )
        handler = type("TestFTPSHandler", (_RecordingHandlerMixin, TLS_FTPHandler), attrs)
        handler.get_ssl_context()
        return handler


def _expect_greeting(sock: socket.socket) -> None:
    sock.settimeout(5)
    data = b""
    deadline = time.monotonic() + 5
    while b"\n" not in data and time.monotonic() < deadline:
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    if not data.startswith(b"220"):
        raise OSError(f"unexpected FTP greeting {data!r}")
