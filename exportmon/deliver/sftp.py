"""Delivering to an SFTP server over SSH, through paramiko (the ``sftp`` extra).

For each file: the target folder is created one level at a time, the file is
uploaded under its temporary name (:class:`~exportmon.deliver.signals.TempNaming`:
``<name>.in_progress`` by default; :mod:`exportmon.deliver.sftp_writes` streams it),
its size on the server is compared with the local size, and only then is it renamed
to ``<name>``:

* with the ``posix-rename@openssh.com`` extension (OpenSSH and most servers offer
  it), one atomic ``rename(2)`` on the server replaces an older file of that name:
  a reader sees the old file or the new one, never neither, never a partial one;
* where the server does not offer it (or refuses it), the standard SFTP ``RENAME``
  is used; it does not replace an existing file, so with ``overwrite = "replace"``
  the old file is removed first. Between the two, a reader finds *no* file of that
  name for a moment (never a partial one); a crash right there leaves the complete
  new file under its temporary name, and the next run finishes the rename.

The temporary file is always created anew and exclusively (``O_EXCL`` on the
server): whatever was under its name before (an earlier attempt's partial file, or
a link someone planted there) is removed first, so an upload never writes through a
link. A lost connection or a failed size check is retried with the project's
back-off (:mod:`exportmon.net.retry`), uploading the whole file again under the same
temporary name.
A refusal by the server (login, host key, permission denied, disk full) is reported
at once in one line. All files of one ``with destination:`` share one SSH
connection and one SFTP session.

Authentication and trust, decided so that nothing is used that the config does not
name:

* with ``ssh_key`` the key file is loaded (OpenSSH or PEM format, ed25519, ECDSA or
  RSA; ``ssh_key_passphrase`` decrypts it); with a password, password login; with
  both, the key first, then the password (also for servers that require both);
* an ssh-agent and the keys in ``~/.ssh`` are **never** used: a service must not
  log in with whatever key its account happens to hold. (The SSH transport is driven
  directly, not through paramiko's ``SSHClient``, so its ``allow_agent`` and
  ``look_for_keys`` never come into play, nor does ``~/.ssh/config``.)
* the server's host key must be in ``known_hosts``, read as ssh reads it
  (:mod:`exportmon.deliver.known_hosts`: hashed names, ``[host]:port``, wildcards,
  ``@revoked``), or equal the pinned ``host_key = "SHA256:..."`` (the fingerprint
  ``ssh-keygen -l`` prints). An unknown, changed or revoked key is refused, never
  added: the message shows the key's fingerprint and how to trust it.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import posixpath
import socket
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exportmon.atomic import COPY_BUFFER
from exportmon.crashpoints import crash_point
from exportmon.deliver import Outgoing, Placed, check_overwrite, known_hosts
from exportmon.deliver.reconnect import on_new_connections
from exportmon.deliver.sftp_writes import write_size, write_stream
from exportmon.deliver.signals import TempNaming
from exportmon.errors import (
    AuthError,
    ConfigError,
    ConnectionFailed,
    DeliveryError,
    ExportmonError,
    UsageError,
)
from exportmon.log import get_logger
from exportmon.progress import ProgressFactory, start_task
from exportmon.signals import checkpoint

if TYPE_CHECKING:
    from exportmon.config.schema import DestinationConfig
    from exportmon.deliver.urls import DestinationURL

log = get_logger(__name__)

EXTRA_HINT = "pip install 'exportmon[sftp]'"
#: The SFTP extension that renames over an existing file atomically.
POSIX_RENAME = "posix-rename@openssh.com"
#: How much of a file :meth:`SftpDestination.holds` has in flight while reading back.
_READ_WINDOW = 8 * 1024 * 1024
#: The size of each read request while reading a file back (paramiko's largest).
_REQUEST = 32768
#: Faster ciphers first: AES-GCM needs no separate MAC pass, which matters in Python
#: (the rest of paramiko's list follows, for servers without it).
_FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")
#: The host key algorithms a known_hosts key type stands for.
_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


def load_paramiko() -> Any:
    """The ``paramiko`` module, or a one-line :class:`ConfigError` naming the extra."""
    try:
        import paramiko
    except ImportError:
        raise ConfigError(
            "sftp:// destinations need paramiko, which is not installed", hint=EXTRA_HINT
        ) from None
    # paramiko logs every connection failure with a traceback from its own thread;
    # the failure reaches the user as one line anyway.
    quiet = logging.getLogger("paramiko")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.CRITICAL)
    return paramiko


def fingerprint(key: Any) -> str:
    """``SHA256:<base64>`` of a public key, as ``ssh-keygen -l`` prints it."""
    return known_hosts.fingerprint(key.asbytes())


def normalize_pin(pin: str) -> str:
    """``host_key`` as :func:`fingerprint` writes it; :class:`UsageError` when it is not
    a SHA-256 fingerprint."""
    text = pin.strip()
    body = text[len("SHA256:") :] if text.upper().startswith("SHA256:") else text
    body = body.rstrip("=")
    try:
        raw = base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise UsageError(
            f"host_key must be a SHA-256 fingerprint, not {pin!r}",
            hint='e.g. host_key = "SHA256:..." as printed by ssh-keyscan HOST | ssh-keygen -lf -',
        )
    return "SHA256:" + body


def normalize_dir(path: str) -> str:
    """The URL's folder as a server path: absolute (``/in/exports``), or relative to
    the login folder for ``/~/in`` (``in``; ``""`` for the login folder itself)."""
    text = path.replace("\\", "/")
    relative = text == "/~" or text.startswith("/~/") or text in ("", "~") or text.startswith("~/")
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if relative and parts and parts[0] == "~":
        parts = parts[1:]
    if ".." in parts:
        raise UsageError(f"the SFTP folder must not contain '..': {path!r}")
    joined = "/".join(parts)
    return joined if relative else "/" + joined


class _Transient(Exception):
    """A failure worth retrying at once on a new connection."""


class SftpDestination:
    """A folder on an SFTP server that files are delivered into."""

    def __init__(
        self,
        host: str,
        port: int = 22,
        directory: str = "/~",
        *,
        user: str,
        password: str | None = None,
        key_file: Path | str | None = None,
        passphrase: str | None = None,
        known_hosts: Path | str | None = "~/.ssh/known_hosts",
        host_key: str | None = None,
        timeout: float | None = 60.0,
        retries: int = 3,
        overwrite: str = "replace",
        temp: TempNaming | None = None,
        backoff: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.directory = normalize_dir(directory)
        self.user = user
        self._password = password
        self.key_file = Path(key_file).expanduser() if key_file else None
        self._passphrase = passphrase
        self.known_hosts = Path(known_hosts).expanduser() if known_hosts else None
        self.host_key = normalize_pin(host_key) if host_key else None
        self.timeout = timeout
        self.retries = max(retries, 0)
        self.backoff = backoff
        self.overwrite = check_overwrite(overwrite)
        #: Where a file is written before its rename (``temp_dir`` on this server:
        #: absolute, ``/~/...`` below the login folder, or relative to ``directory``).
        self.temp = temp or TempNaming()
        self.temporary("x")  # refuses a naming that leaves the final name
        netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        where = self.directory if self.directory.startswith("/") else "/~/" + self.directory
        #: Ledger name and log name: server and folder, no user, no credentials.
        self.label = f"sftp://{netloc}{where.rstrip('/') or '/'}"
        self.display = self.label
        self._transport: Any = None
        self._sftp: Any = None
        self._posix_rename = True
        #: The data of one WRITE request on this connection (:func:`write_size`).
        self._request_size = 32768
        self._made_dirs: set[str] = set()
        #: A login or host key refusal: the rest of the batch fails with it at once
        #: instead of knocking again (``with destination:`` starts a new batch).
        self._refused: ExportmonError | None = None

    def describe(self) -> str:
        """What delivering here does, for ``--dry-run`` (nothing is connected)."""
        login = f"key {self.key_file}" if self.key_file else "a password"
        trust = f"host key {self.host_key}" if self.host_key else f"known_hosts {self.known_hosts}"
        return f"deliver to {self.display} as {self.user} with {login}, trusting {trust}"

    # --- connection --------------------------------------------------------------------

    def __enter__(self) -> SftpDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._refused = None

    def close(self) -> None:
        """End the SFTP session and the SSH connection (quietly: they may be gone)."""
        sftp, self._sftp = self._sftp, None
        transport, self._transport = self._transport, None
        self._made_dirs.clear()
        for thing in (sftp, transport):
            if thing is not None:
                try:
                    thing.close()
                except Exception as exc:  # closing a broken connection may fail any way
                    log.debug("closing the SFTP connection to %s: %s", self.display, exc)

    def _connected(self) -> Any:
        if self._refused is not None:
            raise self._refused
        if self._sftp is None:
            try:
                self._connect()
            except (AuthError, ConfigError, ConnectionFailed, UsageError) as exc:
                self._refused = exc
                raise
        return self._sftp

    def _connect(self) -> None:
        paramiko = load_paramiko()
        if not self.key_file and self._password is None:
            raise UsageError(
                f"{self.display}: no way to log in as {self.user}",
                hint="set ssh_key, or password_env / password_command (or password)",
                retryable=False,
            )
        pkey = self._load_key(paramiko) if self.key_file else None
        known = self._known_keys()
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        transport = paramiko.Transport(sock)
        self._transport = transport
        transport.banner_timeout = self.timeout
        transport.auth_timeout = self.timeout
        options = transport.get_security_options()
        offered = list(options.ciphers)
        options.ciphers = [c for c in _FAST_CIPHERS if c in offered] + [
            c for c in offered if c not in _FAST_CIPHERS
        ]
        if known.valid:
            # Ask for a key type known_hosts has (as OpenSSH does), so a server with
            # several host keys is not refused for showing another one.
            wanted = [a for kind in known.valid for a in _KEY_ALGORITHMS.get(kind, (kind,))]
            types = [a for a in options.key_types if a in wanted]
            if types:
                options.key_types = types
        transport.start_client(timeout=self.timeout)
        self._verify_host_key(transport.get_remote_server_key(), known)
        self._authenticate(paramiko, transport, pkey)
        channel = transport.open_session(timeout=self.timeout)
        if self.timeout is not None:
            channel.settimeout(self.timeout)
        channel.invoke_subsystem("sftp")
        sftp = _client_class(paramiko)(channel)
        self._sftp = sftp
        self._posix_rename = POSIX_RENAME in sftp.extensions
        self._request_size = write_size(sftp, sftp.extensions)

    def _load_key(self, paramiko: Any) -> Any:
        assert self.key_file is not None
        try:
            passphrase = self._passphrase.encode() if self._passphrase is not None else None
            return paramiko.PKey.from_path(self.key_file, passphrase)
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            # cryptography says "password-protected" with a TypeError, paramiko with its own.
            if isinstance(exc, TypeError) and "password" not in str(exc).lower():
                raise
            raise AuthError(
                f"ssh_key {self.key_file} is protected by a passphrase",
                hint="set ssh_key_passphrase_env or ssh_key_passphrase_command",
                retryable=False,
            ) from None
        except (paramiko.SSHException, ValueError) as exc:
            if self._passphrase is not None:
                raise AuthError(
                    f"cannot decrypt ssh_key {self.key_file}: wrong passphrase, or not a "
                    "private key",
                    hint="check ssh_key_passphrase (its _env / _command)",
                    retryable=False,
                ) from None
            reason = str(exc).split(". ")[0].strip(". ") or type(exc).__name__
            raise AuthError(
                f"ssh_key {self.key_file} is not a private key paramiko can use ({reason})",
                hint="give an OpenSSH or PEM private key: ed25519, ECDSA or RSA",
                retryable=False,
            ) from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read ssh_key {self.key_file}: {exc.strerror or exc}"
            ) from None

    def _known_keys(self) -> known_hosts.KnownKeys:
        """The keys known_hosts lists for this server (nothing with a pinned key)."""
        if self.host_key or self.known_hosts is None or not self.known_hosts.is_file():
            return known_hosts.KnownKeys()
        try:
            return known_hosts.lookup(self.known_hosts, self.host, self.port)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConfigError(
                f"cannot read known_hosts {self.known_hosts}: {reason}",
                hint="it must be an OpenSSH known_hosts file, readable by this user",
            ) from None

    def _known_name(self) -> str:
        """The server's name in known_hosts: ``host``, or ``[host]:port`` off port 22."""
        return known_hosts.host_name(self.host, self.port)

    def _trust_hint(self, seen: str) -> str:
        port = "" if self.port == 22 else f"-p {self.port} "
        target = self.known_hosts or "~/.ssh/known_hosts"
        return (
            f"check it with the server's administrator, then run "
            f'ssh-keyscan {port}{self.host} >> {target}, or set host_key = "{seen}"'
        )

    def _verify_host_key(self, key: Any, known: known_hosts.KnownKeys) -> None:
        seen = fingerprint(key)
        shown = f"{key.get_name()} {seen}"
        if self.host_key is not None:
            if seen != self.host_key:
                raise ConnectionFailed(
                    f"{self.display}: the host key is {shown}, not the pinned host_key "
                    f"{self.host_key}; refused",
                    hint=f'if the server\'s key was changed on purpose, set host_key = "{seen}"',
                    retryable=False,
                )
            return
        blob = key.asbytes()
        if known.is_revoked(blob):
            raise ConnectionFailed(
                f"{self.display}: the host key {shown} is marked @revoked in "
                f"{self.known_hosts}; refused",
                hint="ask the server's administrator for its new key",
                retryable=False,
            )
        if known.accepts(blob):
            return
        expected = known.valid.get(key.get_name())
        if not expected:
            where = self.known_hosts or "known_hosts"
            missing = "" if self.known_hosts and self.known_hosts.is_file() else " (no such file)"
            raise ConnectionFailed(
                f"{self.display}: unknown host key {shown}: not in {where}{missing}; refused",
                hint=self._trust_hint(seen),
                retryable=False,
            )
        raise ConnectionFailed(
            f"{self.display}: the host key has changed to {shown} (known_hosts has "
            f"{known_hosts.fingerprint(expected[0])}); refused, it may be an impostor",
            hint=f"if it was changed on purpose, remove the old line "
            f"(ssh-keygen -R '{self._known_name()}' -f {self.known_hosts}) and "
            + self._trust_hint(seen).replace("check it with", "check the new key with"),
            retryable=False,
        )

    def _authenticate(self, paramiko: Any, transport: Any, pkey: Any) -> None:
        refused = ""
        if pkey is not None:
            try:
                remaining = transport.auth_publickey(self.user, pkey)
            except paramiko.AuthenticationException as exc:
                refused = f"key {self.key_file} not accepted ({_auth_reason(exc)})"
            else:
                if not remaining and transport.is_authenticated():
                    return
                refused = f"the server wants more than the key ({', '.join(remaining)})"
        if self._password is not None:
            try:
                transport.auth_password(self.user, self._password)
            except paramiko.AuthenticationException as exc:
                refused = "; ".join(filter(None, (refused, f"password {_auth_reason(exc)}")))
            else:
                if transport.is_authenticated():
                    return
                refused = "; ".join(filter(None, (refused, "password not enough")))
        hint = (
            "check user and the password (password_env / password_command)"
            if pkey is None
            else "add the public key to the user's authorized_keys, or check user"
        )
        raise AuthError(f"{self.display}: login refused for user {self.user}: {refused}", hint=hint)

    def _with_retries(self, what: str, operation: Any) -> Any:
        """Run ``operation(connection)``, on a new connection after a failure that one
        may cure (:func:`~exportmon.deliver.reconnect.on_new_connections`)."""
        return on_new_connections(
            self,
            what,
            operation,
            network_errors=(_Transient, OSError, EOFError, load_paramiko().SSHException),
            describe=_describe,
        )

    def _classify(self, exc: BaseException, what: str) -> ExportmonError | None:
        """A permanent error for ``exc``, or ``None`` when retrying may help.

        What the server answered while the connection still stands (permission
        denied, no such folder, disk full) is permanent; a lost or refused connection,
        a timeout or a failed size check is worth another attempt.
        """
        paramiko = load_paramiko()
        if isinstance(exc, _Transient | EOFError | socket.timeout | TimeoutError):
            return None
        if isinstance(exc, paramiko.ssh_exception.IncompatiblePeer):
            return ConnectionFailed(
                f"{self.display}: no common SSH algorithms ({_describe(exc)})",
                hint="the server offers none of the key types known_hosts has for it",
                retryable=False,
            )
        alive = self._transport is not None and self._transport.is_active()
        if isinstance(exc, OSError) and alive and self._sftp is not None:
            text = _describe(exc)
            if exc.errno in (errno.EACCES, errno.EPERM):
                return DeliveryError(
                    f"{what} at {self.display} refused: {text}",
                    hint=f"the user {self.user} may not write there",
                )
            return DeliveryError(f"{what} at {self.display} failed: {text}")
        return None

    # --- paths -------------------------------------------------------------------------

    def remote_path(self, target: str) -> str:
        """The server path of ``target`` (relative to the login folder unless absolute)."""
        parts = [part for part in target.split("/") if part]
        if not parts or ".." in parts:
            raise DeliveryError(f"refusing target {target!r}")
        return posixpath.join(self.directory, *parts) if self.directory else "/".join(parts)

    def temporary(self, target: str) -> str:
        """The server path ``target`` is uploaded under before its rename."""
        final = self.remote_path(target)
        temporary = self.temp.temporary(target)
        if temporary.startswith("/"):
            temporary = normalize_dir(posixpath.normpath(temporary))
        else:
            temporary = self.remote_path(temporary)
        if posixpath.normpath(temporary) == posixpath.normpath(final):
            raise UsageError(
                "temp_suffix, temp_prefix and temp_dir leave the temporary name equal to the "
                "final one",
                hint='keep temp_suffix = ".in_progress" or set temp_prefix or temp_dir',
            )
        return temporary

    def location(self, target: str) -> str:
        return f"{self.label.rstrip('/')}/{target}"

    def _make_dirs(self, sftp: Any, folder: str) -> None:
        """Create ``folder`` and its parents where missing, one level at a time."""
        if not folder or folder in ("/", ".") or folder in self._made_dirs:
            return
        path = "/" if folder.startswith("/") else ""
        for part in folder.strip("/").split("/"):
            path = posixpath.join(path, part) if path else part
            if path in self._made_dirs:
                continue
            try:
                mode = sftp.stat(path).st_mode
            except FileNotFoundError:
                try:
                    sftp.mkdir(path)
                except OSError as exc:
                    # Another client may have made it meanwhile; else the refusal stands.
                    if not _is_dir(sftp, path):
                        raise DeliveryError(
                            f"cannot create the folder {path} at {self.display}: {_describe(exc)}",
                            hint=f"create it, or let the user {self.user} write there",
                        ) from None
            else:
                if not stat.S_ISDIR(mode or 0):
                    raise DeliveryError(
                        f"{path} at {self.display} is not a folder", retryable=False
                    )
            self._made_dirs.add(path)

    # --- the destination interface ------------------------------------------------------

    def exists(self, target: str) -> bool:
        path = self.remote_path(target)

        return bool(self._with_retries(f"checking {target}", lambda sftp: _exists(sftp, path)))

    def holds(self, target: str, size: int, sha256: str | None) -> bool:
        """Whether ``target`` is a file of ``size`` bytes and, when ``sha256`` is given,
        of those very bytes, read back (SFTP has no checksum request OpenSSH answers).
        Only deliveries cut short by a crash or a failure are checked, and a file of
        the same name and size (yesterday's export) must not pass for today's.

        An upload complete under its temporary name (a crash between the size check
        and the rename) passes the same check there and is renamed to ``target``
        instead of being uploaded again.
        """
        final = self.remote_path(target)
        temporary = self.temporary(target)

        def check(sftp: Any) -> bool:
            if _has(sftp, final, size, sha256):
                return True
            # Only a temporary file whose bytes are known to be right is taken.
            if sha256 is None or not _has(sftp, temporary, size, sha256):
                return False
            if self.overwrite == "keep" and _exists(sftp, final):
                sftp.remove(temporary)  # another file took the name meanwhile: it stays
                return False
            log.info("%s was complete under %s; renaming it", target, temporary)
            self._rename(sftp, temporary, final)
            return True

        return bool(self._with_retries(f"checking {target}", check))

    def put(
        self, item: Outgoing, target: str, *, progress: ProgressFactory | None = None
    ) -> Placed:
        """Upload ``item`` under its temporary name, check its size, rename it to ``target``."""
        final = self.remote_path(target)
        temporary = self.temporary(target)
        if not item.source.is_file():
            raise DeliveryError(f"cannot deliver {item.source}: it no longer exists")

        def upload(sftp: Any) -> None:
            self._make_dirs(sftp, posixpath.dirname(final))
            self._make_dirs(sftp, posixpath.dirname(temporary))
            advance, done = start_task(progress, f"upload {posixpath.basename(final)}", item.bytes)
            _clear_temporary(sftp, temporary)
            try:
                # Created exclusively (O_EXCL on the server): never written through a
                # link or into a file someone else made under the temporary name.
                with open(item.source, "rb") as local, sftp.open(temporary, "wbx") as remote:

                    def after_block(length: int) -> None:
                        checkpoint()
                        if advance is not None:
                            advance(length)

                    write_stream(
                        sftp.get_channel(),
                        remote.handle,
                        local,
                        request=self._request_size,
                        block=COPY_BUFFER,
                        after_block=after_block,
                    )
            finally:
                done()
            size = sftp.stat(temporary).st_size
            if size != item.bytes:
                raise _Transient(
                    f"{temporary} has {size} bytes on the server, {item.bytes} were sent"
                )
            crash_point("sftp.uploaded")
            self._rename(sftp, temporary, final)

        self._with_retries(f"uploading {target}", upload)
        return Placed(target=target, location=self.location(target), bytes=item.bytes)

    def _rename(self, sftp: Any, temporary: str, final: str) -> None:
        """``temporary`` → ``final``, replacing ``final`` (see the module docstring)."""
        if self._posix_rename:
            try:
                sftp.posix_rename(temporary, final)
                return
            except FileNotFoundError:
                raise
            except OSError as exc:
                # Refused (some servers deny the extension): the standard rename below.
                log.info("%s refused %s (%s); using RENAME", self.display, POSIX_RENAME, exc)
                self._posix_rename = False
        try:
            sftp.rename(temporary, final)
        except OSError:
            # The standard RENAME does not replace an existing file.
            if self.overwrite != "replace" or not _is_file(sftp, final):
                raise
            sftp.remove(final)
            sftp.rename(temporary, final)

    def discard(self, target: str) -> None:
        """Remove a partial temporary file of ``target`` if one is there (best effort)."""
        try:
            temporary = self.temporary(target)
            _clear_temporary(self._connected(), temporary)
        except Exception as exc:  # cleanup only: the failure was already reported
            log.debug(
                "could not remove the temporary file of %s at %s: %s", target, self.display, exc
            )
            self.close()


def _clear_temporary(sftp: Any, path: str) -> None:
    """Remove what is under the temporary name ``path`` (a partial upload of an earlier
    attempt, or a link planted there: removing a link leaves its target alone), so the
    upload can create it anew."""
    try:
        mode = sftp.lstat(path).st_mode or 0
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise DeliveryError(
            f"{path} is a folder: the temporary name of a file cannot be used",
            hint="remove the folder, or set temp_suffix / temp_prefix",
            retryable=False,
        )
    sftp.remove(path)


def _has(sftp: Any, path: str, size: int, sha256: str | None) -> bool:
    """Whether ``path`` is a file of ``size`` bytes with that SHA-256 (read back); a
    link is not (whatever it points to, it was not put there by this upload)."""
    try:
        attributes = sftp.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(attributes.st_mode or 0) or attributes.st_size != size:
        return False
    if sha256 is None:
        return True
    digest = hashlib.sha256()
    with sftp.open(path, "rb") as remote:
        # readv keeps a window of requests in flight: fast, and bounded memory.
        for start in range(0, size, _READ_WINDOW):
            end = min(size, start + _READ_WINDOW)
            chunks = [(at, min(_REQUEST, end - at)) for at in range(start, end, _REQUEST)]
            for block in remote.readv(chunks):
                digest.update(block)
            checkpoint()
    return digest.hexdigest() == sha256


def _exists(sftp: Any, path: str) -> bool:
    try:
        sftp.lstat(path)
    except FileNotFoundError:
        return False
    return True


def _is_dir(sftp: Any, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
    except OSError:
        return False


def _is_file(sftp: Any, path: str) -> bool:
    try:
        return stat.S_ISREG(sftp.stat(path).st_mode or 0)
    except FileNotFoundError:
        return False


_CLIENT: type | None = None


def _client_class(paramiko: Any) -> type:
    """paramiko's SFTP client, remembering the extensions the server's VERSION offers
    (paramiko reads and drops them) in ``extensions``."""
    global _CLIENT
    if _CLIENT is None:
        from paramiko.sftp import CMD_VERSION

        class Client(paramiko.SFTPClient):  # type: ignore[misc]
            extensions: frozenset[str] = frozenset()

            def _read_packet(self) -> tuple[int, bytes]:
                kind, data = super()._read_packet()
                if kind == CMD_VERSION:
                    self.extensions = _extension_names(data)
                return kind, data

        _CLIENT = Client
    return _CLIENT


def _extension_names(data: bytes) -> frozenset[str]:
    """The extension names in an SFTP VERSION packet's body (version, then name/data
    string pairs)."""
    names, at = [], 4
    try:
        while at + 4 <= len(data):
            (length,) = struct.unpack(">I", data[at : at + 4])
            name = data[at + 4 : at + 4 + length].decode("utf-8", "replace")
            at += 4 + length
            (length,) = struct.unpack(">I", data[at : at + 4])
            at += 4 + length
            names.append(name)
    except struct.error:
        pass
    return frozenset(names)


def _auth_reason(exc: BaseException) -> str:
    allowed = getattr(exc, "allowed_types", None)
    if allowed:
        return f"the server allows {', '.join(allowed)}"
    return "refused"


def _describe(exc: BaseException) -> str:
    """A one-line reason: the OS error's text (``Permission denied``), else the
    library's, with the kind of error when the text alone says little."""
    strerror = getattr(exc, "strerror", None)
    if strerror:
        return str(strerror)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if not first:
        return type(exc).__name__
    if isinstance(exc, EOFError | TimeoutError):
        return f"{type(exc).__name__}: {first}"
    return first


def open_destination(config: DestinationConfig, url: DestinationURL) -> SftpDestination:
    """The SFTP server of a ``[[deliver]]`` entry; the password and passphrase are
    resolved here, nothing is connected.

    The URL's path is absolute on the server; ``/~/in`` is below the login folder.
    """
    from exportmon.hooks.credentials import resolve

    load_paramiko()
    user = config.user or url.user
    if not user:
        raise ConfigError(
            f"{config.url}: no user to log in as",
            key=config.key + "user",
            hint="write sftp://USER@host/... or set user",
        )
    source = config.password_source()
    password = resolve(source) if source.configured else None
    passphrase_source = config.passphrase_source()
    passphrase = resolve(passphrase_source) if passphrase_source.configured else None
    return SftpDestination(
        url.host,
        url.port,
        url.path or "/~",
        user=user,
        password=password,
        key_file=config.ssh_key,
        passphrase=passphrase,
        known_hosts=config.known_hosts,
        host_key=config.host_key,
        timeout=config.timeout,
        retries=config.retries,
        overwrite=config.overwrite,
        temp=TempNaming.of(config),
    )
