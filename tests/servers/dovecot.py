"""A real Dovecot 2.3 IMAP/POP3 server running from a temporary configuration.

:class:`DovecotServer` writes a self-contained ``dovecot.conf`` into a work
directory and runs ``dovecot -F -c <file>`` as a child process (this needs
root: Dovecot's master process must be able to switch to ``nobody``). It listens
on 127.0.0.1 only, on four ports picked at start-up:

* ``imap`` – plain IMAP offering STARTTLS,
* ``imaps`` – IMAP over implicit TLS,
* ``pop3`` – plain POP3 offering STLS,
* ``pop3s`` – POP3 over implicit TLS.

Plain-text logins are allowed on the unencrypted ports too, so tests can cover
all three connection modes. Mail is stored as Maildir under the work
directory; IMAP IDLE, MOVE, UIDPLUS and CONDSTORE are in Dovecot's default
capability list, which this configuration leaves untouched (no
``imap_capability``, no ``mail_plugins``).

Users are added at run time with :meth:`DovecotServer.add_user`, so one
session-wide server can give every test its own empty mailbox.

Behaviour of Dovecot 2.3 worth knowing (checked against 2.3.19.1):

* A ``passwd-file`` is re-read when its mtime or size changes, but the auth
  process checks that at most once per second. A user appended to one
  shared file can therefore be "unknown" for up to a second. This
  configuration uses one passwd-file per user (``%u`` in the path): Dovecot
  opens a file it has not seen before on the first lookup, so a new user can
  log in immediately.
* After a failed login, anvil delays *every* later login from the same IP by
  2-15 s ("auth penalty"), which would make one negative test slow down all
  following ones; its socket is disabled here. Failed logins are still
  answered in batches every 0.5 s even with ``auth_failure_delay = 0``.
* 2.3.19.1 negotiates TLS (ECDHE) without ``ssl_dh``; the Debian file
  ``/usr/share/dovecot/dh.pem`` is still configured when present, because
  early 2.3 releases refused DHE handshakes without it.
* On SIGTERM the master needs about a second to exit, and its ``log`` child
  can outlive it, so :meth:`DovecotServer.stop` kills the whole process group.
* Maildir files found in ``new/``/``cur/`` get UIDs in the order of the
  timestamp that starts their file name, not in directory order; this is
  what lets :meth:`MailUser.bulk_append` control the UID order.
* Unix socket paths must stay below ~108 bytes, so the work directory should
  be short (``tempfile.mkdtemp()`` in ``/tmp``, not pytest's ``tmp_path``),
  and every path must be traversable by ``nobody``.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import grp
import itertools
import os
import poplib
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from imapclient import IMAPClient, imap_utf7

from servers import LOCALHOST, ServerStartError, free_port, wait_for_port, wait_for_port_closed
from servers.tlsca import ServerCert

MessageSource = bytes | str | Path
Security = Literal["ssl", "starttls", "plain"]

#: Maildir info letters for the IMAP system flags (``:2,<letters>`` suffix).
_MAILDIR_FLAG_LETTERS = {
    "\\draft": "D",
    "\\flagged": "F",
    "\\answered": "R",
    "\\seen": "S",
    "\\deleted": "T",
}
_APPENDUID_RE = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]", re.IGNORECASE)
_FETCH_CHUNK = 1000
_user_counter = itertools.count(1)


@dataclass(frozen=True)
class MailPorts:
    """The four TCP ports a :class:`DovecotServer` listens on."""

    imap: int
    imaps: int
    pop3: int
    pop3s: int


def _read_message(message: MessageSource) -> bytes:
    if isinstance(message, Path):
        return message.read_bytes()
    if isinstance(message, str):
        return message.encode("utf-8")
    return bytes(message)


def _parse_uid_set(text: bytes) -> list[int]:
    uids: list[int] = []
    for part in text.split(b","):
        if b":" in part:
            low, high = sorted(int(x) for x in part.split(b":"))
            uids.extend(range(low, high + 1))
        else:
            uids.append(int(part))
    return uids


def _appenduids(response: object) -> list[int]:
    # IMAPClient.append returns the response text, multiappend (3.x) a (typ, data) tuple.
    if isinstance(response, tuple):
        response = b" ".join(
            part if isinstance(part, bytes) else str(part).encode() for part in response[1]
        )
    raw = response.encode() if isinstance(response, str) else response
    if not isinstance(raw, bytes):
        raise RuntimeError(f"unexpected APPEND response {response!r}")
    match = _APPENDUID_RE.search(raw)
    if match is None:
        raise RuntimeError(f"server sent no APPENDUID: {raw!r}")
    return _parse_uid_set(match.group(2))


def _normalise_flags(flags: Iterable[str | bytes]) -> list[str]:
    return [f.decode("ascii") if isinstance(f, bytes) else f for f in flags]


@dataclass
class MailUser:
    """A mailbox account on a :class:`DovecotServer`, with client helpers.

    The helpers open their own short IMAP connection (implicit TLS, verified
    against :attr:`ca_file`) per call, so they never interfere with the
    connections of the code under test.

    Attributes:
        name: Login name.
        password: Login password.
        host: Server address (always 127.0.0.1).
        ports: The server's ports.
        ca_file: CA certificate that verifies the server.
        maildir: Root of the user's Maildir (INBOX), created by Dovecot on the
            first login.
    """

    name: str
    password: str
    host: str
    ports: MailPorts
    ca_file: Path
    maildir: Path
    _owner: tuple[int, int] = field(default=(-1, -1), repr=False)

    def ssl_context(self) -> ssl.SSLContext:
        """Return a client TLS context that trusts only the test CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    def imap(self, security: Security = "ssl", *, login: bool = True) -> IMAPClient:
        """Open an IMAP connection (use it as a context manager to log out).

        Args:
            security: ``"ssl"`` (implicit TLS on :attr:`MailPorts.imaps`),
                ``"starttls"`` or ``"plain"`` (both on :attr:`MailPorts.imap`).
            login: Log in as this user before returning.
        """
        if security == "ssl":
            client = IMAPClient(
                self.host,
                port=self.ports.imaps,
                ssl=True,
                ssl_context=self.ssl_context(),
                timeout=30,
            )
        else:
            client = IMAPClient(self.host, port=self.ports.imap, ssl=False, timeout=30)
            if security == "starttls":
                client.starttls(self.ssl_context())
        if login:
            client.login(self.name, self.password)
        return client

    def pop3(self, security: Literal["ssl", "stls", "plain"] = "ssl") -> poplib.POP3:
        """Open a logged-in POP3 connection; call ``quit()`` when done.

        Args:
            security: ``"ssl"`` (implicit TLS on :attr:`MailPorts.pop3s`),
                ``"stls"`` or ``"plain"`` (both on :attr:`MailPorts.pop3`).
        """
        client: poplib.POP3
        if security == "ssl":
            client = poplib.POP3_SSL(
                self.host, self.ports.pop3s, context=self.ssl_context(), timeout=30
            )
        else:
            client = poplib.POP3(self.host, self.ports.pop3, timeout=30)
            if security == "stls":
                client.stls(self.ssl_context())
        client.user(self.name)
        client.pass_(self.password)
        return client

    def append(
        self,
        message: MessageSource,
        mailbox: str = "INBOX",
        flags: Iterable[str | bytes] = (),
        msg_time: dt.datetime | None = None,
    ) -> int:
        """APPEND one message and return its UID (from the APPENDUID response).

        Args:
            message: Raw RFC 5322 bytes, text (encoded as UTF-8) or a file path.
            mailbox: Target mailbox; must exist (INBOX always does).
            flags: IMAP flags to set, e.g. ``["\\\\Seen"]``.
            msg_time: INTERNALDATE to set; the server's clock when ``None``.
        """
        with self.imap() as client:
            response = client.append(
                mailbox, _read_message(message), flags=_normalise_flags(flags), msg_time=msg_time
            )
        (uid,) = _appenduids(response)
        return uid

    def create_mailbox(self, name: str) -> None:
        """Create mailbox *name* (IMAP CREATE); it must not exist yet."""
        with self.imap() as client:
            client.create_folder(name)

    def mailboxes(self) -> list[str]:
        """Return the names of all mailboxes of this user (IMAP LIST)."""
        with self.imap() as client:
            return [name for _flags, _delim, name in client.list_folders()]

    def list_uids(self, mailbox: str = "INBOX") -> list[int]:
        """Return the UIDs in *mailbox*, ascending (read-only SELECT + SEARCH ALL)."""
        with self.imap() as client:
            client.select_folder(mailbox, readonly=True)
            return sorted(client.search("ALL"))

    def fetch_all(self, mailbox: str = "INBOX") -> dict[int, bytes]:
        """Return ``{uid: raw message}`` for *mailbox*, without setting ``\\Seen``.

        Uses ``BODY.PEEK[]``; Dovecot returns the message with CRLF line ends.
        """
        result: dict[int, bytes] = {}
        with self.imap() as client:
            client.select_folder(mailbox, readonly=True)
            uids = sorted(client.search("ALL"))
            for start in range(0, len(uids), _FETCH_CHUNK):
                data = client.fetch(uids[start : start + _FETCH_CHUNK], ["BODY.PEEK[]"])
                for uid, item in data.items():
                    result[uid] = item[b"BODY[]"]
        return result

    def flags(self, mailbox: str = "INBOX") -> dict[int, tuple[bytes, ...]]:
        """Return ``{uid: flags}`` for every message in *mailbox* (FETCH FLAGS)."""
        result: dict[int, tuple[bytes, ...]] = {}
        with self.imap() as client:
            client.select_folder(mailbox, readonly=True)
            uids = sorted(client.search("ALL"))
            for start in range(0, len(uids), _FETCH_CHUNK):
                data = client.fetch(uids[start : start + _FETCH_CHUNK], ["FLAGS"])
                for uid, item in data.items():
                    result[uid] = tuple(item[b"FLAGS"])
        return result

    def bulk_append(
        self,
        messages: Iterable[MessageSource],
        mailbox: str = "INBOX",
        *,
        flags: Iterable[str | bytes] = (),
        method: Literal["maildir", "imap"] = "maildir",
    ) -> list[int]:
        """Add many messages quickly and return their new UIDs, in input order.

        ``method="maildir"`` (default) writes each message straight into the
        Maildir (``tmp/`` then rename into ``new/``, or ``cur/`` when flags are
        given; files owned by ``nobody``, line ends stored as LF exactly as
        Dovecot's own APPEND does) and then SELECTs the mailbox once so Dovecot
        indexes them and assigns UIDs. File names carry increasing timestamps,
        which Dovecot sorts by when it assigns UIDs, so UIDs follow input order.
        Cost, measured on a 2-CPU VM: about 0.1 ms per message in total, file
        writing and Dovecot's first index pass together (50,000 messages of
        2 KB in about 5 s; 2,000 small ones in well under a second).

        ``method="imap"`` uses MULTIAPPEND in batches over one connection; it is
        about five times slower (≈0.5 ms per message) but goes entirely through
        Dovecot, and is what to use for keywords.

        Args:
            messages: Raw messages (bytes, text or paths).
            mailbox: Target mailbox; created when missing.
            flags: Flags for every message. The ``maildir`` method supports only
                the system flags ``\\Seen \\Answered \\Flagged \\Deleted \\Draft``.
            method: ``"maildir"`` or ``"imap"``, see above.

        Raises:
            ValueError: ``maildir`` method with a keyword flag.
            RuntimeError: Dovecot did not report one new UID per message
                (e.g. someone else appended at the same time).
        """
        flag_list = _normalise_flags(flags)
        with self.imap() as client:
            if not client.folder_exists(mailbox):
                client.create_folder(mailbox)
            if method == "imap":
                return self._bulk_imap(client, messages, mailbox, flag_list)
            letters = self._maildir_letters(flag_list)
            uidnext = int(client.folder_status(mailbox, [b"UIDNEXT"])[b"UIDNEXT"])
            count = self._write_maildir(messages, self._mailbox_dir(client, mailbox), letters)
            # SELECT is what makes Dovecot scan new/ and cur/ and assign UIDs.
            client.select_folder(mailbox, readonly=True)
            uids = sorted(u for u in client.search(["UID", f"{uidnext}:*"]) if u >= uidnext)
        if len(uids) != count:
            raise RuntimeError(
                f"wrote {count} messages into {mailbox!r} but Dovecot reports {len(uids)} new UIDs"
            )
        return uids

    @staticmethod
    def _bulk_imap(
        client: IMAPClient, messages: Iterable[MessageSource], mailbox: str, flags: list[str]
    ) -> list[int]:
        uids: list[int] = []
        batch: list[dict[str, object]] = []
        batch_bytes = 0

        def flush() -> None:
            nonlocal batch_bytes
            if batch:
                uids.extend(_appenduids(client.multiappend(mailbox, batch)))
                batch.clear()
                batch_bytes = 0

        for message in messages:
            raw = _read_message(message)
            batch.append({"msg": raw, "flags": flags} if flags else {"msg": raw})
            batch_bytes += len(raw)
            # Bounded batches keep one APPEND command far below Dovecot's limits.
            if len(batch) >= 500 or batch_bytes >= 8 * 1024 * 1024:
                flush()
        flush()
        return uids

    @staticmethod
    def _maildir_letters(flags: list[str]) -> str:
        letters = []
        for flag in flags:
            letter = _MAILDIR_FLAG_LETTERS.get(flag.lower())
            if letter is None:
                raise ValueError(
                    f"flag {flag!r} is not a system flag; use bulk_append(method='imap')"
                )
            letters.append(letter)
        return "".join(sorted(set(letters)))

    def _mailbox_dir(self, client: IMAPClient, mailbox: str) -> Path:
        if mailbox.upper() == "INBOX":
            return self.maildir
        # Maildir++ keeps every folder as "." + full name (hierarchy separator
        # "."), in modified UTF-7, directly under the INBOX directory.
        delimiter = client.namespace().personal[0][1] or "."
        encoded = imap_utf7.encode(mailbox).decode("ascii")
        return self.maildir / ("." + encoded.replace(delimiter, "."))

    def _write_maildir(self, messages: Iterable[MessageSource], box: Path, letters: str) -> int:
        tmp_dir, new_dir, cur_dir = box / "tmp", box / "new", box / "cur"
        if not new_dir.is_dir():
            raise RuntimeError(f"mailbox directory {box} does not exist")
        target_dir = cur_dir if letters else new_dir
        suffix = f":2,{letters}" if letters else ""
        uid, gid = self._owner
        materialised = messages if isinstance(messages, Sequence) else list(messages)
        # Dovecot sorts newly found files by the leading timestamp before giving
        # out UIDs; counting seconds up from the past keeps input order.
        base = int(time.time()) - len(materialised) - 1
        pid = os.getpid()
        token = secrets.token_hex(4)
        count = 0
        for index, message in enumerate(materialised):
            raw = _read_message(message).replace(b"\r\n", b"\n")
            # S= is the stored size, W= the size with CRLF line ends; with both
            # in the name Dovecot never has to open the file to learn them.
            virtual_size = len(raw) + raw.count(b"\n")
            name = (
                f"{base + index}.M{index % 1_000_000}P{pid}Q{token}.exportmon,"
                f"S={len(raw)},W={virtual_size}"
            )
            tmp_path = tmp_dir / name
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, raw)
                if uid >= 0:
                    os.fchown(fd, uid, gid)
            finally:
                os.close(fd)
            os.rename(tmp_path, target_dir / (name + suffix))
            count += 1
        return count


class DovecotServer:
    """Dovecot (IMAP + POP3) on 127.0.0.1 from a generated configuration.

    Args:
        workdir: Empty directory for config, runtime files, logs and mail. Use
            a short path (socket names must fit in 108 bytes) that ``nobody``
            can traverse.
        cert: Server certificate for all TLS listeners.
        ca_file: CA file clients should verify *cert* with (handed to users).
        binary: Dovecot executable; looked up in PATH and the sbin directories.
        extra_config: Appended verbatim to ``dovecot.conf`` (later settings
            win), e.g. ``"mail_max_userip_connections = 1"``.
        start_timeout: Seconds to wait for all four listeners.
        verify_ready: Check the TLS listeners with a verified connection (the default).
            False for a server given a certificate meant to be refused (another host
            name, expired): the readiness probe then only reads the greeting over TLS.

    Ports are chosen on the first :meth:`start` and kept for the lifetime of
    the object, so :meth:`restart` brings the same server back on the same
    ports with the same mailboxes.
    """

    def __init__(
        self,
        workdir: Path,
        cert: ServerCert,
        ca_file: Path,
        *,
        binary: str = "dovecot",
        extra_config: str = "",
        start_timeout: float = 20.0,
        verify_ready: bool = True,
        submission_relay: Any = None,
    ) -> None:
        self.workdir = Path(workdir)
        #: With a relay (an SMTP server on 127.0.0.1 with ``port``, ``user`` and
        #: ``password``, as tests/servers/smtp.py), Dovecot also offers submission
        #: (STARTTLS) on :attr:`submission_port` and relays what it takes there.
        self.submission_relay = submission_relay
        self.submission_port: int | None = None
        self.verify_ready = verify_ready
        self.cert = cert
        self.ca_file = Path(ca_file)
        self.binary = binary
        self.extra_config = extra_config
        self.start_timeout = start_timeout
        self.host = LOCALHOST
        self.config_file = self.workdir / "dovecot.conf"
        self.log_file = self.workdir / "dovecot.log"
        self.stderr_file = self.workdir / "dovecot.stderr"
        self.passwd_dir = self.workdir / "passwd.d"
        self.mail_root = self.workdir / "mail"
        self.home_root = self.workdir / "home"
        self._ports: MailPorts | None = None
        self._process: subprocess.Popen[bytes] | None = None
        nobody = pwd.getpwnam("nobody")
        self._uid = nobody.pw_uid
        self._gid = nobody.pw_gid
        self._group_name = grp.getgrgid(self._gid).gr_name

    # -- properties -------------------------------------------------------

    @property
    def ports(self) -> MailPorts:
        """The listener ports (available after the first :meth:`start`)."""
        if self._ports is None:
            raise RuntimeError("DovecotServer has not been started yet")
        return self._ports

    @property
    def imap_port(self) -> int:
        """Plain IMAP port (STARTTLS offered)."""
        return self.ports.imap

    @property
    def imaps_port(self) -> int:
        """IMAP over implicit TLS."""
        return self.ports.imaps

    @property
    def pop3_port(self) -> int:
        """Plain POP3 port (STLS offered)."""
        return self.ports.pop3

    @property
    def pop3s_port(self) -> int:
        """POP3 over implicit TLS."""
        return self.ports.pop3s

    @property
    def running(self) -> bool:
        """Whether the Dovecot master process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """PID of the Dovecot master process, ``None`` when stopped."""
        return self._process.pid if self.running and self._process else None

    # -- lifecycle --------------------------------------------------------

    def start(self) -> None:
        """Write the configuration, start Dovecot and wait until all ports answer.

        Raises:
            ServerStartError: not root, binary missing, Dovecot exited or a
                port did not answer in time. The message includes Dovecot's
                stderr and the tail of its log; nothing is left running.
        """
        if self.running:
            return
        if os.geteuid() != 0:
            raise ServerStartError("the Dovecot test server must run as root (it drops to nobody)")
        executable = shutil.which(self.binary) or shutil.which(
            self.binary, path="/usr/sbin:/usr/local/sbin:/sbin"
        )
        if executable is None:
            raise ServerStartError(
                f"Dovecot binary {self.binary!r} not found; install dovecot-imapd and dovecot-pop3d"
            )
        if self._ports is None:
            ports: set[int] = set()
            while len(ports) < 4:
                ports.add(free_port(self.host))
            self._ports = MailPorts(*sorted(ports))
            if self.submission_relay is not None:
                self.submission_port = free_port(self.host)
        self._prepare_dirs()
        self.config_file.write_text(self._config_text())
        with open(self.stderr_file, "ab") as stderr:
            self._process = subprocess.Popen(
                [executable, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                # Own process group: stop() can reap every Dovecot child.
                start_new_session=True,
            )
        # Safety net for an interpreter that dies without fixture teardown: the
        # master runs in its own session and would otherwise outlive pytest.
        atexit.register(self._kill)
        try:
            self._wait_ready()
        except (TimeoutError, OSError) as exc:
            exit_code = self._process.poll() if self._process else None
            self._kill()
            status = f" (exit code {exit_code})" if exit_code is not None else ""
            raise ServerStartError(
                f"Dovecot did not start{status}: {exc}\n{self.diagnostics()}"
            ) from exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop Dovecot (SIGTERM, then SIGKILL) and wait until its ports are closed.

        Mail data, users and ports are kept for a later :meth:`start`. Client
        connections are cut (``shutdown_clients = yes``).
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout)
        self._kill()
        if self._ports is not None:
            for port in (self._ports.imap, self._ports.imaps, self._ports.pop3, self._ports.pop3s):
                wait_for_port_closed(self.host, port, timeout=timeout)

    def restart(self) -> None:
        """:meth:`stop` then :meth:`start`, on the same ports with the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> DovecotServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- users ------------------------------------------------------------

    def add_user(self, name: str | None = None, password: str | None = None) -> MailUser:
        """Create a mail account that can log in immediately (IMAP and POP3).

        Args:
            name: Login name (letters, digits, ``.-_@``); a unique one when ``None``.
            password: Password; a random one when ``None``.

        Raises:
            ValueError: *name* is malformed or already taken.
        """
        if name is None:
            name = f"user{next(_user_counter)}-{secrets.token_hex(3)}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]*", name):
            raise ValueError(f"unusable mail user name {name!r}")
        if password is None:
            password = secrets.token_urlsafe(12)
        if ":" in password or "\n" in password:
            raise ValueError("password must not contain ':' or newlines")
        self.passwd_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        entry = self.passwd_dir / name
        if entry.exists():
            raise ValueError(f"mail user {name!r} already exists")
        self._write_passwd_entry(name, password)
        home = self.home_root / name
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chown(home, self._uid, self._gid)
        return MailUser(
            name=name,
            password=password,
            host=self.host,
            ports=self.ports,
            ca_file=self.ca_file,
            maildir=self.mail_root / name,
            _owner=(self._uid, self._gid),
        )

    def set_password(self, user: MailUser | str, password: str) -> None:
        """Change a user's password; returns once Dovecot is certain to see it.

        Dovecot re-reads a passwd-file only when its mtime (seconds) or size
        changed, and checks at most once per second, so this bumps the mtime
        and then waits for the next full second (up to about 1 s).

        Raises:
            ValueError: unknown user or unusable password.
        """
        name = user.name if isinstance(user, MailUser) else user
        entry = self.passwd_dir / name
        if not entry.is_file():
            raise ValueError(f"no mail user {name!r}")
        if ":" in password or "\n" in password:
            raise ValueError("password must not contain ':' or newlines")
        old_mtime = int(entry.stat().st_mtime)
        self._write_passwd_entry(name, password)
        new_mtime = max(int(time.time()), old_mtime + 1)
        os.utime(entry, (new_mtime, new_mtime))
        time.sleep(1.05 - time.time() % 1)
        if isinstance(user, MailUser):
            user.password = password

    def _write_passwd_entry(self, name: str, password: str) -> None:
        # Write-then-rename: the auth process must never read half a line.
        staging = self.passwd_dir / f".{name}.tmp"
        staging.write_text(f"{name}:{{PLAIN}}{password}::::::\n")
        staging.chmod(0o644)
        staging.rename(self.passwd_dir / name)

    # -- diagnostics ------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        """Return the last *lines* lines of Dovecot's log file ('' if none)."""
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def diagnostics(self) -> str:
        """Return Dovecot's stderr and log tail, formatted for an error message."""
        try:
            stderr = self.stderr_file.read_text(errors="replace").strip()
        except FileNotFoundError:
            stderr = ""
        return (
            f"--- dovecot stderr ({self.stderr_file}) ---\n{stderr or '(empty)'}\n"
            f"--- dovecot log tail ({self.log_file}) ---\n{self.log_tail() or '(empty)'}"
        )

    # -- internals --------------------------------------------------------

    def _prepare_dirs(self) -> None:
        self.workdir.chmod(0o755)
        for directory in (self.workdir / "run", self.workdir / "state", self.passwd_dir):
            directory.mkdir(mode=0o755, exist_ok=True)
        for directory in (self.mail_root, self.home_root):
            directory.mkdir(exist_ok=True)
            # Mail processes run as nobody and create per-user directories here.
            os.chown(directory, self._uid, self._gid)
            directory.chmod(0o777)

    def _config_text(self) -> str:
        ports = self.ports
        dh_file = Path("/usr/share/dovecot/dh.pem")
        dh_line = f"ssl_dh = <{dh_file}" if dh_file.is_file() else ""
        return f"""\
# Generated by tests/servers/dovecot.py for one test session.
base_dir = {self.workdir}/run
state_dir = {self.workdir}/state
log_path = {self.log_file}
info_log_path = {self.log_file}
debug_log_path = {self.log_file}
instance_name = exportmon-test-{ports.imap}
protocols = imap pop3{" submission" if self.submission_port else ""}
listen = {self.host}
default_login_user = nobody
default_internal_user = nobody

ssl = yes
ssl_cert = <{self.cert.cert_file}
ssl_key = <{self.cert.key_file}
{dh_line}

disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# A wrong password should fail fast in tests, not after the default 2 s, and
# must not slow down the next tests' logins from 127.0.0.1 (anvil's
# per-IP auth penalty, 2-15 s, is switched off by closing its socket).
auth_failure_delay = 0
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_dir}/%u
}}
userdb {{
  driver = static
  args = uid=nobody gid={self._group_name} home={self.home_root}/%u
}}
mail_location = maildir:{self.mail_root}/%u

service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {ports.imap}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {ports.imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {self.host}
    port = {ports.pop3}
  }}
  inet_listener pop3s {{
    address = {self.host}
    port = {ports.pop3s}
    ssl = yes
  }}
}}

{self._submission_config()}
{self.extra_config}
"""

    def _submission_config(self) -> str:
        if not self.submission_port:
            return ""
        return f"""\
hostname = localhost
submission_relay_host = {self.host}
submission_relay_port = {self.submission_relay.port}
submission_relay_user = {self.submission_relay.user}
submission_relay_password = {self.submission_relay.password}
submission_relay_ssl = no
# With a size limit Dovecot both advertises SIZE and accepts the SIZE= parameter.
submission_max_mail_size = 40M
service submission-login {{
  inet_listener submission {{
    address = {self.host}
    port = {self.submission_port}
  }}
}}
"""

    def _wait_ready(self) -> None:
        ports = self.ports
        client_context = ssl.create_default_context(cafile=str(self.ca_file))
        if not self.verify_ready:
            client_context.check_hostname = False
            client_context.verify_mode = ssl.CERT_NONE

        def greeting(expected: bytes, tls: bool) -> Callable[[socket.socket], None]:
            def probe(sock: socket.socket) -> None:
                with contextlib.ExitStack() as stack:
                    conn: socket.socket = sock
                    if tls:
                        conn = stack.enter_context(
                            client_context.wrap_socket(sock, server_hostname=self.host)
                        )
                    data = conn.recv(512)
                if not data.startswith(expected):
                    raise OSError(f"unexpected greeting {data!r}")

            return probe

        deadline = time.monotonic() + self.start_timeout
        for port, expected, tls in (
            (ports.imap, b"* OK", False),
            (ports.imaps, b"* OK", True),
            (ports.pop3, b"+OK", False),
            (ports.pop3s, b"+OK", True),
            *([(self.submission_port, b"220", False)] if self.submission_port else []),
        ):
            wait_for_port(
                self.host,
                port,
                timeout=max(0.5, deadline - time.monotonic()),
                probe=greeting(expected, tls),
                alive=lambda: self.running,
            )

    def _kill(self) -> None:
        process = self._process
        if process is None:
            return
        atexit.unregister(self._kill)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
        self._process = None
